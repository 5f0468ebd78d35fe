"""Throughput of the §21 billing adapter: rows and resources per second.

    .venv/bin/python bench/p21.py [--patients 5000]

Writes one synthetic site (HIS + billing), then reads its billing export with `read_p21` three
times (the best run counts) and prints `rows seconds rows_per_s resources resources_per_s
rejections peak_rss_mb`. Rows are the data rows of all CSV files (ICD.csv is read twice by the
adapter: once for the case Encounters' diagnosis lists, once for the Conditions).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from dic.sources import Rejection
from dic.sources.p21 import read_p21
from dic.synth import write_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_world(folder, sites=1, patients=args.patients, seed=11, formats=["his-fhir", "billing"])
        billing = folder / "site-a" / "billing"
        rows = sum(len(p.read_bytes().splitlines()) - 1 for p in billing.glob("*.csv"))
        best = None
        for _ in range(args.runs):
            started = time.perf_counter()
            resources = rejections = 0
            for record in read_p21(billing):
                if isinstance(record, Rejection):
                    rejections += 1
                else:
                    resources += 1
            seconds = time.perf_counter() - started
            best = seconds if best is None else min(best, seconds)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("rows seconds rows_per_s resources resources_per_s rejections peak_rss_mb")
        print(f"{rows} {best:.2f} {rows / best:,.0f} {resources} {resources / best:,.0f} {rejections} {peak_mb:,.0f}")


if __name__ == "__main__":
    main()
