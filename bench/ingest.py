"""Ingest benchmark: generate N realistic FHIR resources, load them, materialize every standard view.

    .venv/bin/python bench/ingest.py [--resources 1000000] [--engine duckdb] [--peers-sample 100000]

Prints resources/s for load, for view materialization and end to end, the peak RSS, and —
in the same run — the throughput of the installable pure-Python peers (bench/peers.py) on
a sample, with our/peer ratios. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson

from dic.engines import Engine, connect
from dic.repository import load_paths
from dic.synth import generate_population
from dic.views import load_catalog, refresh_views

BENCH = Path(__file__).resolve().parent
TYPES = ("Patient", "Encounter", "Condition", "Observation", "MedicationAdministration", "Procedure")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_resources(folder: Path, total: int, seed: int) -> Counter[str]:
    """The first `total` resources of the benchmark types from a synthetic population."""
    folder.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    files = {t: (folder / f"{t}.ndjson").open("wb") for t in TYPES}
    written = 0
    try:
        # 10 million patients is more than any run needs; the generator streams, so we stop early
        for item in generate_population(10_000_000, seed):
            kind = item["resourceType"]
            if kind in files:
                files[kind].write(orjson.dumps(item) + b"\n")
                counts[kind] += 1
                written += 1
                if written >= total:
                    break
    finally:
        for handle in files.values():
            handle.close()
    return counts


def run_peers(folder: Path, sample: int, expected_rows: dict[str, int]) -> dict | None:
    script = BENCH / "peers.py"
    if not script.exists():
        print("peers: bench/peers.py missing; skipped")
        return None
    rows = ",".join(f"{k}={v}" for k, v in expected_rows.items())
    done = subprocess.run(
        [sys.executable, str(script), "--ndjson-dir", str(folder), "--views", "patient,observation,condition",
         "--sample", str(sample), "--expected-rows", rows, "--json"],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        print(f"peers: failed ({done.stderr.strip()[-500:]}); skipped")
        return None
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--engine", default="duckdb", choices=[e.value for e in Engine])
    parser.add_argument("--url", help="PostgreSQL URL for --engine postgres")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--peers-sample", type=int, default=100_000, help="0 skips the peers")
    parser.add_argument("--keep", type=Path, help="keep generated data and repository here")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="dic-bench-"))
    data = work / "ndjson"
    started = time.perf_counter()
    counts = write_resources(data, args.resources, args.seed)
    generated_s = time.perf_counter() - started
    total = sum(counts.values())
    print(f"generated {total:,} resources in {generated_s:.1f} s ({total / generated_s:,.0f}/s): {dict(counts)}")

    url = args.url or (str(work / "bench.duckdb") if args.engine == "duckdb" else f"local[2]?warehouse={work}/wh")
    db = connect(args.engine, url)
    t0 = time.perf_counter()
    reports = load_paths(db, [data])
    load_s = time.perf_counter() - t0
    loaded = sum(r.loaded for r in reports)
    t1 = time.perf_counter()
    views = refresh_views(db, load_catalog())
    views_s = time.perf_counter() - t1
    rows = {v.name: v.rows for v in views}
    db.close()

    print(f"\nengine {args.engine}, {loaded:,} resources loaded")
    print(f"load            {load_s:8.1f} s  {loaded / load_s:10,.0f} resources/s")
    print(f"views           {views_s:8.1f} s  {loaded / views_s:10,.0f} resources/s  ({len(views)} views, "
          f"{sum(rows.values()):,} rows; modes: {dict(Counter(v.mode for v in views))})")
    print(f"end to end      {load_s + views_s:8.1f} s  {loaded / (load_s + views_s):10,.0f} resources/s")
    print(f"peak RSS        {peak_rss_mb():8.0f} MB")
    for v in sorted(views, key=lambda v: -v.seconds)[:5]:
        print(f"  slowest view {v.name:28s} {v.seconds:6.2f} s  {v.rows:,} rows")

    if args.peers_sample:
        sample = min(args.peers_sample, total)
        ours = {k: rows[k] for k in ("patient", "observation", "condition") if k in rows}
        sample_dir = work / "sample"
        sample_counts = write_resources(sample_dir, sample, args.seed)
        sdb = connect("duckdb", str(work / "sample.duckdb"))
        s0 = time.perf_counter()
        load_paths(sdb, [sample_dir])
        sample_views = refresh_views(sdb, load_catalog(), names=list(ours))
        ours_s = time.perf_counter() - s0
        sdb.close()
        sample_rows = {v.name: v.rows for v in sample_views}
        ours_rate = sum(sample_counts[t] for t in ("Patient", "Observation", "Condition")) / ours_s
        print(f"\npeers on a sample of {sample:,} resources (Patient, Observation, Condition views)")
        print(f"  dic (load + 3 views)  {ours_s:6.1f} s  {ours_rate:10,.0f} resources/s  rows {sample_rows}")
        result = run_peers(sample_dir, sample, sample_rows)
        for peer in (result or {}).get("peers", []):
            rate = peer.get("resources_per_s")
            if not rate:
                print(f"  {peer['name']:20s}  skipped: {peer.get('note')}")
                continue
            print(f"  {peer['name']:20s}  {peer['seconds']:6.1f} s  {rate:10,.0f} resources/s  "
                  f"rows {peer.get('rows')}  ours/peer = {ours_rate / rate:5.1f}x")
            if peer.get("note"):
                print(f"  {'':20s}  note: {peer['note']}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
