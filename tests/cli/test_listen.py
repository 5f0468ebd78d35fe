"""`dic listen mllp` as a real process on 127.0.0.1: every message ACKed AA is in the spool even
after kill -9, a restart drains it into the repository (same resources as loading the file
directly), unsupported messages are answered AR and quarantined, SIGTERM exits 0."""

from __future__ import annotations

import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from conftest import CliResult
from dic.cli.listen_commands import spool_path

SOURCE_SYSTEM = "lab@site-a"
MESSAGES = 60
UNSUPPORTED = (b"MSH|^~\\&|LAURIS|UKA|ORBIS|UKA|20240311123500+0100||ORM^O01^ORM_O01|ORM0001|P|2.5\r"
               b"PID|1||1000000002^^^UKA^MR||MUSTER^ERIKA\r")


@pytest.fixture(scope="module")
def lab_feed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dic.synth import write_world

    folder = tmp_path_factory.mktemp("listen-world")
    write_world(folder, sites=1, patients=60, seed=7, formats=["lab"])
    return folder / "site-a" / "lab" / "messages.hl7"


def split_messages(path: Path) -> list[bytes]:
    """The file's messages: one starts at every line beginning with MSH (segments end with CR)."""
    return [line for line in path.read_bytes().split(b"\n") if line.startswith(b"MSH")]


def control_id(message: bytes) -> str:
    return message.split(b"\r", 1)[0].split(b"|")[9].decode()


class ListenerProcess:
    """`python -m dic --repo R --json listen mllp --port 0 ...` with its stdout read line by line."""

    def __init__(self, repo: Path, started: list[subprocess.Popen], *options: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dic", "--repo", str(repo), "--json", "listen", "mllp", "--port", "0",
             "--source-system", SOURCE_SYSTEM, *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append(self.process)
        self.lines: queue.Queue[dict | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self.next_line(30)
        assert "listening" in first, first
        self.port = first["listening"]["port"]

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self.lines.put(orjson.loads(line))
        self.lines.put(None)

    def next_line(self, timeout_s: float) -> dict:
        line = self.lines.get(timeout=timeout_s)
        if line is None:
            raise AssertionError(f"the listener ended: {self.process.wait()}\n{self.process.stderr.read().decode()}")
        return line

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        code = self.process.wait(30)
        self.process.stderr.close()  # type: ignore[union-attr]
        return code


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen]]:
    """Listener processes of a test; a failed test leaves none behind."""
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def exchange(port: int, messages: list[bytes]) -> list[list[str]]:
    """Send each message and wait for its ACK; the MSA fields of every ACK."""
    acks = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        for message in messages:
            client.sendall(b"\x0b" + message + b"\x1c\r")
            data = b""
            while not data.endswith(b"\x1c\r"):
                chunk = client.recv(65536)
                assert chunk, "the listener closed the connection"
                data += chunk
            msa = next(s for s in data[1:-2].split(b"\r") if s.startswith(b"MSA"))
            acks.append(msa.decode().split("|"))
    return acks


def spool_rows(repo: Path) -> list[tuple]:
    with sqlite3.connect(spool_path(repo)) as db:
        return db.execute("SELECT control_id, state, batch, duplicate_of FROM messages ORDER BY id").fetchall()


def wait_until_drained(repo: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while any(batch is None for _, _, batch, _ in spool_rows(repo)):
        assert time.monotonic() < deadline, "the spool was not drained in time"
        time.sleep(0.1)


def reference_counts(folder: Path, feed: Path) -> dict[str, int]:
    """The same file loaded directly (read_hl7v2 -> load_source) into a fresh repository."""
    from dic.cli.trust_link import load_source, trust_link
    from dic.repository import init_repository, open_repository, resource_counts
    from dic.sources.hl7v2 import read_hl7v2

    init_repository(folder)
    db = open_repository(folder)
    try:
        with trust_link(folder, SOURCE_SYSTEM) as link:
            load_source(db, folder, link, str(feed), read_hl7v2(feed), SOURCE_SYSTEM)
        return resource_counts(db)
    finally:
        db.close()


def test_acked_messages_survive_kill_9_and_are_loaded_after_restart(
        tmp_path: Path, lab_feed: Path, dic: Callable[..., CliResult], started: list[subprocess.Popen]) -> None:
    repo = tmp_path / "repo"
    dic("--repo", str(repo), "init")
    messages = split_messages(lab_feed)[:MESSAGES]  # every kind of message, the drain kept short
    ids = [control_id(m) for m in messages]
    assert len(set(ids)) == len(ids) == MESSAGES
    assert {m.split(b"|", 9)[8].split(b"^")[1] for m in messages} == {b"A01", b"A03", b"A08", b"R01"}
    sent = tmp_path / "sent.hl7"
    sent.write_bytes(b"\n".join(messages) + b"\n")

    # first run: no drain before the kill (a huge batch and flush interval)
    listener = ListenerProcess(repo, started, "--batch-size", "100000", "--flush-seconds", "3600")
    acks = exchange(listener.port, [*messages, UNSUPPORTED])
    listener.process.kill()  # kill -9 right after the last ACK
    listener.process.wait(10)
    assert [a[1:3] for a in acks[:-1]] == [["AA", i] for i in ids]
    assert acks[-1][1:3] == ["AR", "ORM0001"] and "ORM^O01 is not supported" in acks[-1][3].replace("\\S\\", "^")
    rows = spool_rows(repo)
    assert [(r[0], r[1]) for r in rows] == [*((i, "pending") for i in ids), ("ORM0001", "rejected")]

    # second run: drains what the first one ACKed, then takes resends (duplicates) live
    listener = ListenerProcess(repo, started, "--batch-size", "100", "--flush-seconds", "0.2")
    wait_until_drained(repo)
    resent = exchange(listener.port, messages[:3])
    assert [a[1:3] for a in resent] == [["AA", i] for i in ids[:3]]
    wait_until_drained(repo)
    assert listener.stop() == 0
    events = []
    while (line := listener.lines.get(timeout=10)) is not None:
        events.append(line)
    batches = [e["batch"] for e in events if "batch" in e]
    assert all(b["read"] == b["loaded"] + b["updated"] + b["unchanged"] + b["deleted"] + b["quarantined"]
               for b in batches)
    resend = batches[-1]  # nothing new; a Patient may be set back to what an older message said
    assert resend["read"] > 0 and resend["loaded"] == resend["quarantined"] == 0 and resend["unchanged"] > 0
    stopped = events[-1]["stopped"]
    assert stopped["accepted"] == 3 and stopped["drain_failures"] == 0

    rows = spool_rows(repo)
    assert {(r[0], r[1]) for r in rows} == {*((i, "loaded") for i in ids), ("ORM0001", "rejected")}
    assert [r[3] is not None for r in rows[-3:]] == [True] * 3 and all(r[2] is not None for r in rows)

    status = orjson.loads(dic("--repo", str(repo), "--json", "status").stdout)
    obx = sum(m.count(b"\rOBX|") for m in messages)
    assert status["resources"]["Observation"] == obx
    assert status["resources"] == reference_counts(tmp_path / "reference", sent)
    quarantined = orjson.loads(dic("--repo", str(repo), "--json", "quarantine", "list").stdout)
    rejected = [q for q in quarantined if "(ORM0001)" in q["position"]]
    assert len(rejected) == 1 and "ORM^O01 is not supported" in rejected[0]["reason"]
    assert rejected[0]["source"].startswith("mllp:127.0.0.1:")

    counts = orjson.loads(dic("--repo", str(repo), "--json", "listen", "status").stdout)
    by_state = {r["state"]: r for r in counts}
    assert by_state["loaded"]["messages"] == len(ids) + 3 and by_state["loaded"]["duplicates"] == 3
    assert by_state["rejected"]["messages"] == 1 and sum(r["undrained"] for r in counts) == 0
