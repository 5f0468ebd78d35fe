"""Test-world benchmark: `dic synth` for N patients across S sites with every source.

    .venv/bin/python bench/synth.py [--patients 1000000] [--sites 3] [--formats ...] [--profile]

Prints patients/s, seconds per source writer (measured by timing each writer's add() calls),
bytes written per source, and the peak RSS. Targets (issue 3): 1,000,000 patients over 3
sites with all sources in under 10 minutes and 4 GB RSS on this 2-core machine. No peer
runs here: Synthea, the usual peer, is a Java program not available from the package
registries this machine reaches. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from dic.synth import world


def peak_rss_mb() -> tuple[float, float]:
    """Peak RSS of this process and of the largest worker process (MB)."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--formats", default="", help="comma-separated sources (default: all)")
    parser.add_argument("--gzip", action="store_true", help="compress the HIS export (needed at 1M: ~75 GB raw)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="folder to write (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="dic-bench-synth-"))
    spent: dict[str, float] = defaultdict(float)
    factories = dict(world.WRITERS)

    def timed(source: str, factory):  # wrap each writer's add() to attribute time per source
        def make(folder, context):
            writer = factory(folder, context)
            add = writer.add

            def add_timed(patient):
                t0 = time.perf_counter()
                add(patient)
                spent[source] += time.perf_counter() - t0
            writer.add = add_timed
            return writer
        return make

    world.WRITERS.update({source: timed(source, f) for source, f in factories.items()})
    formats = [f for f in args.formats.split(",") if f] or None
    started = time.perf_counter()
    report = world.write_world(out, sites=args.sites, patients=args.patients, seed=args.seed, formats=formats,
                               overwrite=True, gzip=args.gzip, workers=args.workers)
    seconds = time.perf_counter() - started
    own, worker = peak_rss_mb()
    print(f"dic synth: {args.patients:,} patients, {report.persons:,} persons, {args.sites} sites, "
          f"seed {args.seed}: {seconds:.1f} s, {args.patients / seconds:,.0f} patients/s, "
          f"peak RSS {own:,.0f} MB (largest worker process {worker:,.0f} MB; workers run side by side)")
    if spent:  # writer times are measured in this process only (workers=1)
        print(f"  generation of the HIS record, identities and truth: {seconds - sum(spent.values()):.1f} s")
    for source in report.files[report.sites[0]]:
        size = sum(folder_bytes(out / site / source) for site in report.sites)
        records = sum(sum(report.files[site][source].values()) for site in report.sites)
        timing = f"{spent[source]:7.1f} s" if source in spent else ""
        print(f"  {source:12s} {timing:9s} {records:>12,} records  {size / 2**20:9.1f} MiB")
    print(f"  truth        {folder_bytes(out / 'truth') / 2**20:9.1f} MiB")
    if args.out is None:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
