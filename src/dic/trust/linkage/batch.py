"""Batch linkage for first loads: all records at once -> persons (clusters) and scored pairs.

    link_batch(records) -> BatchLinkage(clusters, pairs, model, candidate_pairs, seconds)

Steps, all in one in-memory DuckDB (it spills to disk past its memory limit, so the peak stays
bounded at millions of records): the blocking keys of every record (the SQL twin of
`blocking_keys`), keys shared by 2..max_block_size records, the distinct pairs sharing a key,
their comparison patterns (the same SQL as the incremental scoring), the probability per distinct
pattern, the pairs at or above `review`. Persons are the connected components of the pairs at or
above `match` (scipy.sparse.csgraph).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sqlglot import exp

from dic.engines import Engine, render
from dic.errors import InputError
from dic.trust.linkage.blocking import Blocking, key_expressions, load_blocking
from dic.trust.linkage.model import DEFAULT_MODEL, LinkageModel
from dic.trust.linkage.patterns import pattern_sql
from dic.trust.linkage.training import fit_model
from dic.trust.linkage.workspace import Workspace


@dataclass(frozen=True)
class BatchLinkage:
    clusters: dict[str, int]  # record_id -> cluster (person) number, 0...
    pairs: pa.Table  # left_id, right_id, probability: every scored pair at or above `review`
    model: LinkageModel
    candidate_pairs: int
    seconds: float
    match: float
    review: float

    @property
    def matches(self) -> pa.Table:
        return self.pairs.filter(pc.greater_equal(self.pairs["probability"], self.match))

    @property
    def possible_matches(self) -> pa.Table:
        """Pairs for clerical review: review <= probability < match."""
        return self.pairs.filter(pc.less(self.pairs["probability"], self.match))


@cache
def _keys_sql(blocking: Blocking) -> str:
    """idx, dataset, key for every key of every record (UNION ALL of one SELECT per rule variant)."""
    selects = [exp.select("idx", "dataset", key.as_("key")).from_(exp.to_table("records").as_("records"))
               .where(present) for present, key in key_expressions(blocking)]
    query = selects[0]
    for select in selects[1:]:
        query = exp.union(query, select, distinct=False)
    return render(query, Engine.duckdb)


_BLOCKED_SQL = """
CREATE TEMP TABLE blocked AS
SELECT idx, dataset, key FROM (
  SELECT idx, dataset, key, count(*) OVER (PARTITION BY key) AS size FROM (SELECT DISTINCT * FROM keys)
) WHERE size BETWEEN 2 AND $max_block_size
"""
# Each pair once (l < r); when linking only, across datasets only.
_PAIRS_SQL = """
CREATE TEMP TABLE pairs AS
SELECT DISTINCT a.idx AS l, b.idx AS r FROM blocked a JOIN blocked b
  ON a.key = b.key AND a.idx < b.idx AND (NOT $link_only OR a.dataset <> b.dataset)
"""


def candidate_pairs(workspace: Workspace, blocking: Blocking | None = None) -> int:
    """Create the temp table `pairs` (l, r) of candidate pairs; their number."""
    blocking = blocking or load_blocking()
    con = workspace.connection
    con.execute("CREATE TEMP TABLE keys AS " + _keys_sql(blocking))
    con.execute(_BLOCKED_SQL, {"max_block_size": blocking.max_block_size})
    con.execute("DROP TABLE keys")
    con.execute(_PAIRS_SQL, {"link_only": workspace.link_only})
    con.execute("DROP TABLE blocked")
    return con.execute("SELECT count(*) FROM pairs").fetchone()[0]


def _scored_pairs(workspace: Workspace, model: LinkageModel, review: float) -> tuple[np.ndarray, ...]:
    """(l, r, probability) of the candidate pairs at or above `review`."""
    con = workspace.connection
    con.execute("CREATE TEMP TABLE scored AS " + pattern_sql("records", "records", "pairs"))
    con.execute("DROP TABLE pairs")
    patterns = con.execute("SELECT DISTINCT pattern FROM scored").fetchnumpy()["pattern"]
    probability = model.match_probabilities(patterns)
    keep = probability >= review
    con.register("kept_patterns", pa.table({"pattern": patterns[keep], "probability": probability[keep]}))
    found = con.execute("SELECT s.l, s.r, k.probability FROM scored s JOIN kept_patterns k USING (pattern) "
                        "ORDER BY s.l, s.r").fetchnumpy()
    con.unregister("kept_patterns")
    con.execute("DROP TABLE scored")
    return found["l"].astype(np.int64), found["r"].astype(np.int64), found["probability"]


def link_batch(records: pa.Table, model: LinkageModel | None = None, *, match: float = 0.95, review: float = 0.5,
               train_model: bool = True, link_only: bool = False, seed: int = 0,
               memory_limit: str | None = None) -> BatchLinkage:
    """Link all `records` (record_id, the normalized fields, and `dataset` when `link_only`).

    With `train_model` the model is trained on these records, starting from `model` (default:
    DEFAULT_MODEL); otherwise `model` is used as it is."""
    if not 0 < review <= match < 1:
        raise InputError(f"thresholds must satisfy 0 < review <= match < 1, got review={review}, match={match}")
    started = time.perf_counter()
    workspace = Workspace(records, link_only=link_only, memory_limit=memory_limit)
    try:
        model = model or DEFAULT_MODEL
        if train_model:
            model = fit_model(workspace, model, seed)
        n_candidates = candidate_pairs(workspace)
        left, right, probability = _scored_pairs(workspace, model, review)
    finally:
        workspace.close()
    n = workspace.n_records
    linked = probability >= match
    graph = coo_matrix((np.ones(int(linked.sum()), dtype=np.int8), (left[linked], right[linked])), shape=(n, n))
    _, cluster = connected_components(graph, directed=False)
    ids = workspace.record_ids
    pairs = pa.table({"left_id": ids.take(pa.array(left)), "right_id": ids.take(pa.array(right)),
                      "probability": pa.array(probability, pa.float64())})
    clusters = dict(zip(ids.to_pylist(), cluster.tolist(), strict=True))
    return BatchLinkage(clusters, pairs, model, int(n_candidates), time.perf_counter() - started, match, review)
