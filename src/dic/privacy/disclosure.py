"""Releasing counts and breakdowns: threshold, deterministic noise, cell suppression.

    fingerprint(members) -> bytes                            what a count is of: its member set
    release_count(raw, fingerprint, rules, secret) -> ReleasedCount
    release_breakdown(cells, fingerprint, rules, secret, cell_fingerprints=None) -> list[ReleasedCell]

Decisions, and what each one leaks or does not:

- The threshold decides on the RAW count: below it the answer is "< 5" (0 included), at or above
  it a number that is never below the threshold. Deciding on the noisy count instead would
  sometimes release a number for a count of 2 (the noise carries it over) — a small count is
  exactly what must not come out. So "< 5" tells "fewer than 5", which the rules accept, and
  noise that would fall below the threshold is clamped to the smallest releasable value.
- The noise is uniform on [-max, +max], drawn from HMAC-SHA-256(site secret, fingerprint).
  Same fingerprint, same answer: repeating a query and averaging gains nothing. Seed with the
  cohort's MEMBER SET (`fingerprint(members)`) rather than with the query text: then every
  query that selects the same patients — a rephrased query, one with a clause that is always
  true — gets the same noise, and averaging over rephrasings gains nothing either (the
  Australian Bureau of Statistics' and Destatis' cell key method rests on the same idea).
  Differencing two cohorts that differ by one patient gives a difference off by up to ±2·max.
- The raw count is never part of a result; it goes only to the query log.
- With complementary suppression, suppressed cells all read "suppressed" (bounds 0 to unknown),
  whether small (primary) or hidden to protect a small one (complementary): "< 5" on a
  complementary cell would be false, and a label of its own would tell which of two suppressed
  cells is the small one. Without it they read "< 5", which is then true of each.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from dic.privacy.rules import DisclosureRules

SUPPRESSED = "suppressed"
_DOMAIN = b"dic-disclosure-noise-v1\x00"  # keeps these HMACs apart from any other use of the secret


@dataclass(frozen=True)
class ReleasedCount:
    """What may be shown: `text`, the number (None when suppressed), the raw counts it stands for."""

    text: str
    value: int | None
    lower: int
    upper: int

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "value": self.value, "lower": self.lower, "upper": self.upper}


@dataclass(frozen=True)
class ReleasedCell:
    labels: tuple[str, ...]  # one label per dimension, e.g. ("female", "40-49")
    text: str
    value: int | None
    lower: int
    upper: int | None  # None: no upper bound is known (a suppressed cell, with complementary suppression)

    @property
    def suppressed(self) -> bool:
        return self.value is None

    def as_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "text": self.text, "value": self.value, "lower": self.lower,
                "upper": self.upper}


def fingerprint(members: Iterable[str]) -> bytes:
    """SHA-256 of the sorted distinct member keys: the same patients give the same fingerprint."""
    digest = hashlib.sha256()
    for member in sorted(set(members)):
        digest.update(member.encode())
        digest.update(b"\x00")
    return digest.digest()


def _noise(secret: bytes, seed: bytes, max_noise: int) -> int:
    digest = hmac.new(secret, _DOMAIN + seed, hashlib.sha256).digest()
    # 64 bits modulo at most 201 values: the bias is below 1e-16
    return int.from_bytes(digest[:8], "big") % (2 * max_noise + 1) - max_noise


def _released(raw: int, floor: int, noise: int, rules: DisclosureRules) -> ReleasedCount:
    """`raw` ≥ `floor`, moved by `noise`, rounded, and kept at or above `floor`."""
    step, spread = rules.noise.round_to, rules.noise.max
    lowest = -(-floor // step) * step  # the smallest multiple of round_to that may be shown
    moved = raw + noise
    value = max((2 * moved + step) // (2 * step) * step, lowest)  # half up, in integers
    # The raw counts this value can come from: rounding spans [value - step//2, value + (step-1)//2],
    # the noise widens that by `spread`, and the lowest value also stands for every clamped count.
    lower = floor if value == lowest else max(floor, value - step // 2 - spread)
    upper = value + (step - 1) // 2 + spread
    return ReleasedCount(str(value), value, lower, upper)


def release_count(raw: int, fingerprint: bytes, rules: DisclosureRules, secret: bytes) -> ReleasedCount:
    """The count that may leave the site for a cohort of `raw` patients identified by `fingerprint`."""
    if raw < 0:
        raise ValueError(f"a count cannot be negative (got {raw})")
    if raw < rules.threshold:
        return ReleasedCount(f"< {rules.threshold}", None, 0, rules.threshold - 1)
    return _released(raw, rules.threshold, _noise(secret, fingerprint, rules.noise.max), rules)


def _cell_seed(fingerprint: bytes, key: tuple[str, ...]) -> bytes:
    return fingerprint + b"\x00cell\x00" + orjson.dumps(list(key))


def _full_grid(cells: Mapping[tuple[str, ...], int]) -> dict[tuple[str, ...], int]:
    """Every combination of the labels seen, absent ones as 0: a missing row would itself tell
    that nobody has it. (A label no cell has cannot be known here; callers pass zero cells.)"""
    widths = {len(key) for key in cells}
    if len(widths) > 1:
        raise ValueError(f"breakdown cells have keys of different lengths {sorted(widths)}")
    if not cells:
        return {}
    labels = [sorted({key[d] for key in cells}) for d in range(widths.pop())]
    return {key: cells.get(key, 0) for key in itertools.product(*labels)}


def _suppress(grid: Mapping[tuple[str, ...], int], min_cell: int, complementary: bool) -> set[tuple[str, ...]]:
    """Primary suppression of cells below `min_cell`; then, if asked, complementary suppression.

    A line is the cells that share all labels but one (the whole table in one dimension; rows and
    columns in two). A line with exactly one suppressed cell gives it away through the line's
    margin, so one more of its cells is suppressed, until no line changes. The choice is greedy
    (optimal suppression is NP-hard; tau-ARGUS solves it as an integer programme): first a cell
    whose crossing line also has exactly one suppressed cell (one cell mends two lines, which in
    two dimensions closes a rectangle instead of cascading), then the smallest, then the first key.
    """
    suppressed = {key for key, count in grid.items() if count < min_cell}
    if not complementary or not grid:
        return suppressed
    lines_of: dict[tuple[str, ...], list[list[tuple[str, ...]]]] = defaultdict(list)
    lines: list[list[tuple[str, ...]]] = []
    for d in range(len(next(iter(grid)))):
        by_rest: dict[tuple[str, ...], list[tuple[str, ...]]] = defaultdict(list)
        for key in sorted(grid):
            by_rest[key[:d] + key[d + 1:]].append(key)
        for line in by_rest.values():
            lines.append(line)
            for key in line:
                lines_of[key].append(line)

    def alone(line: list[tuple[str, ...]]) -> bool:
        return sum(key in suppressed for key in line) == 1

    changed = True
    while changed:
        changed = False
        for line in lines:
            shown = [key for key in line if key not in suppressed]
            if alone(line) and shown:
                def preference(key: tuple[str, ...], line: list[tuple[str, ...]] = line) -> tuple:
                    mends_another = any(alone(other) for other in lines_of[key] if other is not line)
                    return (not mends_another, grid[key], key)
                suppressed.add(min(shown, key=preference))
                changed = True
    return suppressed


def release_breakdown(cells: Mapping[tuple[str, ...], int], fingerprint: bytes, rules: DisclosureRules,
                      secret: bytes, cell_fingerprints: Mapping[tuple[str, ...], bytes] | None = None,
                      ) -> list[ReleasedCell]:
    """Every cell of the table (absent label combinations as 0), sorted by key: small cells and
    their complements suppressed, the others perturbed like counts.

    Each cell's noise is seeded by `cell_fingerprints[key]` when given — `fingerprint(cell
    members)`, the better choice: a cell then has the same value in every table it appears in —
    else by `fingerprint` and the cell's labels. Margins and the total are released separately
    with `release_count`; complementary suppression assumes they are public."""
    if any(count < 0 for count in cells.values()):
        raise ValueError("a cell count cannot be negative")
    grid = _full_grid(cells)
    breakdown = rules.breakdowns
    suppressed = _suppress(grid, breakdown.min_cell, breakdown.complementary_suppression)
    if cell_fingerprints is not None and (missing := [k for k in grid if k not in suppressed
                                                       and k not in cell_fingerprints]):
        raise ValueError(f"cell_fingerprints lacks the cells {missing}")
    # With complementary suppression every suppressed cell reads the same (see the module's notes);
    # without it, every suppressed cell is a small one and may say so.
    hidden = (ReleasedCell((), SUPPRESSED, None, 0, None) if breakdown.complementary_suppression
              else ReleasedCell((), f"< {breakdown.min_cell}", None, 0, breakdown.min_cell - 1))
    released = []
    for key in sorted(grid):
        if key in suppressed:
            released.append(replace(hidden, labels=key))
            continue
        seed = cell_fingerprints[key] if cell_fingerprints is not None else _cell_seed(fingerprint, key)
        count = _released(grid[key], breakdown.min_cell, _noise(secret, seed, rules.noise.max), rules)
        released.append(ReleasedCell(key, count.text, count.value, count.lower, count.upper))
    return released
