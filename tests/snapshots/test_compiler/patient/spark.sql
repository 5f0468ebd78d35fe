SELECT
  GET_JSON_OBJECT(`r`.`content`, '$.id') AS `id`,
  CONCAT(`r`.`resource_type`, '/', `r`.`id`) AS `patient_key`,
  GET_JSON_OBJECT(`r`.`content`, '$.gender') AS `gender`,
  TRY_ELEMENT_AT(
    FILTER(
      TRANSFORM(
        FILTER(
          FLATTEN(
            TRANSFORM(
              ARRAY(`r`.`content`),
              `v` -> COALESCE(FROM_JSON(GET_JSON_OBJECT(`v`, '$.name'), 'array<string>'), ARRAY())
            )
          ),
          `w1` -> GET_JSON_OBJECT(`w1`, '$.use') = 'official'
        ),
        `v` -> GET_JSON_OBJECT(`v`, '$.family')
      ),
      `x` -> NOT `x` IS NULL
    ),
    0 + 1
  ) AS `family`,
  CAST(GET_JSON_OBJECT(`r`.`content`, '$.active') AS BOOLEAN) AS `active`,
  CONCAT(`r`.`resource_type`, '/', `r`.`id`) AS `_key`
FROM (
  SELECT
    *,
    NULL AS `_texts`
  FROM `resource`
) AS `r`
WHERE
  `r`.`resource_type` = 'Patient'
  AND NOT `r`.`deleted`
  AND (
    NOT GET_JSON_OBJECT(`r`.`content`, '$.birthDate') IS NULL
  )
