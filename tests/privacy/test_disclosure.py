"""Disclosure control: the threshold, deterministic noise, rounding, cell suppression, the rules
file and the site secret. Suppression examples are worked out by hand in the docstrings."""

from __future__ import annotations

import itertools
import os
import random
import stat
from collections import Counter, defaultdict
from dataclasses import fields
from functools import cache
from pathlib import Path

import pytest

from dic.errors import ConfigError, DefinitionError
from dic.privacy import (
    SUPPRESSED,
    DisclosureRules,
    ReleasedCount,
    age_band,
    age_band_labels,
    fingerprint,
    load_rules,
    release_breakdown,
    release_count,
    site_rules,
    site_secret,
)

SECRET = bytes(range(32))
RULES = load_rules()


def rules_with(**changes: object) -> DisclosureRules:
    """The shipped rules with some values changed (noise.max=0 shows values exactly)."""
    raw = load_rules().model_dump()
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        target = raw
        for part in path:
            target = target[part]
        target[last] = value
    return DisclosureRules.model_validate(raw)


@cache
def fps(n: int) -> list[bytes]:
    return [fingerprint([f"Patient/{i}", "Patient/x"]) for i in range(n)]


# ---------------------------------------------------------------- the shipped rules
def test_the_shipped_rules_load_with_their_documented_values() -> None:
    rules = load_rules()
    assert rules.threshold == 5
    assert (rules.noise.max, rules.noise.round_to) == (3, 1)
    assert rules.breakdowns.min_cell == 5
    assert rules.breakdowns.age_bands == [0, 18, 30, 40, 50, 60, 70, 80]
    assert rules.breakdowns.complementary_suppression is True


# ---------------------------------------------------------------- counts: threshold
@pytest.mark.parametrize("raw", [0, 1, 3, 4])
def test_counts_below_the_threshold_are_released_as_less_than(raw: int) -> None:
    for fp in fps(50):
        assert release_count(raw, fp, RULES, SECRET) == ReleasedCount("< 5", None, 0, 4)


@pytest.mark.parametrize("raw", [5, 6, 7, 8, 9, 1000, 123_456])
def test_counts_at_or_above_the_threshold_are_numbers_near_the_count(raw: int) -> None:
    for fp in fps(300):
        released = release_count(raw, fp, RULES, SECRET)
        assert released.value is not None and released.text == str(released.value)
        assert released.value >= 5  # noise never pushes a releasable count under the threshold
        assert max(raw - 3, 5) <= released.value <= raw + 3
        assert released.lower <= raw <= released.upper


def test_at_the_threshold_noise_below_it_is_clamped_to_the_threshold() -> None:
    """raw 5 with noise -3..+3 gives 2..8; everything under 5 shows as 5: 5 stands for 5..8."""
    values = Counter(release_count(5, fp, RULES, SECRET).value for fp in fps(2000))
    assert set(values) == {5, 6, 7, 8}
    assert values[5] > values[6]  # noise -3..0 all land on 5
    five = next(release_count(5, fp, RULES, SECRET) for fp in fps(2000)
                if release_count(5, fp, RULES, SECRET).value == 5)
    assert (five.lower, five.upper) == (5, 8)


def test_a_negative_count_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="negative"):
        release_count(-1, b"x", RULES, SECRET)


def test_the_result_carries_no_raw_count() -> None:
    assert [f.name for f in fields(ReleasedCount)] == ["text", "value", "lower", "upper"]


# ---------------------------------------------------------------- counts: noise
def test_the_same_fingerprint_gives_the_same_answer_so_averaging_repeats_gains_nothing() -> None:
    members = [f"Patient/{i}" for i in range(137)]
    answers = {release_count(137, fingerprint(members), RULES, SECRET) for _ in range(200)}
    # a rephrased query selecting the same patients (other order, duplicates) has the same fingerprint
    answers |= {release_count(137, fingerprint([*reversed(members), members[0]]), RULES, SECRET)}
    assert len(answers) == 1


def test_noise_over_2000_fingerprints_is_bounded_and_roughly_uniform_with_mean_zero() -> None:
    noise = [release_count(1000, fp, RULES, SECRET).value - 1000 for fp in fps(2000)]
    counts = Counter(noise)
    assert set(counts) == set(range(-3, 4))
    # 2000/7 = 286 expected per value, binomial sd 15.6: ±80 is more than 5 sd
    assert all(206 <= c <= 366 for c in counts.values()), counts
    assert abs(sum(noise) / len(noise)) < 0.2  # sd of the mean: 2/sqrt(2000) = 0.045


def test_noise_depends_on_the_site_secret() -> None:
    other = bytes(reversed(range(32)))
    same = sum(release_count(1000, fp, RULES, SECRET) == release_count(1000, fp, RULES, other)
               for fp in fps(700))
    assert same < 200  # independent draws agree 1 time in 7 (100 of 700)


def test_without_noise_the_count_is_shown_as_it_is() -> None:
    rules = rules_with(noise__max=0)
    assert release_count(5, b"a", rules, SECRET) == ReleasedCount("5", 5, 5, 5)
    assert release_count(77, b"a", rules, SECRET) == ReleasedCount("77", 77, 77, 77)


# ---------------------------------------------------------------- counts: rounding
@pytest.mark.parametrize(("raw", "shown", "lower", "upper"), [
    (5, 10, 5, 14),    # 5 rounds half up to 10, the smallest multiple of 10 at or above 5
    (14, 10, 5, 14),   # 14 → 10; 10 is the lowest value, so it stands for everything from 5
    (15, 20, 15, 24),  # half up
    (124, 120, 115, 124),
    (125, 130, 125, 134),
])
def test_round_to_ten_without_noise(raw: int, shown: int, lower: int, upper: int) -> None:
    released = release_count(raw, b"q", rules_with(noise__max=0, noise__round_to=10), SECRET)
    assert released == ReleasedCount(str(shown), shown, lower, upper)


@pytest.mark.parametrize(("threshold", "max_noise", "round_to"),
                         [(5, 3, 1), (5, 3, 10), (5, 0, 5), (11, 3, 10), (5, 2, 3), (3, 4, 1)])
def test_bounds_are_exactly_the_raw_counts_a_value_can_come_from(threshold: int, max_noise: int,
                                                                 round_to: int) -> None:
    """Over every raw count 0..80 and 200 fingerprints (all noise values occur), the raw counts seen
    behind each released value span exactly [lower, upper]."""
    rules = rules_with(threshold=threshold, breakdowns__min_cell=max(threshold, 5), noise__max=max_noise,
                       noise__round_to=round_to)
    behind: dict[int, set[int]] = defaultdict(set)
    bounds: dict[int, tuple[int, int]] = {}
    for raw in range(81):
        for fp in fps(200):
            released = release_count(raw, fp, rules, SECRET)
            assert released.lower <= raw <= released.upper
            if released.value is None:
                assert raw < threshold
                continue
            assert released.value >= threshold and released.value % round_to == 0
            behind[released.value].add(raw)
            bounds[released.value] = (released.lower, released.upper)
    for value, raws in behind.items():
        if bounds[value][1] <= 80:  # values whose whole range was tried
            assert (min(raws), max(raws)) == bounds[value], value


# ---------------------------------------------------------------- breakdowns: one dimension
def test_one_dimension_a_lone_small_cell_takes_the_next_smallest_with_it() -> None:
    """b=3 is small; alone, total − a − c − d would give it away, so the next smallest (c=7) goes too."""
    cells = {("a",): 20, ("b",): 3, ("c",): 7, ("d",): 12}
    released = release_breakdown(cells, b"t", rules_with(noise__max=0), SECRET)
    assert [(c.labels, c.text, c.value) for c in released] == [
        (("a",), "20", 20), (("b",), SUPPRESSED, None), (("c",), SUPPRESSED, None), (("d",), "12", 12)]
    assert all((c.lower, c.upper) == (0, None) for c in released if c.suppressed)


def test_cells_and_counts_as_json() -> None:
    cell = release_breakdown({("f", "40-49"): 3}, b"t", RULES, SECRET)[0]
    assert cell.as_dict() == {"labels": ["f", "40-49"], "text": SUPPRESSED, "value": None, "lower": 0,
                              "upper": None}
    count = release_count(2, b"t", RULES, SECRET)
    assert count.as_dict() == {"text": "< 5", "value": None, "lower": 0, "upper": 4}


def test_one_dimension_two_small_cells_need_no_complement() -> None:
    cells = {("a",): 20, ("b",): 3, ("c",): 0, ("d",): 12}
    released = release_breakdown(cells, b"t", rules_with(noise__max=0), SECRET)
    assert [c.text for c in released] == ["20", SUPPRESSED, SUPPRESSED, "12"]


def test_one_dimension_without_complementary_suppression_small_cells_say_so() -> None:
    cells = {("a",): 20, ("b",): 3, ("c",): 7}
    rules = rules_with(noise__max=0, breakdowns__complementary_suppression=False)
    released = release_breakdown(cells, b"t", rules, SECRET)
    assert [(c.text, c.value, c.lower, c.upper) for c in released] == [
        ("20", 20, 20, 20), ("< 5", None, 0, 4), ("7", 7, 7, 7)]


def test_a_single_cell_table_and_an_empty_one() -> None:
    rules = rules_with(noise__max=0)
    assert [c.text for c in release_breakdown({("x",): 3}, b"t", rules, SECRET)] == [SUPPRESSED]
    assert [c.text for c in release_breakdown({("x",): 9}, b"t", rules, SECRET)] == ["9"]
    assert release_breakdown({}, b"t", rules, SECRET) == []


# ---------------------------------------------------------------- breakdowns: two dimensions
def test_two_dimensions_worked_by_hand() -> None:
    """        A    B    C
        f     12    3   20
        m     15    9    6

    (f,B)=3 is small. Column B: it is alone → (m,B) goes too. Row f: alone → the smallest other,
    (f,A)=12. Row m: (m,B) alone; (m,A) mends column A as well (where (f,A) is alone), so it is
    preferred to the smaller (m,C)=6. Now every row and column has 0 or 2 suppressed cells: the
    rectangle A/B × f/m. Column C is released."""
    cells = {("f", "A"): 12, ("f", "B"): 3, ("f", "C"): 20, ("m", "A"): 15, ("m", "B"): 9, ("m", "C"): 6}
    released = {c.labels: c.text for c in release_breakdown(cells, b"t", rules_with(noise__max=0), SECRET)}
    assert released == {("f", "A"): SUPPRESSED, ("f", "B"): SUPPRESSED, ("f", "C"): "20",
                        ("m", "A"): SUPPRESSED, ("m", "B"): SUPPRESSED, ("m", "C"): "6"}


def test_two_dimensions_an_absent_combination_is_a_zero_cell() -> None:
    """        A    B    C
        f     10   30    6
        m     11    8    –   (absent: 0)

    (m,C)=0 is small. Column C: alone → (f,C). Row f: (f,C) alone; neither (f,A) nor (f,B) mends
    another line, so the smaller (f,A)=10. Row m: (m,C) alone; (m,A) mends column A (where (f,A) is
    alone), so it wins over the smaller (m,B)=8. The rectangle A/C × f/m; column B is released."""
    cells = {("f", "A"): 10, ("f", "B"): 30, ("f", "C"): 6, ("m", "A"): 11, ("m", "B"): 8}
    released = {c.labels: c.text for c in release_breakdown(cells, b"t", rules_with(noise__max=0), SECRET)}
    assert released == {("f", "A"): SUPPRESSED, ("f", "B"): "30", ("f", "C"): SUPPRESSED,
                        ("m", "A"): SUPPRESSED, ("m", "B"): "8", ("m", "C"): SUPPRESSED}


def test_no_line_is_ever_left_with_one_suppressed_cell() -> None:
    """Random 1-, 2- and 3-dimensional tables: afterwards no row, column (or pillar) of two or more
    cells has exactly one suppressed cell, and every small cell is suppressed."""
    rng = random.Random(11)
    rules = rules_with(noise__max=0)
    for _ in range(300):
        shape = [rng.randint(1, 5) for _ in range(rng.randint(1, 3))]
        labels = [[f"{d}{i}" for i in range(n)] for d, n in enumerate(shape)]
        cells = {key: rng.choice([0, 1, 2, 4, 5, 6, 9, 15, 40]) for key in itertools.product(*labels)}
        hidden = {c.labels for c in release_breakdown(cells, b"t", rules, SECRET) if c.suppressed}
        assert {k for k, v in cells.items() if v < 5} <= hidden
        for d in range(len(shape)):
            lines = defaultdict(list)
            for key in cells:
                lines[key[:d] + key[d + 1:]].append(key)
            for line in lines.values():
                if len(line) > 1:
                    assert sum(k in hidden for k in line) != 1, (cells, hidden)


def test_released_cells_are_perturbed_per_cell_and_deterministically() -> None:
    cells = {(f"c{i}",): 1000 for i in range(200)}
    first = release_breakdown(cells, b"table", RULES, SECRET)
    assert first == release_breakdown(cells, b"table", RULES, SECRET)
    noise = Counter(c.value - 1000 for c in first)
    assert set(noise) == set(range(-3, 4))  # each cell draws its own noise
    assert first != release_breakdown(cells, b"other table", RULES, SECRET)


def test_cells_seeded_by_their_members_match_the_count_of_those_members() -> None:
    """With cell fingerprints a cell is the same number wherever the same patients are counted."""
    members = {("f",): [f"Patient/f{i}" for i in range(40)], ("m",): [f"Patient/m{i}" for i in range(33)]}
    cells = {key: len(m) for key, m in members.items()}
    cell_fps = {key: fingerprint(m) for key, m in members.items()}
    released = release_breakdown(cells, b"t", RULES, SECRET, cell_fingerprints=cell_fps)
    for cell in released:
        count = release_count(cells[cell.labels], cell_fps[cell.labels], RULES, SECRET)
        assert (cell.text, cell.value, cell.lower, cell.upper) == (count.text, count.value, count.lower,
                                                                 count.upper)
    with pytest.raises(ValueError, match="lacks"):
        release_breakdown(cells, b"t", RULES, SECRET, cell_fingerprints={("f",): b"x"})


def test_breakdown_input_errors() -> None:
    with pytest.raises(ValueError, match="negative"):
        release_breakdown({("a",): -1}, b"t", RULES, SECRET)
    with pytest.raises(ValueError, match="different lengths"):
        release_breakdown({("a",): 1, ("a", "b"): 2}, b"t", RULES, SECRET)


# ---------------------------------------------------------------- age bands
@pytest.mark.parametrize(("age", "band"), [(0, "0-17"), (17, "0-17"), (18, "18-29"), (29, "18-29"),
                                           (30, "30-39"), (79, "70-79"), (80, "80+"), (117, "80+")])
def test_age_bands_of_the_shipped_rules(age: int, band: str) -> None:
    assert age_band(age, load_rules()) == band


def test_age_band_labels_and_custom_bands() -> None:
    assert age_band_labels(load_rules()) == ["0-17", "18-29", "30-39", "40-49", "50-59", "60-69", "70-79",
                                             "80+"]
    rules = rules_with(breakdowns__age_bands=[0, 65])
    assert [age_band(a, rules) for a in (0, 64, 65)] == ["0-64", "0-64", "65+"]
    with pytest.raises(ValueError, match="negative"):
        age_band(-1, load_rules())


# ---------------------------------------------------------------- a site's rules file
def test_a_site_file_overrides_only_the_keys_it_names(tmp_path: Path) -> None:
    (tmp_path / "disclosure.yaml").write_text("threshold: 11\nbreakdowns:\n  min_cell: 11\n")
    rules = site_rules(tmp_path)
    assert (rules.threshold, rules.breakdowns.min_cell) == (11, 11)
    assert rules.noise.max == 3 and rules.breakdowns.age_bands[-1] == 80  # defaults kept
    assert site_rules(tmp_path / "elsewhere") == load_rules()  # no file: the defaults


def test_every_problem_of_a_rules_file_is_reported_with_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "disclosure.yaml"
    path.write_text("threshold: 0\nnoise:\n  max: -1\n  jitter: 2\n  round_to: '10'\n"
                    "breakdowns:\n  complementary_suppression: 'yes'\n")
    with pytest.raises(DefinitionError) as raised:
        load_rules(path)
    assert raised.value.source == str(path)
    assert {p.path for p in raised.value.problems} == {
        "/threshold", "/noise/max", "/noise/jitter", "/noise/round_to", "/breakdowns/complementary_suppression"}
    assert str(path) in str(raised.value)


def test_rules_that_do_not_fit_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "disclosure.yaml"
    path.write_text("threshold: 10\nbreakdowns:\n  age_bands: [5, 30, 30, 20]\n")
    with pytest.raises(DefinitionError) as raised:
        load_rules(path)
    problems = {p.path: p.message for p in raised.value.problems}
    assert set(problems) == {"/breakdowns/age_bands/0", "/breakdowns/age_bands/2", "/breakdowns/age_bands/3",
                             "/breakdowns/min_cell"}
    assert "at least threshold (10)" in problems["/breakdowns/min_cell"]


def test_a_broken_or_missing_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "disclosure.yaml"
    path.write_text("threshold: 5\nnoise: [1,\n")
    with pytest.raises(DefinitionError, match="not valid YAML") as raised:
        load_rules(path)
    assert raised.value.problems[0].path.startswith("line ")
    path.write_text("- 5\n")
    with pytest.raises(DefinitionError, match="expected a mapping"):
        load_rules(path)
    with pytest.raises(ConfigError, match="no disclosure rules file"):
        load_rules(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- the site secret
def test_the_site_secret_is_created_once_owner_only(tmp_path: Path) -> None:
    secret = site_secret(tmp_path)
    path = tmp_path / "disclosure.key"
    assert len(secret) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert site_secret(tmp_path) == secret


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_secret_others_can_reach_is_refused(tmp_path: Path, mode: int) -> None:
    site_secret(tmp_path)
    (tmp_path / "disclosure.key").chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        site_secret(tmp_path)


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "disclosure.key"
    path.write_bytes(b"short")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="needs 32 bytes"):
        site_secret(tmp_path)
