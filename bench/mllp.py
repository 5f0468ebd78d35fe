"""MLLP listener benchmark: HL7 v2 messages/s persisted and acknowledged, and the drain's load rate.

    .venv/bin/python bench/mllp.py [--messages 5000] [--connections 1,4] [--batch-size 500]

Writes a synthetic site's lab feed (`dic.synth.write_world`, formats lab), starts
`dic listen mllp` as a child process on 127.0.0.1 (its drain held back, so only receiving is
timed), and sends the first N messages over 1 and over 4 concurrent connections, each client
waiting for the ACK before its next message (original mode). Prints one line per run:
`connections messages seconds messages_per_s ack_p50_ms ack_p99_ms`, every ACK checked AA with
MSA-2 = the message's control id. Then drains the first run's spool into the repository in this
process (`dic.cli.listen_commands.drain_spool`: HL7 v2 mapping, trust center, load) and prints
`drain messages resources seconds messages_per_s resources_per_s`. A benchmark, not a test.

Measured 2026-11-29 on this 2-core machine (other jobs running), 5,000 messages: 1 connection
617 messages/s (ACK p50 1.3 ms, p99 7.4 ms), 4 connections 985/s (p50 3.5 ms, p99 13 ms; the
spool commits the frames that arrive during a commit together); drain 121 messages/s, 738
resources/s. One connection is bound by the fsync of each commit (synchronous=FULL: 1-6 ms on
this disk). The drain's time goes to the HL7 v2 mapping (~57 %, python-hl7's parse ~35 %) and
the trust center's pseudonymization (~25 %), profiled on 1,500 messages.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from dic.cli.listen_commands import drain_spool, spool_path
from dic.repository import init_repository
from dic.sources.mllp import Spool
from dic.synth import write_world

SOURCE_SYSTEM = "lab@site-a"
MESSAGES_PER_PATIENT = 3.5  # of the synthetic lab feed, roughly


def lab_messages(folder: Path, count: int) -> list[bytes]:
    patients = math.ceil(count / MESSAGES_PER_PATIENT * 1.2)
    write_world(folder, sites=1, patients=patients, seed=11, formats=["lab"])
    data = (folder / "site-a" / "lab" / "messages.hl7").read_bytes()
    messages = [line for line in data.split(b"\n") if line.startswith(b"MSH")]
    if len(messages) < count:
        raise SystemExit(f"the feed of {patients} patients has {len(messages)} messages, fewer than {count}")
    return messages[:count]


def start_listener(repo: Path) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "dic", "--repo", str(repo), "--json", "listen", "mllp", "--port", "0",
         "--source-system", SOURCE_SYSTEM, "--batch-size", str(10**9), "--flush-seconds", str(10**6)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = orjson.loads(process.stdout.readline())  # type: ignore[union-attr]
    return process, first["listening"]["port"]


async def send(port: int, messages: list[bytes], latencies_s: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for message in messages:
        started = time.perf_counter()
        writer.write(b"\x0b" + message + b"\x1c\r")
        ack = await reader.readuntil(b"\x1c\r")
        latencies_s.append(time.perf_counter() - started)
        msa = next(s for s in ack[1:-2].split(b"\r") if s.startswith(b"MSA")).split(b"|")
        expected = message.split(b"\r", 1)[0].split(b"|")[9]
        if msa[1:3] != [b"AA", expected]:
            raise SystemExit(f"unexpected ACK {msa!r} for {expected!r}")
    writer.close()
    await writer.wait_closed()


async def send_all(port: int, messages: list[bytes], connections: int, latencies_s: list[float]) -> None:
    await asyncio.gather(*(send(port, messages[i::connections], latencies_s) for i in range(connections)))


def receive(folder: Path, messages: list[bytes], connections: int) -> Path:
    repo = folder / f"repo-{connections}"
    init_repository(repo)
    process, port = start_listener(repo)
    latencies_s: list[float] = []
    try:
        started = time.perf_counter()
        asyncio.run(send_all(port, messages, connections, latencies_s))
        seconds = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(60)
    cuts = statistics.quantiles(latencies_s, n=100)
    print(f"{connections} {len(messages)} {seconds:.2f} {len(messages) / seconds:.0f} "
          f"{cuts[49] * 1000:.2f} {cuts[98] * 1000:.2f}", flush=True)
    return repo


def drain(repo: Path, batch_size: int) -> None:
    spool = Spool(spool_path(repo))
    try:
        started = time.perf_counter()
        reports = drain_spool(spool, repo, SOURCE_SYSTEM, "mllp:bench", batch_size)
        seconds = time.perf_counter() - started
        messages = sum(r["messages"] for r in spool.counts())
    finally:
        spool.close()
    resources = sum(r.read for r in reports)
    print(f"drain {messages} {resources} {seconds:.2f} {messages / seconds:.0f} {resources / seconds:.0f}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--connections", default="1,4", help="Comma-separated counts of concurrent connections.")
    parser.add_argument("--batch-size", type=int, default=500, help="Messages per repository batch in the drain.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dic-bench-mllp-") as scratch:
        folder = Path(scratch)
        messages = lab_messages(folder / "world", args.messages)
        print("connections messages seconds messages_per_s ack_p50_ms ack_p99_ms")
        repos = [receive(folder, messages, int(c)) for c in args.connections.split(",")]
        print("drain messages resources seconds messages_per_s resources_per_s")
        drain(repos[0], args.batch_size)


if __name__ == "__main__":
    main()
