SELECT
  LIST_EXTRACT("r"."_texts", 1) AS "id",
  "r"."resource_type" || '/' || "r"."id" AS "patient_key",
  LIST_EXTRACT("r"."_texts", 2) AS "gender",
  JSON_EXTRACT_STRING(
    LIST_EXTRACT(
      FLATTEN(
        LIST_TRANSFORM(
          LIST_FILTER(
            JSON_EXTRACT("r"."content", '$."name"[*]'),
            LAMBDA "w1" : JSON_EXTRACT_STRING("w1", '$."use"') = 'official'
          ),
          LAMBDA "v" : CASE
            WHEN JSON_EXTRACT("v", '$."family"') IS NULL
            THEN CAST([] AS JSON[])
            ELSE [JSON_EXTRACT("v", '$."family"')]
          END
        )
      ),
      0 + 1
    ),
    '$'
  ) AS "family",
  CAST(LIST_EXTRACT("r"."_texts", 3) AS BOOLEAN) AS "active",
  "r"."resource_type" || '/' || "r"."id" AS "_key"
FROM (
  SELECT
    *,
    JSON_EXTRACT_STRING("content", ['$."id"', '$."gender"', '$."active"']) AS "_texts"
  FROM "resource"
) AS "r"
WHERE
  "r"."resource_type" = 'Patient'
  AND NOT "r"."deleted"
  AND (
    NOT JSON_EXTRACT("r"."content", '$."birthDate"') IS NULL
  )
