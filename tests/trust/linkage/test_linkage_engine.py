"""The linkage engine's parts: blocking keys, scoring, the model, EM."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from dic.errors import DefinitionError
from dic.trust.identity import Idat, normalize
from dic.trust.linkage import (
    DEFAULT_MODEL,
    LinkageModel,
    blocking_keys,
    link_batch,
    score_candidates,
    score_pairs,
)
from dic.trust.linkage.batch import _keys_sql
from dic.trust.linkage.blocking import load_blocking
from dic.trust.linkage.comparisons import Comparison, load_comparisons
from dic.trust.linkage.declarations import load_declarations
from dic.trust.linkage.training import Training, expectation_maximisation, load_training
from dic.trust.linkage.workspace import Workspace

ANNA = normalize(Idat(given_names="Anna Maria", family_name="Müller", birth_name="Schmidt", birth_date="1982-07-11",
                      sex="female", street="Lindenstraße 12a", postal_code="04109", city="Leipzig",
                      insurance_number="A123456789"))


def test_every_declaration_loads() -> None:
    assert [c.name for c in load_comparisons()][:3] == ["given_name", "family_name", "birth_date"]
    assert load_blocking().rules and load_training().sessions
    DEFAULT_MODEL.check(load_comparisons())


def test_a_bad_declaration_reports_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "comparisons.yaml"
    bad.write_text("- name: x\n  missing: [nope]\n  levels:\n    - {label: a, kind: jaro_winkler, field: given}\n")
    with pytest.raises(DefinitionError) as raised:
        load_declarations(bad, list[Comparison])
    messages = [p.message for p in raised.value.problems]
    assert any("needs min" in m for m in messages)
    assert any("kind else" in m for m in messages)
    assert any("'nope'" in m for m in messages)


def test_blocking_keys_of_a_record() -> None:
    keys = blocking_keys(ANNA)
    assert "dob:1982|07|11" in keys and "dob:1982|11|07" in keys  # the swapped twin
    assert "kvnr:A123456789" in keys
    assert f"name_year:{ANNA['family_phonetic']}|1982" in keys
    assert f"name_year:{ANNA['birth_name_phonetic']}|1982" in keys  # the birth name meets a family name
    swapped = normalize(Idat(given_names="Anna", family_name="Mueller", birth_date="1982-11-07"))
    assert set(blocking_keys(swapped)) & set(keys)
    assert set(blocking_keys(normalize(Idat(given_names="Anna", family_name="Müller")))) == {
        f"names:{ANNA['family_phonetic']}|{ANNA['given_phonetic']}",
        f"names:{ANNA['given_phonetic']}|{ANNA['family_phonetic']}"}


def test_sql_keys_equal_python_keys(febrl: tuple[pa.Table, set]) -> None:
    table, _ = febrl
    workspace = Workspace(table.slice(0, 2000))
    found = workspace.connection.execute(_keys_sql(load_blocking())).fetchall()
    sql_keys: dict[int, set[str]] = {}
    for idx, _dataset, key in found:
        sql_keys.setdefault(idx, set()).add(key)
    for idx, row in enumerate(table.slice(0, 2000).to_pylist()):
        assert sql_keys.get(idx, set()) == set(blocking_keys(row)), row["record_id"]


def test_incremental_scores_equal_batch_scores(synth: tuple[pa.Table, dict[str, str]]) -> None:
    table, _ = synth
    result = link_batch(table, review=1e-12, match=0.95)
    pairs = result.pairs.to_pylist()
    assert len(pairs) > 1000 and min(p["probability"] for p in pairs) < 0.01  # matches and non-matches
    rows = {row["record_id"]: row for row in table.to_pylist()}
    left = [rows[p["left_id"]] for p in pairs]
    right = [rows[p["right_id"]] for p in pairs]
    assert score_pairs(result.model, left, right) == [p["probability"] for p in pairs]
    first = pairs[0]
    assert score_candidates(result.model, rows[first["left_id"]], [rows[first["right_id"]]]) == [first["probability"]]


def test_scores_rank_sensibly() -> None:
    typo = {**ANNA, "family": "mueler", "given": "anna marja"}
    moved = {**ANNA, "street": "bahnhofstrasse", "house_number": "3", "postal_code": "10115", "city": "berlin"}
    stranger = normalize(Idat(given_names="Jonas", family_name="Becker", birth_date="1990-01-02", sex="male"))
    same, with_typo, after_move, other = score_candidates(DEFAULT_MODEL, ANNA, [ANNA, typo, moved, stranger])
    assert same > 0.999 and with_typo > 0.95 and after_move > 0.95
    assert other < 1e-6


def test_missing_values_are_neutral() -> None:
    """A field missing on either side adds nothing: the weight is that of the other comparisons."""
    other = {**ANNA, "given": "anne", "given_first": "anne"}
    full, missing_right, missing_left = score_pairs(
        DEFAULT_MODEL, [ANNA, ANNA, {**ANNA, "insurance_number": None}], [other, {**other, "insurance_number": None}, other])
    assert missing_right == missing_left
    kvnr = [c.name for c in load_comparisons()].index("insurance_number")
    exact = DEFAULT_MODEL.comparisons[kvnr].levels[0]
    logit = math.log2(full / (1 - full)) - math.log2(exact.m / exact.u)
    assert missing_right == pytest.approx(1 / (1 + 2**-logit), rel=1e-9)


def test_model_json_round_trip(synth: tuple[pa.Table, dict[str, str]]) -> None:
    for model in (DEFAULT_MODEL, link_batch(synth[0].slice(0, 800)).model):
        again = LinkageModel.from_json(model.to_json())
        assert again == model
        rng = np.random.default_rng(1)
        levels = [rng.integers(0, len(c.labels), size=500) for c in load_comparisons()]
        patterns = sum(level.astype(np.int64) << (4 * c) for c, level in enumerate(levels))
        assert np.array_equal(again.match_probabilities(patterns), model.match_probabilities(patterns))


def test_em_recovers_m_and_prior_from_simulated_patterns() -> None:
    """Pairs drawn from known m, u and prior under conditional independence; u given, EM finds m
    and the prior. (Fails if the E or M step is wrong: the start values are far off.)"""
    rng = np.random.default_rng(5)
    true_m = [np.array([1.0, 0.85, 0.10, 0.05]), np.array([1.0, 0.9, 0.1]), np.array([1.0, 0.7, 0.2, 0.1]),
              np.array([1.0, 0.95, 0.05])]
    u = [np.array([1.0, 0.02, 0.08, 0.90]), np.array([1.0, 0.05, 0.95]), np.array([1.0, 0.1, 0.3, 0.6]),
         np.array([1.0, 0.01, 0.99])]
    true_prior, n = 0.2, 400_000
    is_match = rng.random(n) < true_prior
    levels = np.zeros((n, len(u)), dtype=np.int8)
    for c in range(len(u)):
        for cls, probs in ((True, true_m[c]), (False, u[c])):
            rows = np.flatnonzero(is_match == cls)
            levels[rows, c] = rng.choice(np.arange(1, len(probs)), size=len(rows), p=probs[1:])
        levels[rng.random(n) < 0.05, c] = 0  # some nulls: they must not bias anything
    patterns, counts = np.unique(levels, axis=0, return_counts=True)
    start = [np.concatenate([[1.0], np.full(len(x) - 1, 1 / (len(x) - 1))]) for x in u]
    training = Training(**{**load_training().model_dump(), "max_iterations": 1000, "tolerance": 1e-9})
    m, prior = expectation_maximisation(patterns, counts.astype(float), start, u, 0.5, [True] * len(u), training)
    assert prior == pytest.approx(true_prior, abs=0.005)
    for found, expected in zip(m, true_m, strict=True):
        assert np.allclose(found[1:], expected[1:], atol=0.01), (found, expected)


def test_a_session_with_more_pairs_than_allowed_is_sampled_reproducibly(febrl) -> None:
    """Past `session_pairs` a session's pairs are a reservoir sample (the 1M-record path)."""
    from dic.trust.linkage.training import load_training, session_patterns
    from dic.trust.linkage.workspace import Workspace

    table, _ = febrl
    small = load_training().model_copy(update={"session_pairs": 500})
    workspace = Workspace(table, link_only=True)
    try:
        session = small.sessions[0]
        first = session_patterns(workspace, session, small, seed=3)
        again = session_patterns(workspace, session, small, seed=3)
    finally:
        workspace.close()
    levels, counts, n_pairs = first
    assert n_pairs > 500 and counts.sum() == 500  # all pairs counted, 500 of them kept
    assert (again[1] == counts).all() and (again[0] == levels).all()
