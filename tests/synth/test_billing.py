"""The §21 KHEntgG billing export: the published headers and value formats (read from the spec
files in ../shared/data/p21, parsed with the csv module), counts and references equal to the HIS
resources, one main diagnosis per case, the planted rates recoverable, deterministic bytes."""

from __future__ import annotations

import csv
import hashlib
import itertools
import math
import re
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from dic.errors import DefinitionError
from dic.synth.billing import BillingWriter
from dic.synth.billing_rules import BILLING_PATH, load_billing_rules
from dic.synth.catalog import load_catalog
from dic.synth.site_patient import SiteContext, SitePatient, case_number
from dic.synth.world import site_patients

SITE, SEED, YEARS, PATIENTS = "site-b", 5, (2015, 2025), 2500
FILES = ("FALL.csv", "FAB.csv", "ICD.csv", "OPS.csv", "ENTGELTE.csv", "INFO.csv", "KRANKENHAUS.csv")
RULES = yaml.safe_load(BILLING_PATH.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ the world under test
def write(patients: list[SitePatient], folder: Path, seed: int = SEED,
          site: str = SITE) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
    folder.mkdir(parents=True, exist_ok=True)
    links: list[tuple[str, str, str]] = []
    writer = BillingWriter(folder, SiteContext(site, seed, YEARS, lambda *row: links.append(row)))
    for patient in patients:
        writer.add(patient)
    return writer.close(), links


@pytest.fixture(scope="module")
def patients() -> list[SitePatient]:
    return list(site_patients(PATIENTS, SEED, SITE, YEARS))  # HIS resources, identities per source


@pytest.fixture(scope="module")
def delivery(patients: list[SitePatient], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("billing")
    counts, links = write(patients, folder)
    files = {}
    for name in FILES:
        with (folder / name).open(encoding="utf-8", newline="") as handle:
            header, *rows = list(csv.reader(handle, delimiter=";", strict=True))
        files[name] = (header, [dict(zip(header, row)) for row in rows], rows)
    return {"folder": folder, "counts": counts, "links": links, "files": files}


def rows(delivery: dict[str, Any], name: str) -> list[dict[str, str]]:
    return delivery["files"][name][1]


def inpatient(patients: list[SitePatient]) -> dict[str, tuple[SitePatient, dict[str, Any]]]:
    """case number -> (patient, Encounter) for every inpatient Encounter of the HIS."""
    return {case_number(r): (p, r) for p in patients for r in p.resources
            if r["resourceType"] == "Encounter" and r["class"]["code"] == "IMP"}


def normal(name: str) -> str:
    return name.lower().replace(" ", "-")


# ------------------------------------------------------------------ the published spec, parsed
def spec_headers(shared: Path) -> dict[str, list[str]]:
    """File -> column list from p21-format-spec.md (full headers; INFO/KRANKENHAUS share a section)."""
    text = (shared / "p21" / "p21-format-spec.md").read_text(encoding="utf-8")
    found: dict[str, list[str]] = {}
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        title, _, body = section.partition("\n")
        if not title.split()[0].endswith(".csv"):
            continue
        current, parts = title.split()[0], defaultdict(list)
        for line in body.splitlines():
            if not line.strip() or line.startswith("("):
                break
            label = re.match(r"^(INFO|KRANKENHAUS)\b[^:;]*:\s*(.*)$", line)
            if label:
                current, line = label.group(1) + ".csv", label.group(2)
            parts[current].append(line)
        for name, lines in parts.items():
            found[name] = [c.strip() for c in " ".join(lines).split(";")]
    return found


def spec_formats(shared: Path) -> list[tuple[list[str], re.Pattern[str], list[str]]]:
    """The value-format table: (column names, regex, mandatory column names)."""
    text = (shared / "p21" / "p21-format-spec.md").read_text(encoding="utf-8")
    table = text.split("## Value formats", 1)[1].split("\n## ", 1)[0]
    found = []
    for line in table.splitlines()[3:]:
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        names = [n.strip() for n in cells[0].split(" / ")]
        quoted = re.search(r"`([^`]*)`", cells[1])
        pattern = (quoted.group(1).replace("\\|", "|") if quoted
                   else "^(" + "|".join(re.findall(r"\b[A-Z]{2}\b", cells[1])) + ")$")
        mandatory = names if cells[2] == "yes" else [
            n for n in names for item in cells[2].removesuffix(": yes").split(", ")
            if cells[2].endswith(": yes") and item.rstrip("-") in n]
        found.append((names, re.compile(pattern), mandatory))
    return found


# ------------------------------------------------------------------ structure and formats
def test_headers_are_the_published_column_lists(delivery: dict[str, Any], shared_data: Path) -> None:
    published = spec_headers(shared_data)
    assert set(published) == set(FILES)
    for name in FILES:
        assert delivery["files"][name][0] == published[name], name
    aktin_specs = shared_data / "p21" / "aktin_p21_specs_2021-02-24.csv"
    with aktin_specs.open(encoding="utf-8", newline="") as handle:
        aktin = list(csv.DictReader(handle))
    assert len(aktin) == 34
    for spec in aktin:  # the AKTIN import's variables exist, and the non-empty ones are never empty
        header = {normal(c): c for c in delivery["files"][spec["CSV"] + ".csv"][0]}
        column = header[normal(spec["Variable"])]
        if spec["Darf leer sein?"] == "Nein":
            assert all(row[column] for row in rows(delivery, spec["CSV"] + ".csv")), column


def test_files_are_utf8_lf_with_the_header_column_count(delivery: dict[str, Any]) -> None:
    for name in FILES:
        text = (delivery["folder"] / name).read_bytes().decode("utf-8")
        assert "\r" not in text and text.endswith("\n")
        header, _, plain = delivery["files"][name]
        assert all(len(row) == len(header) for row in plain), name
        assert delivery["counts"][name] == len(plain) == text.count("\n") - 1
    assert delivery["counts"]["INFO.csv"] == delivery["counts"]["KRANKENHAUS.csv"] == 1


def test_values_have_the_spec_formats(delivery: dict[str, Any], shared_data: Path) -> None:
    formats = spec_formats(shared_data)
    assert len(formats) >= 18
    checked = 0
    for name in FILES:
        by_normal = {normal(c): c for c in delivery["files"][name][0]}
        for names, pattern, mandatory in formats:
            for column in (by_normal[normal(n)] for n in names if normal(n) in by_normal):
                values = [row[column] for row in rows(delivery, name)]
                bad = [v for v in values if v and not pattern.match(v)]
                assert not bad, (name, column, pattern.pattern, bad[:5])
                if any(normal(m) == normal(column) for m in mandatory):
                    assert all(values), (name, column, "empty")
                checked += len(values)
    assert checked > 50_000


def valid_ik(ik: str) -> bool:
    digits = [int(c) * (2 if k % 2 == 0 else 1) for k, c in enumerate(ik[2:8])]
    return len(ik) == 9 and ik.isdigit() and sum(d // 10 + d % 10 for d in digits) % 10 == int(ik[8])


OWN_FORMATS = {  # columns the spec table gives no regex for
    "IK": r"\d{9}", "Entlassender-Standort": r"77\d{4}000", "Standortnummer-Behandlungsort": r"77\d{4}000",
    "Entgeltbereich": "DRG|PSY", "Versicherten-ID": r"([A-Z]\d{9})?", "Geburtsmonat": r"(0[1-9]|1[0-2])?",
    "Alter-in-Jahren-am-Aufnahmetag": r"\d{1,3}", "Alter-in-Tagen-am-Aufnahmetag": r"(\d{1,3})?",
    "Aufnahmegewicht": r"(\d{3,5})?", "Patientennummer": r"\w+", "Beatmungsstunden": "0",
    "IK-Verlegungs-KH": r"(26\d{7})?", "Fachabteilung": r"HA\d{4}", "ICD-Kode": r"[A-Z]\d{2}(\.[0-9]{1,3})?",
    "Sekundär-Kode": r"([A-Z]\d{2}(\.[0-9]{1,3})?)?", "Diagnosensicherheit": "V?",
    "OPS-Kode": r"\d{3}[0-9a-z]{1,4}",
    "Entgeltart": r"70[A-Z]\d{2}[A-Z]00|7P[A-Z]\d{2}[A-Z]00", "Entgeltbetrag": r"\d+,\d{2}",
    "Abrechnung-von": r"\d{8}", "Abrechnung-bis": r"\d{8}", "Entgeltanzahl": r"[1-9]\d*",
    "Belegoperateur": "N", "Beleganästhesist": "N", "Beleghebamme": "N",
}


def test_codes_keys_and_dates_are_plausible(delivery: dict[str, Any]) -> None:
    for name in FILES[:5]:
        for column, pattern in OWN_FORMATS.items():
            if column in delivery["files"][name][0]:
                bad = [r[column] for r in rows(delivery, name) if not re.fullmatch(pattern, r[column])]
                assert not bad, (name, column, bad[:5])
    fall = rows(delivery, "FALL.csv")
    iks = {r[column] for r in fall for column in ("IK", "IK-der-Krankenkasse", "IK-Verlegungs-KH")}
    assert all(valid_ik(ik) for ik in iks - {""})
    for r in fall:
        assert f"{YEARS[0]}01010000" <= r["Aufnahmedatum"] < r["Entlassungsdatum"] < f"{YEARS[1] + 2}"
        assert (r["Alter-in-Jahren-am-Aufnahmetag"] == "0") == bool(r["Aufnahmegewicht"]) \
            == bool(r["Alter-in-Tagen-am-Aufnahmetag"])
        assert r["Aufnahmegrund"].startswith("02") == bool(r["Behandlungsbeginn-vorstationär"])
        assert (r["Entlassungsgrund"] == "029") == bool(r["Behandlungsende-nachstationär"])
        assert (r["Entgeltbereich"] == "PSY") == (r["Beurlaubungstage-PSY"] == "0")
    stays = {r["KH-internes-Kennzeichen"]: (r["Aufnahmedatum"], r["Entlassungsdatum"]) for r in fall}
    for r in rows(delivery, "OPS.csv"):
        first, last = stays[r["KH-internes-Kennzeichen"]]
        assert first <= r["OPS-Datum"] <= last
    segments = defaultdict(list)
    for r in rows(delivery, "FAB.csv"):  # department stays are contiguous and cover the case
        segments[r["KH-internes-Kennzeichen"]].append((r["FAB-Aufnahmedatum"], r["FAB-Entlassungsdatum"]))
    for case, parts in segments.items():
        assert parts[0][0] == stays[case][0] and parts[-1][1] == stays[case][1]
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(parts))


# ------------------------------------------------------------------ the same facts as the HIS
def test_cases_diagnoses_and_procedures_are_the_his_inpatient_facts(delivery: dict[str, Any],
                                                                    patients: list[SitePatient]) -> None:
    cases = inpatient(patients)
    fall = {r["KH-internes-Kennzeichen"]: r for r in rows(delivery, "FALL.csv")}
    assert len(fall) == len(rows(delivery, "FALL.csv")) == len(cases) > 1000
    assert set(fall) == set(cases)
    conditions = {r["id"]: r for p in patients for r in p.resources if r["resourceType"] == "Condition"}
    procedures = defaultdict(list)
    for p in patients:
        for r in p.resources:
            if r["resourceType"] == "Procedure":
                procedures[r["encounter"]["reference"]].append(r["code"]["coding"][0])
    icd, ops = defaultdict(list), defaultdict(list)
    for r in rows(delivery, "ICD.csv"):
        icd[r["KH-internes-Kennzeichen"]].append((r["ICD-Version"], r["ICD-Kode"]))
    for r in rows(delivery, "OPS.csv"):
        ops[r["KH-internes-Kennzeichen"]].append((r["OPS-Version"], r["OPS-Kode"]))
    for name in ("ICD.csv", "OPS.csv", "FAB.csv", "ENTGELTE.csv"):  # every row refers to a case
        assert {r["KH-internes-Kennzeichen"] for r in rows(delivery, name)} <= set(fall), name
    assert Counter(r["KH-internes-Kennzeichen"] for r in rows(delivery, "ENTGELTE.csv")) == Counter(set(fall))
    for number, (patient, encounter) in cases.items():
        row = fall[number]
        assert row["Patientennummer"] == patient.patient_number
        start, end = encounter["period"]["start"], encounter["period"]["end"]
        assert row["Aufnahmedatum"] == re.sub(r"\D", "", start[:16])
        assert row["Entlassungsdatum"] == re.sub(r"\D", "", end[:16])
        stay = encounter["hospitalization"]
        assert row["Entlassungsgrund"] == stay["dischargeDisposition"]["coding"][0]["code"]
        assert row["Aufnahmeanlass"] in {stay["admitSource"]["coding"][0]["code"], "G"}
        codings = [conditions[d["condition"]["reference"].split("/")[1]]["code"]["coding"][0]
                   for d in encounter["diagnosis"]]
        assert Counter(icd[number]) == Counter((c["version"], c["code"]) for c in codings)
        done = procedures["Encounter/" + encounter["id"]]
        assert Counter(ops[number]) == Counter((c["version"], re.sub(r"[-.]", "", c["code"])) for c in done)
    assert len(rows(delivery, "ICD.csv")) == sum(len(e["diagnosis"]) for _, e in cases.values())
    assert len(rows(delivery, "OPS.csv")) == sum(len(procedures["Encounter/" + e["id"]])
                                                 for _, e in cases.values())


def test_exactly_one_main_diagnosis_per_case_the_his_primary(delivery: dict[str, Any],
                                                             patients: list[SitePatient]) -> None:
    conditions = {r["id"]: r for p in patients for r in p.resources if r["resourceType"] == "Condition"}
    main = defaultdict(list)
    for r in rows(delivery, "ICD.csv"):
        if r["Diagnoseart"] == "HD":
            main[r["KH-internes-Kennzeichen"]].append(r["ICD-Kode"])
    assert Counter(r["Diagnoseart"] for r in rows(delivery, "ICD.csv")).keys() == {"HD", "ND"}
    for number, (_, encounter) in inpatient(patients).items():
        primary = [d for d in encounter["diagnosis"] if d["use"]["coding"][0]["code"] == "CC"]
        condition = conditions[primary[0]["condition"]["reference"].split("/")[1]]
        assert main[number] == [condition["code"]["coding"][0]["code"]]


def test_person_fields_come_from_the_billing_identity(delivery: dict[str, Any],
                                                      patients: list[SitePatient]) -> None:
    by_number = {p.patient_number: p for p in patients}
    for r in rows(delivery, "FALL.csv"):
        identity = by_number[r["Patientennummer"]].identity("billing")
        assert r["Geburtsjahr"] == (identity.birth_date or "")[:4]
        assert r["Geburtsmonat"] == (identity.birth_date or "")[5:7]
        assert r["Geschlecht"] == RULES["sex"].get(identity.sex, "")  # the declared w/m/d/x keys
        assert r["PLZ"] in {"", identity.postal_code or ""}
        assert r["Wohnort"] in {identity.city or "", (identity.city or "").upper()}
        assert r["Versicherten-ID"] in {"", identity.insurance_number or ""}
        assert (r["IK-der-Krankenkasse"] == "") <= (r["Versicherten-ID"] == "")


def test_linkage_truth_once_per_patient_with_an_inpatient_case(delivery: dict[str, Any],
                                                               patients: list[SitePatient]) -> None:
    expected = {(p.patient_number, p.person_id) for p, _ in inpatient(patients).values()}
    assert sorted(delivery["links"]) == sorted(("billing", number, person) for number, person in expected)
    assert {r["Patientennummer"] for r in rows(delivery, "FALL.csv")} == {n for n, _ in expected}


# ------------------------------------------------------------------ planted rates, from the files alone
def test_planted_rates_are_recovered_from_the_files(delivery: dict[str, Any]) -> None:
    fall = {r["KH-internes-Kennzeichen"]: r for r in rows(delivery, "FALL.csv")}
    departments, intensive = defaultdict(set), set()
    for r in rows(delivery, "FAB.csv"):
        departments[r["KH-internes-Kennzeichen"]].add(r["Fachabteilung"])
        if r["Kennung Intensivbett"] == "J":
            intensive.add(r["KH-internes-Kennzeichen"])
    long_stays = [c for c, r in fall.items() if stay_days(r) >= RULES["transfer"]["min_days"]]
    moved = sum(len(departments[c]) == 2 for c in long_stays)
    assert len(long_stays) > 500 and close_to(moved, len(long_stays), RULES["transfer"]["pct"] / 100)
    assert all(len(departments[c]) == 1 for c in fall if c not in long_stays)
    # intensive care: the share among cases whose main diagnosis has a rule, against the rules' mean
    main = {r["KH-internes-Kennzeichen"]: r["ICD-Kode"] for r in rows(delivery, "ICD.csv")
            if r["Diagnoseart"] == "HD"}
    care = {rule["icd"]: rule["pct"] / 100 for rule in RULES["intensive_care"]}
    eligible = {c: next(care[p] for p in care if main[c].startswith(p))
                for c in fall if main[c].startswith(tuple(care))}
    treated = sum(c in intensive for c in eligible)
    assert len(eligible) > 100 and close_to(treated, len(eligible), sum(eligible.values()) / len(eligible))
    assert intensive <= set(eligible)
    assert all(bool(fall[c]["Verweildauer Intensiv"]) == (c in intensive) for c in fall)
    payers = {r["Patientennummer"]: r["IK-der-Krankenkasse"] for r in fall.values()}
    assert close_to(sum(ik == "" for ik in payers.values()), len(payers), RULES["self_pay_pct"] / 100)


def test_the_his_complication_cluster_shows_in_the_billed_diagnoses(delivery: dict[str, Any]) -> None:
    """The HIS plants a cluster of a complication (secondary diagnosis of stays) at one site for some
    months; billing carries it. Crude rate ratio from FALL/ICD.csv against the catalog's factor."""
    catalog = load_catalog()
    cluster = next(c for c in catalog.complications if c.cluster is not None and c.cluster.site == SITE)
    code = next(e.icd for e in catalog.events if e.id == cluster.event)
    coded = {r["KH-internes-Kennzeichen"] for r in rows(delivery, "ICD.csv")
             if r["ICD-Kode"] == code and r["Diagnoseart"] == "ND"}
    first, last = cluster.cluster.start.strftime("%Y%m%d"), cluster.cluster.end.strftime("%Y%m%d")
    counts = Counter((first <= r["Aufnahmedatum"][:8] <= last, r["KH-internes-Kennzeichen"] in coded)
                     for r in rows(delivery, "FALL.csv"))
    inside = counts[True, True] / (counts[True, True] + counts[True, False])
    outside = counts[False, True] / (counts[False, True] + counts[False, False])
    assert close_to(counts[False, True], counts[False, True] + counts[False, False], cluster.base_pct / 100)
    # about 5 cases inside at this size: a factor 2.5 either way is about 1.7 standard errors (log scale)
    assert abs(math.log(inside / outside / cluster.cluster.factor)) < math.log(2.5)


def close_to(hits: int, n: int, p: float) -> bool:
    """A share within four binomial standard errors of the planted probability."""
    return abs(hits / n - p) <= 4 * math.sqrt(p * (1 - p) / n)


def stay_days(row: dict[str, str]) -> int:
    day = [datetime.strptime(row[c][:8], "%Y%m%d") for c in ("Aufnahmedatum", "Entlassungsdatum")]
    return (day[1] - day[0]).days


def test_sides_persist_per_patient_and_procedures_take_the_diagnosis_side(delivery: dict[str, Any]) -> None:
    patient_of = {r["KH-internes-Kennzeichen"]: r["Patientennummer"] for r in rows(delivery, "FALL.csv")}
    lateral = tuple(rule["icd"] for rule in RULES["laterality"] if "icd" in rule)
    sides = defaultdict(set)
    for r in rows(delivery, "ICD.csv"):
        assert bool(r["Lokalisation"]) == r["ICD-Kode"].startswith(lateral)
        if r["ICD-Kode"].startswith("C50"):
            sides[patient_of[r["KH-internes-Kennzeichen"]]].add(r["Lokalisation"])
    assert len(sides) > 10 and all(len(s) == 1 for s in sides.values())
    operated = 0
    for r in rows(delivery, "OPS.csv"):
        if r["OPS-Kode"].startswith("5870"):
            assert {r["Lokalisation"]} == sides[patient_of[r["KH-internes-Kennzeichen"]]]
            operated += 1
        else:
            assert r["Lokalisation"] == ""
    assert operated > 0
    found = Counter(r["Lokalisation"] for r in rows(delivery, "ICD.csv"))
    assert found["L"] > 50 and found["R"] > 50 and set(found) <= {"", "L", "R", "B"}


def test_fees_follow_the_declared_tariff(delivery: dict[str, Any]) -> None:
    base, psy = RULES["base_rate_eur"], RULES["psy_base_rate_eur"]
    weights = {r["drg"]: r["weight"] for r in RULES["drg"]} | {r["pepp"]: r["weight"] for r in RULES["pepp"]}
    found = Counter()
    for r in rows(delivery, "ENTGELTE.csv"):
        code = r["Entgeltart"][2:6] if r["Entgeltbereich"] == "DRG" else r["Entgeltart"][1:6]
        rate = (base if r["Entgeltbereich"] == "DRG" else psy)[int(r["Abrechnung-von"][:4])]
        assert r["Entgeltbetrag"] == f"{rate * weights[code]:.2f}".replace(".", ",")
        found[code] += 1
    assert "960Z" not in found and len(found) > 15


# ------------------------------------------------------------------ determinism and declarations
def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    sample = list(site_patients(250, SEED, SITE, YEARS))
    write(sample, tmp_path / "one")
    write(list(site_patients(250, SEED, SITE, YEARS)), tmp_path / "two")  # generated anew
    write(sample, tmp_path / "other", seed=SEED + 1)  # same facts, the writer's own draws differ
    write(list(site_patients(250, SEED + 1, SITE, YEARS)), tmp_path / "world")
    one = digests(tmp_path / "one")
    assert one == digests(tmp_path / "two")
    changed = {k for k, v in digests(tmp_path / "other").items() if one[k] != v}
    assert {"FALL.csv", "FAB.csv", "ICD.csv", "ENTGELTE.csv"} <= changed <= set(FILES[:5])
    assert {k for k, v in digests(tmp_path / "world").items() if one[k] != v} >= set(FILES[:5])


def test_a_site_without_a_declared_hospital_gets_a_derived_one(patients: list[SitePatient],
                                                               tmp_path: Path) -> None:
    write(patients[:50], tmp_path, site="site-q")
    with (tmp_path / "KRANKENHAUS.csv").open(encoding="utf-8", newline="") as handle:
        (row,) = list(csv.DictReader(handle, delimiter=";"))
    assert valid_ik(row["IK"]) and row["IK"].startswith("26") and "site-q" in row["KH-Name"]


def test_declarations_load_and_every_problem_is_reported(tmp_path: Path) -> None:
    assert load_billing_rules().files["FALL.csv"][3] == "KH-internes-Kennzeichen"
    broken = dict(RULES, payers=[{"ik": "101412341", "weight": 1}], drg=RULES["drg"][:-1])
    path = tmp_path / "billing.yaml"
    path.write_text(yaml.safe_dump(broken, allow_unicode=True), encoding="utf-8")
    with pytest.raises(DefinitionError) as error:
        load_billing_rules(path)
    assert {"/payers/0/ik", "/drg"} <= {p.path for p in error.value.problems}
