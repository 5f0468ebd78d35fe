"""Mapped CSV/Excel sources: rows/s of the shipped MS registry and biobank mappings.

    .venv/bin/python bench/mapping.py [--patients 3000] [--xlsx]

Writes one `dic synth` site (MS prevalence raised 40-fold, as in the tests, so that the registry
has volume), then reads each source folder with `read_mapped` and prints rows/s and resources/s,
next to the cost of only parsing the same CSV with `csv.DictReader` (the floor). With `--xlsx`,
the same tables as workbooks too (openpyxl read-only). A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from openpyxl import Workbook

from dic.sources import Rejection
from dic.sources.mapping import read_mapped
from dic.sources.mapping_spec import load_mapping
from dic.synth import write_world
from dic.synth.catalog import load_catalog


def world(out: Path, patients: int) -> Path:
    catalog = load_catalog()
    diseases = [d.model_copy(update={"prevalence_pct": {k: [x * 40 for x in v] for k, v in d.prevalence_pct.items()}})
                if d.id == "multiple-sclerosis" else d for d in catalog.diseases]
    write_world(out, sites=1, patients=patients, seed=7, formats=["ms-registry", "biobank"],
                catalog=catalog.model_copy(update={"diseases": diseases}))
    return out / "site-a"


def rows_of(folder: Path) -> int:
    total = 0
    for path in folder.glob("*.csv"):
        with path.open(encoding="utf-8", newline="") as handle:
            total += sum(1 for _ in csv.DictReader(handle, delimiter=";"))
    return total


def as_xlsx(folder: Path, out: Path) -> Path:
    out.mkdir()
    for path in folder.glob("*.csv"):
        book = Workbook(write_only=True)
        sheet = book.create_sheet("export")
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.reader(handle, delimiter=";"):
                sheet.append(row)
        book.save(out / (path.stem + ".xlsx"))
    return out


def measure(label: str, folder: Path, source: str, rows: int) -> None:
    mapping = load_mapping(source)
    started = time.perf_counter()
    records = list(read_mapped(folder, mapping))
    seconds = time.perf_counter() - started
    rejected = sum(isinstance(r, Rejection) for r in records)
    print(f"{label:<22} {rows:>7,} rows {len(records) - rejected:>7,} resources {rejected} rejected  "
          f"{seconds:6.2f} s  {rows / seconds:>8,.0f} rows/s  {(len(records) - rejected) / seconds:>8,.0f} resources/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--xlsx", action="store_true", help="also read the tables as Excel workbooks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        site = world(Path(tmp) / "world", args.patients)
        for source in ("ms-registry", "biobank"):
            folder = site / source
            started = time.perf_counter()
            rows = rows_of(folder)
            parse = time.perf_counter() - started
            print(f"{source + ' csv parse only':<22} {rows:>7,} rows {'':>25}  {parse:6.2f} s  {rows / parse:>8,.0f} rows/s")
            measure(f"{source} csv", folder, source, rows)
            if args.xlsx:
                measure(f"{source} xlsx", as_xlsx(folder, Path(tmp) / f"{source}-xlsx"), source, rows)


if __name__ == "__main__":
    main()
