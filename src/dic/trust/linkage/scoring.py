"""Scoring a few pairs at once: the incremental case (one incoming record against the candidates
the trust center found by its blocking keys).

The pairs go through the same comparison SQL as the batch run (patterns.py), on small in-memory
tables, so a pair scores the same either way (tested). The cost of a call is DuckDB's fixed cost
per query (scans and joins of the registered tables), almost independent of the number of pairs:
measured on this 2-core machine while other jobs kept it at load ~6, 100 ms for 1 pair, 100 ms
for 10 and 118 ms for 1,000. So score a registration chunk's pairs in one call, not one by one.

Why not Splink: Splink 5.0 dropped `find_matches_to_new_records`; its incremental API is
`splink.internals.realtime.compare_records` (an internal module), which in the same run took
82 ms for one record against ten candidates where ours took 66 ms (bench/linkage.py --latency),
needs a trained settings JSON per call, and would make its dependency tree (pandas, altair,
jinja2, igraph, sqlglot pinned by it) a runtime dependency of the trust center. Its batch quality
and speed are compared with ours in bench/linkage.py.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa

from dic.errors import InputError
from dic.trust.linkage.model import LinkageModel
from dic.trust.linkage.patterns import connect, pattern_sql, records_table

_local = threading.local()  # one DuckDB cursor per thread: a cursor is not to be shared by threads
_root: list[duckdb.DuckDBPyConnection] = []
_root_lock = threading.Lock()


def _cursor() -> duckdb.DuckDBPyConnection:
    cursor = getattr(_local, "cursor", None)
    if cursor is None:
        with _root_lock:
            if not _root:
                _root.append(connect(threads=1))
            cursor = _local.cursor = _root[0].cursor()
    return cursor


def pair_patterns(left: Sequence[dict], right: Sequence[dict]) -> np.ndarray:
    """The packed comparison pattern of each (left[i], right[i])."""
    if len(left) != len(right):
        raise InputError(f"score_pairs: {len(left)} left records but {len(right)} right records")
    if not left:
        return np.zeros(0, dtype=np.int64)
    cursor = _cursor()
    positions = pa.array(range(len(left)), pa.int32())
    cursor.register("left_records", records_table(left))
    cursor.register("right_records", records_table(right))
    cursor.register("pairs", pa.table({"l": positions, "r": positions}))
    try:
        found = cursor.execute(pattern_sql("left_records", "right_records", "pairs")).fetchnumpy()
    finally:
        for name in ("left_records", "right_records", "pairs"):
            cursor.unregister(name)
    patterns = np.empty(len(left), dtype=np.int64)
    patterns[found["l"]] = found["pattern"]
    return patterns


def score_pairs(model: LinkageModel, left: Sequence[dict], right: Sequence[dict]) -> list[float]:
    """Match probability of each pair (left[i], right[i]) of normalized records."""
    return model.match_probabilities(pair_patterns(left, right)).tolist()


def score_candidates(model: LinkageModel, record: dict, candidates: Sequence[dict]) -> list[float]:
    """Match probability of `record` with each candidate, in the candidates' order."""
    return score_pairs(model, [record] * len(candidates), candidates)
