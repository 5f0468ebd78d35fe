"""Peer measurement for the ingest benchmark: the installable pure-Python SQL-on-FHIR peers.

    python bench/peers.py --ndjson-dir DIR --views patient,observation,condition \
        --sample 100000 [--expected-rows patient=123,observation=456] [--json]

Materializes our standard ViewDefinitions (src/dic/views/standard/<view>.json) over the
Bulk-style NDJSON in DIR (one file per type, e.g. Patient.ndjson) with each peer and reports,
per peer and view: resources processed, rows produced, seconds, resources/s, and a note when a
peer cannot run a view or returns a different row count than ours.

The peers run in their own virtualenv, bench/.venv-peers, created on first use with the pinned
versions below, so their dependencies never touch our lock file. Started with any other
interpreter, the script creates (or repairs) that venv and re-executes itself in it. Each peer
runs in a child process with a time-out, so a peer that cannot be installed, crashes or hangs
is reported as skipped and never fails the benchmark.

Only the standard library is used outside the child processes. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VIEWS_DIR = ROOT / "src" / "dic" / "views" / "standard"
VENV = BENCH / ".venv-peers"
VENV_PYTHON = VENV / "bin" / "python"
PINS_MARKER = VENV / "dic-pins.txt"

# Current PyPI releases (checked with `pip index versions`) and the dependency versions they
# resolved to; pinned so that a rerun measures the same code.
PEER_PINS = {"fhir4ds": "fhir4ds==0.5.1", "sqlonfhir": "sqlonfhir==0.0.2"}
DEPENDENCY_PINS = (
    "antlr4-python3-runtime==4.13.2",
    "duckdb==2.0.1",
    "fhirpathpy==2.1.0",
    "numpy==2.4.6",
    "pandas==3.1.1",
    "psycopg2-binary==2.9.13",
    "python-dateutil==2.9.0.post0",
)
PEERS = tuple(PEER_PINS)


# ---------------------------------------------------------------- virtualenv bootstrap


def _pins() -> list[str]:
    return [*PEER_PINS.values(), *DEPENDENCY_PINS]


def _in_peer_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def _install(packages: list[str]) -> str | None:
    """Install into the peer venv; the error text if that failed."""
    uv = ROOT / ".venv" / "bin" / "uv"
    if uv.exists():
        command = [str(uv), "pip", "install", "-q", "-p", str(VENV_PYTHON), *packages]
    else:
        command = [str(VENV_PYTHON), "-m", "pip", "install", "-q", *packages]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr or done.stdout).strip()[-800:]


def ensure_venv() -> dict[str, str]:
    """Create bench/.venv-peers with the pinned versions; install notes per peer that failed."""
    wanted = "\n".join(_pins())
    if VENV_PYTHON.exists() and PINS_MARKER.exists() and PINS_MARKER.read_text() == wanted:
        return json.loads((VENV / "dic-install-notes.json").read_text() or "{}")
    uv = ROOT / ".venv" / "bin" / "uv"
    if not VENV_PYTHON.exists():
        if uv.exists():
            subprocess.run([str(uv), "venv", "-q", "-p", sys.executable, str(VENV)], check=True)
        else:
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    (VENV / ".gitignore").write_text("*\n")  # never committed (uv writes the same; venv does not)
    notes: dict[str, str] = {}
    if (error := _install(_pins())) is not None:
        # One peer (or a shared pin) may be uninstallable: try each peer alone, unpinned deps.
        for peer, pin in PEER_PINS.items():
            if (peer_error := _install([pin])) is not None:
                notes[peer] = f"cannot be installed: {peer_error or error}"
    (VENV / "dic-install-notes.json").write_text(json.dumps(notes))
    PINS_MARKER.write_text(wanted)
    return notes


# ---------------------------------------------------------------- input


def parse_expected(text: str | None) -> dict[str, int]:
    expected: dict[str, int] = {}
    for item in filter(None, (text or "").split(",")):
        name, _, value = item.partition("=")
        expected[name.strip()] = int(value)
    return expected


def load_views(names: list[str]) -> dict[str, dict]:
    return {name: json.loads((VIEWS_DIR / f"{name}.json").read_text()) for name in names}


def sample_lines(folder: Path, types: list[str], sample: int) -> dict[str, list[bytes]]:
    """NDJSON lines per resource type; above `sample` in total, each type keeps its share."""
    lines: dict[str, list[bytes]] = {}
    for kind in types:
        path = folder / f"{kind}.ndjson"
        lines[kind] = (
            [line for line in path.read_bytes().splitlines() if line.strip()] if path.exists() else []
        )
    total = sum(len(v) for v in lines.values())
    if sample and total > sample:
        lines = {k: v[: len(v) * sample // total] for k, v in lines.items()}
    return lines


# ---------------------------------------------------------------- the peers (child process)


def run_sqlonfhir(lines: dict[str, list[bytes]], views: dict[str, dict]) -> dict:
    from sqlonfhir import evaluate, sqlonfhir

    # sqlonfhir 0.0.2 indexes ctx[0] in getResourceKey()/getReferenceKey(): an absent reference
    # (an Observation without encounter, a Patient without managingOrganization) raises IndexError
    # and fails the whole view. Patched to return an empty collection, and said so in the report.
    evaluator = sqlonfhir.ViewDefinitionEvaluator
    for name in ("get_resource_key", "get_reference_key"):
        original = getattr(evaluator, name)
        setattr(evaluator, name, staticmethod(lambda ctx, *rest, _f=original: _f(ctx, *rest) if ctx else []))

    t0 = time.perf_counter()
    resources = {kind: [json.loads(line) for line in chunk] for kind, chunk in lines.items()}
    load_s = time.perf_counter() - t0
    results = {}
    for name, view in views.items():
        kind = view["resource"]
        t1 = time.perf_counter()
        try:
            rows = evaluate(resources.get(kind, []), view)
            seconds = time.perf_counter() - t1
            empty = _null_columns(rows, _column_names(view))
            results[name] = {
                "resources": len(resources.get(kind, [])),
                "rows": len(rows),
                "seconds": seconds,
                "note": f"all-null columns: {', '.join(empty)}" if empty else None,
            }
        except Exception as error:  # noqa: BLE001 - whatever a peer raises is a result, not a crash
            results[name] = {
                "resources": len(resources.get(kind, [])),
                "rows": None,
                "seconds": time.perf_counter() - t1,
                "note": f"error: {type(error).__name__}: {str(error)[:300]}",
            }
    return {
        "load_seconds": load_s,
        "load_note": "json.loads of the NDJSON lines (no store); patched: getReferenceKey() "
        "on an absent reference returns empty instead of raising IndexError",
        "views": results,
    }


def _null_columns(rows: list, names: list[str]) -> list[str]:
    """Columns without a single value in the peer's output (a peer can be fast by reading nothing)."""
    if not rows:
        return []
    if isinstance(rows[0], dict):
        return [n for n in names if all(row.get(n) is None for row in rows)]
    return [n for i, n in enumerate(names) if all(row[i] is None for row in rows)]


def _column_names(view: dict) -> list[str]:
    names: list[str] = []
    for select in view.get("select", []):
        names += [c["name"] for c in select.get("column", [])]
        names += _column_names(select)
        for branch in select.get("unionAll", []):
            names += _column_names({"select": [branch]})
    return list(dict.fromkeys(names))


class _OfflineDuckDB:
    """A DuckDB connection whose INSTALL statements become LOAD (extensions are built in, offline).

    With `fail_install` set, INSTALL raises at once instead (what fhir4ds meets offline, minus the
    download time-out), which sends fhir4ds's FHIRPath compiler to its simple-extraction fallback.
    """

    fail_install = False

    def __init__(self, connection):
        self._connection = connection

    def execute(self, sql, *args, **kwargs):
        import re

        if re.search(r"\bINSTALL\s+\w+", sql, flags=re.IGNORECASE) and _OfflineDuckDB.fail_install:
            raise OSError("INSTALL refused offline")
        sql = re.sub(r"\bINSTALL\s+(\w+)\s*;?", "", sql, flags=re.IGNORECASE)
        return self._connection.execute(sql, *args, **kwargs) if sql.strip() else self

    def __getattr__(self, name):
        return getattr(self._connection, name)


def run_fhir4ds(lines: dict[str, list[bytes]], views: dict[str, dict]) -> dict:
    import logging

    import duckdb
    from fhir4ds import FHIRDataStore
    from fhir4ds.dialects import DuckDBDialect

    logging.disable(logging.CRITICAL)  # it logs every generated query at INFO/ERROR
    # fhir4ds runs `INSTALL json` on every DuckDB connection it opens, including a fresh one per
    # compiled FHIRPath expression; offline each INSTALL waits for a download time-out (about 1 s
    # per column), so every connection it opens in this child process is wrapped.
    connect = duckdb.connect
    duckdb.connect = lambda *a, **k: _OfflineDuckDB(connect(*a, **k))
    store = FHIRDataStore(dialect=DuckDBDialect(database=":memory:"))
    t0 = time.perf_counter()
    resources = [json.loads(line) for chunk in lines.values() for line in chunk]
    store.bulk_load_resources(resources, parallel=False, batch_size=1000)
    load_s = time.perf_counter() - t0
    counts = {kind: len(chunk) for kind, chunk in lines.items()}
    loaded = store.get_resource_counts()
    load_note = "json.loads + bulk_load_resources (batched INSERT ... UNION ALL)"
    if sum(loaded.values()) != len(resources):
        load_note += f"; store holds {sum(loaded.values())} of {len(resources)}"
    runner = store.view_runner()
    results = {}
    for name, view in views.items():
        kind = view["resource"]
        notes = []
        for fallback in (False, True):
            _OfflineDuckDB.fail_install = fallback
            t1 = time.perf_counter()
            try:
                rows = runner.execute_view_definition(view).fetchall()
            except Exception as error:  # noqa: BLE001 - whatever a peer raises is a result
                notes.append(f"error: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
                continue
            seconds = time.perf_counter() - t1
            if fallback:
                notes.append("rows from a rerun with its FHIRPath compiler off (simple-extraction fallback)")
            if empty := _null_columns(rows, _column_names(view)):
                notes.append(f"all-null columns: {', '.join(empty)}")
            results[name] = {
                "resources": counts.get(kind, 0),
                "rows": len(rows),
                "seconds": seconds,
                "note": "; ".join(notes) or None,
            }
            break
        else:
            results[name] = {
                "resources": counts.get(kind, 0),
                "rows": None,
                "seconds": time.perf_counter() - t1,
                "note": "; ".join(notes),
            }
    return {"load_seconds": load_s, "load_note": load_note, "views": results}


RUNNERS = {"sqlonfhir": run_sqlonfhir, "fhir4ds": run_fhir4ds}


def child_main(args: argparse.Namespace) -> None:
    views = load_views(args.views)
    lines = sample_lines(args.ndjson_dir, sorted({v["resource"] for v in views.values()}), args.sample)
    result = RUNNERS[args.run_peer](lines, views)
    sys.stdout.write(json.dumps(result))


# ---------------------------------------------------------------- orchestration


def measure(peer: str, args: argparse.Namespace, expected: dict[str, int], install_note: str | None) -> dict:
    report: dict = {
        "name": peer,
        "version": PEER_PINS[peer].split("==")[1],
        "seconds": None,
        "resources": None,
        "resources_per_s": None,
        "rows": None,
        "views": {},
        "note": None,
    }
    if install_note:
        report["note"] = install_note
        return report
    command = [
        str(VENV_PYTHON),
        str(Path(__file__).resolve()),
        "--run-peer",
        peer,
        "--ndjson-dir",
        str(args.ndjson_dir),
        "--views",
        ",".join(args.views),
        "--sample",
        str(args.sample),
    ]
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        report["note"] = f"skipped: no result within {args.timeout} s"
        return report
    if done.returncode != 0:
        report["note"] = f"skipped: exit {done.returncode}: {done.stderr.strip()[-400:]}"
        return report
    child = json.loads(done.stdout)
    notes = []
    total_resources, total_seconds = 0, child["load_seconds"]
    for name, view in child["views"].items():
        view_notes = [view["note"]] if view.get("note") else []
        view_seconds = view["seconds"]
        if view["rows"] is not None and name in expected and view["rows"] != expected[name]:
            view_notes.append(f"rows differ: peer {view['rows']:,}, ours {expected[name]:,}")
        if view["rows"] == 0 and view["resources"]:
            view_notes.append("returned no rows")
        view["resources_per_s"] = view["resources"] / view_seconds if view["rows"] and view_seconds else None
        view["note"] = "; ".join(view_notes) or None
        if view_notes:
            notes.append(f"{name}: {view['note']}")
        if view["rows"] is not None:  # a view that failed counts neither its resources nor its time
            total_resources += view["resources"]
            total_seconds += view_seconds
    ran = [v for v in child["views"].values() if v["rows"] is not None]
    report.update(
        views=child["views"],
        load_seconds=child["load_seconds"],
        load_note=child["load_note"],
        seconds=total_seconds,
        resources=total_resources,
        rows={name: v["rows"] for name, v in child["views"].items()},
        resources_per_s=total_resources / total_seconds if ran and total_seconds else None,
        note="; ".join(notes) or None,
    )
    if not ran:
        report["note"] = "skipped: ran no view; " + (report["note"] or "")
    return report


def print_table(result: dict) -> None:
    print(
        f"peers on {result['ndjson_dir']} (sample {result['sample']:,}), views {', '.join(result['views'])}"
    )
    for peer in result["peers"]:
        if not peer["resources_per_s"]:
            print(f"  {peer['name']} {peer['version']}: {peer['note']}")
            continue
        print(
            f"  {peer['name']} {peer['version']}: {peer['resources']:,} resources in {peer['seconds']:.1f} s "
            f"= {peer['resources_per_s']:,.0f}/s (load {peer['load_seconds']:.1f} s: {peer['load_note']})"
        )
        for name, view in peer["views"].items():
            rate = f"{view['resources_per_s']:>9,.0f}/s" if view["resources_per_s"] else f"{'-':>11s}"
            rows = "-" if view["rows"] is None else f"{view['rows']:,}"
            print(
                f"    {name:14s} {view['resources']:>8,} resources {rows:>9s} rows {view['seconds']:7.2f} s "
                f"{rate}  {view['note'] or ''}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ndjson-dir", type=Path, required=True)
    parser.add_argument(
        "--views",
        type=lambda s: [v for v in s.split(",") if v],
        default=["patient", "observation", "condition"],
    )
    parser.add_argument("--sample", type=int, default=100_000, help="at most this many resources (0: all)")
    parser.add_argument("--expected-rows", help="our row counts, e.g. patient=123,observation=456")
    parser.add_argument("--peers", type=lambda s: [p for p in s.split(",") if p], default=list(PEERS))
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per peer")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--run-peer", choices=PEERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_peer:
        child_main(args)
        return
    if not args.ndjson_dir.is_dir():
        parser.error(f"no NDJSON folder {args.ndjson_dir}")
    missing = [v for v in args.views if not (VIEWS_DIR / f"{v}.json").exists()]
    if missing:
        parser.error(f"no standard view {missing} in {VIEWS_DIR}")
    unknown = [p for p in args.peers if p not in PEERS]
    if unknown:
        parser.error(f"unknown peers {unknown}; known: {', '.join(PEERS)}")
    try:
        install_notes = ensure_venv()
    except (OSError, subprocess.CalledProcessError) as error:
        install_notes = {peer: f"skipped: cannot create {VENV}: {error}" for peer in PEERS}
    expected = parse_expected(args.expected_rows)
    result = {
        "ndjson_dir": str(args.ndjson_dir),
        "sample": args.sample,
        "views": args.views,
        "expected_rows": expected,
        "python": str(VENV_PYTHON),
        "peers": [measure(peer, args, expected, install_notes.get(peer)) for peer in args.peers],
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
