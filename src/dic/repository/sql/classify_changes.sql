-- The staged batch against the current versions: which resources change, and how.
-- Within a batch the last occurrence of a resource wins. A resource whose content hash is
-- unchanged, or a DELETE of a resource that is absent, is no change.
-- Written in DuckDB dialect; rendered for every engine by dic.engines.render.
WITH ranked AS (
  SELECT s.*, ROW_NUMBER() OVER (PARTITION BY s.resource_type, s.id ORDER BY s.seq DESC) AS rank_in_batch
  FROM stage AS s
),
final AS (
  SELECT * FROM ranked WHERE rank_in_batch = 1
)
SELECT
  f.resource_type,
  f.id,
  COALESCE(c.version_id, 0) + 1 AS version_id,
  f.last_updated,
  f.content_hash,
  f.source,
  CAST(:batch_id AS BIGINT) AS batch_id,
  f.position,
  CAST(:loaded_at AS TIMESTAMP) AS loaded_at,
  f.deleted,
  f.content,
  CASE
    WHEN f.deleted THEN 'deleted'
    WHEN c.id IS NULL OR c.deleted THEN 'loaded'
    ELSE 'updated'
  END AS change
FROM final AS f
LEFT JOIN resource AS c
  ON c.resource_type = f.resource_type AND c.id = f.id
WHERE
  CASE
    WHEN f.deleted THEN c.id IS NOT NULL AND NOT c.deleted
    ELSE c.id IS NULL OR c.deleted OR c.content_hash <> f.content_hash
  END
