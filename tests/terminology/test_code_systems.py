"""The shipped code systems: they load, their hierarchies are right, every code our sources use is in them."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import yaml

from dic.errors import InputError
from dic.terminology import all_code_systems, code_system, concept_maps, lookup, resolve_system, validate_code

SYNTH = Path(__file__).resolve().parents[2] / "src" / "dic" / "synth"
ICD, OPS, ATC = "http://fhir.de/CodeSystem/bfarm/icd-10-gm", "http://fhir.de/CodeSystem/bfarm/ops", \
    "http://fhir.de/CodeSystem/bfarm/atc"


def test_every_system_loads_with_its_declared_content() -> None:
    counts = {cs.name: len(cs.concepts) for cs in all_code_systems()}
    assert set(counts) == {"icd10gm", "ops", "atc", "loinc", "orpha"}
    assert counts["icd10gm"] > 12_500 and counts["ops"] > 300 and counts["atc"] > 400
    assert counts["loinc"] >= 70 and counts["orpha"] >= 6
    assert resolve_system("http://www.whocc.no/atc") == ATC and resolve_system("ICD10GM") == ICD


def _synth_codes(key: str) -> set[str]:
    """Every value of `key` (icd, ops, atc, loinc, code) in the synth YAML declarations."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == key and isinstance(v, str) and "://" not in v:  # not the `systems:` URIs
                    found.add(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for path in SYNTH.glob("*.yaml"):
        walk(yaml.safe_load(path.read_text()))
    return found


def test_every_icd_code_in_the_synth_declarations_validates() -> None:
    codes = {c for c in _synth_codes("icd") | _synth_codes("code") if re.fullmatch(r"[A-Z]\d\d(\.\d{1,2})?", c)}
    secondary = yaml.safe_load((SYNTH / "billing.yaml").read_text())["secondary_codes"]  # dagger -> asterisk
    codes |= set(secondary) | set(secondary.values())
    assert len(codes) > 90
    bad = {c: validate_code(ICD, c).message for c in codes if not validate_code(ICD, c).valid}
    assert not bad


def test_every_ops_atc_and_loinc_code_in_the_synth_declarations_validates() -> None:
    for system, key in ((OPS, "ops"), (ATC, "atc"), ("http://loinc.org", "loinc")):
        codes = _synth_codes(key)
        assert codes, key
        bad = [c for c in codes if not validate_code(system, c).valid]
        assert not bad, f"{key}: {bad}"


def test_billing_and_biobank_exports_use_only_known_codes(world: Path) -> None:
    with (world / "site-a" / "billing" / "ICD.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    icd = {r["ICD-Kode"] for r in rows} | {r["Sekundär-Kode"] for r in rows if r["Sekundär-Kode"]}
    with (world / "site-a" / "billing" / "OPS.csv").open(encoding="utf-8") as f:
        ops = {r["OPS-Kode"] for r in csv.DictReader(f, delimiter=";")}
    with (world / "site-a" / "biobank" / "samples.csv").open(encoding="utf-8") as f:
        icd |= {r["diagnosis_icd10gm"] for r in csv.DictReader(f, delimiter=";") if r["diagnosis_icd10gm"]}
    assert ops and all("-" not in c for c in ops)  # the §21 export drops the punctuation
    assert all(validate_code(ICD, c).valid for c in icd), [c for c in icd if not validate_code(ICD, c).valid]
    assert all(validate_code(OPS, c).valid for c in ops), [c for c in ops if not validate_code(OPS, c).valid]


@pytest.mark.parametrize(("written", "catalogue", "mark"), [
    ("E11.90", "E11.90", None), ("E1190", "E11.90", None), ("e11.90", "E11.90", None),
    ("G63.2*", "G63.2", "*"), ("E11.40†", "E11.40", "†"), ("E11.40+", "E11.40", "†"), ("U99.0!", "U99.0", "!"),
    ("G35.-", "G35", None), ("G35-G37", "G35-G37", None), ("VI", "VI", None),
])
def test_icd_codes_are_found_however_sources_write_them(written: str, catalogue: str, mark: str | None) -> None:
    result = lookup("icd10gm", written)
    assert (result.code, result.mark) == (catalogue, mark)


def test_icd_hierarchy_runs_from_gm_five_character_codes_to_the_chapter() -> None:
    icd = code_system("icd10gm")
    assert icd.ancestors("E11.90") == ("E11.9", "E11", "E10-E14", "IV")
    assert icd.ancestors("G35.10") == ("G35.1", "G35", "G35-G37", "VI")
    e1190 = lookup("icd10gm", "E11.90")
    assert e1190.display == "Diabetes mellitus, Typ 2: Ohne Komplikationen: Nicht als entgleist bezeichnet"
    assert e1190.kind == "gm-subcategory" and e1190.parents == ("E11.9",)
    # a WHO code our data uses: German display, the WHO title stays as English designation
    b029 = lookup("icd10gm", "B02.9")
    assert b029.display == "Zoster ohne Komplikation" and ("en", "Zoster without complication") in b029.designations
    assert lookup("icd10gm", "G35").children == ("G35.0", "G35.1", "G35.2", "G35.3", "G35.9")
    assert lookup("icd10gm", "VI").kind == "chapter" and lookup("icd10gm", "G35-G37").kind == "block"


@pytest.mark.parametrize(("written", "catalogue"), [
    ("8-930", "8-930"), ("8930", "8-930"), ("5378c0", "5-378.c0"), ("5-378C0", "5-378.c0"), ("54701", "5-470.1"),
    ("5470.1", "5-470.1"), ("897d0", "8-97d.0"), ("1-620.00", "1-620.00"), ("854", "8-54"),
])
def test_ops_codes_are_normalized_from_the_21_export(written: str, catalogue: str) -> None:
    assert code_system("ops").normalize(written)[0] == catalogue


def test_ops_hierarchy_uses_prefixes_groups_and_chapters() -> None:
    ops = code_system("ops")
    assert ops.ancestors("1-620.00") == ("1-620.0", "1-620", "1-61...1-69", "1")
    assert ops.ancestors("8-542.11") == ("8-542.1", "8-542", "8-54", "8-52...8-54", "8")
    assert lookup("ops", "8930").display.startswith("Monitoring von Atmung, Herz und Kreislauf ohne")
    assert validate_code(OPS, "8-930.0").valid is False  # no such five-character code
    assert lookup("ops", "5").children[0] == "5-01...5-05"


def test_atc_has_all_five_levels() -> None:
    atc = code_system("atc")
    assert atc.ancestors("A10BA02") == ("A10BA", "A10B", "A10", "A")
    assert [atc.concepts[c].kind for c in ("A", "A10", "A10B", "A10BA", "A10BA02")] == \
        ["level-1", "level-2", "level-3", "level-4", "level-5"]
    assert lookup("http://www.whocc.no/atc", "a10ba02").display == "Metformin"


def test_loinc_terms_carry_axes_unit_and_molar_mass() -> None:
    glucose = dict(lookup("loinc", "2345-7").properties)
    assert glucose["COMPONENT"] == "Glucose" and glucose["PROPERTY"] == "MCnc" and glucose["SYSTEM"] == "Ser/Plas"
    assert glucose["SCALE_TYP"] == "Qn" and glucose["EXAMPLE_UCUM_UNITS"] == "mg/dL"
    assert glucose["MOLAR_MASS"] == pytest.approx(180.16)


def test_unknown_codes_and_systems_are_errors_that_name_them() -> None:
    with pytest.raises(InputError, match=r"ICD-10-GM .*has no code 'X99.9'"):
        lookup("icd10gm", "X99.9")
    with pytest.raises(InputError, match="unknown code system 'http://snomed.info/sct'"):
        lookup("http://snomed.info/sct", "123")


def test_shipped_concept_maps_use_valid_codes_on_both_sides() -> None:
    maps = concept_maps()
    assert "https://dic.example.org/fhir/ConceptMap/icd10gm-to-orpha" in maps
    for concept_map in maps.values():
        for group in concept_map["group"]:
            for element in group.get("element", []):
                assert validate_code(group["source"], element["code"]).valid, element["code"]
                for target in element["target"]:
                    assert validate_code(group["target"], target["code"], target.get("display")).valid
