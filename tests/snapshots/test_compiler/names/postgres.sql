SELECT
  JSONB_EXTRACT_PATH_TEXT("r"."content", 'id') AS "id",
  COALESCE("e1"."idx" - 1, 0) AS "name_index",
  JSONB_EXTRACT_PATH_TEXT("e1"."value", 'family') AS "family",
  COALESCE(JSONB_PATH_QUERY_ARRAY("e1"."value", '$."given"[*]'), CAST('[]' AS JSONB)) AS "given",
  "r"."resource_type" || '/' || "r"."id" AS "_key"
FROM "resource" AS "r"
LEFT JOIN LATERAL JSONB_ARRAY_ELEMENTS(JSONB_PATH_QUERY_ARRAY("r"."content", '$."name"[*]')) WITH ORDINALITY AS "e1"("value", "idx")
  ON TRUE
WHERE
  "r"."resource_type" = 'Patient' AND NOT "r"."deleted"
