SELECT
  GET_JSON_OBJECT(`r`.`content`, '$.id') AS `id`,
  COALESCE(`e1`.`idx` - 1, 0) AS `name_index`,
  GET_JSON_OBJECT(`e1`.`value`, '$.family') AS `family`,
  TO_JSON(
    FLATTEN(
      TRANSFORM(
        ARRAY(`e1`.`value`),
        `v` -> COALESCE(FROM_JSON(GET_JSON_OBJECT(`v`, '$.given'), 'array<string>'), ARRAY())
      )
    )
  ) AS `given`,
  CONCAT(`r`.`resource_type`, '/', `r`.`id`) AS `_key`
FROM `resource` AS `r`
LEFT JOIN LATERAL (SELECT
  `col` AS `value`,
  `pos` + 1 AS `idx`
FROM POSEXPLODE(
  FLATTEN(
    TRANSFORM(
      ARRAY(`r`.`content`),
      `v` -> COALESCE(FROM_JSON(GET_JSON_OBJECT(`v`, '$.name'), 'array<string>'), ARRAY())
    )
  )
)) AS `e1`
  ON TRUE
WHERE
  `r`.`resource_type` = 'Patient' AND NOT `r`.`deleted`
