"""The MS registry source: published CSV layout (read with the csv module), follow-up and
referential integrity against the HIS record, determinism, and the planted effects recovered
from the CSV files alone (hazard ratio of confirmed progression, EDSS slopes, relapse and MRI
lesion rate ratios), each within a tolerance of about three standard errors at this size."""

from __future__ import annotations

import csv
import hashlib
import math
import random
import re
from collections import Counter, defaultdict
from datetime import date
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from dic.synth.ms_registry import EDSS_SCALE, MsRegistryWriter, load_registry, planted_effects
from dic.synth.site_patient import Identity, PersonId, SiteContext, SitePatient

SITE, SEED, YEARS = "site-b", 5, (2015, 2025)
ICD = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
ATC = "http://fhir.de/CodeSystem/bfarm/atc"
MS_ATC = ["L03AB07", "L03AX13", "L04AX07", "L04AA27", "L04AA23", "L04AA36"]
COURSE_OF = {"G35.10": "RRMS", "G35.11": "RRMS", "G35.30": "SPMS", "G35.20": "PPMS", "G35.9": "RRMS"}
PUBLISHED = {  # the registry's published column lists (the product's declaration must match them)
    "patients.csv": ["registry_id", "given_name", "family_name", "birth_date", "sex", "postal_code", "city",
                     "diagnosis_date", "course", "enrolment_date", "death_date"],
    "visits.csv": ["visit_id", "registry_id", "visit_date", "visit_type", "edss"],
    "relapses.csv": ["relapse_id", "registry_id", "onset_date", "severity", "steroid_treatment", "recovery"],
    "mri.csv": ["mri_id", "registry_id", "mri_date", "new_enlarging_t2", "gd_enhancing"],
    "therapies.csv": ["therapy_id", "registry_id", "substance", "atc", "start_date", "stop_date", "stop_reason"],
}
STOP_REASONS = {"lack of efficacy", "adverse event", "patient wish", "pregnancy planning",
                "switch to higher efficacy", "other"}
EFFECTS = {e["id"]: e for e in planted_effects()}
CLASS_OF = {atc: k for k, atcs in EFFECTS["ms-registry:cdp-by-therapy-class"]["therapy_classes"].items()
            for atc in atcs}


# ------------------------------------------------------------------ a cheap synthetic MS population
def _identity(i: int, gender: str, birth: str, source: str) -> Identity:
    gap = i % 7 == 3  # some sources miss fields
    return Identity(given=None if gap else "Anna", family="Müller-Lüdenscheidt", birth_date=None if gap else birth,
                    sex=None if gap else gender, street="Lindenstraße 12", postal_code="04109",
                    city=None if gap else "Leipzig", insurance_number="A123456780")


def synthetic_patients(n: int, seed: int) -> list[SitePatient]:
    """n people, 80 % with MS: Patient + G35 Condition(s) + maybe MS MedicationStatements; the rest not."""
    rand = random.Random(seed)
    out = []
    for i in range(n):
        pid = f"p{i}"
        gender = "female" if rand.random() < 0.7 else "male"
        birth = date(1950 + int(rand.random() * 45), 1 + i % 12, 1 + i % 28)
        patient: dict[str, Any] = {"resourceType": "Patient", "id": pid, "gender": gender,
                                   "birthDate": birth.isoformat()}
        resources = [patient]
        subject = {"reference": f"Patient/{pid}"}
        if rand.random() < 0.8:
            code = rand.choice(["G35.10", "G35.10", "G35.11", "G35.30", "G35.20", "G35.20", "G35.9"])
            onset = date(2008, 1, 1).toordinal() + int(rand.random() * 17 * 365)
            seen = max(onset, date(2015, 1, 1).toordinal() + int(rand.random() * 700))
            resources.append({"resourceType": "Condition", "id": f"{pid}-c0",
                              "code": {"coding": [{"system": ICD, "version": "2024", "code": code}]},
                              "subject": subject, "onsetDateTime": _iso(onset),
                              "recordedDate": _iso(seen) + "T10:00:00+01:00"})
            if rand.random() < 0.3:  # coded again later, without onset
                resources.append({"resourceType": "Condition", "id": f"{pid}-c1", "subject": subject,
                                  "code": {"coding": [{"system": ICD, "code": code}]},
                                  "recordedDate": _iso(seen + 400) + "T10:00:00+01:00"})
            last = date(YEARS[1], 12, 31).toordinal()
            if rand.random() < 0.05:
                last = min(last, seen + 30 + int(rand.random() * 3000))
                patient["deceasedDateTime"] = _iso(last) + "T08:00:00+01:00"
            for m in range(rand.choice([0, 0, 1, 1, 2])):
                start = min(last - 1, onset + int(rand.random() * (seen - onset + 30)))  # as the HIS: by first contact
                period = {"start": _iso(start)}
                if rand.random() < 0.3:
                    period["end"] = _iso(start + 100 + int(rand.random() * 2000))
                resources.append({"resourceType": "MedicationStatement", "id": f"{pid}-ms{m}", "subject": subject,
                                  "medicationCodeableConcept": {"coding": [{"system": ATC,
                                                                            "code": rand.choice(MS_ATC)}]},
                                  "effectivePeriod": period})
        else:
            resources.append({"resourceType": "Condition", "id": f"{pid}-c0", "subject": subject,
                              "code": {"coding": [{"system": ICD, "code": "I10.90"}]}, "onsetDateTime": "2016-03-01",
                              "recordedDate": "2016-03-01T10:00:00+01:00"})
        out.append(SitePatient(PersonId(f"P{i}"), SITE, str(1_000_000_001 + i), resources,
                               partial(_identity, i, gender, birth.isoformat())))
    return out


def _iso(day: int) -> str:
    return date.fromordinal(day).isoformat()


def write(folder: Path, patients: list[SitePatient], seed: int = SEED) -> tuple[dict[str, int], list[tuple]]:
    folder.mkdir(parents=True, exist_ok=True)
    links: list[tuple] = []
    context = SiteContext(SITE, seed, YEARS, lambda *row: links.append(row))
    writer = MsRegistryWriter(folder, context)
    for patient in patients:
        writer.add(patient)
    return writer.close(), links


def read(folder: Path) -> dict[str, list[dict[str, str]]]:
    """Every file with the csv module; the header must be the published list, rows its length."""
    tables = {}
    for name, columns in PUBLISHED.items():
        with (folder / name).open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
        assert rows[0] == columns, name
        assert all(len(r) == len(columns) for r in rows[1:]), name
        tables[name] = [dict(zip(columns, r, strict=True)) for r in rows[1:]]
    return tables


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    patients = synthetic_patients(7500, 1)
    folder = tmp_path_factory.mktemp("ms") / "ms-registry"
    counts, links = write(folder, patients)
    return {"patients": patients, "folder": folder, "counts": counts, "links": links, "tables": read(folder)}


# ------------------------------------------------------------------ layout, identity, integrity
def test_declarations_load_and_columns_are_the_published_lists(world: dict[str, Any]) -> None:
    assert load_registry().columns == PUBLISHED
    assert world["counts"] == {name: len(rows) for name, rows in world["tables"].items()}
    assert set(load_registry().stop_reasons) == STOP_REASONS
    assert {e["source"] for e in EFFECTS.values()} == {"ms-registry"}
    for effect in EFFECTS.values():
        assert {"id", "kind", "definition", "magnitude", "source"} <= set(effect) and len(effect["definition"]) > 200


def test_only_ms_patients_enrolled_at_the_declared_share(world: dict[str, Any]) -> None:
    ms = {p.person_id for p in world["patients"] if any(r["resourceType"] == "Condition"
                                                        and r["code"]["coding"][0]["code"].startswith("G35")
                                                        for r in p.resources)}
    linked = [person for source, _, person in world["links"]]
    assert {source for source, _, _ in world["links"]} == {"ms-registry"}
    assert set(linked) <= ms and len(set(linked)) == len(linked)
    share = len(linked) / len(ms)  # a few never-followed patients (death at enrolment) drop out too
    assert abs(share - 0.85) < 3 * math.sqrt(0.85 * 0.15 / len(ms)) + 0.005
    ids = [r["registry_id"] for r in world["tables"]["patients.csv"]]
    assert ids == [record for _, record, _ in world["links"]]
    assert all(re.fullmatch(r"MSR-B-\d{6}", x) for x in ids) and len(set(ids)) == len(ids)
    numbers = {p.patient_number for p in world["patients"]}
    assert not any(n in (world["folder"] / "patients.csv").read_text() for n in list(numbers)[:200])


def test_patient_rows_follow_the_his_record_and_the_identity(world: dict[str, Any]) -> None:
    by_person = {p.person_id: p for p in world["patients"]}
    sex = {"female": "w", "male": "m"}
    for (_, rid, person), row in zip(world["links"], world["tables"]["patients.csv"], strict=True):
        patient = by_person[person]
        who = patient.identity("ms-registry")
        assert row["registry_id"] == rid
        assert (row["given_name"], row["family_name"], row["birth_date"], row["city"]) == (
            who.given or "", who.family, who.birth_date or "", who.city or "")
        assert row["sex"] == sex.get(who.sex or "", "")
        first = next(r for r in patient.resources if r["resourceType"] == "Condition")
        assert row["course"] == COURSE_OF[first["code"]["coding"][0]["code"]]
        assert row["diagnosis_date"] == first["onsetDateTime"]
        onset = first["onsetDateTime"]
        assert row["enrolment_date"] == (first["recordedDate"][:10] if onset < f"{YEARS[0]}-01-01" else onset)
        assert row["death_date"] == patient.resources[0].get("deceasedDateTime", "")[:10]


def test_dates_scales_codes_and_references(world: dict[str, Any]) -> None:
    t = world["tables"]
    people = {r["registry_id"]: r for r in t["patients.csv"]}
    for name in ("visits.csv", "relapses.csv", "mri.csv", "therapies.csv"):
        assert {r["registry_id"] for r in t[name]} <= set(people), name
        first_column = PUBLISHED[name][0]
        assert len({r[first_column] for r in t[name]}) == len(t[name]), name
    scale = {f"{x:.1f}" for x in EDSS_SCALE}
    assert "0.5" not in scale and len(scale) == 19
    visits = _by_id(t["visits.csv"], "visit_date")
    for rid, rows in visits.items():
        p = people[rid]
        end = min(p["death_date"] or "9999", f"{YEARS[1]}-12-31")
        assert rows[0]["visit_type"] == "baseline" and rows[0]["visit_date"] == p["enrolment_date"]
        assert all(r["visit_type"] == "follow-up" for r in rows[1:]) and rows[-1]["visit_date"] <= end
        days = [_day(r["visit_date"]) for r in rows]
        assert all(b - a >= 168 for a, b in pairwise(days))  # so the next visit can confirm
        assert all(r["edss"] in scale for r in rows) and rows[0]["edss"] != "0.0"
    assert set(visits) == set(people)
    visit_days = {(r["registry_id"], r["visit_date"]) for r in t["visits.csv"]}
    for r in t["relapses.csv"]:
        assert people[r["registry_id"]]["enrolment_date"] <= r["onset_date"] <= visits[r["registry_id"]][-1]["visit_date"]
        assert r["severity"] in {"mild", "moderate", "severe"} and r["steroid_treatment"] in {"yes", "no"}
        assert r["recovery"] in {"complete", "incomplete"}
    for rid, rows in _by_id(t["mri.csv"], "mri_date").items():
        assert all((rid, r["mri_date"]) in visit_days for r in rows)
        assert rows[0]["new_enlarging_t2"] == "" and all(r["new_enlarging_t2"].isdigit() for r in rows[1:])
        assert all(r["gd_enhancing"].isdigit() for r in rows)
    names = {"L03AB07": "Interferon beta-1a", "L03AX13": "Glatirameracetat", "L04AX07": "Dimethylfumarat",
             "L04AA27": "Fingolimod", "L04AA23": "Natalizumab", "L04AA36": "Ocrelizumab"}
    for rid, rows in _by_id(t["therapies.csv"], "start_date").items():
        p = people[rid]
        for a, b in pairwise(rows):
            assert a["stop_date"] <= b["start_date"]  # one therapy at a time (untreated gaps between)
        for r in rows[2:]:  # drawn changes take effect at a visit (or outside the visits' span)
            assert (rid, r["start_date"]) in visit_days or not (
                p["enrolment_date"] < r["start_date"] <= visits[rid][-1]["visit_date"])
        for r in rows:
            assert names[r["atc"]] == r["substance"]
            assert (r["stop_date"] == "") == (r["stop_reason"] == "")
            assert r["stop_reason"] == "" or r["stop_reason"] in STOP_REASONS
            assert r["stop_date"] == "" or r["start_date"] < r["stop_date"] <= min(p["death_date"] or "9999",
                                                                                  f"{YEARS[1]}-12-31")
            if r["stop_reason"] == "pregnancy planning" and p["birth_date"]:  # (the IDAT may miss it)
                age = (_day(r["stop_date"]) - _day(p["birth_date"])) / 365.25
                assert p["sex"] == "w" and 18 <= age <= 45
    reasons = Counter(r["stop_reason"] for r in t["therapies.csv"])
    assert all(reasons[x] > 0 for x in STOP_REASONS)


def test_first_therapy_is_the_his_first_ms_medication(world: dict[str, Any]) -> None:
    therapies = _by_id(world["tables"]["therapies.csv"], "start_date")
    patients = {r["registry_id"]: r for r in world["tables"]["patients.csv"]}
    by_person = {p.person_id: p for p in world["patients"]}
    checked = 0
    for _, rid, person in world["links"]:
        statements = [r for r in by_person[person].resources if r["resourceType"] == "MedicationStatement"]
        if not statements:
            continue
        first = min(statements, key=lambda r: (r["effectivePeriod"]["start"],
                                               MS_ATC.index(r["medicationCodeableConcept"]["coding"][0]["code"])))
        row = therapies[rid][0]
        assert (row["atc"], row["start_date"]) == (first["medicationCodeableConcept"]["coding"][0]["code"],
                                                    first["effectivePeriod"]["start"])
        his_end = first["effectivePeriod"].get("end", "")
        end = min(patients[rid]["death_date"] or "9999", f"{YEARS[1]}-12-31")
        assert row["stop_date"] == (his_end if his_end and his_end < end else
                                    patients[rid]["death_date"] if patients[rid]["death_date"] else "")
        checked += 1
    assert checked > 1000


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    patients = synthetic_patients(400, 2)
    digests = []
    for n, seed in enumerate((3, 3, 4)):
        write(tmp_path / str(n), patients, seed)
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((tmp_path / str(n)).iterdir())})
    assert digests[0] == digests[1]
    assert all(digests[0][name] != digests[2][name] for name in PUBLISHED)


def test_the_his_population_feeds_the_registry(tmp_path: Path) -> None:
    """Real HIS records (the world's site patients): MS patients only, their course and first therapy."""
    from dic.synth.world import site_patients

    patients = list(site_patients(800, 2, SITE, YEARS))  # seed 2: four MS patients among 800
    counts, links = write(tmp_path, patients)
    tables = read(tmp_path)
    assert counts["patients.csv"] == len(links) > 0 and counts["visits.csv"] >= len(links)
    by_person = {p.person_id: p for p in patients}
    for (_, rid, person), row in zip(links, tables["patients.csv"], strict=True):
        codes = [c["code"] for r in by_person[person].resources if r["resourceType"] == "Condition"
                 for c in r["code"]["coding"] if c.get("system") == ICD and c["code"].startswith("G35")]
        assert codes and row["course"] == {"1": "RRMS", "2": "PPMS", "3": "SPMS"}.get(codes[0][4], "RRMS")
        assert f"{YEARS[0]}-01-01" <= row["enrolment_date"] <= f"{YEARS[1]}-12-31"
        starts = sorted(r["effectivePeriod"]["start"] for r in by_person[person].resources
                        if r["resourceType"] == "MedicationStatement"
                        and r["medicationCodeableConcept"]["coding"][0]["code"] in MS_ATC)
        first = next((r for r in tables["therapies.csv"] if r["registry_id"] == rid), None)
        assert not starts or (first is not None and first["start_date"] == starts[0])


# ------------------------------------------------------------------ planted effects, from the CSV files only
def _day(text: str) -> int:
    return date.fromisoformat(text).toordinal()


def _by_id(rows: list[dict[str, str]], key: str) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        found[r["registry_id"]].append(r)
    return {k: sorted(v, key=lambda r: r[key]) for k, v in found.items()}


class Follow:
    """Per person: course, and the therapy class on any day (from therapies.csv)."""

    def __init__(self, tables: dict[str, list[dict[str, str]]]):
        self.course = {r["registry_id"]: r["course"] for r in tables["patients.csv"]}
        self.spans: dict[str, list[tuple[int, float, str]]] = defaultdict(list)
        for r in tables["therapies.csv"]:
            stop = _day(r["stop_date"]) if r["stop_date"] else math.inf
            self.spans[r["registry_id"]].append((_day(r["start_date"]), stop, CLASS_OF[r["atc"]]))

    def klass(self, rid: str, day: int) -> str:
        return next((k for a, b, k in self.spans[rid] if a <= day < b), "untreated")

    def split(self, rid: str, a: int, b: int, into: dict[tuple[str, str], float]) -> None:
        """Add the person-years of [a, b) to (course, class)."""
        cuts = sorted({a, b, *(x for s in self.spans[rid] for x in s[:2] if a < x < b)})
        for lo, hi in pairwise(cuts):
            into[(self.course[rid], self.klass(rid, lo))] += (hi - lo) / 365.25


def mantel_haenszel(events: Counter, years: dict, klass: str, reference: str) -> tuple[float, float]:
    """Rate ratio of `klass` against `reference`, stratified by course; and the SE of its log."""
    num = den = var = 0.0
    for course in ("RRMS", "SPMS", "PPMS"):
        e1, e0 = events[(course, klass)], events[(course, reference)]
        t1, t0 = years[(course, klass)], years[(course, reference)]
        if t1 == 0 or t0 == 0:
            continue
        num += e1 * t0 / (t1 + t0)
        den += e0 * t1 / (t1 + t0)
        var += t1 * t0 * (e1 + e0) / (t1 + t0) ** 2
    return num / den, math.sqrt(var / (num * den))


def confirmed_progression(rows: list[dict[str, str]]) -> int | None:
    """The day of 24-week confirmed disability progression by the registry's definition, or None."""
    base = float(rows[0]["edss"])
    need = base + (1.5 if base == 0 else 0.5 if base >= 5.5 else 1.0)
    days = [_day(r["visit_date"]) for r in rows]
    scores = [float(r["edss"]) for r in rows]
    for j in range(1, len(rows)):
        later = next((k for k in range(j + 1, len(rows)) if days[k] - days[j] >= 168), None)
        if later is not None and all(s >= need for s in scores[j:later + 1]):
            return days[j]
    return None


@pytest.mark.parametrize("klass", ["untreated", "oral", "high-efficacy"])
def test_cdp_hazard_ratio_by_therapy_class_is_recovered(world: dict[str, Any], klass: str) -> None:
    effect = EFFECTS["ms-registry:cdp-by-therapy-class"]
    follow, events, years = Follow(world["tables"]), Counter(), defaultdict(float)
    for rid, rows in _by_id(world["tables"]["visits.csv"], "visit_date").items():
        if len(rows) < 2:
            continue  # nothing can be confirmed
        start, event = _day(rows[0]["visit_date"]), confirmed_progression(rows)
        end = event if event is not None else _day(rows[-2]["visit_date"])  # the last confirmable visit
        follow.split(rid, start, end, years)
        if event is not None:
            events[(follow.course[rid], follow.klass(rid, event - 1))] += 1  # the interval before the visit
    ratio, se = mantel_haenszel(events, years, klass, effect["reference_class"])
    planted = effect["magnitude"]["hazard_ratio"][klass]
    assert 3 * se < 0.3  # the test size makes +-25 % about three standard errors
    assert abs(ratio / planted - 1) < 0.25, (klass, ratio, planted, se)


def test_relapse_rate_ratio_by_therapy_class_is_recovered(world: dict[str, Any]) -> None:
    effect = EFFECTS["ms-registry:relapse-rate"]
    follow, events, years = Follow(world["tables"]), Counter(), defaultdict(float)
    visits = _by_id(world["tables"]["visits.csv"], "visit_date")
    for rid, rows in visits.items():
        follow.split(rid, _day(rows[0]["visit_date"]), _day(rows[-1]["visit_date"]), years)
    for r in world["tables"]["relapses.csv"]:
        events[(follow.course[r["registry_id"]], follow.klass(r["registry_id"], _day(r["onset_date"])))] += 1
    for klass, planted in effect["magnitude"]["rate_ratio"].items():
        ratio, se = mantel_haenszel(events, years, klass, effect["reference_class"])
        assert abs(math.log(ratio / planted)) < max(3 * se, 0.05), (klass, ratio, planted, se)
        assert 3 * se < 0.25
    platform_rrms = events[("RRMS", "platform")] / years[("RRMS", "platform")]
    assert platform_rrms == pytest.approx(effect["magnitude"]["relapses_per_year_on_reference"]["RRMS"], rel=0.15)


def _within_class_rate(world: dict[str, Any], file: str, day: str, value: Any) -> tuple[dict, dict]:
    """Sum of value(row, previous row) and of years between consecutive rows with one class at both ends."""
    follow, total, years = Follow(world["tables"]), defaultdict(float), defaultdict(float)
    for rid, rows in _by_id(world["tables"][file], day).items():
        for a, b in pairwise(rows):
            k = follow.klass(rid, _day(a[day]))
            if k == follow.klass(rid, _day(b[day]) - 1):
                total[(follow.course[rid], k)] += value(b, a)
                years[(follow.course[rid], k)] += (_day(b[day]) - _day(a[day])) / 365.25
    return total, years


def test_edss_slope_by_course_and_class_is_recovered(world: dict[str, Any]) -> None:
    slopes = EFFECTS["ms-registry:edss-slope"]["magnitude"]["slope_edss_per_year"]
    change, years = _within_class_rate(world, "visits.csv", "visit_date",
                                       lambda b, a: float(b["edss"]) - float(a["edss"]))
    precise = 0
    for (course, klass), planted in ((k, slopes[k[0]][k[1]]) for k in years):
        se = math.sqrt(planted / years[(course, klass)])  # jumps of 1.0 at the planted rate: var = rate x time
        precise += 3 * se <= 0.03  # the subgroups with enough person-time at this size: +-0.03 is 3 SE
        estimate = change[(course, klass)] / years[(course, klass)]
        assert abs(estimate - planted) < max(0.03, 3 * se), (course, klass, estimate, planted)
    assert precise >= 7 and len(years) == 12


def test_mri_lesion_rate_ratio_is_recovered(world: dict[str, Any]) -> None:
    effect = EFFECTS["ms-registry:mri-activity"]
    lesions, years = _within_class_rate(world, "mri.csv", "mri_date", lambda b, a: int(b["new_enlarging_t2"]))
    for klass, planted in effect["magnitude"]["rate_ratio"].items():
        ratio, se = mantel_haenszel(Counter({k: round(v) for k, v in lesions.items()}), years, klass,
                                    effect["reference_class"])
        assert abs(math.log(ratio / planted)) < max(3 * se, 0.02) and 3 * se < 0.15, (klass, ratio, planted, se)
