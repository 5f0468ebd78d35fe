"""Throughput of the VCF adapter: variants (records) and Observations per second.

    .venv/bin/python bench/vcf.py [--patients 5000]

Writes one synthetic site (HIS + genomics: VCF 4.2 batches of genotyped patients), then reads
every batch with `read_vcf` (line checks + pysam + mapping) three times (the best run counts) and
prints `files variants calls seconds variants_per_s observations observations_per_s peak_rss_mb`
(calls = variants x samples). It also times the line checks alone and pysam alone (records and
their GT fields), to show where the time goes.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import pysam

from dic.sources import Rejection
from dic.sources.vcf import read_vcf
from dic.sources.vcf_check import check_header


def _check_only(paths: list[Path]) -> None:
    for path in paths:
        lines = path.read_text(encoding="utf-8").splitlines()
        split = next(n for n, line in enumerate(lines) if line.startswith("#CHROM")) + 1
        header = check_header(list(enumerate(lines[:split], start=1)))
        assert not isinstance(header, tuple), header
        for line in lines[split:]:
            assert header.check_record(line.split("\t")) is None


def _pysam_only(paths: list[Path]) -> None:
    for path in paths:
        with pysam.VariantFile(str(path)) as variants:
            for record in variants:
                for call in record.samples.values():
                    call.get("GT")


def main() -> None:
    from dic.synth import write_world

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_world(folder, sites=1, patients=args.patients, seed=11, formats=["his-fhir", "genomics"])
        paths = sorted((folder / "site-a" / "genomics").glob("*.vcf"))
        variants = calls = 0
        for path in paths:
            with pysam.VariantFile(str(path)) as vcf:
                samples = len(vcf.header.samples)
                n = sum(1 for _ in vcf)
            variants, calls = variants + n, calls + n * samples
        best = None
        for _ in range(args.runs):
            started = time.perf_counter()
            observations = rejections = 0
            for path in paths:
                for record in read_vcf(path):
                    if isinstance(record, Rejection):
                        rejections += 1
                    else:
                        observations += 1
            seconds = time.perf_counter() - started
            best = seconds if best is None else min(best, seconds)
        assert rejections == 0
        timings = {}
        for name, step in (("checks", _check_only), ("pysam", _pysam_only)):
            started = time.perf_counter()
            step(paths)
            timings[name] = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("files variants calls seconds variants_per_s observations observations_per_s peak_rss_mb")
        print(f"{len(paths)} {variants} {calls} {best:.2f} {variants / best:,.0f} {observations} "
              f"{observations / best:,.0f} {peak_mb:,.0f}")
        print(f"of which: line checks alone {timings['checks']:.2f} s, pysam records + GT alone "
              f"{timings['pysam']:.2f} s")


if __name__ == "__main__":
    main()
