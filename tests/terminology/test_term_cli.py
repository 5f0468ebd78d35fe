"""`dic term`: the commands print the values, errors exit 2 with a message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson


def test_lookup_and_validate_print_the_values(dic: Callable) -> None:
    shown = dic("term", "lookup", "icd10gm", "E1190")
    assert "E11.90" in shown.stdout and "Ohne Komplikationen" in shown.stdout and "E11.9" in shown.stdout
    result = orjson.loads(dic("--json", "term", "lookup", "atc", "A10BA02").stdout)
    assert {"name": "display", "valueString": "Metformin"} in result["parameter"]
    valid = orjson.loads(dic("--json", "term", "validate", "ops", "8930").stdout)
    assert valid["parameter"][0] == {"name": "result", "valueBoolean": True}
    wrong = orjson.loads(dic("--json", "term", "validate", "icd10gm", "E11.90", "--display", "Asthma").stdout)
    assert wrong["parameter"][0]["valueBoolean"] is False


def test_subsumes_expand_translate_convert_and_systems(dic: Callable, tmp_path: Path) -> None:
    assert dic("term", "subsumes", "icd10gm", "E11.90", "E11").stdout.strip() == "E11.90 subsumed-by E11"
    expanded = orjson.loads(dic("--json", "term", "expand", "--include", "icd10gm|G35", "--is-a").stdout)
    assert expanded["expansion"]["total"] == 12
    file = tmp_path / "vs.json"
    file.write_bytes(orjson.dumps({"resourceType": "ValueSet", "status": "active", "compose": {"include": [
        {"system": "http://fhir.de/CodeSystem/bfarm/atc", "filter": [
            {"property": "concept", "op": "is-a", "value": "A10BA"}]}]}}))
    assert "A10BA02" in dic("term", "expand", str(file)).stdout
    translated = dic("term", "translate", "icd10gm", "G12.2").stdout
    assert "803" in translated and "narrower" in translated
    assert dic("term", "convert", "5.5", "mmol/L", "--to", "mg/dL", "--loinc", "2345-7").stdout.strip() == \
        "5.5 mmol/L = 99.088 mg/dL"
    systems = {s["name"]: s for s in orjson.loads(dic("--json", "term", "systems").stdout)}
    assert systems["icd10gm"]["concepts"] > 12_500 and systems["ucum"]["concepts"] is None


def test_errors_exit_2_with_a_clear_message(dic: Callable) -> None:
    unknown = dic("term", "lookup", "icd10gm", "X99.9", check=False)
    assert unknown.returncode == 2 and "has no code 'X99.9'" in unknown.stderr
    system = dic("term", "lookup", "snomed", "123", check=False)
    assert system.returncode == 2 and "unknown code system 'snomed'" in system.stderr
    units = dic("term", "convert", "1", "mg", "--to", "mL", check=False)
    assert units.returncode == 2 and "cannot convert" in units.stderr
    usage = dic("term", "expand", "--include", "G35", check=False)
    assert usage.returncode == 2 and "SYSTEM|CODE" in usage.stderr
