"""Training the linkage model: u from random pairs, m and the prior by EM (training.yaml).

EM runs on the counts of distinct comparison patterns (a few thousand, whatever the number of
pairs), so an iteration costs microseconds; the pairs are compared once in DuckDB.

The prior: a session's EM gives the share of matches among its pairs (lambda_s of N_s pairs).
Its block catches a true match only if the blocked fields are present on both records and agree,
with probability recall_s = product over its fixed comparisons of present**2 * m(exact), where
m(exact) comes from the other sessions. Matches in all = lambda_s * N_s / recall_s; the prior is
that over all pairs; the sessions' estimates are averaged in log space.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field
from sqlglot import exp

from dic.engines import Engine, render
from dic.errors import Problem
from dic.trust.linkage.comparisons import Comparison, load_comparisons, unpack_patterns
from dic.trust.linkage.declarations import load_declarations
from dic.trust.linkage.model import DEFAULT_MODEL, LinkageModel
from dic.trust.linkage.patterns import pattern_sql
from dic.trust.linkage.workspace import Workspace

TRAINING_PATH = Path(__file__).with_name("training.yaml")


class Session(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    block_on: list[str] = Field(min_length=1)
    fixed: list[str] = Field(min_length=1)


class Training(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    u_pairs: int = Field(gt=0)
    u_pairs_per_record: int = Field(gt=0)
    session_pairs: int = Field(gt=0)
    max_iterations: int = Field(gt=0)
    tolerance: float = Field(gt=0)
    floor: float = Field(gt=0, lt=0.01)
    sessions: list[Session] = Field(min_length=1)

    def problems(self) -> list[Problem]:
        comparisons = {c.name: c for c in load_comparisons()}
        found = [Problem(f"/sessions/{n}/fixed", f"unknown comparison {name!r}")
                 for n, s in enumerate(self.sessions) for name in s.fixed if name not in comparisons]
        estimated = {c for s in self.sessions for c in comparisons if c not in s.fixed}
        found += [Problem("/sessions", f"no session estimates m of {name!r}") for name in comparisons
                  if name not in estimated]
        found += [Problem(f"/sessions/{n}/fixed", f"{name!r}: its first level must be exact on a block_on field")
                  for n, s in enumerate(self.sessions) for name in s.fixed if name in comparisons
                  and (comparisons[name].levels[0].kind != "exact" or comparisons[name].levels[0].field not in s.block_on)]
        return found


@cache
def load_training(path: Path = TRAINING_PATH) -> Training:
    return load_declarations(path, Training)


# ---------------------------------------------------------------- EM on pattern counts


def expectation_maximisation(levels: np.ndarray, counts: np.ndarray, m: list[np.ndarray], u: list[np.ndarray],
                             prior: float, active: list[bool], training: Training) -> tuple[list[np.ndarray], float]:
    """m (of the active comparisons) and the prior of a two-class mixture, u held fixed.

    levels: (patterns, comparisons) level numbers; counts: pairs per pattern. Null levels and
    inactive comparisons contribute a factor 1 to both classes."""
    m = [x.copy() for x in m]
    log_u = sum(np.log(u[c][levels[:, c]]) for c in range(len(u)) if active[c])
    present = [levels[:, c] > 0 for c in range(len(m))]
    for _ in range(training.max_iterations):
        log_m = sum(np.log(m[c][levels[:, c]]) for c in range(len(m)) if active[c])
        odds = np.exp(np.clip(np.log(prior) - np.log1p(-prior) + log_m - log_u, -700, 700))
        weight = counts * (odds / (1.0 + odds))  # expected matches per pattern
        moved = 0.0
        for c in range(len(m)):
            if not active[c]:
                continue
            found = np.bincount(levels[present[c], c], weights=weight[present[c]], minlength=len(m[c]))[1:]
            if found.sum() <= 0:
                continue
            estimate = np.maximum(found / found.sum(), training.floor)
            estimate = np.concatenate([[1.0], estimate / estimate.sum()])
            moved = max(moved, float(np.abs(estimate - m[c]).max()))
            m[c] = estimate
        new_prior = float(np.clip(weight.sum() / counts.sum(), 1e-12, 1 - 1e-9))
        moved = max(moved, abs(new_prior - prior))
        prior = new_prior
        if moved < training.tolerance:
            break
    return m, prior


def _level_shares(levels: np.ndarray, counts: np.ndarray, comparisons: tuple[Comparison, ...],
                  floor: float, otherwise: list[np.ndarray]) -> list[np.ndarray]:
    """Per comparison, each non-null level's share of the non-null pairs (index 0: 1.0); where
    a comparison is null on every pair (a field the data lacks), `otherwise`."""
    shares = []
    for c, comparison in enumerate(comparisons):
        n_levels = len(comparison.labels)
        found = np.bincount(levels[:, c], weights=counts, minlength=n_levels)[1:]
        if found.sum() == 0:
            shares.append(otherwise[c])
            continue
        share = np.maximum(found / max(found.sum(), 1.0), floor)
        shares.append(np.concatenate([[1.0], share / share.sum()]))
    return shares


def _pattern_counts(connection: duckdb.DuckDBPyConnection, pairs: str) -> tuple[np.ndarray, np.ndarray]:
    found = connection.execute(pattern_sql("records", "records", pairs)).fetchnumpy()["pattern"]
    return np.unique(found, return_counts=True)


# ---------------------------------------------------------------- u and the sessions


def random_pair_shares(workspace: Workspace, training: Training, seed: int,
                       start: LinkageModel) -> list[np.ndarray]:
    """Each level's share among uniformly random pairs (across datasets when linking only)."""
    rng = np.random.default_rng(seed)
    n = workspace.n_records
    size = int(min(training.u_pairs, training.u_pairs_per_record * n, workspace.total_pairs))
    left = rng.integers(0, n, size=size * 2)
    right = rng.integers(0, n, size=size * 2)
    keep = left != right
    if workspace.link_only:
        keep &= workspace.datasets[left] != workspace.datasets[right]
    left, right = left[keep][:size], right[keep][:size]
    workspace.connection.register("u_pairs", pa.table({"l": left.astype(np.int32), "r": right.astype(np.int32)}))
    patterns, counts = _pattern_counts(workspace.connection, "u_pairs")
    workspace.connection.unregister("u_pairs")
    comparisons = load_comparisons()
    return _level_shares(unpack_patterns(patterns, len(comparisons)), counts.astype(float), comparisons,
                         training.floor, start.arrays("u"))


def without_matches(shares: list[np.ndarray], m: list[np.ndarray], prior: float, floor: float) -> list[np.ndarray]:
    """u from the random-pair shares: random pairs include the prior's share of matches, which
    would inflate u of the agreeing levels (on FEBRL4 a random pair matches with p = 2e-4, as
    often as a random pair agrees on the whole address): share = prior * m + (1 - prior) * u."""
    u = []
    for share, m_c in zip(shares, m, strict=True):
        cleaned = np.maximum((share - prior * m_c) / (1 - prior), floor)
        cleaned[0] = 1.0
        cleaned[1:] /= cleaned[1:].sum()
        u.append(cleaned)
    return u


def _session_pairs_sql(session: Session, link_only: bool) -> str:
    """Pairs agreeing exactly on the session's fields (each pair once; across datasets if linking)."""
    def side(field: str, alias: str) -> exp.Column:
        return exp.column(field, table=alias, quoted=True)

    conditions = [exp.EQ(this=side(f, "a"), expression=side(f, "b")) for f in session.block_on]
    conditions.append(exp.LT(this=side("idx", "a"), expression=side("idx", "b")))
    if link_only:
        conditions.append(exp.NEQ(this=side("dataset", "a"), expression=side("dataset", "b")))
    query = (exp.select(side("idx", "a").as_("l"), side("idx", "b").as_("r"))
             .from_(exp.to_table("records").as_("a"))
             .join(exp.to_table("records").as_("b"), on=exp.and_(*conditions)))
    return render(query, Engine.duckdb)


def session_patterns(workspace: Workspace, session: Session, training: Training,
                     seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Levels and counts of the distinct patterns among the session's pairs, and the number of
    pairs (before any sampling)."""
    con = workspace.connection
    con.execute("CREATE OR REPLACE TEMP TABLE session_pairs AS " + _session_pairs_sql(session, workspace.link_only))
    n_pairs = con.execute("SELECT count(*) FROM session_pairs").fetchone()[0]
    if n_pairs > training.session_pairs:
        # DuckDB takes no parameters in a SAMPLE clause: both are ints, formatted in
        con.execute("CREATE TEMP TABLE session_sample AS SELECT * FROM session_pairs "
                    f"USING SAMPLE reservoir({int(training.session_pairs)} ROWS) REPEATABLE ({int(seed)})")
        con.execute("DROP TABLE session_pairs")
        con.execute("ALTER TABLE session_sample RENAME TO session_pairs")
    patterns, counts = _pattern_counts(con, "session_pairs")
    con.execute("DROP TABLE session_pairs")
    return unpack_patterns(patterns, len(load_comparisons())), counts.astype(float), int(n_pairs)


def _prior(workspace: Workspace, found: list[tuple[Session, float, int]], m: list[np.ndarray],
           otherwise: float) -> float:
    comparisons = load_comparisons()
    index = {c.name: i for i, c in enumerate(comparisons)}
    log_priors = []
    for session, share, n_pairs in found:
        if not n_pairs or share <= 0:
            continue
        recall = 1.0
        for name in session.fixed:
            present = workspace.present_share(comparisons[index[name]].missing)
            recall *= present**2 * m[index[name]][1]
        log_priors.append(np.log(share * n_pairs / recall / workspace.total_pairs))
    return min(float(np.exp(np.mean(log_priors))), 0.5) if log_priors else otherwise


def fit_model(workspace: Workspace, start: LinkageModel = DEFAULT_MODEL, seed: int = 0,
              training: Training | None = None) -> LinkageModel:
    """Train on the records loaded into `workspace`.

    Two rounds: EM with u from the raw random-pair shares, then u cleaned of the matches that
    round found among random pairs (`without_matches`) and EM again."""
    training = training or load_training()
    comparisons = load_comparisons()
    start.check(comparisons)
    shares = random_pair_shares(workspace, training, seed, start)
    patterns = [session_patterns(workspace, session, training, seed) for session in training.sessions]
    u, m, prior = shares, start.arrays("m"), start.prior
    for _ in range(2):
        estimates: dict[str, list[np.ndarray]] = {c.name: [] for c in comparisons}
        found = []
        for session, (levels, counts, n_pairs) in zip(training.sessions, patterns, strict=True):
            if not n_pairs:
                continue
            active = [c.name not in session.fixed for c in comparisons]
            m_s, share = expectation_maximisation(levels, counts, start.arrays("m"), u, 0.1, active, training)
            found.append((session, share, n_pairs))
            for c, comparison in enumerate(comparisons):
                if active[c]:
                    estimates[comparison.name].append(m_s[c])
        m = [np.mean(estimates[c.name], axis=0) if estimates[c.name] else m[i] for i, c in enumerate(comparisons)]
        prior = _prior(workspace, found, m, start.prior)
        u = without_matches(shares, m, prior, training.floor)
    return LinkageModel.from_arrays(prior, m, u, comparisons)
