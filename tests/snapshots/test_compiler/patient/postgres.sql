SELECT
  JSONB_EXTRACT_PATH_TEXT("r"."content", 'id') AS "id",
  "r"."resource_type" || '/' || "r"."id" AS "patient_key",
  JSONB_EXTRACT_PATH_TEXT("r"."content", 'gender') AS "gender",
  ((JSONB_PATH_QUERY_ARRAY(
    (
      SELECT
        COALESCE(JSONB_AGG("w1"), CAST('[]' AS JSONB))
      FROM JSONB_ARRAY_ELEMENTS(JSONB_PATH_QUERY_ARRAY("r"."content", '$."name"[*]')) AS "w1_elements"("w1")
      WHERE
        JSONB_EXTRACT_PATH_TEXT("w1", 'use') = 'official'
    ),
    '$[*]."family"'
  ) -> CAST(0 AS INT)) #>> '{}') AS "family",
  CAST(JSONB_EXTRACT_PATH_TEXT("r"."content", 'active') AS BOOLEAN) AS "active",
  "r"."resource_type" || '/' || "r"."id" AS "_key"
FROM (
  SELECT
    *,
    NULL AS "_texts"
  FROM "resource"
) AS "r"
WHERE
  "r"."resource_type" = 'Patient'
  AND NOT "r"."deleted"
  AND (
    NOT JSONB_EXTRACT_PATH("r"."content", 'birthDate') IS NULL
  )
