"""MII CCDL queries (version "2" and the draft "3") read and validated into `dic.cohort.model.Query`.

    parse_ccdl(document, source="query")   -> Query; DefinitionError listing every problem (JSON pointers)
    load_query(path)                       -> Query from a JSON file (InputError if it cannot be read)
    parse_offset(text)                     -> Offset for a signed ISO 8601 duration, None if it is not one

Version 2 is converted, never reinterpreted (docs/cohorts.md): its inclusion (AND of ORs) becomes
one group array with one group; its exclusion (OR of ANDs) is split at the outer level into one
group array per alternative. Version 3 is read as it stands: group arrays (OR) of groups (AND)
with ids, relative time restrictions and anchors, whose references are checked as a graph
(unknown ids, duplicates, cycles, missing anchorOccurrence, first/last chained off any).
Criteria are resolved by dic.cohort.resolve; warnings (codes matched literally, …) go to
`Query.warnings`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from dic.cohort.findings import Findings
from dic.cohort.model import Criterion, Group, GroupArray, Offset, Query, RelativeRestriction
from dic.cohort.resolve import resolve_criterion
from dic.errors import DefinitionError, InputError, Problem

TOP_KEYS = ("version", "display", "inclusionCriteria", "exclusionCriteria", "$schema")
GROUP_KEYS = ("id", "criteria", "relativeTimeRestrictions", "anchorOccurrence", "anchorPoint")
ENTRY_KEYS = ("anchorRef", "minOffset", "maxOffset")
OCCURRENCES = ("first", "last", "any")
POINTS = ("start", "end")
_DURATION = re.compile(r"(?P<sign>[-+])?P(?:(?P<Y>\d+)Y)?(?:(?P<M>\d+)M)?(?:(?P<W>\d+)W)?(?:(?P<D>\d+)D)?"
                       r"(?:T(?=\d)(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?")
_SECONDS = {"W": 7 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}


def parse_ccdl(document: dict[str, Any] | bytes | str, source: str = "query") -> Query:
    if isinstance(document, bytes | str):
        try:
            document = orjson.loads(document)
        except orjson.JSONDecodeError as error:
            raise DefinitionError(source, [Problem("", f"not valid JSON: {error}")]) from error
    found = Findings()
    if not found.keys(document, "", TOP_KEYS, ("version", "inclusionCriteria"), "a JSON object (a CCDL query)"):
        raise DefinitionError(source, found.problems)
    version = document.get("version")
    if version not in ("2", "3"):
        found.problem("/version", f"version {version!r} is not a CCDL version this reads: \"2\" or \"3\" (a string)")
        raise DefinitionError(source, found.problems)
    display = found.text(document, "display", "", empty=True) or ""
    if version == "2":
        inclusion, exclusion = _version_2(document, found)
    else:
        inclusion = _group_arrays(document.get("inclusionCriteria"), "/inclusionCriteria", True, found)
        exclusion = _group_arrays(document.get("exclusionCriteria"), "/exclusionCriteria", False, found)
        _check_anchors([g for side in (inclusion, exclusion) for array in side for g in array], found)
    _check_timeless([g for side in (inclusion, exclusion) for array in side for g in array], found)
    if found.problems:
        raise DefinitionError(source, list(dict.fromkeys(found.problems)))
    return Query(version, inclusion, exclusion, display, tuple(dict.fromkeys(found.warnings)))


def load_query(path: str | Path) -> Query:
    try:
        document = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read the query: {error.strerror}") from error
    return parse_ccdl(document, source=str(path))


def _version_2(document: dict[str, Any], found: Findings) -> tuple[tuple[GroupArray, ...], tuple[GroupArray, ...]]:
    """Inclusion [[A], [B, C]] -> one group (A) AND (B OR C); exclusion [[A], [B, C]] -> two group arrays."""
    clauses = [_v2_clause(clause, f"/inclusionCriteria/{n}", found)
               for n, clause in enumerate(found.array(document.get("inclusionCriteria"), "/inclusionCriteria"))]
    inclusion = ((Group("/inclusionCriteria", None, tuple(sum(clause, ()) for clause in clauses)),),)
    exclusion = []
    for n, alternative in enumerate(found.array(document.get("exclusionCriteria", []), "/exclusionCriteria",
                                                required=False)):
        criteria = _v2_clause(alternative, f"/exclusionCriteria/{n}", found)  # AND: one clause each
        exclusion.append((Group(f"/exclusionCriteria/{n}", None, tuple(criteria)),))
    return inclusion, tuple(exclusion)


def _v2_clause(raw: Any, path: str, found: Findings) -> list[tuple[Criterion, ...]]:
    """The criteria of one inner array, each as the tuple it resolves to (usually one)."""
    return [resolve_criterion(criterion, f"{path}/{n}", found) for n, criterion in enumerate(found.array(raw, path))]


def _group_arrays(raw: Any, path: str, required: bool, found: Findings) -> tuple[GroupArray, ...]:
    if raw is None and not required:
        return ()
    arrays = []
    for n, array in enumerate(found.array(raw, path, required)):
        groups = [_group(group, f"{path}/{n}/{m}", found) for m, group in enumerate(found.array(array, f"{path}/{n}"))]
        arrays.append(tuple(g for g in groups if g is not None))
    return tuple(arrays)


def _group(raw: Any, path: str, found: Findings) -> Group | None:
    if not found.keys(raw, path, GROUP_KEYS, ("criteria",), "a group"):
        return None
    group_id = found.text(raw, "id", path)
    clauses = []
    for n, clause in enumerate(found.array(raw.get("criteria"), f"{path}/criteria")):
        criteria: list[Criterion] = []
        for m, criterion in enumerate(found.array(clause, f"{path}/criteria/{n}")):
            criteria += _criterion(criterion, f"{path}/criteria/{n}/{m}", found)
        clauses.append(tuple(criteria))
    relative = [_entry(entry, f"{path}/relativeTimeRestrictions/{n}", found) for n, entry in
                enumerate(found.array(raw.get("relativeTimeRestrictions", []), f"{path}/relativeTimeRestrictions",
                                      required=False))]
    occurrence, point = raw.get("anchorOccurrence"), raw.get("anchorPoint", "start")
    if occurrence is not None and occurrence not in OCCURRENCES:
        found.problem(f"{path}/anchorOccurrence", f"anchorOccurrence must be one of {', '.join(OCCURRENCES)}")
    if point not in POINTS:
        found.problem(f"{path}/anchorPoint", f"anchorPoint must be one of {', '.join(POINTS)}")
    return Group(path, group_id, tuple(clauses), tuple(r for r in relative if r is not None), occurrence, point)


def _criterion(raw: Any, path: str, found: Findings) -> tuple[Criterion, ...]:
    if isinstance(raw, dict) and "type" in raw:  # the reserved marker {"type": "now"}
        if raw.get("type") != "now":
            found.problem(f"{path}/type", f"unknown criterion type {raw.get('type')!r} (the only one is 'now')")
        elif found.keys(raw, path, ("type",)):
            return (Criterion(path, "now", display="now"),)
        return ()
    return resolve_criterion(raw, path, found)


def _entry(raw: Any, path: str, found: Findings) -> RelativeRestriction | None:
    if not found.keys(raw, path, ENTRY_KEYS, ("anchorRef",), "a relative time restriction"):
        return None
    anchor = found.text(raw, "anchorRef", path)
    offsets: dict[str, Offset | None] = {}
    for name in ("minOffset", "maxOffset"):
        text = raw.get(name)
        offsets[name] = parse_offset(text) if isinstance(text, str) else None
        if text is not None and offsets[name] is None:
            found.problem(f"{path}/{name}", f"{name} {text!r} is not a signed ISO 8601 duration "
                                            "(like -P3D, PT24H, P1M)")
    low, high = offsets["minOffset"], offsets["maxOffset"]
    if "minOffset" not in raw and "maxOffset" not in raw:
        found.problem(path, "a relative time restriction needs minOffset, maxOffset or both")
    elif low and high and _after(low, high):
        found.problem(path, f"minOffset {low.text} is after maxOffset {high.text}")
    return RelativeRestriction(path, anchor, low, high) if anchor else None


def _after(low: Offset, high: Offset) -> bool:
    """Only offsets of one sort compare: days and hours are exact, months are calendar months."""
    if low.months == high.months == 0:
        return low.seconds > high.seconds
    if low.seconds == high.seconds == 0:
        return low.months > high.months
    return False


def parse_offset(text: str) -> Offset | None:
    match = _DURATION.fullmatch(text.strip())
    parts = match and {k: int(v) for k, v in match.groupdict().items() if k != "sign" and v is not None}
    if not parts:
        return None
    sign = -1 if match.group("sign") == "-" else 1
    months = parts.get("Y", 0) * 12 + parts.get("M", 0)
    seconds = sum(parts.get(unit, 0) * factor for unit, factor in _SECONDS.items())
    return Offset(sign * months, sign * seconds, text)


def _check_timeless(groups: list[Group], found: Findings) -> None:
    """Age and gender are properties of the patient, not dated events: a time window on them would
    silently select nobody, so it is refused (put them in a group of their own)."""
    for group in groups:
        for clause in group.criteria:
            for criterion in clause:
                if criterion.kind not in ("age", "gender"):
                    continue
                if criterion.time is not None:
                    found.problem(f"{criterion.path}/timeRestriction",
                                  f"{criterion.kind} is a property of the patient, not a dated event: "
                                  "a timeRestriction cannot apply to it")
                if group.relative:
                    found.problem(criterion.path, f"{criterion.kind} is a property of the patient, not a dated "
                                  "event: put it in a group without relativeTimeRestrictions")


def _check_anchors(groups: list[Group], found: Findings) -> None:
    by_id: dict[str, Group] = {}
    for group in groups:
        if group.id is None:
            continue
        if group.id in by_id:
            found.problem(f"{group.path}/id", f"duplicate group id {group.id!r} (also at {by_id[group.id].path})")
        by_id.setdefault(group.id, group)
    for group in groups:
        for entry in group.relative:
            anchor = by_id.get(entry.anchor)
            if anchor is None:
                found.problem(f"{entry.path}/anchorRef", f"anchorRef {entry.anchor!r} names no group")
            elif anchor.occurrence is None and not _only_now(anchor):
                found.problem(anchor.path, f"group {anchor.id!r} is referenced as an anchor but has no "
                                           "anchorOccurrence (first, last or any)")
    anchors = {gid: [e.anchor for e in g.relative if e.anchor in by_id] for gid, g in by_id.items()}
    cycles: list[list[str]] = []
    for start in anchors:
        _find_cycles(start, [start], anchors, cycles)
    for cycle in cycles:
        found.problem(f"{by_id[cycle[0]].path}/relativeTimeRestrictions",
                      "anchors form a cycle: " + " → ".join(cycle))
    for group in by_id.values():
        if group.occurrence not in ("first", "last"):
            continue
        chained = _upstream(group.id, anchors)
        any_anchor = next((a for a in chained if by_id[a].occurrence == "any"), None)
        if any_anchor is not None:
            found.problem(f"{group.path}/anchorOccurrence",
                          f"{group.occurrence!r} anchor {group.id!r} depends on 'any' anchor {any_anchor!r} "
                          "(refused: a first/last anchor needs one date per patient, but an 'any' anchor's "
                          "occurrence is only chosen where it is used; make both 'any' or both first/last)")


def _only_now(group: Group) -> bool:
    return all(c.kind == "now" for clause in group.criteria for c in clause)


def _find_cycles(node: str, trail: list[str], anchors: dict[str, list[str]], cycles: list[list[str]]) -> None:
    for anchor in anchors[node]:
        if anchor == trail[0]:
            if min(trail) == trail[0]:  # report each cycle once, from its smallest id
                cycles.append([*trail, anchor])
        elif anchor not in trail:
            _find_cycles(anchor, [*trail, anchor], anchors, cycles)


def _upstream(group_id: str, anchors: dict[str, list[str]]) -> list[str]:
    """Every anchor a group's window depends on, directly or through a chain (in order found)."""
    seen: list[str] = []
    stack = list(anchors[group_id])
    while stack:
        anchor = stack.pop(0)
        if anchor not in seen and anchor != group_id:
            seen.append(anchor)
            stack += anchors[anchor]
    return seen
