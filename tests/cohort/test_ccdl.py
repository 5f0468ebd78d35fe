"""CCDL v2 and v3 read into the cohort model: structure, validation problems with their JSON
pointers, code expansion, unit conversion, age units and gender codes."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from dic.cohort.ccdl import load_query, parse_ccdl, parse_offset
from dic.cohort.contexts import load_contexts
from dic.cohort.model import Coding, Offset, Query
from dic.errors import DefinitionError, InputError
from dic.terminology import Subsumption, subsumes

CCDL_DOCS = Path(__file__).parents[2] / ".." / "shared" / "docs" / "ccdl"
ICD = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
OPS = "http://fhir.de/CodeSystem/bfarm/ops"
ATC = "http://fhir.de/CodeSystem/bfarm/atc"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


def shared_file(name: str) -> Path:
    path = CCDL_DOCS / name
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: the CCDL documents are part of the shared suite")
        pytest.skip(f"{path} is missing (the shared CCDL documents are not mounted)")
    return path


def criterion(context: str, system: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"context": {"code": context, "system": "fdpg.mii.cds", "display": context},
            "termCodes": [{"code": code, "system": system, "display": code}], **extra}


def group(group_id: str, *clauses: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": group_id, "criteria": list(clauses), **extra}


def v3(*arrays: list[dict[str, Any]], exclusion: tuple[list[dict[str, Any]], ...] = ()) -> dict[str, Any]:
    document: dict[str, Any] = {"version": "3", "inclusionCriteria": list(arrays)}
    if exclusion:
        document["exclusionCriteria"] = list(exclusion)
    return document


def v2(*clauses: list[dict[str, Any]]) -> dict[str, Any]:
    return {"version": "2", "inclusionCriteria": list(clauses)}


def problems(document: Any) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as caught:
        parse_ccdl(document)
    return [(p.path, p.message) for p in caught.value.problems]


def only_criterion(query: Query):
    (array,) = query.inclusion
    (found,) = array[0].criteria[0]
    return found


# -- version 2 ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def example() -> Query:
    return load_query(shared_file("ccdl-all-properties.json"))


def test_v2_example_inclusion_is_one_group_of_four_clauses(example: Query) -> None:
    assert example.version == "2" and example.display == "Example-CCDL"
    (array,) = example.inclusion
    (only,) = array
    assert only.path == "/inclusionCriteria" and only.id is None and only.relative == ()
    assert [[c.kind for c in clause] for clause in only.criteria] == [
        ["gender"], ["age"], ["diagnosis", "diagnosis"], ["specimen"]]
    gender, age = only.criteria[0][0], only.criteria[1][0]
    f00, f09 = only.criteria[2]
    (specimen,) = only.criteria[3]
    assert gender.value.concepts == (Coding("", "female"), Coding("", "male"))
    assert (age.value.type, age.value.comparator, age.value.value, age.value.unit) == ("quantity-comparator", "gt",
                                                                                       18.0, "a")
    assert f00.codes == tuple(Coding(ICD, c) for c in ("F00", "F00.0", "F00.1", "F00.2", "F00.9"))
    assert f09.path == "/inclusionCriteria/2/1" and f09.codes == (Coding(ICD, "F09"),)
    assert (str(f09.time.after), str(f09.time.before)) == ("2021-09-09", "2021-10-09")
    assert specimen.resource_types == ("Specimen",) and specimen.codes == (Coding(OPS, "5-016.0"),)
    (reference,) = specimen.attributes
    assert reference.attribute == "diagnosis" and reference.filter is None
    assert [(c.kind, c.codes) for c in reference.references] == [
        ("diagnosis", (Coding("icd-o-3", "C50.0"),)), ("diagnosis", (Coding("icd-o-3", "C50.1"),))]
    (status,) = reference.references[0].attributes
    assert (status.attribute, status.filter.concepts) == ("clinicalStatus", (Coding("", "active"),))


def test_v2_example_exclusion_is_split_into_three_group_arrays(example: Query) -> None:
    assert len(example.exclusion) == 3
    assert [len(array) for array in example.exclusion] == [1, 1, 1]
    assert [[len(clause) for clause in array[0].criteria] for array in example.exclusion] == [[1], [1], [1, 1]]
    assert [array[0].path for array in example.exclusion] == [f"/exclusionCriteria/{n}" for n in range(3)]
    male, age, (f009, temperature) = (example.exclusion[0][0].criteria[0][0], example.exclusion[1][0].criteria[0][0],
                                      [clause[0] for clause in example.exclusion[2][0].criteria])
    assert male.value.concepts == (Coding("", "male"),)
    assert (age.value.value, age.value.unit) == (65.0, "a")  # written "year"
    assert f009.codes == (Coding(ICD, "F00.9"),)
    assert temperature.kind == "observation" and temperature.resource_types == ("Observation",)
    value = temperature.value
    assert (value.type, value.low, value.high, value.unit, value.normalized) == ("quantity-range", 35.0, 39.0,
                                                                                 "Cel", True)
    (method,) = temperature.attributes
    assert (method.attribute, method.filter.concepts) == ("method", (Coding(LOINC, "LA9370-3"),))


def test_v2_example_warnings_name_every_literal_match(example: Query) -> None:
    assert len(example.warnings) == 4
    assert example.warnings[0].startswith("/inclusionCriteria/3/0/termCodes/0/code: OPS code '5-016.0'")
    assert sum("unknown code system 'icd-o-3'" in w for w in example.warnings) == 2
    assert example.warnings[3].startswith("/exclusionCriteria/2/1/context/code: context 'Patient'")


def test_v2_inclusion_and_exclusion_polarity() -> None:
    a, b, c = (criterion("Diagnose", ICD, code) for code in ("E10", "E11", "I10"))
    query = parse_ccdl({"version": "2", "inclusionCriteria": [[a], [b, c]], "exclusionCriteria": [[a], [b, c]]})
    assert [[[x.codes[0].code for x in clause] for clause in g.criteria] for (g,) in query.inclusion] == [
        [["E10"], ["E11", "I10"]]]
    assert [[[x.codes[0].code for x in clause] for clause in g.criteria] for (g,) in query.exclusion] == [
        [["E10"]], [["E11"], ["I10"]]]


def test_v2_example_agrees_with_the_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(shared_file("clinical-cohort-definition-language-schema.json").read_text())
    example = json.loads(shared_file("ccdl-all-properties.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(example)
    broken = [
        ("termCodes", lambda d: d["inclusionCriteria"][0][0].pop("termCodes")),
        ("comparator", lambda d: d["inclusionCriteria"][1][0]["valueFilter"].update(comparator="gte")),
        ("concepts", lambda d: d["inclusionCriteria"][0][0]["valueFilter"].pop("selectedConcepts")),
        ("version", lambda d: d.update(version="1")),
        ("empty clause", lambda d: d["inclusionCriteria"].append([])),
        ("value", lambda d: d["exclusionCriteria"][1][0]["valueFilter"].update(value="65")),
    ]
    for name, change in broken:
        document = copy.deepcopy(example)
        change(document)
        assert not jsonschema.Draft202012Validator(schema).is_valid(document), name
        with pytest.raises(DefinitionError):
            parse_ccdl(document)


# -- version 3 ---------------------------------------------------------------------------------------

def dementia_document() -> dict[str, Any]:
    """The draft's first worked example (ccdl-with-new-time-constraint-draft), written out."""
    gender = criterion("Patient", SNOMED, "263495000", valueFilter={"type": "concept", "selectedConcepts": [
        {"code": "female", "system": "http://hl7.org/fhir/administrative-gender", "display": "Female"}]})
    dementia = [criterion("Diagnose", ICD, "F00"), criterion("Diagnose", ICD, "G30")]
    lab = "Laboruntersuchung"
    return v3([
        group("group-gender", [gender]),
        group("anchor-dementia-diagnosis", dementia, anchorOccurrence="first", anchorPoint="start"),
        group("group-infection-signs-before-diagnosis",
              [criterion(lab, LOINC, "1988-5"), criterion(lab, LOINC, "6690-2")], [criterion(lab, LOINC, "8867-4")],
              relativeTimeRestrictions=[{"anchorRef": "anchor-dementia-diagnosis", "minOffset": "-P3D",
                                         "maxOffset": "P0D"}]),
        group("group-donepezil-after-diagnosis", [criterion("Medikamentenverabreichung", ATC, "N06DA02")],
              relativeTimeRestrictions=[{"anchorRef": "anchor-dementia-diagnosis", "minOffset": "P0D",
                                         "maxOffset": "P30D"}]),
        group("group-weight-since-diagnosis-window", [criterion(lab, LOINC, "29463-7")],
              relativeTimeRestrictions=[{"anchorRef": "anchor-dementia-diagnosis", "minOffset": "-P7D"}]),
        group("anchor-now", [{"type": "now"}]),
        group("group-respiratory-rate-since-now", [criterion(lab, LOINC, "9279-1")],
              relativeTimeRestrictions=[{"anchorRef": "anchor-now", "minOffset": "-P7D", "maxOffset": "P0D"}]),
    ], exclusion=(
        [group("group-excl-anticoagulant-after-diagnosis", [criterion("Medikation", ATC, "B01AA04")],
               relativeTimeRestrictions=[{"anchorRef": "anchor-dementia-diagnosis", "minOffset": "P0D",
                                          "maxOffset": "P2D"}])],
        [group("group-excl-organ-failure", [criterion("Diagnose", ICD, "N18.5"), criterion("Diagnose", ICD, "K72")])],
    ))


def test_v3_worked_example_parses_into_groups_and_anchors() -> None:
    query = parse_ccdl(json.dumps(dementia_document()))
    assert query.version == "3" and query.warnings == ()
    (array,) = query.inclusion
    assert [g.id for g in array] == ["group-gender", "anchor-dementia-diagnosis",
                                     "group-infection-signs-before-diagnosis", "group-donepezil-after-diagnosis",
                                     "group-weight-since-diagnosis-window", "anchor-now",
                                     "group-respiratory-rate-since-now"]
    gender, anchor, infection, donepezil, weight, now, respiratory = array
    assert gender.criteria[0][0].value.concepts == (Coding("", "female"),)
    assert (anchor.occurrence, anchor.point, anchor.relative) == ("first", "start", ())
    assert [c.codes[0].code for c in anchor.criteria[0]] == ["F00", "G30"]
    assert [[c.codes for c in clause] for clause in infection.criteria] == [
        [(Coding(LOINC, "1988-5"),), (Coding(LOINC, "6690-2"),)], [(Coding(LOINC, "8867-4"),)]]
    (entry,) = infection.relative
    assert (entry.path, entry.anchor) == ("/inclusionCriteria/0/2/relativeTimeRestrictions/0",
                                          "anchor-dementia-diagnosis")
    assert (entry.min_offset, entry.max_offset) == (Offset(0, -3 * 86400, "-P3D"), Offset(0, 0, "P0D"))
    assert donepezil.criteria[0][0].resource_types == ("MedicationAdministration",)
    assert donepezil.relative[0].max_offset.seconds == 30 * 86400
    assert (weight.relative[0].min_offset.seconds, weight.relative[0].max_offset) == (-7 * 86400, None)
    assert [(c.path, c.kind, c.codes) for c in now.criteria[0]] == [("/inclusionCriteria/0/5/criteria/0/0", "now", ())]
    assert now.occurrence is None and respiratory.relative[0].anchor == "anchor-now"
    anticoagulant, organ = (array[0] for array in query.exclusion)
    assert anticoagulant.criteria[0][0].resource_types == ("MedicationAdministration", "MedicationStatement",
                                                           "MedicationRequest")
    assert [c.codes[0].code for c in organ.criteria[0]] == ["N18.5", "K72"]
    assert set(query.groups()) == {g.id for g in array} | {anticoagulant.id, organ.id}


def test_v3_any_anchor_chain_and_multiple_entries() -> None:
    """The draft's any-chained-anchors example plus a group between two anchors (two entries)."""
    diagnosis = group("anchor-dementia-diagnosis", [criterion("Diagnose", ICD, "F00")], anchorOccurrence="first")
    delirium = group("group-delirium-after-diagnosis", [criterion("Diagnose", ICD, "F05")], anchorOccurrence="any",
                     relativeTimeRestrictions=[{"anchorRef": "anchor-dementia-diagnosis", "minOffset": "P0D",
                                                "maxOffset": "P30D"}])
    haloperidol = group("group-haloperidol-after-delirium", [criterion("Medikation", ATC, "N05AD01")],
                        relativeTimeRestrictions=[{"anchorRef": "group-delirium-after-diagnosis",
                                                   "minOffset": "P0D", "maxOffset": "P3D"}])
    sodium = group("group-sodium-between", [criterion("Laboruntersuchung", LOINC, "2951-2")],
                   relativeTimeRestrictions=[{"anchorRef": "group-delirium-after-diagnosis", "minOffset": "-P1D"},
                                             {"anchorRef": "anchor-dementia-diagnosis", "maxOffset": "PT36H"}])
    query = parse_ccdl(v3([diagnosis, delirium, haloperidol, sodium]))
    groups = query.groups()
    assert groups["group-delirium-after-diagnosis"].occurrence == "any"
    assert [(e.anchor, e.min_offset and e.min_offset.seconds, e.max_offset and e.max_offset.seconds)
            for e in groups["group-sodium-between"].relative] == [
        ("group-delirium-after-diagnosis", -86400, None), ("anchor-dementia-diagnosis", None, 36 * 3600)]


@pytest.mark.parametrize(("text", "months", "seconds"), [
    ("-P3D", 0, -3 * 86400), ("P0D", 0, 0), ("PT24H", 0, 86400), ("P1M", 1, 0), ("P1Y2M3DT4H", 14, 3 * 86400 + 4 * 3600),
    ("-P1W", 0, -7 * 86400), ("PT30M", 0, 1800), ("+P2Y", 24, 0), ("-P1Y2M", -14, 0), ("PT1H30M15S", 0, 5415)])
def test_offsets_are_signed_iso_durations(text: str, months: int, seconds: int) -> None:
    assert parse_offset(text) == Offset(months, seconds, text)


@pytest.mark.parametrize("text", ["P", "PT", "3D", "P1.5D", "-", "P1DT", "P-1D", "p1d", "P1H", ""])
def test_offsets_refuse_what_is_not_a_duration(text: str) -> None:
    assert parse_offset(text) is None


# -- validation: every problem, with its path --------------------------------------------------------

def glucose(unit: str) -> dict[str, Any]:
    return criterion("Laboruntersuchung", LOINC, "2345-7", valueFilter={
        "type": "quantity-comparator", "comparator": "gt", "value": 100, "unit": {"code": unit, "display": unit}})


def anchored(group_id: str, anchor: str, occurrence: str | None = None, **offsets: str) -> dict[str, Any]:
    extra: dict[str, Any] = {"relativeTimeRestrictions": [{"anchorRef": anchor, **(offsets or {"minOffset": "P0D"})}]}
    if occurrence:
        extra["anchorOccurrence"] = occurrence
    return group(group_id, [criterion("Diagnose", ICD, "I10")], **extra)


E11 = criterion("Diagnose", ICD, "E11")
CASES = {
    "unit": (v3([group("g", [E11], [glucose("mg/dLx")])]),
             "/inclusionCriteria/0/0/criteria/1/0/valueFilter/unit/code", "'mg/dLx' is not a UCUM unit"),
    "unit kind": (v3([group("g", [glucose("kg")])]), "/inclusionCriteria/0/0/criteria/0/0/valueFilter/unit/code",
                  "'kg' cannot be compared with LOINC 2345-7, whose values are in 'mg/dL'"),
    "icd": (v2([criterion("Diagnose", ICD, "X99.99")]), "/inclusionCriteria/0/0/termCodes/0/code",
            "ICD-10-GM code 'X99.99' does not exist"),
    "ops form": (v2([criterion("Prozedur", OPS, "five")]), "/inclusionCriteria/0/0/termCodes/0/code",
                 "'five' is not a well-formed OPS code"),
    "anchorRef": (v3([anchored("g", "anchor-x")]), "/inclusionCriteria/0/0/relativeTimeRestrictions/0/anchorRef",
                  "anchorRef 'anchor-x' names no group"),
    "cycle": (v3([anchored("a", "b", "first"), anchored("b", "a", "first")]),
              "/inclusionCriteria/0/0/relativeTimeRestrictions", "anchors form a cycle: a → b → a"),
    "self": (v3([anchored("a", "a", "any")]), "/inclusionCriteria/0/0/relativeTimeRestrictions",
             "anchors form a cycle: a → a"),
    "occurrence": (v3([group("g", [E11]), anchored("h", "g")]), "/inclusionCriteria/0/0",
                   "group 'g' is referenced as an anchor but has no anchorOccurrence"),
    "first on any": (v3([group("a", [E11], anchorOccurrence="any"), anchored("b", "a", "first"),
                         anchored("c", "b")]), "/inclusionCriteria/0/1/anchorOccurrence",
                     "'first' anchor 'b' depends on 'any' anchor 'a' (refused: "),
    "last on any, chained": (v3([group("a", [E11], anchorOccurrence="any"), anchored("b", "a", "first"),
                                 anchored("c", "b", "last")]), "/inclusionCriteria/0/2/anchorOccurrence",
                             "'last' anchor 'c' depends on 'any' anchor 'a'"),
    "offsets": (v3([group("a", [E11], anchorOccurrence="first"), anchored("b", "a", minOffset="P3D",
                                                                          maxOffset="P1D")]),
                "/inclusionCriteria/0/1/relativeTimeRestrictions/0", "minOffset P3D is after maxOffset P1D"),
    "months": (v3([group("a", [E11], anchorOccurrence="first"), anchored("b", "a", minOffset="P1Y",
                                                                         maxOffset="P11M")]),
               "/inclusionCriteria/0/1/relativeTimeRestrictions/0", "minOffset P1Y is after maxOffset P11M"),
    "no offset": (v3([group("a", [E11], anchorOccurrence="first"),
                      group("b", [E11], relativeTimeRestrictions=[{"anchorRef": "a"}])]),
                  "/inclusionCriteria/0/1/relativeTimeRestrictions/0", "needs minOffset, maxOffset or both"),
    "duration": (v3([group("a", [E11], anchorOccurrence="first"), anchored("b", "a", minOffset="3 days")]),
                 "/inclusionCriteria/0/1/relativeTimeRestrictions/0/minOffset", "is not a signed ISO 8601 duration"),
    "dates": (v2([criterion("Diagnose", ICD, "E11", timeRestriction={"afterDate": "2021-10-09",
                                                                      "beforeDate": "2021-09-09"})]),
              "/inclusionCriteria/0/0/timeRestriction", "afterDate 2021-10-09 is after beforeDate 2021-09-09"),
    "date form": (v2([criterion("Diagnose", ICD, "E11", timeRestriction={"afterDate": "2021-13-01"})]),
                  "/inclusionCriteria/0/0/timeRestriction/afterDate", "is not a date (YYYY-MM-DD)"),
    "context": (v2([criterion("Foo", "http://example.org/codes", "x1")]), "/inclusionCriteria/0/0/context/code",
                "unknown context 'Foo' and no code system to tell the criterion's kind"),
    "duplicate": (v3([group("x", [E11])], [group("x", [E11])]), "/inclusionCriteria/1/0/id",
                  "duplicate group id 'x' (also at /inclusionCriteria/0/0)"),
    "typo": (v2([{**E11, "timeRestrictions": {"afterDate": "2020-01-01"}}]),
             "/inclusionCriteria/0/0/timeRestrictions", "unknown key 'timeRestrictions'; did you mean 'timeRestriction'?"),
    "group typo": (v3([{"id": "g", "criteria": [[E11]], "anchorOccurence": "first"}]),
                   "/inclusionCriteria/0/0/anchorOccurence", "did you mean 'anchorOccurrence'?"),
    "version": ({"version": "4", "inclusionCriteria": [[E11]]}, "/version", "'4' is not a CCDL version"),
    "gender": (v2([criterion("Patient", LOINC, "LL2191-6", valueFilter={"type": "concept", "selectedConcepts": [
        {"code": "Q", "system": "", "display": "q"}]})]), "/inclusionCriteria/0/0/valueFilter/selectedConcepts/0/code",
               "'Q' is not a gender code"),
    "age unit": (v2([criterion("Patient", LOINC, "30525-0", valueFilter={
        "type": "quantity-comparator", "comparator": "ge", "value": 18, "unit": {"code": "h", "display": "h"}})]),
                 "/inclusionCriteria/0/0/valueFilter/unit/code", "'h' is not an age unit"),
    "diagnosis value": (v2([{**E11, "valueFilter": {"type": "quantity-comparator", "comparator": "gt", "value": 1}}]),
                        "/inclusionCriteria/0/0/valueFilter", "a diagnosis criterion has no value to filter"),
    "attribute": (v2([{**E11, "attributeFilters": [{"type": "concept", "attributeCode": {
        "code": "colour", "system": "x", "display": "x"}, "selectedConcepts": [{"code": "red", "system": "x"}]}]}]),
                  "/inclusionCriteria/0/0/attributeFilters/0/attributeCode/code",
                  "'colour' is not an attribute of diagnosis criteria"),
    "now type": (v3([group("g", [{"type": "later"}])]), "/inclusionCriteria/0/0/criteria/0/0/type",
                 "unknown criterion type 'later'"),
    "range": (v2([criterion("Laboruntersuchung", LOINC, "718-7", valueFilter={
        "type": "quantity-range", "minValue": 12, "maxValue": 8})]), "/inclusionCriteria/0/0/valueFilter",
              "minValue 12 is above maxValue 8"),
    "reference kind": (v2([{**criterion("Bioprobe", SNOMED, "119297000"), "attributeFilters": [{
        "type": "reference", "attributeCode": {"code": "diagnose", "system": "mii.abide", "display": "diagnose"},
        "criteria": [criterion("Prozedur", OPS, "5-470")]}]}]), "/inclusionCriteria/0/0/attributeFilters/0/criteria/0",
                       "specimen diagnosis references diagnosis criteria, not procedure"),
    "nested reference": (v2([{**criterion("Bioprobe", SNOMED, "119297000"), "attributeFilters": [{
        "type": "reference", "attributeCode": {"code": "diagnose", "system": "mii.abide", "display": "diagnose"},
        "criteria": [{**criterion("Bioprobe", SNOMED, "1"), "attributeFilters": [{
            "type": "reference", "attributeCode": {"code": "diagnose", "system": "x", "display": "x"},
            "criteria": [E11]}]}]}]}]),
                         "/inclusionCriteria/0/0/attributeFilters/0/criteria/0/attributeFilters/0/type",
                         "a referenced criterion cannot have a reference filter of its own"),
    "v2 shape as v3": ({"version": "3", "inclusionCriteria": [[E11]]}, "/inclusionCriteria/0/0/criteria",
                       "'criteria' is required"),
    "empty": ({"version": "2", "inclusionCriteria": []}, "/inclusionCriteria", "expected a non-empty array"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_problem_names_its_path(case: str) -> None:
    document, path, message = CASES[case]
    found = problems(document)
    assert any(p == path and message in m for p, m in found), found


def test_all_problems_are_reported_at_once() -> None:
    document = v3([group("x", [criterion("Diagnose", ICD, "X99.99")], [glucose("mg/dLx")]),
                   anchored("y", "nowhere")], [group("x", [E11])])
    assert [p for p, _ in problems(document)] == [
        "/inclusionCriteria/0/0/criteria/0/0/termCodes/0/code",
        "/inclusionCriteria/0/0/criteria/1/0/valueFilter/unit/code",
        "/inclusionCriteria/1/0/id",
        "/inclusionCriteria/0/1/relativeTimeRestrictions/0/anchorRef"]


def test_text_that_is_not_json_is_one_problem() -> None:
    assert problems(b'{"version": "2",') == [("", problems(b'{"version": "2",')[0][1])]
    assert problems(b"[1]") == [("", "expected a JSON object (a CCDL query), got list")]


def test_v2_exclusion_may_be_empty_and_observations_without_unit_compare_raw() -> None:
    score = criterion("Laboruntersuchung", SNOMED, "273554001", valueFilter={
        "type": "quantity-comparator", "comparator": "ge", "value": 4})
    query = parse_ccdl({"version": "2", "inclusionCriteria": [[score]], "exclusionCriteria": []})
    value = only_criterion(query).value
    assert (query.exclusion, query.warnings) == ((), ())
    assert (value.value, value.unit, value.normalized) == (4.0, None, False)


def test_now_anchor_needs_no_occurrence() -> None:
    query = parse_ccdl(v3([group("anchor-now", [{"type": "now"}]), anchored("g", "anchor-now")]))
    assert query.groups()["anchor-now"].criteria == ((query.groups()["anchor-now"].criteria[0][0],),)
    assert query.groups()["anchor-now"].criteria[0][0].kind == "now"


# -- codes ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("context", "system", "code", "descendant"), [
    ("Diagnose", ICD, "G35", "G35.10"),
    ("Diagnose", "http://fhir.de/CodeSystem/dimdi/icd-10-gm", "G35", "G35.10"),
    ("Medikation", ATC, "L04AA", "L04AA27"),
    ("Medikation", "http://www.whocc.no/atc", "L04AA", "L04AA27"),
    ("Prozedur", OPS, "5-470", "5-470.1"),
])
def test_term_codes_expand_to_their_descendants(context: str, system: str, code: str, descendant: str) -> None:
    found = only_criterion(parse_ccdl(v2([criterion(context, system, code)])))
    canonical = {"G35": ICD, "L04AA": ATC, "5-470": OPS}[code]
    assert found.codes[0] == Coding(canonical, code)
    assert Coding(canonical, descendant) in found.codes
    # every expanded code is the term code or below it (terminology $subsumes as the referee)
    assert {subsumes(canonical, code, c.code) for c in found.codes} == {Subsumption.equivalent, Subsumption.subsumes}


def test_ops_code_missing_from_the_catalogue_is_literal_with_a_warning() -> None:
    query = parse_ccdl(v2([criterion("Prozedur", OPS, "5-016")]))
    assert only_criterion(query).codes == (Coding(OPS, "5-016"),)
    assert query.warnings == (("/inclusionCriteria/0/0/termCodes/0/code: OPS code '5-016' is not in our catalogue: "
                              "matched literally, without descendants"),)


def test_snomed_codes_are_literal_without_warning() -> None:
    query = parse_ccdl(v2([criterion("Bioprobe", SNOMED, "119297000")]))
    assert only_criterion(query).codes == (Coding(SNOMED, "119297000"),) and query.warnings == ()


@pytest.mark.parametrize(("context", "kind", "resource_types"), [
    ("Diagnose", "diagnosis", ("Condition",)), ("condition", "diagnosis", ("Condition",)),
    ("Medikamentenverabreichung", "medication", ("MedicationAdministration",)),
    ("Medikamentenverordnung", "medication", ("MedicationRequest",)),
    ("Medikation", "medication", ("MedicationAdministration", "MedicationStatement", "MedicationRequest")),
    ("Einwilligung", "consent", ("Consent",)), ("Fall", "encounter", ("Encounter",)),
])
def test_contexts_give_kind_and_resources(context: str, kind: str, resource_types: tuple[str, ...]) -> None:
    found = only_criterion(parse_ccdl(v2([criterion(context, SNOMED, "1234")])))
    assert (found.kind, found.resource_types) == (kind, resource_types)


def test_unknown_context_takes_the_kind_of_its_code_system() -> None:
    query = parse_ccdl(v2([criterion("Krankheit", ICD, "E11")]))
    assert only_criterion(query).kind == "diagnosis"
    assert query.warnings == (("/inclusionCriteria/0/0/context/code: context 'Krankheit': kind 'diagnosis' taken "
                              "from the code system of the term codes"),)


# -- units, age, gender --------------------------------------------------------------------------------

def lab(*codes: str, **value: Any) -> dict[str, Any]:
    found = criterion("Laboruntersuchung", LOINC, codes[0], valueFilter=value)
    found["termCodes"] = [{"code": c, "system": LOINC, "display": c} for c in codes]
    return found


def test_glucose_in_mmol_per_litre_is_compared_in_mg_per_decilitre() -> None:
    value = only_criterion(parse_ccdl(v2([lab("2345-7", type="quantity-comparator", comparator="ge", value=5.55,
                                               unit={"code": "mmol/L", "display": "mmol/L"})]))).value
    # 5.55 mmol/L x 180.16 g/mol = 999.888 mg/L = 99.9888 mg/dL
    assert (value.unit, value.normalized, value.comparator) == ("mg/dL", True, "ge")
    assert value.value == pytest.approx(99.9888, rel=1e-9)


def test_glucose_codes_of_two_units_become_two_criteria_in_one_clause() -> None:
    query = parse_ccdl(v2([lab("2345-7", "15074-8", type="quantity-range", minValue=70, maxValue=100,
                               unit={"code": "mg/dL", "display": "mg/dL"})]))
    (clause,) = query.inclusion[0][0].criteria
    assert [(c.codes, c.value.unit, c.value.low, c.value.high) for c in clause] == [
        ((Coding(LOINC, "2345-7"),), "mg/dL", 70.0, 100.0),
        ((Coding(LOINC, "15074-8"),), "mmol/L", pytest.approx(70 / 18.016), pytest.approx(100 / 18.016))]
    assert {c.path for c in clause} == {"/inclusionCriteria/0/0"}


def test_temperature_in_fahrenheit_becomes_celsius() -> None:
    value = only_criterion(parse_ccdl(v2([lab("8310-5", type="quantity-comparator", comparator="gt", value=98.6,
                                               unit={"code": "[degF]", "display": "°F"})]))).value
    assert (value.value, value.unit, value.normalized) == (pytest.approx(37.0), "Cel", True)


def test_filter_without_unit_is_read_in_the_canonical_unit() -> None:
    value = only_criterion(parse_ccdl(v2([lab("718-7", type="quantity-comparator", comparator="lt", value=8)]))).value
    assert (value.value, value.unit, value.normalized) == (8.0, "g/dL", True)


def test_unknown_loinc_code_keeps_the_raw_value_and_warns() -> None:
    query = parse_ccdl(v2([lab("99999-9", type="quantity-comparator", comparator="gt", value=3,
                               unit={"code": "mg/L", "display": "mg/L"})]))
    value = only_criterion(query).value
    assert (value.value, value.unit, value.normalized) == (3.0, "mg/L", False)
    assert len(query.warnings) == 2 and "LOINC code '99999-9' is not in our catalogue" in query.warnings[0]


def test_concept_value_filter_keeps_systems() -> None:
    value = only_criterion(parse_ccdl(v2([lab("72166-2", type="concept", selectedConcepts=[
        {"code": "LA18976-3", "system": LOINC, "display": "Current every day smoker"},
        {"code": "77176002", "system": SNOMED, "display": "Smoker"}])]))).value
    assert value.concepts == (Coding(LOINC, "LA18976-3"), Coding(SNOMED, "77176002"))


@pytest.mark.parametrize(("written", "kept"), [
    ("a", "a"), ("year", "a"), ("Jahr", "a"), ("years", "a"), ("mo", "mo"), ("Monate", "mo"), ("wk", "wk"),
    ("week", "wk"), ("d", "d"), ("Tage", "d"), (None, "a")])
def test_age_units(written: str | None, kept: str) -> None:
    value: dict[str, Any] = {"type": "quantity-range", "minValue": 2, "maxValue": 40}
    if written:
        value["unit"] = {"code": written, "display": written}
    for system, code in ((LOINC, "30525-0"), (SNOMED, "424144002")):
        found = only_criterion(parse_ccdl(v2([criterion("Patient", system, code, valueFilter=value)])))
        assert (found.kind, found.codes, found.resource_types) == ("age", (), ("Patient",))
        assert (found.value.low, found.value.high, found.value.unit, found.value.normalized) == (2.0, 40.0, kept,
                                                                                                 False)


@pytest.mark.parametrize(("written", "gender"), [
    ("male", "male"), ("M", "male"), ("LA2-8", "male"), ("F", "female"), ("female", "female"), ("LA3-6", "female"),
    ("D", "other"), ("divers", "other"), ("other", "other"), ("U", "unknown"), ("X", "unknown"), ("UNK", "unknown")])
def test_gender_codes_map_onto_patient_gender(written: str, gender: str) -> None:
    value = {"type": "concept", "selectedConcepts": [{"code": written, "system": "whatever", "display": written}]}
    for system, code in ((LOINC, "LL2191-6"), (SNOMED, "263495000"), ("mii.abide", "gender")):
        found = only_criterion(parse_ccdl(v2([criterion("Patient", system, code, valueFilter=value)])))
        assert (found.kind, found.value.concepts) == ("gender", (Coding("", gender),))


# -- files ----------------------------------------------------------------------------------------------

def test_load_query_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    path.write_text(json.dumps(v2([criterion("Diagnose", ICD, "X99.99")])))
    with pytest.raises(DefinitionError) as caught:
        load_query(path)
    assert caught.value.source == str(path)
    with pytest.raises(InputError):
        load_query(tmp_path / "missing.json")


def test_shipped_contexts_load_and_broken_ones_are_reported(tmp_path: Path) -> None:
    declared = load_contexts()
    assert declared.context("LABORUNTERSUCHUNG").kind == "observation"
    assert declared.kinds["diagnosis"].attribute("status").name == "clinicalStatus"
    broken = tmp_path / "contexts.yaml"
    text = (Path(__file__).parents[2] / "src" / "dic" / "cohort" / "contexts.yaml").read_text()
    broken.write_text(text.replace("kind: consent,", "kind: consents,"))
    with pytest.raises(DefinitionError) as caught:
        load_contexts(broken)
    assert any(p.path == "/contexts/8/kind" for p in caught.value.problems), caught.value.problems
    broken.write_text(text.replace("{name: icd10gm,", "{name: icd11,"))
    with pytest.raises(DefinitionError) as caught:
        load_contexts(broken)
    assert [str(p) for p in caught.value.problems] == [("/code_systems/0/name: dic.terminology knows no code system "
                                                       "'icd11'")]


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_age_and_gender_take_no_time_window(where: str) -> None:
    """A window on a patient property would silently select nobody: refused with the path."""
    gender = {"context": {"code": "Patient", "system": "fdpg.mii.cds", "display": "Patient"},
              "termCodes": [{"code": "263495000", "system": "http://snomed.info/sct", "display": "Gender"}],
              "valueFilter": {"type": "concept", "selectedConcepts": [{"code": "female", "system": "", "display": "f"}]}}
    diagnosis = {"context": {"code": "Diagnose", "system": "fdpg.mii.cds", "display": "Diagnose"},
                 "termCodes": [{"code": "I10", "system": "http://fhir.de/CodeSystem/bfarm/icd-10-gm", "display": "I10"}]}
    if where == "relative":
        groups = [{"id": "a", "anchorOccurrence": "first", "criteria": [[diagnosis]]},
                  {"id": "b", "relativeTimeRestrictions": [{"anchorRef": "a", "maxOffset": "P1D"}],
                   "criteria": [[gender]]}]
        path = "/inclusionCriteria/0/1/criteria/0/0"
    else:
        groups = [{"id": "b", "criteria": [[{**gender, "timeRestriction": {"afterDate": "2020-01-01"}}]]}]
        path = "/inclusionCriteria/0/0/criteria/0/0/timeRestriction"
    with pytest.raises(DefinitionError) as raised:
        parse_ccdl({"version": "3", "inclusionCriteria": [groups]})
    assert [p.path for p in raised.value.problems] == [path]
    assert "property of the patient" in raised.value.problems[0].message
