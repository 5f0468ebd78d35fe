"""Terminology load time, validation throughput and annotation cost per resource.

    .venv/bin/python bench/terminology.py WORLD   (a `dic synth` folder; default: writes a small one)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import orjson

from dic.sources import SourceResource
from dic.terminology import all_code_systems, annotate, convert, validate_code


def main(world: Path) -> None:
    started = time.perf_counter()
    total = 0
    for n in range(1_000_000):  # a yardstick: the same figures on a busy machine scale with this
        total += n
    print(f"reference: an empty 1M-iteration Python loop: {time.perf_counter() - started:.2f} s")
    started = time.perf_counter()
    systems = all_code_systems()
    print(f"load {len(systems)} code systems ({sum(len(s.concepts) for s in systems):,} concepts): "
          f"{time.perf_counter() - started:.2f} s")
    started = time.perf_counter()
    convert(1.0, "mg/dL", "mmol/L", "2345-7")
    print(f"UCUM registry: {time.perf_counter() - started:.2f} s")
    codings = [("http://fhir.de/CodeSystem/bfarm/icd-10-gm", c) for c in ("E11.90", "G35.10", "I10.00", "Z00.0")]
    codings += [("http://loinc.org", "718-7"), ("http://fhir.de/CodeSystem/bfarm/atc", "A10BA02")]
    started = time.perf_counter()
    for n in range(100_000):
        validate_code(*codings[n % len(codings)])
    print(f"validate_code x 100,000: {time.perf_counter() - started:.2f} s")
    for name in ("Observation", "Condition", "MedicationStatement"):
        lines = [line for path in sorted(world.glob(f"*/his-fhir/{name}.ndjson")) for line in path.open("rb")]
        records = [SourceResource(orjson.loads(line), "bench", "line") for line in lines]
        list(annotate(records[:1]))  # warm the caches
        started = time.perf_counter()
        flagged = sum(1 for r in annotate(records) if "tag" in r.resource.get("meta", {}))
        seconds = time.perf_counter() - started
        print(f"annotate {len(records):,} {name}: {seconds / len(records) * 1e6:.1f} us per resource, "
              f"{flagged} flagged")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        from dic.synth import write_world

        with tempfile.TemporaryDirectory() as folder:
            write_world(Path(folder), sites=1, patients=300, seed=7, formats=["his-fhir"])
            main(Path(folder))
