"""$validate-code, $subsumes, $expand and $translate with FHIR semantics, and their Parameters."""

from __future__ import annotations

import pytest

from dic.errors import DefinitionError
from dic.fhir import check_resource
from dic.terminology import Subsumption, expand, subsumes, translate, validate_code

ICD = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"


def test_validate_code_follows_validate_code_semantics() -> None:
    good = validate_code(ICD, "E11.90", display="Diabetes mellitus, Typ 2: Ohne Komplikationen: Nicht als entgleist "
                                                "bezeichnet", version="2024")
    assert good.valid and good.message is None
    assert good.as_parameters()["parameter"][0] == {"name": "result", "valueBoolean": True}
    wrong_display = validate_code(ICD, "E11.90", display="Typ-1-Diabetes")
    assert not wrong_display.valid and "wrong display 'Typ-1-Diabetes'" in wrong_display.message
    assert wrong_display.display.startswith("Diabetes mellitus, Typ 2")  # the right one, as FHIR returns it
    english = validate_code(ICD, "B02.9", display="Zoster without complication")  # a designation counts
    assert english.valid
    unknown_code = validate_code(ICD, "E11.99")
    assert not unknown_code.valid and "'E11.99' is not a code of ICD-10-GM" in unknown_code.message
    unknown_system = validate_code("http://example.org/local", "X")
    assert not unknown_system.valid and "unknown code system" in unknown_system.message
    assert not validate_code(ICD, "E11.90", version="1999").valid
    assert validate_code("ucum", "mg/dL").valid and not validate_code("ucum", "mg/dL/").valid


def test_subsumes_walks_the_hierarchy_both_ways() -> None:
    assert subsumes("icd10gm", "E11.90", "E11") == Subsumption.subsumed_by == "subsumed-by"
    assert subsumes("icd10gm", "E11", "E10-E14") == "subsumed-by"
    assert subsumes("icd10gm", "E10-E14", "E11.90") == "subsumes"
    assert subsumes("icd10gm", "E1190", "E11.90") == "equivalent"
    assert subsumes("icd10gm", "E11.90", "I10.00") == "not-subsumed"
    assert subsumes("atc", "A10BA02", "A10") == "subsumed-by"
    assert subsumes("ops", "8", "8-542.11") == "subsumes"
    assert subsumes("atc", "A10", "A10BA02").as_parameters() == {
        "resourceType": "Parameters", "parameter": [{"name": "outcome", "valueCode": "subsumes"}]}


def _value_set(include: list[dict], exclude: list[dict] | None = None) -> dict:
    compose = {"include": include} | ({"exclude": exclude} if exclude else {})
    return {"resourceType": "ValueSet", "id": "test", "status": "active", "compose": compose}


def test_expand_is_a_includes_the_code_and_its_gm_children() -> None:
    result = expand(_value_set([{"system": ICD, "filter": [{"property": "concept", "op": "is-a", "value": "G35"}]}]))
    codes = [c["code"] for c in result["expansion"]["contains"]]
    assert codes[0] == "G35" and {"G35.0", "G35.1", "G35.10", "G35.20", "G35.30", "G35.9"} <= set(codes)
    assert result["expansion"]["total"] == len(codes) == 12
    assert check_resource(result) is None
    below = expand(_value_set([{"system": ICD, "filter": [{"property": "concept", "op": "descendent-of",
                                                             "value": "G35"}]}]))
    assert below["expansion"]["total"] == 11


def test_expand_combines_concepts_filters_and_excludes() -> None:
    result = expand(_value_set(
        [{"system": ICD, "filter": [{"property": "concept", "op": "is-a", "value": "E11.9"}]},
         {"system": "http://fhir.de/CodeSystem/bfarm/atc", "concept": [{"code": "A10BA02"}, {"code": "A10BK03"}]}],
        exclude=[{"system": ICD, "concept": [{"code": "E11.91"}]}]))
    contains = [(c["system"].rsplit("/", 1)[1], c["code"], c["display"]) for c in result["expansion"]["contains"]]
    assert contains == [("icd-10-gm", "E11.9", "Diabetes mellitus, Typ 2: Ohne Komplikationen"),
                        ("icd-10-gm", "E11.90", ("Diabetes mellitus, Typ 2: Ohne Komplikationen: Nicht als "
                                                 "entgleist bezeichnet")),
                        ("atc", "A10BA02", "Metformin"), ("atc", "A10BK03", "Empagliflozin")]
    by_class = expand(_value_set([{"system": "http://loinc.org", "filter": [
        {"property": "CLASS", "op": "=", "value": "BP.ATOM"}]}]))
    assert [c["code"] for c in by_class["expansion"]["contains"]] == ["8462-4", "8480-6"]


def test_expand_reports_every_problem_at_once() -> None:
    with pytest.raises(DefinitionError) as error:
        expand(_value_set([{"system": ICD, "concept": [{"code": "X99.9"}]},
                           {"system": "http://example.org/none"},
                           {"system": ICD, "filter": [{"property": "concept", "op": "near", "value": "G35"}]}]))
    paths = [p.path for p in error.value.problems]
    assert paths == ["/compose/include/0/concept/0/code", "/compose/include/1/system", "/compose/include/2/filter/0/op"]


def test_translate_icd_to_orpha_and_atc_between_its_two_uris() -> None:
    als = translate(None, ICD, "G12.2")
    assert als.result and [(m.system, m.code, m.equivalence) for m in als.matches] == [
        ("http://www.orpha.net", "803", "narrower")]
    assert translate("https://dic.example.org/fhir/ConceptMap/icd10gm-to-orpha", "icd10gm", "G36.0").matches[0].code \
        == "71211"
    metformin = translate(None, "http://fhir.de/CodeSystem/bfarm/atc", "A10BA02")
    assert [(m.system, m.code, m.equivalence) for m in metformin.matches] == [
        ("http://www.whocc.no/atc", "A10BA02", "equal")]
    back = translate(None, "http://www.whocc.no/atc", "A10BA02")
    assert back.matches[0].system == "http://fhir.de/CodeSystem/bfarm/atc"
    assert not translate(None, "http://www.whocc.no/atc", "Z99ZZ99").result
    none = translate(None, ICD, "E11.90")
    assert not none.result and "no mapping" in none.message
    parameters = als.as_parameters()["parameter"]
    assert parameters[0] == {"name": "result", "valueBoolean": True}
    assert parameters[1]["part"][1] == {"name": "concept", "valueCoding": {
        "system": "http://www.orpha.net", "code": "803", "display": "Amyotrophic lateral sclerosis"}}
