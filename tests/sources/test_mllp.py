"""The MLLP listener's parts: framing, ACKs (checked against python-hl7 and hl7apy), the spool, and
the server on real TCP (127.0.0.1) with concurrent, slow, broken and oversized senders."""

from __future__ import annotations

import asyncio
import re
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import hl7
import pytest

from dic.sources.mllp import (
    Arrival,
    Frame,
    FrameDecoder,
    MllpListener,
    Oversized,
    Spool,
    build_ack,
    frame,
    judge,
    message_control_id,
)

ORU = (b"MSH|^~\\&|LAURIS|UKA|ORBIS|UKA|20240311123500+0100||ORU^R01^ORU_R01|UKA0000000001|P|2.5|||NE|NE|DEU|"
       b"UNICODE UTF-8\rPID|1||1000000002^^^UKA^MR||MUSTER^ERIKA^^^^^L||19800101|F\r"
       b"OBR|1|L1^ORBIS|L1^LAURIS|26436-6^Laboratory studies (set)^LN|||20240311112200+0100\r"
       b"OBX|1|NM|718-7^Hemoglobin [Mass/volume] in Blood^LN||14.4|g/dL^^UCUM|12.0-16.0|N|||F\r")
UNSUPPORTED = ORU.replace(b"ORU^R01^ORU_R01|UKA0000000001", b"ORM^O01^ORM_O01|UKA0000000099")


def message(control_id: str, template: bytes = ORU) -> bytes:
    return template.replace(b"UKA0000000001", control_id.encode())


def segments(ack: bytes) -> dict[str, list[str]]:
    return {s[:3].decode(): s.decode().split("|") for s in ack.split(b"\r") if s}


# ------------------------------------------------------------------ framing
def test_frames_arriving_in_arbitrary_pieces() -> None:
    stream = frame(message("A1")) + frame(message("A2")) + frame(message("A3"))
    for size in (1, 2, 3, 7, 64, len(stream)):
        decoder = FrameDecoder()
        got = [e for i in range(0, len(stream), size) for e in decoder.feed(stream[i:i + size])]
        assert got == [Frame(message(c)) for c in ("A1", "A2", "A3")], size
        assert not decoder.in_frame and decoder.garbage_bytes == 0


def test_garbage_is_skipped_and_a_frame_without_end_is_abandoned() -> None:
    decoder = FrameDecoder()
    events = decoder.feed(b"GET / HTTP/1.1\r\n\r\n" + frame(message("A1")) + b"\x1c\rjunk"
                          + b"\x0bMSH|never ended" + frame(message("A2")))
    assert events == [Frame(message("A1")), Frame(message("A2"))]
    assert decoder.garbage_bytes == len(b"GET / HTTP/1.1\r\n\r\n") + len(b"\x1c\rjunk")
    assert decoder.abandoned_frames == 1
    assert decoder.feed(b"\x0bMSH|half") == [] and decoder.in_frame


def test_an_oversized_frame_is_refused_and_the_stream_resynchronises() -> None:
    big = message("BIG") + b"NTE|1||" + b"x" * 5000 + b"\r"
    for size in (100, 4096, len(big) + 10):  # the limit found while receiving, or on a complete frame
        decoder = FrameDecoder(max_frame_bytes=2048)
        stream = frame(big) + frame(message("A2"))
        events = [e for i in range(0, len(stream), size) for e in decoder.feed(stream[i:i + size])]
        assert len(events) == 2 and isinstance(events[0], Oversized) and events[1] == Frame(message("A2"))
        assert events[0].head.startswith(b"MSH|") and message_control_id(events[0].head) == "BIG"
    decoder = FrameDecoder(max_frame_bytes=2048)  # an oversized frame cut off by the next <VT>
    events = decoder.feed(b"\x0b" + b"y" * 5000 + frame(message("A3")))
    assert isinstance(events[0], Oversized) and events[1:] == [Frame(message("A3"))]


# ------------------------------------------------------------------ acknowledgements
def test_ack_matches_python_hl7s_create_ack() -> None:
    ack = build_ack(ORU, "AA", control_id="DIC7")
    mine, theirs = hl7.parse(ack.decode()), hl7.parse(ORU.decode()).create_ack("AA", message_id="DIC7")
    for field in (1, 2, 3, 4, 5, 6, 9, 10, 11, 12):
        assert str(mine.segment("MSH")(field)) == str(theirs.segment("MSH")(field)), field
    assert str(mine.segment("MSA")) == str(theirs.segment("MSA")) == "MSA|AA|UKA0000000001"
    assert str(mine.segment("MSH")(9)) == "ACK^R01^ACK"
    assert re.fullmatch(r"\d{14}\+0[12]00", str(mine.segment("MSH")(7)))  # Berlin time with its UTC offset


def test_reject_ack_has_reason_and_err_segment_readable_by_hl7apy() -> None:
    from hl7apy.parser import parse_message

    verdict = judge(UNSUPPORTED)
    assert verdict.state == "rejected" and verdict.ack_code == "AR"
    assert "ORM^O01" in verdict.reason and "not supported" in verdict.reason
    ack = build_ack(UNSUPPORTED, "AR", verdict.reason, verdict.error, verdict.location, "DIC8")
    fields = segments(ack)
    assert fields["MSA"][1:3] == ["AR", "UKA0000000099"]
    assert fields["MSA"][3].replace("\\S\\", "^") == verdict.reason  # ^ escaped as \S\
    assert fields["ERR"][2] == "MSH^1^9" and fields["ERR"][3] == "200^Unsupported message type^HL70357"
    assert fields["ERR"][4] == "E" and "ORM^O01" in fields["ERR"][8].replace("\\S\\", "^")
    parsed = parse_message(ack.decode(), find_groups=False, validation_level=2)  # hl7apy: v2.5 ACK structure
    assert parsed.msh.msh_9.to_er7() == "ACK^O01^ACK" and parsed.msa.msa_1.to_er7() == "AR"
    assert parsed.err.err_3.to_er7() == "200^Unsupported message type^HL70357"


def test_ack_of_something_without_msh() -> None:
    verdict = judge(b"hello, is this the lab?")
    assert verdict.state == "rejected" and verdict.reason
    fields = segments(build_ack(b"hello, is this the lab?", "AR", verdict.reason, verdict.error, verdict.location))
    assert fields["MSA"][1:3] == ["AR", ""] and fields["MSH"][8] == "ACK^^ACK" and fields["MSH"][11] == "2.5"


def test_reason_text_is_escaped() -> None:
    fields = segments(build_ack(ORU, "AE", "spool | full ^ retry & \\ later", control_id="X"))
    assert fields["MSA"][3] == "spool \\F\\ full \\S\\ retry \\T\\ \\E\\ later"


# ------------------------------------------------------------------ spool
def test_spool_keeps_messages_marks_duplicates_and_drains(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "inbox" / "mllp.sqlite")
    try:
        arrivals = [Arrival("1.2.3.4:5", "C1", b"m1", 2, "pending", None),
                    Arrival("1.2.3.4:5", "C2", b"m2", 2, "rejected", "MSH-9: no"),
                    Arrival("1.2.3.4:6", "C1", b"m1", 2, "pending", None)]  # a resend after a lost ACK
        ids = spool.add("lab@site-a", arrivals)
        spool.add("lab@site-b", [Arrival("p", "C1", b"other", 5, "pending", None)])
        taken = spool.take("lab@site-a", 10)
        assert [m.id for m in taken] == ids and [m.state for m in taken] == ["pending", "rejected", "pending"]
        spool.mark_drained(ids[:2], 4)
        assert [m.id for m in spool.take("lab@site-a", 10)] == ids[2:]
        counts = {(r["source_system"], r["state"]): r for r in spool.counts()}
        assert counts["lab@site-a", "loaded"]["messages"] == 1
        assert counts["lab@site-a", "pending"] == {"source_system": "lab@site-a", "state": "pending",
                                                   "messages": 1, "duplicates": 1, "undrained": 1}
        assert counts["lab@site-b", "pending"]["duplicates"] == 0  # control ids are per source system
    finally:
        spool.close()
    with sqlite3.connect(tmp_path / "inbox" / "mllp.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT duplicate_of, batch FROM messages ORDER BY id").fetchall() == [
            (None, 4), (None, 4), (ids[0], None), (None, None)]


# ------------------------------------------------------------------ the server on TCP
class ServerThread:
    """An MllpListener on 127.0.0.1 in its own event loop thread."""

    def __init__(self, spool: Spool, **options: float):
        self.loop = asyncio.new_event_loop()
        self.listener = MllpListener(spool, "lab@test", **options)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.listener.start("127.0.0.1", 0), self.loop).result(5)[1]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.listener.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    spool = Spool(tmp_path / "mllp.sqlite")
    running = ServerThread(spool, idle_timeout_s=1.0, max_frame_bytes=4096)
    yield running
    running.close()
    spool.close()


def connect(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def read_ack(client: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\x1c\r"):
        chunk = client.recv(65536)
        assert chunk, f"connection closed before the ACK ({data!r})"
        data += chunk
    assert data.startswith(b"\x0b") and data.count(b"\x0b") == 1
    return data[1:-2]


def stored(server: ServerThread) -> list[tuple]:
    with sqlite3.connect(server.listener.spool.path) as db:
        return db.execute("SELECT control_id, state, reason FROM messages ORDER BY id").fetchall()


def test_concurrent_connections_each_message_stored_then_acked(server: ServerThread) -> None:
    def send(worker: int, results: dict[int, list[str]]) -> None:
        with connect(server.port) as client:
            acks = []
            for n in range(20):
                client.sendall(frame(message(f"W{worker}N{n}")))
                fields = segments(read_ack(client))
                acks.append(f"{fields['MSA'][1]} {fields['MSA'][2]}")
            results[worker] = acks

    results: dict[int, list[str]] = {}
    workers = [threading.Thread(target=send, args=(w, results)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(20)
    assert results == {w: [f"AA W{w}N{n}" for n in range(20)] for w in range(4)}
    rows = stored(server)
    assert sorted(r[0] for r in rows) == sorted(f"W{w}N{n}" for w in range(4) for n in range(20))
    assert {r[1] for r in rows} == {"pending"} and server.listener.stats.accepted == 80


def test_several_messages_in_one_write_get_acks_in_order(server: ServerThread) -> None:
    with connect(server.port) as client:
        client.sendall(b"".join(frame(message(f"B{n}")) for n in range(5)))
        assert [segments(read_ack(client))["MSA"][2] for _ in range(5)] == [f"B{n}" for n in range(5)]


def test_unsupported_type_is_stored_rejected_and_answered_ar(server: ServerThread) -> None:
    with connect(server.port) as client:
        client.sendall(frame(UNSUPPORTED))
        fields = segments(read_ack(client))
    assert fields["MSA"][1:3] == ["AR", "UKA0000000099"] and "ORM^O01" in fields["MSA"][3].replace("\\S\\", "^")
    assert stored(server) == [("UKA0000000099", "rejected", judge(UNSUPPORTED).reason)]


def test_broken_slow_and_oversized_senders_do_not_disturb_others(server: ServerThread) -> None:
    garbage, half, slow = connect(server.port), connect(server.port), connect(server.port)
    garbage.sendall(b"\x00\xffGARBAGE" + b"\x0bMSH|^~\\&|never ends")  # a frame without end, then silence
    half.sendall(frame(message("H1"))[:40])
    half.close()  # dropped mid-frame: never ACKed, so not stored
    slow_frame = frame(message("S1"))
    for byte in slow_frame[:30]:
        slow.sendall(bytes([byte]))
    with connect(server.port) as good:  # served while the others hang
        good.sendall(frame(message("G1")))
        assert segments(read_ack(good))["MSA"][1:3] == ["AA", "G1"]
        good.sendall(frame(message("BIG") + b"NTE|1||" + b"x" * 8000 + b"\r") + frame(message("G2")))
        big = segments(read_ack(good))
        assert big["MSA"][1:3] == ["AR", "BIG"] and "4096 bytes" in big["MSA"][3]
        assert segments(read_ack(good))["MSA"][1:3] == ["AA", "G2"]
    for byte in slow_frame[30:]:
        slow.sendall(bytes([byte]))
    assert segments(read_ack(slow))["MSA"][1:3] == ["AA", "S1"]
    slow.close()
    garbage.settimeout(5)
    assert garbage.recv(100) == b""  # closed by the server after the idle timeout (1 s)
    garbage.close()
    rows = stored(server)
    assert [r[:2] for r in rows] == [("G1", "pending"), ("BIG", "rejected"), ("G2", "pending"), ("S1", "pending")]
    stats = server.listener.stats
    assert stats.dropped_frames == 2 and stats.garbage_bytes == len(b"\x00\xffGARBAGE")  # half + idle garbage
    assert stats.oversized_frames == 1 and stats.idle_closed == 1 and stats.accepted == 3 and stats.rejected == 1


def test_a_failed_spool_write_is_answered_ae_and_the_listener_stays_up(server: ServerThread) -> None:
    real = server.listener.spool.add

    def failing(*args: object) -> list[int]:
        raise sqlite3.OperationalError("disk I/O error")

    server.listener.spool.add = failing  # type: ignore[method-assign]
    try:
        with connect(server.port) as client:
            client.sendall(frame(message("E1")))
            fields = segments(read_ack(client))
            assert fields["MSA"][1:3] == ["AE", "E1"] and "disk I/O error" in fields["MSA"][3]
            assert fields["ERR"][3] == "207^Application internal error^HL70357"
            server.listener.spool.add = real  # type: ignore[method-assign]
            client.sendall(frame(message("E1")))  # the sender resends
            assert segments(read_ack(client))["MSA"][1:3] == ["AA", "E1"]
    finally:
        server.listener.spool.add = real  # type: ignore[method-assign]
    assert [r[:2] for r in stored(server)] == [("E1", "pending")] and server.listener.stats.errors == 1
