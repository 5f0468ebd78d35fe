SELECT
  JSON_EXTRACT_STRING("r"."content", '$."id"') AS "id",
  COALESCE("e1"."idx" - 1, 0) AS "name_index",
  JSON_EXTRACT_STRING("e1"."value", '$."family"') AS "family",
  COALESCE(CAST(JSON_EXTRACT("e1"."value", '$."given"[*]') AS JSON), CAST('[]' AS JSON)) AS "given",
  "r"."resource_type" || '/' || "r"."id" AS "_key"
FROM "resource" AS "r"
LEFT JOIN LATERAL UNNEST(JSON_EXTRACT("r"."content", '$."name"[*]')) WITH ORDINALITY AS "e1"("value", "idx")
  ON TRUE
WHERE
  "r"."resource_type" = 'Patient' AND NOT "r"."deleted"
