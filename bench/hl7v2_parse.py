"""Messages per second of `read_hl7v2` on a `dic synth` lab feed, and the share python-hl7's parse takes.

    .venv/bin/python bench/hl7v2_parse.py [--patients 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import hl7

from dic.sources.hl7v2 import read_hl7v2
from dic.synth import write_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        write_world(Path(folder), sites=1, patients=args.patients, seed=7)
        feed = next(Path(folder).glob("site-*/lab/messages.hl7"))
        data = feed.read_bytes()
        messages = [m for m in data.decode("utf-8").split("\r\n") if m]
        best_read = best_parse = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            records = sum(1 for _ in read_hl7v2(feed))
            best_read = min(best_read, time.perf_counter() - start)
            start = time.perf_counter()
            for message in messages:
                hl7.parse(message)
            best_parse = min(best_parse, time.perf_counter() - start)
    n = len(messages)
    print(f"{n} messages ({len(data) / n:.0f} bytes each), {records} records")
    print(f"read_hl7v2:     {best_read / n * 1000:.2f} ms/message, {n / best_read:.0f} messages/s")
    print(f"hl7.parse only: {best_parse / n * 1000:.2f} ms/message ({best_parse / best_read:.0%} of read_hl7v2)")


if __name__ == "__main__":
    main()
