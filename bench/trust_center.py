"""The trust center's registration throughput: source records per second, in-process and over HTTP.

    .venv/bin/python bench/trust_center.py [--patients 10000]

Writes a synthetic site (HIS, lab, MS registry, biobank identities), then registers every
source's records with a fresh trust center three ways and prints one line each:
`mode records seconds records_per_s peak_rss_mb`:
- `in-process-chunks-1000`: LocalTrust, 1,000 records a call (from 500 new records a call the
  center links them in one batch run against the known records sharing a key);
- `in-process-chunks-100`: LocalTrust, 100 a call (the incremental path: each record against
  its candidates, the chunk's pairs scored in one engine call);
- `http-chunks-1000`: HttpTrust against `dic trust serve`'s app under uvicorn on 127.0.0.1.
The linkage quality against the synthetic truth is printed for each (pairwise F1).
"""

from __future__ import annotations

import argparse
import csv
import resource
import socket
import tempfile
import threading
import time
from pathlib import Path

from dic.sources import IdentityRecord, read_identity_records
from dic.synth import write_world
from dic.trust import Caller, HttpTrust, LocalTrust, TrustCenter, create_app, pairwise_quality

SOURCES = ("his-fhir", "lab", "ms-registry", "biobank")


def world_records(folder: Path, patients: int) -> tuple[dict[str, list[IdentityRecord]], dict[tuple[str, str], str]]:
    write_world(folder, sites=1, patients=patients, seed=11, formats=list(SOURCES))
    by_source: dict[str, list[IdentityRecord]] = {}
    for record in read_identity_records(folder / "site-a"):
        if isinstance(record, IdentityRecord):
            by_source.setdefault(record.source, []).append(record)
    with (folder / "truth" / "linkage.csv").open(newline="") as stream:
        truth = {(row["source"], row["record_id"]): row["person_id"] for row in csv.DictReader(stream)}
    return by_source, truth


def register_all(client_for, by_source: dict[str, list[IdentityRecord]], chunk: int) -> dict[tuple[str, str], str]:
    assigned = {}
    for source, records in by_source.items():
        client = client_for(source)
        for start in range(0, len(records), chunk):
            part = records[start:start + chunk]
            for record, answer in zip(part, client.register([(r.record_id, r.idat) for r in part]), strict=True):
                if not isinstance(answer, str):
                    assigned[(source, record.record_id)] = answer.pseudonym
    return assigned


def run(mode: str, by_source: dict[str, list[IdentityRecord]], truth: dict, folder: Path) -> str:
    center = TrustCenter.open(folder)
    server = None
    try:
        if mode.startswith("http"):
            import uvicorn

            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            server = uvicorn.Server(uvicorn.Config(create_app(center), host="127.0.0.1", port=port, log_level="warning"))
            threading.Thread(target=server.run, daemon=True).start()
            while not server.started:
                time.sleep(0.05)
            keys = {s: center.issue_key(s, "source") for s in by_source}

            def client_for(source: str):
                return HttpTrust(f"http://127.0.0.1:{port}", keys[source])
        else:
            def client_for(source: str):
                return LocalTrust(center, Caller(source, "source"))
        chunk = int(mode.rsplit("-", 1)[1])
        started = time.perf_counter()
        assigned = register_all(client_for, by_source, chunk)
        seconds = time.perf_counter() - started
    finally:
        if server is not None:
            server.should_exit = True
        center.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = sum(len(r) for r in by_source.values())
    return f"{mode} {n} {seconds:.1f} {n / seconds:.0f} {rss:.0f} f1={pairwise_quality(assigned, truth)[2]:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        by_source, truth = world_records(Path(scratch) / "world", args.patients)
        print("mode records seconds records_per_s peak_rss_mb")
        for mode in ("in-process-chunks-1000", "in-process-chunks-100", "http-chunks-1000"):
            print(run(mode, by_source, truth, Path(scratch) / mode), flush=True)


if __name__ == "__main__":
    main()
