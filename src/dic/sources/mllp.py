"""A live HL7 v2 feed over MLLP: framing, a durable spool, and an asyncio server that ACKs.

    FrameDecoder(max_frame_bytes)      bytes in arbitrary pieces -> Frame / Oversized events
    frame(message) -> bytes            <VT> message <FS><CR> (MLLP release 2)
    build_ack(raw, code, ...) -> bytes an original-mode ACK (MSA, and ERR when not AA)
    Spool(path)                        the inbox: SQLite (WAL, synchronous=FULL); add, take, mark_drained, counts
    MllpListener(spool, source_system) start(host, port), stop(), stats: the TCP server

A message is INSERTed and COMMITted to the spool before its ACK is written, so an ACKed message
survives a crash (kill -9) of the listener; a frame cut off by a dropped connection was never
ACKed and is not stored (the sender resends it). Messages the listener cannot accept (MSH
unparsable, unsupported message type, frame over the size limit) are stored too, as 'rejected'
with the reason, and answered AR; a failed spool write is answered AE. Commits are grouped:
frames that arrive while a commit runs share the next one (one fsync for many connections).

The ACK is written by hand, not with python-hl7's `Message.create_ack`: that cannot add the ERR
segment, needs a message whose MSH it can parse (a rejected one may not have one), and writes
MSH-7 without a UTC offset. tests/sources/test_mllp.py checks ours against python-hl7's reading.
Every message gets an ACK, whatever its MSH-15/16 ask (senders on MLLP wait for one).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from dic.sources.hl7v2 import SUPPORTED, HL7Error, parse_header

log = logging.getLogger(__name__)

START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\r"
MAX_FRAME_BYTES = 16 * 1024 * 1024
IDLE_TIMEOUT_S = 60.0
RAW_LIMIT_BYTES = 65536  # what a refused oversized frame keeps for quarantine
READ_CHUNK_BYTES = 65536
LOCAL_TIME = ZoneInfo("Europe/Berlin")
# HL7 table 0357, message error condition codes, for ERR-3
ERROR_CONDITIONS = {100: "Segment sequence error", 101: "Required field missing", 102: "Data type error",
                    103: "Table value not found", 200: "Unsupported message type", 201: "Unsupported event code",
                    202: "Unsupported processing id", 203: "Unsupported version id", 207: "Application internal error"}
INTERNAL_ERROR = 207


# ------------------------------------------------------------------ framing
@dataclass(frozen=True, slots=True)
class Frame:
    data: bytes  # the message, without <VT> and <FS><CR>


@dataclass(frozen=True, slots=True)
class Oversized:
    head: bytes  # the first RAW_LIMIT_BYTES of a frame over the limit; the rest is skipped


def frame(message: bytes) -> bytes:
    return START_BLOCK + message + END_BLOCK


class FrameDecoder:
    """Cuts a byte stream into MLLP frames. Bytes outside a frame are skipped (counted in
    `garbage_bytes`); a <VT> inside a frame starts a new one (the cut-off one is counted in
    `abandoned_frames`); a frame over `max_frame_bytes` yields `Oversized` and is skipped up to
    its end or the next <VT>."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES):
        self.max_frame_bytes = max_frame_bytes
        self.garbage_bytes = 0
        self.abandoned_frames = 0
        self._buffer = bytearray()
        self._in_frame = False
        self._skipping = False  # inside an oversized frame
        self._scanned = 0  # bytes of the buffer already searched for <VT> and <FS><CR>

    @property
    def in_frame(self) -> bool:
        """A frame has started and not ended: a disconnect now drops it."""
        return self._in_frame

    def feed(self, data: bytes) -> list[Frame | Oversized]:
        events: list[Frame | Oversized] = []
        self._buffer += data
        buffer = self._buffer
        while buffer:
            if not self._in_frame:
                start = buffer.find(START_BLOCK)
                skipped = len(buffer) if start < 0 else start
                self.garbage_bytes += skipped
                del buffer[:skipped + (start >= 0)]
                if start < 0:
                    break
                self._in_frame, self._skipping, self._scanned = True, False, 0
                continue
            end = buffer.find(END_BLOCK, self._scanned)
            restart = buffer.find(START_BLOCK, self._scanned, end if end >= 0 else len(buffer))
            if restart >= 0:  # a new frame began before this one ended
                if not self._skipping and restart > self.max_frame_bytes:  # as if it had come in pieces
                    events.append(Oversized(bytes(buffer[:RAW_LIMIT_BYTES])))
                elif not self._skipping:
                    self.abandoned_frames += 1
                del buffer[:restart]
                self._in_frame = False
                continue
            if end >= 0:
                if not self._skipping:
                    message = bytes(buffer[:end])
                    events.append(Oversized(message[:RAW_LIMIT_BYTES]) if end > self.max_frame_bytes
                                  else Frame(message))
                del buffer[:end + len(END_BLOCK)]
                self._in_frame = False
                continue
            if self._skipping:
                keep = buffer[-1:] == END_BLOCK[:1]  # a <FS> whose <CR> is still to come
                del buffer[:len(buffer) - keep]
            elif len(buffer) > self.max_frame_bytes:
                events.append(Oversized(bytes(buffer[:RAW_LIMIT_BYTES])))
                self._skipping = True
                keep = buffer[-1:] == END_BLOCK[:1]
                del buffer[:len(buffer) - keep]
            self._scanned = max(0, len(buffer) - 1)
            break
        return events


# ------------------------------------------------------------------ acknowledgement
def _msh_fields(raw: bytes) -> tuple[bytes, bytes, list[bytes]] | None:
    """Field separator, encoding characters and fields of the MSH, read leniently (for the ACK
    of a message the header parser may refuse); None without an MSH."""
    text = raw.lstrip(b"\r\n\t ")
    if not text.startswith(b"MSH") or len(text) < 8:
        return None
    separator = text[3:4]
    segment = text.split(b"\r", 1)[0].split(b"\n", 1)[0]
    fields = segment.split(separator)  # fields[n - 1] is MSH-n for n >= 2
    encoding = fields[1] if len(fields[1]) >= 4 else b"^~\\&"
    return separator, encoding, fields


def _field(fields: list[bytes], number: int) -> bytes:
    return fields[number - 1] if number - 1 < len(fields) else b""


def message_control_id(raw: bytes) -> str | None:
    """MSH-10 as sent, or None."""
    found = _msh_fields(raw)
    value = _field(found[2], 10).decode("utf-8", "replace") if found else ""
    return value or None


def _escape(text: str, separator: bytes, encoding: bytes) -> bytes:
    component, repetition, escape, subcomponent = (encoding[i:i + 1] for i in range(4))
    out = text.encode("utf-8").replace(escape, escape + b"E" + escape)
    for char, code in ((separator, b"F"), (component, b"S"), (subcomponent, b"T"), (repetition, b"R")):
        out = out.replace(char, escape + code + escape)
    return out.replace(b"\r", escape + b"X0D" + escape).replace(b"\n", escape + b"X0A" + escape)


def build_ack(raw: bytes, code: str, reason: str | None = None, error: int | None = None,
              location: tuple[str, int | None] | None = None, control_id: str | None = None) -> bytes:
    """The original-mode ACK of `raw`: MSH with sender and receiver swapped, MSH-9 ACK^<trigger>^ACK,
    MSH-12 as received, MSA-1 `code` (AA/AE/AR), MSA-2 the message's MSH-10, MSA-3 `reason`; unless
    AA, an ERR with ERR-2 `location` (segment, field), ERR-3 `error` (HL7 table 0357), ERR-4 E, ERR-8
    `reason`."""
    found = _msh_fields(raw)
    separator, encoding, fields = found if found else (b"|", b"^~\\&", [b"MSH", b"^~\\&"])
    component = encoding[:1]
    trigger = _field(fields, 9).split(component)[1:2] or [b""]
    now = datetime.now(LOCAL_TIME).strftime("%Y%m%d%H%M%S%z").encode()
    ack_id = (control_id or uuid.uuid4().hex[:20]).encode()
    msh = [b"MSH", encoding, _field(fields, 5) or b"DIC", _field(fields, 6), _field(fields, 3), _field(fields, 4),
           now, b"", b"ACK" + component + trigger[0] + component + b"ACK", ack_id,
           _field(fields, 11) or b"P", _field(fields, 12) or b"2.5"]
    msa = [b"MSA", code.encode(), _field(fields, 10)]
    segments = [separator.join(msh), separator.join(msa)]
    if reason:
        msa.append(_escape(reason, separator, encoding))
        segments[1] = separator.join(msa)
    if code != "AA":
        number = error or INTERNAL_ERROR
        text = ERROR_CONDITIONS.get(number, "")
        where = b""
        if location:
            where = location[0].encode() + component + b"1" + (component + str(location[1]).encode()
                                                               if location[1] else b"")
        err = [b"ERR", b"", where, component.join([str(number).encode(), text.encode(), b"HL70357"]), b"E",
               b"", b"", b"", _escape(reason or text, separator, encoding)]
        segments.append(separator.join(err))
    return b"\r".join(segments) + b"\r"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a message can be accepted, and why not: the spool state and the ACK's content."""

    state: str  # 'pending' or 'rejected'
    reason: str | None = None
    error: int | None = None  # HL7 table 0357
    location: tuple[str, int | None] | None = None

    @property
    def ack_code(self) -> str:
        return "AA" if self.state == "pending" else "AR"


def judge(raw: bytes) -> Verdict:
    """Accept a message whose MSH parses (`dic.sources.hl7v2.parse_header`: delimiters, MSH-9/-10/-12,
    version, character set) and whose type and trigger event the HL7 v2 adapter maps."""
    try:
        header = parse_header(raw)
    except HL7Error as problem:
        return Verdict("rejected", str(problem), problem.code, (problem.segment or "MSH", problem.field))
    except Exception as problem:  # noqa: BLE001  a parser bug must not take the listener down; the message is kept
        log.error("the MSH parser failed: %r", problem)
        return Verdict("rejected", f"the MSH could not be read ({type(problem).__name__}: {problem})",
                       INTERNAL_ERROR, ("MSH", None))
    if header.message_type not in SUPPORTED:
        known_type = any(kind == header.message_type[0] for kind, _ in SUPPORTED)
        accepted = ", ".join("^".join(t) for t in sorted(SUPPORTED))
        return Verdict("rejected", f"MSH-9: message type {'^'.join(header.message_type)} is not supported "
                                   f"(supported: {accepted})", 201 if known_type else 200, ("MSH", 9))
    return Verdict("pending")


# ------------------------------------------------------------------ spool
SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    peer TEXT NOT NULL,
    source_system TEXT NOT NULL,
    control_id TEXT,
    raw BLOB NOT NULL,
    raw_bytes INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'loaded', 'rejected')),
    reason TEXT,
    duplicate_of INTEGER REFERENCES messages (id),
    batch INTEGER
);
CREATE INDEX IF NOT EXISTS messages_undrained ON messages (source_system, id) WHERE batch IS NULL;
CREATE INDEX IF NOT EXISTS messages_control_id ON messages (source_system, control_id);
"""


@dataclass(frozen=True, slots=True)
class Arrival:
    """A message to spool."""

    peer: str
    control_id: str | None
    raw: bytes
    raw_bytes: int
    state: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    id: int
    peer: str
    control_id: str | None
    raw: bytes
    raw_bytes: int
    state: str
    reason: str | None


class Spool:
    """The listener's durable inbox. One connection per thread: the server's writer and the drain
    each open their own. A message not yet drained has `batch` NULL; draining marks it with the
    repository batch that loaded (or quarantined) it."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # the ACK promises the message survives a power loss
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add(self, source_system: str, arrivals: Sequence[Arrival]) -> list[int]:
        """Insert and commit; the new ids. A control id this source system sent before is kept,
        marked `duplicate_of` the first message with it (a resend after a lost ACK)."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        ids = []
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for a in arrivals:
                first = db.execute("SELECT min(id) FROM messages WHERE source_system = ? AND control_id = ?",
                                   (source_system, a.control_id)).fetchone()[0] if a.control_id else None
                cursor = db.execute(
                    "INSERT INTO messages (received_at, peer, source_system, control_id, raw, raw_bytes, state,"
                    " reason, duplicate_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (now, a.peer, source_system, a.control_id, a.raw, a.raw_bytes, a.state, a.reason, first))
                ids.append(cursor.lastrowid)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return ids

    def take(self, source_system: str, limit: int) -> list[SpooledMessage]:
        """The oldest messages not yet drained, pending and rejected, in arrival order."""
        rows = self._db.execute(
            "SELECT id, peer, control_id, raw, raw_bytes, state, reason FROM messages"
            " WHERE source_system = ? AND batch IS NULL ORDER BY id LIMIT ?", (source_system, limit)).fetchall()
        return [SpooledMessage(*row) for row in rows]

    def mark_drained(self, ids: Sequence[int], batch: int) -> None:
        """The repository batch `batch` holds these messages now: pending ones become 'loaded'."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "UPDATE messages SET batch = ?, state = CASE state WHEN 'pending' THEN 'loaded' ELSE state END"
                " WHERE id = ?", [(batch, i) for i in ids])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def counts(self) -> list[dict[str, object]]:
        """Messages per source system and state: total, duplicates, not yet drained."""
        rows = self._db.execute(
            "SELECT source_system, state, count(*), count(duplicate_of), count(*) - count(batch) FROM messages"
            " GROUP BY source_system, state ORDER BY source_system, state").fetchall()
        return [dict(zip(("source_system", "state", "messages", "duplicates", "undrained"), r, strict=True))
                for r in rows]


# ------------------------------------------------------------------ server
@dataclass
class ListenerStats:
    connections: int = 0
    accepted: int = 0  # AA
    rejected: int = 0  # AR (stored as 'rejected')
    errors: int = 0  # AE: not stored
    garbage_bytes: int = 0  # outside any frame, skipped
    abandoned_frames: int = 0  # a <VT> came before the frame's end
    dropped_frames: int = 0  # the connection closed mid-frame: never ACKed, not stored
    oversized_frames: int = 0
    idle_closed: int = 0


class _GroupCommit:
    """Spool writes from every connection, in one thread; what arrives during a commit shares the next."""

    def __init__(self, spool: Spool, source_system: str, on_stored: Callable[[int], None] | None):
        self.spool, self.source_system, self.on_stored = spool, source_system, on_stored
        self._queue: list[tuple[Arrival, asyncio.Future[int]]] = []
        self._wake = asyncio.Event()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="mllp-spool")
        self._task = asyncio.create_task(self._run())

    async def add(self, arrival: Arrival) -> int:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((arrival, done))
        self._wake.set()
        return await done

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            try:
                ids = await loop.run_in_executor(self._thread, self.spool.add, self.source_system,
                                                 [a for a, _ in batch])
            except Exception as problem:  # noqa: BLE001  answered AE per message; the writer keeps serving
                log.error("spool write failed for %d message(s): %s", len(batch), problem)
                for _, done in batch:
                    if not done.done():
                        done.set_exception(problem)
                continue
            for (_, done), row_id in zip(batch, ids, strict=True):
                if not done.done():
                    done.set_result(row_id)
            if self.on_stored:
                self.on_stored(len(ids))

    async def close(self, timeout_s: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self._queue and asyncio.get_running_loop().time() < deadline:  # let queued writes commit
            await asyncio.sleep(0.01)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._thread.shutdown(wait=True)


class MllpListener:
    """The MLLP server: per connection, frames in and one ACK per frame out, in order."""

    def __init__(self, spool: Spool, source_system: str, *, idle_timeout_s: float = IDLE_TIMEOUT_S,
                 max_frame_bytes: int = MAX_FRAME_BYTES, on_stored: Callable[[int], None] | None = None):
        self.spool, self.source_system = spool, source_system
        self.idle_timeout_s, self.max_frame_bytes, self.on_stored = idle_timeout_s, max_frame_bytes, on_stored
        self.stats = ListenerStats()
        self._server: asyncio.Server | None = None
        self._writes: _GroupCommit | None = None
        self._connections: set[asyncio.Task] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; the bound host and port (port 0 picks a free one)."""
        self._writes = _GroupCommit(self.spool, self.source_system, self.on_stored)
        self._server = await asyncio.start_server(self._serve, host, port, limit=READ_CHUNK_BYTES)
        bound = self._server.sockets[0].getsockname()
        return bound[0], bound[1]

    async def stop(self) -> None:
        """Stop accepting, close the connections, let the spool writes under way commit."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()  # after the connections: from 3.12 on it waits for them
        if self._writes is not None:
            await self._writes.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        address = writer.get_extra_info("peername") or ("?", 0)
        peer = f"{address[0]}:{address[1]}"
        self.stats.connections += 1
        decoder = FrameDecoder(self.max_frame_bytes)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK_BYTES), self.idle_timeout_s)
                except TimeoutError:
                    self.stats.idle_closed += 1
                    log.info("%s: idle for %.0f s, closed", peer, self.idle_timeout_s)
                    break
                if not data:
                    break
                garbage = decoder.garbage_bytes
                for event in decoder.feed(data):
                    ack = await self._accept(event, peer)
                    writer.write(frame(ack))
                    await asyncio.wait_for(writer.drain(), self.idle_timeout_s)
                if decoder.garbage_bytes > garbage:
                    log.warning("%s: skipped %d byte(s) outside MLLP frames", peer, decoder.garbage_bytes - garbage)
        except (ConnectionError, TimeoutError) as problem:
            log.info("%s: connection lost: %s", peer, problem)
        except asyncio.CancelledError:
            pass  # the listener is stopping
        finally:
            if decoder.in_frame:
                self.stats.dropped_frames += 1
                log.warning("%s: connection closed mid-frame; the partial message was not ACKed or stored", peer)
            self.stats.garbage_bytes += decoder.garbage_bytes
            self.stats.abandoned_frames += decoder.abandoned_frames
            self._connections.discard(task)
            writer.close()

    async def _accept(self, event: Frame | Oversized, peer: str) -> bytes:
        """Spool the frame, then its ACK: AA stored pending, AR stored rejected, AE not stored."""
        assert self._writes is not None
        if isinstance(event, Oversized):
            self.stats.oversized_frames += 1
            raw, size = event.head, len(event.head)
            verdict = Verdict("rejected", f"MLLP frame larger than the limit of {self.max_frame_bytes} bytes; "
                                          f"refused, only its first {len(raw)} bytes kept", INTERNAL_ERROR)
        else:
            raw, size = event.data, len(event.data)
            verdict = judge(raw)
        control_id = message_control_id(raw)
        try:
            row_id = await self._writes.add(Arrival(peer, control_id, raw, size, verdict.state, verdict.reason))
        except Exception as problem:  # noqa: BLE001  not stored, whatever failed: AE asks for a resend
            self.stats.errors += 1
            return build_ack(raw, "AE", f"the message could not be stored, send it again: {problem}",
                             INTERNAL_ERROR)
        if verdict.state == "pending":
            self.stats.accepted += 1
        else:
            self.stats.rejected += 1
        return build_ack(raw, verdict.ack_code, verdict.reason, verdict.error, verdict.location, f"DIC{row_id}")


__all__ = ["Arrival", "Frame", "FrameDecoder", "ListenerStats", "MllpListener", "Oversized", "Spool", "SpooledMessage",
           "build_ack", "frame", "judge", "message_control_id"]
