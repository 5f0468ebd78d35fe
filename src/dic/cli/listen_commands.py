"""Live feeds: `dic listen mllp` receives HL7 v2 over MLLP and loads it; `dic listen status`.

    dic listen mllp --port P --source-system lab@site-a    the listener (dic.sources.MllpListener)
                                                           and a drain thread that loads the spool
    dic listen status                                      spooled messages per source system and state

    spool_path(repo) -> Path                               <repo>-inbox/mllp.sqlite
    spooled_records(messages) -> Iterator[record]          spool rows -> adapter records (HL7 v2 mapping)
    drain_spool(spool, repo, source_system, source, batch_size, keep_going) -> list[BatchReport]
    SpoolDrain(...)                                        the background thread that calls drain_spool

The listener commits every message to the spool before it ACKs; the drain loads what is spooled
and only then marks it drained, in the spool's own transaction. A crash between the two makes the
next pass load the same messages again, which changes nothing: the repository load is idempotent
by content and the quarantine by (source, position, raw). The repository and the trust center are
opened per drain pass and closed after it, so other `dic` commands can use the repository between
passes (DuckDB lets one process hold its file).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import typer

from dic.cli.app import app, settings
from dic.cli.output import console, errors, print_rows
from dic.cli.trust_link import apply_changes, load_source, trust_link
from dic.repository import BatchReport, open_repository, read_config

log = logging.getLogger(__name__)

listen_app = typer.Typer(help="Live feeds: receive messages, spool them durably, load them in batches.",
                         no_args_is_help=True)
app.add_typer(listen_app, name="listen")

SPOOL_FILE = Path("mllp.sqlite")
RAW_LIMIT_BYTES = 65536  # what quarantine keeps of a rejected message


def spool_path(repo: Path) -> Path:
    """`<repo>-inbox/mllp.sqlite`: beside the repository, never inside it, since the spool keeps the
    messages as received, identifying data included (like the trust center's folder)."""
    return repo.parent / f"{repo.name}-inbox" / SPOOL_FILE.name


def spooled_records(messages: Iterable[Any]) -> Iterator[Any]:
    """The records of spooled messages, in arrival order: an accepted message's mapped resources
    (or its Rejections), a rejected message as one Rejection for quarantine."""
    from dic.sources import Rejection, message_records

    for message in messages:
        source = f"mllp:{message.peer}"
        position = f"message {message.id} ({message.control_id or 'no MSH-10'})"
        if message.state == "rejected":
            yield Rejection(source, position, message.reason or "rejected by the listener",
                            message.raw[:RAW_LIMIT_BYTES], message.raw_bytes)
            continue
        yield from message_records(message.raw, source=source, position=position)


def drain_spool(spool: Any, repo: Path, source_system: str, source: str, batch_size: int,
                keep_going: Callable[[], bool] = lambda: True) -> list[BatchReport]:
    """Load every message of `source_system` not yet drained, `batch_size` messages per repository
    batch, each marked drained once its load committed; stop early when `keep_going()` turns false."""
    messages = spool.take(source_system, batch_size)
    if not messages:
        return []
    reports = []
    db = open_repository(repo)
    try:
        with trust_link(repo, source_system) as link:
            while messages:
                report = load_source(db, repo, link, source, spooled_records(messages), source_system)
                spool.mark_drained([m.id for m in messages], report.batch_id)
                reports.append(report)
                if len(messages) < batch_size or not keep_going():
                    break
                messages = spool.take(source_system, batch_size)
            apply_changes(db, repo, link)  # merges (ADT^A40) reach the stored data, as after 'dic load'
    finally:
        db.close()
    return reports


class SpoolDrain(threading.Thread):
    """Drains the spool: at once on start (what a previous run ACKed), then whenever `batch_size`
    messages were stored or `flush_s` passed. A failed pass leaves the messages spooled and is
    retried at the next one."""

    def __init__(self, spool_file: Path, repo: Path, source_system: str, source: str, batch_size: int,
                 flush_s: float, on_report: Callable[[BatchReport], None]):
        super().__init__(name="mllp-drain", daemon=True)
        self.spool_file, self.repo, self.source_system, self.source = spool_file, repo, source_system, source
        self.batch_size, self.flush_s, self.on_report = batch_size, flush_s, on_report
        self.reports: list[BatchReport] = []
        self.failures = 0
        self._stored = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()

    def stored(self, count: int) -> None:
        """The listener committed `count` messages (called from its event loop)."""
        with self._lock:
            self._stored += count
            if self._stored >= self.batch_size:
                self._wake.set()

    def stop(self) -> None:
        """Finish the batch under way, then end."""
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        from dic.sources import Spool

        spool = Spool(self.spool_file)
        try:
            while not self._stopping.is_set():
                self._pass(spool)
                self._wake.wait(self.flush_s)
                self._wake.clear()
        finally:
            spool.close()

    def _pass(self, spool: Any) -> None:
        with self._lock:
            self._stored = 0
        try:
            reports = drain_spool(spool, self.repo, self.source_system, self.source, self.batch_size,
                                  lambda: not self._stopping.is_set())
        except Exception as problem:  # noqa: BLE001  the messages stay spooled; the listener stays up
            self.failures += 1
            log.error("drain failed, the messages stay in the spool and are retried: %s", problem)
            return
        for report in reports:
            self.reports.append(report)
            self.on_report(report)


@listen_app.command("mllp")
def listen_mllp(
    port: int = typer.Option(..., help="TCP port (0 picks a free one; the line printed on start names it)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    source_system: str = typer.Option(..., "--source-system", help="The sending system, e.g. lab@site-a."),
    batch_size: int = typer.Option(500, min=1, help="Load after this many messages..."),
    flush_seconds: float = typer.Option(2.0, min=0.01, help="...or after this many seconds."),
    idle_timeout: float = typer.Option(60.0, min=0.01, help="Close a connection idle this many seconds."),
    max_frame_bytes: int = typer.Option(16 * 1024 * 1024, min=1024, help="Refuse (AR) larger messages."),
) -> None:
    """Receive HL7 v2 messages over MLLP. Each is stored in the spool (<repo>-inbox/mllp.sqlite)
    before its ACK; a drain loads them into the repository in batches. Unsupported or unreadable
    messages are answered AR and quarantined. SIGTERM/SIGINT: stop, finish the batch under way, exit 0."""
    from dic.sources import MllpListener, Spool

    repo = settings.repo
    read_config(repo)  # not a repository: a usage error before anything listens
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = spool_path(repo)
    spool = Spool(path)
    drain = SpoolDrain(path, repo, source_system, f"mllp:{host}:{port}", batch_size, flush_seconds, _print_batch)
    listener = MllpListener(spool, source_system, idle_timeout_s=idle_timeout, max_frame_bytes=max_frame_bytes,
                            on_stored=drain.stored)

    def listening(bound: tuple[str, int]) -> None:
        drain.source = f"mllp:{bound[0]}:{bound[1]}"
        drain.start()  # its first pass loads what the spool still holds (ACKed before a stop or crash)

    try:
        bound = asyncio.run(_serve(listener, host, port, path, listening))
    finally:
        if drain.is_alive():
            drain.stop()
            drain.join()
        spool.close()
    stats = vars(listener.stats)
    if settings.json:
        _print_line({"stopped": {"host": bound[0], "port": bound[1], **stats, "drain_failures": drain.failures}})
    else:
        counted = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in stats.items())
        console.print(f"stopped: {counted}, drain failures {drain.failures}", highlight=False)
    sys.stdout.flush()


async def _serve(listener: Any, host: str, port: int, path: Path,
                 listening: Callable[[tuple[str, int]], None]) -> tuple[str, int]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bound = await listener.start(host, port)
    if settings.json:
        _print_line({"listening": {"host": bound[0], "port": bound[1], "spool": str(path.resolve())}})
    else:
        console.print(f"listening on mllp://{bound[0]}:{bound[1]}, spool {path.resolve()}", highlight=False,
                      soft_wrap=True)
    sys.stdout.flush()  # a supervisor (or a test) waits for this line
    listening(bound)
    await stop.wait()
    await listener.stop()
    return bound


def _print_line(data: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(data).decode() + "\n")  # JSON lines: one event per line


def _print_batch(report: BatchReport) -> None:
    if settings.json:
        _print_line({"batch": report.as_dict()})
    else:
        console.print(f"batch {report.batch_id}: read {report.read}, loaded {report.loaded}, updated "
                      f"{report.updated}, unchanged {report.unchanged}, quarantined {report.quarantined}",
                      highlight=False)
    sys.stdout.flush()


@listen_app.command("status")
def listen_status() -> None:
    """Spooled messages per source system and state (pending, loaded, rejected): total, resent
    duplicates, and not yet drained into the repository."""
    from dic.sources import Spool

    path = spool_path(settings.repo)
    read_config(settings.repo)
    rows: list[dict[str, object]] = []
    if path.exists():
        spool = Spool(path)
        try:
            rows = spool.counts()
        finally:
            spool.close()
    columns = ["source_system", "state", "messages", "duplicates", "undrained"]
    print_rows(columns, [[r[c] for c in columns] for r in rows], "json" if settings.json else "table",
               title=f"MLLP spool {path}")
    if not rows and not settings.json:
        errors.print("the spool is empty", highlight=False)
