"""The laboratory HL7 v2.5 feed: the file convention; messages parse with hl7apy at STRICT level, in
the standard's segment order and cardinality (hl7apy takes ~10-50 ms a message, so the first 30 plus
one of every distinct segment layout), and with python-hl7 when installed (a fifth of them plus all
with comments); field values equal the HIS facts (OBX, OBR-7, PV1-19, PID-3, the lab's spelling in
PID); one ORU per specimen, A01+A03 per inpatient stay; A08 transfers and corrections; escaping
round-trips; same seed, same bytes; and the planted drug-lab effect recovered from OBX values
(exposure from the HIS MedicationStatements) within 3 standard errors."""

from __future__ import annotations

import hashlib
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from hl7apy.v2_5 import FT
from hl7apy.validation import Validator

from dic.errors import DefinitionError
from dic.synth.catalog import load_catalog
from dic.synth.lab_feed import LAB_FEED_PATH, MESSAGES_FILE, LabFeedWriter, escape, load_lab_feed_rules
from dic.synth.site_patient import Identity, PersonId, SiteContext, SitePatient
from dic.synth.world import site_patients

SITE, SEED, YEARS, PATIENTS = "site-b", 11, (2015, 2025), 1500
CLASSES = {"IMP": "I", "AMB": "O", "EMER": "E"}
SEX = {"female": "F", "male": "M", "other": "O", "unknown": "U", None: ""}
# Warnings, not errors, and standard: hl7apy's v2.5 table 0396 lacks UCUM; HL7nnnn names an HL7 table
# (here 0487); tables 0069 (hospital service) and 0112 (discharge disposition) are user-defined, and
# hl7apy ships only the standard's examples: we use the §301 department and discharge keys.
ALLOWED_WARNINGS = re.compile(r"Warning: Value (UCUM not in table HL70396 in element OBX_6\.|HL70487 not in table "
                              r"HL70396 in element SPM_4\.|\d{4} not in table HL70069 in element PV1\.PV1_10$"
                              r"|\d{3} not in table HL70112 in element PV1\.PV1_36$)")


def patients(n: int, seed: int, site: str = SITE) -> Any:
    return site_patients(n, seed, site, YEARS)


def dtm(moment: str) -> str:
    return datetime.fromisoformat(moment).strftime("%Y%m%d%H%M%S%z")


def unescape(text: str) -> str:
    named = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}
    return re.sub(r"\\(X[0-9A-F]+|[FSTRE])\\",
                  lambda m: bytes.fromhex(m[1][1:]).decode() if m[1][0] == "X" else named[m[1]], text)


def fields(segment: str) -> list[str]:
    """Field n at index n (MSH-1 is the field separator itself)."""
    parts = segment.split("|")
    return [parts[0], "|", *parts[1:]] if parts[0] == "MSH" else parts


def segments(message: str, name: str) -> list[list[str]]:
    return [fields(s) for s in message.rstrip("\r").split("\r") if s.startswith(name + "|")]


def at(values: list[str], n: int) -> str:
    return values[n] if n < len(values) else ""  # trailing empty fields are left off


def part(value: str, n: int) -> str:
    components = value.split("^")
    return components[n - 1] if n <= len(components) else ""


@dataclass
class Facts:
    """What the HIS knows of a patient, as the feed must state it."""

    number: str
    person: PersonId
    identity: Identity
    stays: dict[str, dict[str, str]] = field(default_factory=dict)  # case -> start, end, department
    cases: dict[str, tuple[str, str]] = field(default_factory=dict)  # Encounter ref -> (case, class)
    orders: dict[str, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)  # accession -> (collected, labs)
    statin_days: list[int] = field(default_factory=list)


def facts_of(patient: SitePatient) -> Facts:
    facts = Facts(patient.patient_number, patient.person_id, patient.identity("lab"))
    specimens, results = {}, {}
    for r in patient.resources:
        kind = r["resourceType"]
        if kind == "Encounter":
            case = next(i["value"] for i in r["identifier"] if i["system"].endswith("/sid/case-number"))
            facts.cases["Encounter/" + r["id"]] = (case, r["class"]["code"])
            if r["class"]["code"] == "IMP":
                facts.stays[case] = {"start": r["period"]["start"], "end": r["period"]["end"],
                                     "department": r["serviceType"]["coding"][0]["code"]}
        elif kind == "Specimen":
            specimens["Specimen/" + r["id"]] = r
        elif kind == "Observation" and "specimen" in r:
            results.setdefault(r["specimen"]["reference"], []).append(r)
        elif kind == "MedicationStatement" and r["medicationCodeableConcept"]["coding"][0]["code"] == "C10AA05":
            facts.statin_days.append(date.fromisoformat(r["effectivePeriod"]["start"]).toordinal())
    for reference, observations in results.items():
        specimen = specimens[reference]
        facts.orders[specimen["accessionIdentifier"]["value"]] = (specimen["collection"]["collectedDateTime"], [
            {"loinc": o["code"]["coding"][0]["code"], "value": o["valueQuantity"]["value"],
             "unit": o["valueQuantity"]["code"], "low": o["referenceRange"][0]["low"]["value"],
             "high": o["referenceRange"][0]["high"]["value"], "flag": o["interpretation"][0]["coding"][0]["code"],
             "time": o["effectiveDateTime"], "case": facts.cases[o["encounter"]["reference"]][0]}
            for o in observations])
    return facts


def write_feed(folder: Path, people: Any, seed: int = SEED) -> tuple[Path, dict[str, int], list[tuple[str, str, str]]]:
    links: list[tuple[str, str, str]] = []
    writer = LabFeedWriter(folder, SiteContext(SITE, seed, YEARS, lambda s, r, p: links.append((s, r, p))))
    for patient in people:
        writer.add(patient)
    return folder / MESSAGES_FILE, writer.close(), links


@dataclass
class Feed:
    messages: list[str]
    counts: dict[str, int]
    links: list[tuple[str, str, str]]
    facts: dict[str, Facts]  # patient number -> facts
    by_patient: dict[str, list[str]]  # patient number -> messages in file order


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Feed:
    facts: dict[str, Facts] = {}

    def kept() -> Any:
        for patient in patients(PATIENTS, SEED):
            facts[patient.patient_number] = facts_of(patient)
            yield patient

    path, counts, links = write_feed(tmp_path_factory.mktemp("lab"), kept())
    raw = path.read_bytes()
    assert raw.endswith(b"\r\n")
    messages = raw.decode("utf-8").split("\n")[:-1]
    by_patient: dict[str, list[str]] = {}
    for message in messages:
        by_patient.setdefault(part(segments(message, "PID")[0][3], 1), []).append(message)
    return Feed(messages, counts, links, facts, by_patient)


def kind(message: str) -> str:
    return fields(message[:message.index("\r")])[9]


# ------------------------------------------------------------------ format and parsers
def test_file_convention_and_counts(feed: Feed) -> None:
    assert feed.counts == {MESSAGES_FILE: len(feed.messages)}
    for message in feed.messages:
        assert message.startswith("MSH|^~\\&|") and message.endswith("\r") and "\n" not in message
        assert all(re.fullmatch(r"[A-Z][A-Z0-9]{2}\|.*", s) for s in message[:-1].split("\r"))
        msh = fields(message[:message.index("\r")])
        assert msh[11:13] == ["P", "2.5"] and msh[18] == "UNICODE UTF-8"
    kinds = Counter(kind(m) for m in feed.messages)
    assert set(kinds) == {"ADT^A01^ADT_A01", "ADT^A03^ADT_A03", "ADT^A08^ADT_A01", "ORU^R01^ORU_R01"}
    assert len({fields(m[:m.index("\r")])[10] for m in feed.messages}) == len(feed.messages)  # control ids unique


def structure_problems(element: Any) -> list[str]:
    """Children out of the standard's order or cardinality, recursively (hl7apy places segments into
    groups but does not insist on their order)."""
    names = [c[0] for c in element.reference[1]]
    found = []
    positions = [names.index(c.name) for c in element.children]
    if positions != sorted(positions):
        found.append(f"{element.name}: order {[c.name for c in element.children]}")
    counts = Counter(c.name for c in element.children)
    for name, _, (low, high), _ in element.reference[1]:
        if counts[name] < low or (high != -1 and counts[name] > high):
            found.append(f"{element.name}: {name} x{counts[name]}")
    return found + [p for c in element.children if c.classname == "Group" for p in structure_problems(c)]


def flat(element: Any) -> list[str]:
    return [n for c in element.children for n in ([c.name] if c.classname == "Segment" else flat(c))]


def test_messages_parse_with_hl7apy_strict(feed: Feed, tmp_path: Path) -> None:
    layouts: dict[str, str] = {}  # segment names with runs of OBX collapsed -> first such message
    for message in feed.messages:
        names = " ".join(s[:3] for s in message.rstrip("\r").split("\r"))
        layouts.setdefault(kind(message) + re.sub(r"OBX( OBX)+", "OBX+", names), message)
    sample = feed.messages[:30] + list(layouts.values())
    assert len(layouts) >= 8
    report = tmp_path / "report.txt"
    for message in sample:
        parsed = parse_message(message, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        assert parsed.name == part(kind(message), 3)
        assert flat(parsed) == [s[:3] for s in message.rstrip("\r").split("\r")]  # none dropped or moved
        assert structure_problems(parsed) == []
        assert Validator.validate(parsed, report_file=str(report))
        assert all(ALLOWED_WARNINGS.match(line) for line in report.read_text().splitlines() if line), report.read_text()


def test_messages_parse_with_python_hl7(feed: Feed) -> None:
    hl7 = pytest.importorskip("hl7")  # not in the lock: runs where python-hl7 is installed
    comments = load_lab_feed_rules().comments
    for message in [m for n, m in enumerate(feed.messages) if n % 5 == 0 or "\rNTE|" in m]:
        parsed = hl7.parse(message + "\n")
        assert str(parsed.segment("MSH")[9]) == kind(message)
        for nte in (s for s in parsed if str(s[0]) == "NTE"):
            assert parsed.unescape(str(nte[3])) in comments


# ------------------------------------------------------------------ values equal the HIS facts
def test_one_oru_per_specimen_with_the_his_values(feed: Feed) -> None:
    seen = 0
    for number, facts in feed.facts.items():
        orus = {part(segments(m, "OBR")[0][2], 1): m for m in feed.by_patient.get(number, []) if kind(m)[:3] == "ORU"}
        assert set(orus) == set(facts.orders)
        for accession, (collected, labs) in facts.orders.items():
            message, seen = orus[accession], seen + 1
            assert segments(message, "PID")[0][3] == f"{number}^^^UKB^MR"
            assert part(segments(message, "PV1")[0][19], 1) == labs[0]["case"]
            obr = segments(message, "OBR")[0]
            assert obr[7] == dtm(collected) and obr[25] == "F" and part(obr[3], 1) == accession
            assert part(segments(message, "ORC")[0][2], 1) == accession
            assert segments(message, "SPM")[0][2].startswith(f"^{accession}&")
            obx = segments(message, "OBX")
            assert [int(o[1]) for o in obx] == list(range(1, len(labs) + 1))
            for o, lab in zip(obx, labs, strict=True):
                assert (o[2], part(o[3], 1), part(o[3], 3), part(o[6], 1), part(o[6], 3)) == (
                    "NM", lab["loinc"], "LN", lab["unit"], "UCUM")
                assert float(o[5]) == lab["value"] and o[8] == lab["flag"] and o[11] == "F"
                low, high = (float(x) for x in o[7].split("-"))
                assert (low, high) == (lab["low"], lab["high"]) and o[14] == dtm(lab["time"])
    assert seen > 1000


def test_a01_and_a03_per_inpatient_stay(feed: Feed) -> None:
    stays = 0
    for number, facts in feed.facts.items():
        adt = [m for m in feed.by_patient.get(number, []) if kind(m)[:3] == "ADT"]
        for trigger, moment, pv1_field in (("A01", "start", 44), ("A03", "end", 45)):
            found = {part(segments(m, "PV1")[0][19], 1): m for m in adt if kind(m).startswith(f"ADT^{trigger}")}
            assert len(found) == sum(kind(m).startswith(f"ADT^{trigger}") for m in adt)
            assert set(found) == set(facts.stays)
            for case, message in found.items():
                msh, pv1 = fields(message[:message.index("\r")]), segments(message, "PV1")[0]
                assert msh[7] == dtm(facts.stays[case][moment]) == at(pv1, pv1_field)
                assert (msh[3], msh[5], pv1[2], pv1[10]) == ("ISHMED", "SWISSLAB", "I", facts.stays[case]["department"])
                assert segments(message, "EVN")[0][1] == trigger
        stays += len(facts.stays)
    assert stays > 1000


def test_a08_transfers_and_corrections(feed: Feed) -> None:
    rules, stays, transfers, corrections = load_lab_feed_rules().a08, 0, 0, 0
    for number, facts in feed.facts.items():
        messages = feed.by_patient.get(number, [])
        stays += len(facts.stays)
        for n, message in enumerate(messages):
            if not kind(message).startswith("ADT^A08"):
                continue
            case, reason = part(segments(message, "PV1")[0][19], 1), segments(message, "EVN")[0][4]
            stay = [m for m in messages if any(part(at(pv1, 19), 1) == case for pv1 in segments(m, "PV1"))]
            locations = [part(segments(m, "PV1")[0][3], 1) for m in stay]
            if reason == rules.transfer_reason:  # the ward's station changes, and stays changed
                transfers += 1
                here = stay.index(message)
                assert locations[0] != locations[here] == locations[-1]
            else:
                corrections += 1
                assert reason == rules.correction_reason
                before = {at(segments(m, "PID")[0], 5) + "|" + at(segments(m, "PID")[0], 11) for m in messages[:n]}
                after = {at(segments(m, "PID")[0], 5) + "|" + at(segments(m, "PID")[0], 11) for m in messages[n:]}
                assert len(before) == len(after) == 1 and before != after
                old, new = before.pop(), after.pop()
                assert old.split("|")[1] == "" or sorted(old) == sorted(new)  # no address, or swapped letters
    expected = stays * rules.transfer_pct / 100
    assert abs(transfers - expected) < 4 * math.sqrt(expected)
    assert corrections > 0


def test_pid_is_the_labs_spelling_and_patients_are_linked(feed: Feed) -> None:
    linked = {(record, person) for source, record, person in feed.links if source == "lab"}
    assert len(linked) == len(feed.links) == len(feed.by_patient)
    for number, messages in feed.by_patient.items():
        who = feed.facts[number].identity
        assert (number, feed.facts[number].person) in linked
        pid = segments(messages[-1], "PID")[0]  # the last message carries the corrected record
        name, address = pid[5].split("^"), at(pid, 11).split("^") if at(pid, 11) else []
        assert [unescape(x) for x in name[:2]] == ([who.family or "", who.given or ""] if who.family or who.given
                                                   else ['""'])
        assert pid[7] == (who.birth_date or "").replace("-", "") and pid[8] == SEX[who.sex]
        if address:
            assert [unescape(address[i]) for i in (0, 2, 4)] == [who.street or "", who.city or "", who.postal_code or ""]
        else:
            assert not (who.street or who.city or who.postal_code)


def test_each_patients_messages_in_time_order(feed: Feed) -> None:
    order = [part(segments(m, "PID")[0][3], 1) for m in feed.messages]
    assert [k for k, _ in _runs(order)] == [n for n in feed.facts if n in feed.by_patient]  # contiguous, in order
    for messages in feed.by_patient.values():
        times = [datetime.strptime(fields(m[:m.index("\r")])[7], "%Y%m%d%H%M%S%z") for m in messages]
        assert times == sorted(times)


def _runs(items: list[str]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for item in items:
        if out and out[-1][0] == item:
            out[-1] = (item, out[-1][1] + 1)
        else:
            out.append((item, 1))
    return out


# ------------------------------------------------------------------ escaping and comments
@pytest.mark.parametrize("text", ["Probe hämolytisch | Wert ^ & ~ C:\\LAB\\X", "a\\F\\b", "line\r\nnext", "\\", "plain"])
def test_escape_round_trips(text: str) -> None:
    escaped = escape(text)
    assert not re.search(r"[|^&~\r\n]", escaped) and unescape(escaped) == text
    if not re.search(r"\\[HNFSTRE]\\|[\r\n]", text):  # hl7apy leaves "\F\" as it is: it takes it for escaped
        assert escaped == FT(text).to_er7()
    message = f"MSH|^~\\&|A|B|C|D|20240101||ORU^R01^ORU_R01|1|P|2.5\rPID|1||1^^^X^MR||N^G\rORC|RE\r" \
              f"OBR|1|||X^Y^LN\rOBX|1|NM|1^x^LN||1||||||F\rNTE|1|L|{escaped}\r"
    parsed = parse_message(message, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    nte = parsed.oru_r01_patient_result.oru_r01_order_observation.oru_r01_observation.nte
    assert len(nte.children) == 3
    if "\\X" not in escaped:  # hl7apy knows no hex escapes (\X0D\): its value escapes their backslashes again
        assert nte.nte_3.value == escaped


def test_identity_with_delimiters_is_escaped(tmp_path: Path) -> None:
    patient = next(p for p in patients(80, SEED) if {"Specimen", "IMP"} <= {
        r["resourceType"] if r["resourceType"] != "Encounter" else r["class"]["code"] for r in p.resources})
    odd = Identity("JO|HN^NY", "SMITH & SONS~\\", "1970-05-01", "other", "A^B 1", "04109", "X|Y", "A123456780")
    patient.identity = lambda _: odd
    messages = write_feed(tmp_path, [patient])[0].read_bytes().decode().split("\n")[:-1]
    assert {kind(m)[:3] for m in messages} == {"ADT", "ORU"}
    for message in messages:
        parsed = parse_message(message, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        pid = next(s for s in parsed.children if s.name == "PID") if kind(message)[:3] == "ADT" else \
            parsed.oru_r01_patient_result.oru_r01_patient.pid
        assert [unescape(pid.pid_5.xpn_1.to_er7()), unescape(pid.pid_5.xpn_2.value)] == ["SMITH & SONS~\\", "JO|HN^NY"]
        assert unescape(pid.pid_11.xad_3.value) == "X|Y" and pid.pid_8.value == "O"


def test_comments_at_the_declared_rate(feed: Feed) -> None:
    rules = load_lab_feed_rules()
    results = sum(m.count("\rOBX|") for m in feed.messages)
    comments = [s for m in feed.messages for s in segments(m, "NTE")]
    expected = results * rules.comment_pct / 100
    assert abs(len(comments) - expected) < 4 * math.sqrt(expected)
    assert {unescape(c[3]) for c in comments} == set(rules.comments)


# ------------------------------------------------------------------ determinism, declarations
def test_same_seed_same_bytes(tmp_path: Path) -> None:
    def digest(folder: str, world_seed: int, seed: int) -> str:
        (tmp_path / folder).mkdir()
        path = write_feed(tmp_path / folder, patients(120, world_seed), seed)[0]
        return hashlib.sha256(path.read_bytes()).hexdigest()

    first = digest("a", SEED, SEED)
    assert digest("b", SEED, SEED) == first
    assert digest("c", SEED, SEED + 1) != first  # the feed's own draws
    assert digest("d", SEED + 1, SEED) != first  # another world


def test_declarations_load_and_cover_the_catalog(tmp_path: Path) -> None:
    rules, catalog = load_lab_feed_rules(), load_catalog()
    assert set(catalog.departments) <= set(rules.wards)
    assert {c.code for c in catalog.encounter_classes} <= set(rules.patient_classes)
    text = LAB_FEED_PATH.read_text(encoding="utf-8")
    for changes in ({"stations_per_ward: 3": "stations_per_ward: 1", "comment_pct: 2.0": "comment_pct: 120"},
                    {"adt_classes: [IMP]": "adt_classes: [XYZ]", "[25, 240]": "[240, 25]"}):
        broken = text
        for old, new in changes.items():
            assert old in broken
            broken = broken.replace(old, new)
        (tmp_path / "lab_feed.yaml").write_text(broken, encoding="utf-8")
        with pytest.raises(DefinitionError) as raised:
            load_lab_feed_rules(tmp_path / "lab_feed.yaml")
        assert len(raised.value.problems) == 2  # every problem at once


# ------------------------------------------------------------------ the planted drug-lab effect
def test_drug_lab_effect_recovered_from_the_feed(feed: Feed) -> None:
    """ALT (1742-6) from OBX values within 90 days after an atorvastatin (C10AA05) start in the
    HIS, against the same persons' other ALT values: geometric mean ratio ~1.8; haemoglobin, a
    negative control, ~1. Tolerance: 3 standard errors of the log ratio."""
    effect = next(e for e in load_catalog().drug_lab_effects if e.atc == "C10AA05")
    for loinc, planted in ((effect.loinc, effect.factor), ("718-7", 1.0)):
        inside, outside = [], []
        for number, facts in feed.facts.items():
            if not facts.statin_days:
                continue
            for message in feed.by_patient.get(number, []):
                for obx in segments(message, "OBX"):
                    if part(obx[3], 1) == loinc:
                        day = datetime.strptime(obx[14][:8], "%Y%m%d").toordinal()
                        exposed = any(s <= day < s + effect.window_days for s in facts.statin_days)
                        (inside if exposed else outside).append(math.log(max(float(obx[5]), 0.1)))
        assert len(inside) > 30 and len(outside) > 100
        log_ratio = statistics.fmean(inside) - statistics.fmean(outside)
        error = math.sqrt(statistics.variance(inside) / len(inside) + statistics.variance(outside) / len(outside))
        assert abs(log_ratio - math.log(planted)) < 3 * error, (loinc, math.exp(log_ratio), error)
