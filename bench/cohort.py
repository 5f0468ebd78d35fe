"""Feasibility latency benchmark: 20 CCDL queries (bench/cohort_queries/) on synthetic repositories.

    .venv/bin/python bench/cohort.py [--patients 100000] [--sizes 100000,1000000] [--engines duckdb,postgres]
                                     [--repeat 5] [--work /tmp/dic-bench-cohort] [--pg-url URL] [--quick]

Preparation (cached under --work, so reruns skip it; each step prints its seconds):

1. `dic synth` world of --patients patients at one site (HIS FHIR export and MS registry CSV).
2. A DuckDB repository: the HIS export and the registry are loaded WITHOUT the trust center —
   codes checked and values normalized (`dic.terminology.annotate`) and identifying elements
   removed as in a real load, but the source's own ids stay (no pseudonyms) and the registry's
   patients stay apart from the HIS patients (no record linkage) — then the standard views.
3. Every further size is a multiple of --patients: each materialized view table is replicated
   that many times inside DuckDB, keys rewritten per copy ('Patient/x' -> 'Patient/r3-x'). The
   cohort SQL reads only the views, so this is the same workload shape; what differs from a
   real world of that size: the copies repeat the same values (dates, codes, value
   distributions), so each cohort is exactly k times the base cohort.
4. PostgreSQL (a throwaway cluster under --work started with the Debian binaries, or --pg-url):
   the view tables of the --postgres-sizes are copied from DuckDB; no indexes, as the materializer
   makes none, unless --postgres-indexes (a B-tree per code column and patient key).

Only the views the compiled queries read are replicated and copied (sizes and time: a quarter less).

Timing: each query is compiled once (`dic.cohort.parse_ccdl`, `compile_query`), then its count
(`SELECT count(*) FROM (<cohort select>)`) runs once to warm up and --repeat times timed, then
`EXPLAIN` once (planning alone). Prints one line per (engine, size, query) and a summary per
engine and size: median, p95 (nearest rank) and max over the queries' medians, the slowest query;
the largest/smallest size ratio; checks that replicated cohorts grow by exactly the factor and that
the engines agree; peak RSS.
A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import orjson
from sqlglot import exp

from dic.engines import Database, Engine, connect, table
from dic.fhir import remove_identifying
from dic.repository import ensure_schema, load_records
from dic.sources import Entry, Rejection, SourceResource, read_fhir, source_formats
from dic.synth import write_world
from dic.terminology import annotate
from dic.views import load_catalog, refresh_views

BENCH = Path(__file__).resolve().parent
QUERIES = BENCH / "cohort_queries"
VIEW_TABLE = "_view_"
# DuckDB's own catalog (a fixed statement): the SQL views over the view tables and the union views
DUCKDB_VIEWS = "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal"
REPLICA_PREFIX = "r"
REPLICA_MEMORY = "4GB"  # copy k of a resource 'Type/id' is 'Type/r<k>-id' (copy 0 keeps its key)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def say(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------- 1. the synthetic world
def prepare_world(work: Path, patients: int, seed: int) -> Path:
    folder = work / f"world-{patients}"
    done = folder / ".complete"
    if done.exists():
        say(f"world: {folder} (cached; {done.read_text().strip()})")
        return folder
    started = time.perf_counter()
    report = write_world(folder, sites=1, patients=patients, seed=seed, formats=["his-fhir", "ms-registry"],
                         gzip=True, overwrite=True, workers=1)
    seconds = time.perf_counter() - started
    note = f"dic synth {patients:,} patients, seed {seed}: {seconds:.1f} s, {report.persons:,} persons"
    done.write_text(note + "\n")
    say(f"world: {note}")
    return folder


# ---------------------------------------------------------------- 2. the base repository
def without_trust_center(records: Iterator) -> Iterator[Entry | Rejection]:
    """Adapter output as the loader stores it, minus pseudonymization: values normalized and codes
    checked (as `dic load` does), identifying elements removed, the source's ids kept."""
    for record in annotate(records):
        if isinstance(record, SourceResource):
            yield Entry.of(remove_identifying(record.resource), record.source, record.position)
        elif isinstance(record, Entry | Rejection):
            yield record


def load_units(world: Path) -> list[tuple[str, Iterator]]:
    site = world / "site-a"
    his = sorted((site / "his-fhir").glob("*.ndjson.gz"), key=lambda p: (not p.name.startswith("Patient"), p.name))
    units = [(str(p), read_fhir(p, prepare=SourceResource)) for p in his if p.stat().st_size]
    registry = source_formats()["ms-registry"]
    units.append((str(site / "ms-registry"), registry.read(site / "ms-registry")))
    return units


def prepare_repository(work: Path, world: Path, patients: int) -> Path:
    path = work / f"repo-{patients}.duckdb"
    done = path.with_suffix(".loaded")
    db = connect(Engine.duckdb, path)
    try:
        if done.exists():
            say(f"repository: {path} (cached; {done.read_text().strip()})")
        else:
            for leftover in (path.with_suffix(".duckdb.wal"),):
                leftover.unlink(missing_ok=True)
            ensure_schema(db)
            started = time.perf_counter()
            totals = {"read": 0, "loaded": 0, "quarantined": 0}
            for source, records in load_units(world):
                t0 = time.perf_counter()
                report = load_records(db, source, without_trust_center(records))
                counts = report.as_dict()
                for key in totals:
                    totals[key] += int(counts.get(key, 0) or 0)
                say(f"  loaded {Path(source).name}: {counts.get('loaded')} loaded, "
                    f"{counts.get('quarantined')} quarantined, {time.perf_counter() - t0:.1f} s")
            seconds = time.perf_counter() - started
            note = (f"{totals['loaded']:,} resources loaded, {totals['quarantined']:,} quarantined in {seconds:.1f} s "
                    f"({totals['loaded'] / seconds:,.0f}/s)")
            done.write_text(note + "\n")
            say(f"repository: {note}")
        started = time.perf_counter()
        reports = refresh_views(db, load_catalog())
        changed = [r for r in reports if r.strategy != "unchanged"]
        rows = sum(r.rows for r in reports)
        say(f"views: {len(reports)} views, {rows:,} rows; {len(changed)} refreshed in {time.perf_counter() - started:.1f} s"
            + "".join(f"\n  {r.name}: {r.strategy} {r.mode} {r.rows:,} rows {r.seconds:.1f} s"
                      + (f" ({r.notice})" if r.notice else "") for r in changed))
    finally:
        db.close()
    return path


# ---------------------------------------------------------------- 3. replicated sizes
def view_fingerprint(db: Database) -> str:
    """What the view tables were built from: the view state (definition hashes, last batch, rows)."""
    rows = db.fetch(exp.select("name", "definition_hash", "last_batch_id", "rows").from_(table("view_state"))
                    .order_by("name"), "read view state").rows
    return orjson.dumps(rows).decode()


def view_tables(db: Database, views: set[str] | None = None) -> list[str]:
    """The materialized view tables, all or those of the chosen views."""
    return sorted(name for name in db.table_names()
                  if name.startswith(VIEW_TABLE) and (views is None or name[len(VIEW_TABLE):] in views))


def views_read(queries: list[dict]) -> set[str]:
    """The views the compiled queries read, union views resolved to their members."""
    unions = load_catalog().unions
    names = set()
    for q in queries:
        ctes = {cte.alias for cte in q["count"].find_all(exp.CTE)}
        names |= {t.name for t in q["count"].find_all(exp.Table)} - ctes
    return names | {member for union in names & set(unions) for member in unions[union]}


def chosen_views(db: Database, tables: list[str]) -> list[tuple[str, str]]:
    """(name, CREATE VIEW sql) of the SQL views over `tables` and of the union views over those,
    in creation order."""
    views = db.fetch(DUCKDB_VIEWS, "read views").rows
    exposed = {name[len(VIEW_TABLE):] for name in tables}
    unions = {u: m for u, m in load_catalog().unions.items() if set(m) <= exposed}
    return [v for v in views if v[0] in exposed] + [v for v in views if v[0] in unions]


def is_key_column(name: str) -> bool:
    """Columns that hold a resource id or key ('Type/id') and so differ per copy."""
    return name in ("id", "_key") or name.endswith("_key")


def replicated_column(name: str, copy: exp.Expression) -> exp.Expression:
    """Copy k of a key column: 'Type/id' -> 'Type/r<k>-id', 'id' -> 'r<k>-id'."""
    col = exp.column(name, quoted=True)
    tag = exp.DPipe(this=exp.DPipe(this=exp.Literal.string(REPLICA_PREFIX), expression=exp.cast(copy, "TEXT")),
                    expression=exp.Literal.string("-"))
    if name == "id":
        rewritten = exp.DPipe(this=tag, expression=col)
    else:  # sqlglot renders a replace-all ('g'); keys hold one '/' (ids cannot contain one)
        rewritten = exp.RegexpReplace(this=col, expression=exp.Literal.string("/"),
                                      replacement=exp.DPipe(this=exp.Literal.string("/"), expression=tag))
    return exp.If(this=copy.eq(0), true=col, false=rewritten).as_(name, quoted=True)


def prepare_replica(work: Path, base: Path, patients: int, factor: int, read: set[str]) -> Path:
    """A DuckDB file with the view tables the query mix reads, each replicated `factor` times."""
    path = work / f"views-{patients * factor}.duckdb"
    stamp = path.with_suffix(".from")
    source = connect(Engine.duckdb, base, read_only=True)
    try:
        tables = view_tables(source, read)
        fingerprint = view_fingerprint(source) + orjson.dumps(tables).decode()
        columns = {name: [c for c, in source.fetch(
            exp.select("column_name").from_(exp.to_table("information_schema.columns"))
            .where(exp.column("table_name").eq(exp.Literal.string(name))).order_by("ordinal_position"),
            "read columns").rows] for name in tables}
        views = chosen_views(source, tables)
    finally:
        source.close()
    if stamp.exists() and stamp.read_text() == fingerprint and path.exists():
        say(f"replica x{factor}: {path} (cached)")
        return path
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    db = connect(Engine.duckdb, path)
    try:
        # more room than the 1 GB default for the copy only (the timed runs keep the default)
        db.execute(exp.Set(expressions=[exp.SetItem(this=exp.EQ(
            this=exp.column("memory_limit"), expression=exp.Literal.string(REPLICA_MEMORY)))]), "memory for the copy")
        db.execute(exp.Attach(this=exp.alias_(exp.Literal.string(str(base)), "base"), exists=False,
                              expressions=[exp.AttachOption(this=exp.var("READ_ONLY"))]).sql("duckdb"), "attach base")
        copy = exp.column("copy", "c", quoted=True)
        for name in tables:
            selected = [replicated_column(c, copy) if is_key_column(c) else exp.column(c, "v", quoted=True)
                        for c in columns[name]]
            copies = exp.Table(this=exp.func("range", exp.Literal.number(factor)),
                               alias=exp.TableAlias(this=exp.to_identifier("c"),
                                                    columns=[exp.to_identifier("copy", quoted=True)]))
            query = (exp.select(*selected)
                     .from_(exp.Table(this=exp.to_identifier(name, quoted=True), db=exp.to_identifier("base"),
                                      alias=exp.TableAlias(this=exp.to_identifier("v"))))
                     .join(copies, join_type="cross"))
            # rendered for DuckDB directly: `range` is a DuckDB table function that engines.render refuses
            db.execute(f'CREATE TABLE "{name}" AS {query.sql("duckdb")}', f"replicate {name}")
        for name, sql in views:
            db.execute(sql, f"create view {name}")
        db.create_table_as("view_state", exp.select("*").from_(exp.Table(  # what the copies were made from
            this=exp.to_identifier("view_state", quoted=True), db=exp.to_identifier("base"))), "copy view state")
        db.execute(exp.Detach(this=exp.to_identifier("base")).sql("duckdb"), "detach base")
    finally:
        db.close()
    stamp.write_text(fingerprint)
    say(f"replica x{factor}: {len(tables)} view tables (those the queries read) copied {factor} times in "
        f"{time.perf_counter() - started:.1f} s -> {path}")
    return path


# ---------------------------------------------------------------- 4. PostgreSQL
PG_SETTINGS = {"shared_buffers": "1GB", "work_mem": "64MB", "effective_cache_size": "4GB", "fsync": "off",
               "synchronous_commit": "off", "max_parallel_workers_per_gather": "2"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_postgres(work: Path) -> tuple[str, list[str]]:
    """A local cluster under WORK/pg (created once), as tests/conftest.py starts one; returns
    its URL and the command that stops it."""
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bindir:
        raise SystemExit("PostgreSQL server binaries not installed (apt-get install postgresql); or give --pg-url")
    bindir = bindir[-1].parent
    data = work / "pg"
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        if as_postgres:
            shutil.chown(data, "postgres", "postgres")
        subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--locale=C.UTF-8"], check=True, capture_output=True)
    port = _free_port()
    options = " ".join([f"-c listen_addresses=127.0.0.1 -p {port} -k /tmp"]
                       + [f"-c {k}={v}" for k, v in PG_SETTINGS.items()])
    subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"),
                    "-w", "-t", "120", "-o", options, "start"], check=True, capture_output=True)
    stop = [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "stop", "-m", "fast"]
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", stop


def is_indexed_column(name: str) -> bool:
    """With --postgres-indexes: the code columns the cohort SQL filters on, and the patient key it joins on."""
    return name in ("code", "patient_key", "resource_key") or name.endswith("_code")


def prepare_postgres(admin_url: str, duckdb_path: Path, size: int, work: Path, read: set[str],
                     indexes: bool = False) -> str:
    """The view tables and views of one DuckDB database copied into PostgreSQL database dic_bench_<size>
    (CSV out of DuckDB, COPY into PostgreSQL, ANALYZE). No indexes (the materializer creates none),
    unless `indexes`: then a B-tree per `is_indexed_column`, in database dic_bench_<size>_indexed."""
    import psycopg

    name = f"dic_bench_{size}" + ("_indexed" if indexes else "")
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    source = connect(Engine.duckdb, duckdb_path, read_only=True)
    try:
        tables = view_tables(source, read)
        fingerprint = view_fingerprint(source) + orjson.dumps(tables).decode()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists:
            with psycopg.connect(url) as conn:
                stamp = conn.execute("SELECT to_regclass('bench_source') IS NOT NULL").fetchone()[0]
                if stamp and conn.execute("SELECT fingerprint FROM bench_source").fetchone()[0] == fingerprint:
                    say(f"postgres {size:,}: {name} (cached)")
                    return url
        started = time.perf_counter()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        csv = work / "copy.csv"
        rows = 0
        with psycopg.connect(url, autocommit=True) as conn:
            for view_table in tables:
                described = source.fetch(f'DESCRIBE "{view_table}"', "describe").rows
                columns = exp.Schema(this=exp.to_table(view_table, quoted=True), expressions=[
                    exp.ColumnDef(this=exp.to_identifier(c, quoted=True), kind=exp.DataType.build(t, dialect="duckdb"))
                    for c, t, *_ in described])
                conn.execute(exp.Create(this=columns, kind="TABLE").sql("postgres"))
                source.execute(exp.Copy(this=exp.to_table(view_table, quoted=True), kind=False, files=[
                    exp.Literal.string(str(csv))], params=[
                    exp.CopyParameter(this=exp.var("FORMAT"), expression=exp.var("CSV")),
                    exp.CopyParameter(this=exp.var("HEADER"), expression=exp.false()),
                    exp.CopyParameter(this=exp.var("NULLSTR"), expression=exp.Literal.string("\\N"))]),
                    f"export {view_table}")
                with conn.cursor() as cursor, cursor.copy(
                        f'COPY "{view_table}" FROM STDIN (FORMAT csv, NULL \'\\N\')') as copy, csv.open("rb") as f:
                    while chunk := f.read(1 << 20):
                        copy.write(chunk)
                rows += conn.execute(f'SELECT count(*) FROM "{view_table}"').fetchone()[0]
                for column_name in [c for c, *_ in described if indexes and is_indexed_column(c)]:
                    conn.execute(f'CREATE INDEX ON "{view_table}" ("{column_name}")')
                conn.execute(f'ANALYZE "{view_table}"')
            csv.unlink(missing_ok=True)
            for _, sql in chosen_views(source, tables):
                conn.execute(exp.maybe_parse(sql, dialect="duckdb").sql("postgres", identify=True))
            conn.execute("CREATE TABLE bench_source (fingerprint TEXT)")
            conn.execute("INSERT INTO bench_source VALUES (%s)", [fingerprint])
        say(f"postgres {size:,}: {rows:,} view rows copied in {time.perf_counter() - started:.1f} s -> {name}")
        return url
    finally:
        source.close()


# ---------------------------------------------------------------- timing
def nearest_rank(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * pct // 100) - 1)] if ordered else float("nan")


def query_shape(query) -> tuple[int, bool]:
    """Criteria in the query (inclusion and exclusion) and whether it has relative restrictions."""
    groups = [g for side in (query.inclusion, query.exclusion) for array in side for g in array]
    return (sum(len(clause) for g in groups for clause in g.criteria), any(g.relative for g in groups))


def compile_all(reference_date: date) -> list[dict]:
    from dic.cohort import compile_query, parse_ccdl

    compiled = []
    for path in sorted(QUERIES.glob("*.json")):
        started = time.perf_counter()
        query = parse_ccdl(path.read_bytes(), source=path.name)
        cohort = compile_query(query, reference_date)
        seconds = time.perf_counter() - started
        criteria, relative = query_shape(query)
        count = exp.select(exp.func("count", exp.Star()).as_("n")).from_(cohort.select.subquery("cohort"))
        compiled.append({"name": path.stem, "version": query.version, "criteria": criteria, "relative": relative,
                         "compile_s": seconds, "count": count})
    return compiled


def time_queries(db: Database, queries: list[dict], repeat: int, label: str) -> list[dict]:
    results = []
    for q in queries:
        sql = db.render(q["count"])
        db.fetch(sql, f"warm up {q['name']}")
        times, n = [], None
        for _ in range(repeat):
            started = time.perf_counter()
            n = db.fetch(sql, q["name"]).rows[0][0]
            times.append(time.perf_counter() - started)
        started = time.perf_counter()  # planning alone (parse, bind, optimize): EXPLAIN without ANALYZE
        db.fetch(f"EXPLAIN {sql}", f"plan {q['name']}")
        plan = time.perf_counter() - started
        median = statistics.median(times)
        results.append({**q, "patients": n, "median_s": median, "max_s": max(times), "plan_s": plan})
        say(f"{label} {q['name']:44s} v{q['version']} {q['criteria']:2d} crit {'rel' if q['relative'] else '   '} "
            f"{n:>9,} patients  median {median * 1000:7.0f} ms  max {max(times) * 1000:7.0f} ms  "
            f"(EXPLAIN alone {plan * 1000:6.0f} ms)")
    return results


def summarize(label: str, results: list[dict]) -> dict:
    medians = [r["median_s"] for r in results]
    slowest = max(results, key=lambda r: r["median_s"])
    summary = {"median": statistics.median(medians), "p95": nearest_rank(medians, 95), "max": max(medians),
               "slowest": slowest["name"]}
    plans = [r["plan_s"] for r in results]
    say(f"SUMMARY {label}: {len(results)} queries, median {summary['median'] * 1000:.0f} ms, "
        f"p95 {summary['p95'] * 1000:.0f} ms, max {summary['max'] * 1000:.0f} ms ({summary['slowest']}); "
        f"planning alone: median {statistics.median(plans) * 1000:.0f} ms, max {max(plans) * 1000:.0f} ms")
    return summary


def compare(per_query: dict[tuple[str, int], dict[str, dict]]) -> None:
    """Growth from the smallest to the largest size per engine, and the consistency checks: exact
    copies must multiply every cohort by the factor, and two engines must find the same patients."""
    for engine in sorted({e for e, _ in per_query}):
        sizes = sorted(s for e, s in per_query if e == engine)
        if len(sizes) < 2:
            continue
        low, high = per_query[(engine, sizes[0])], per_query[(engine, sizes[-1])]
        factor = sizes[-1] // sizes[0]
        ratios = [high[n]["median_s"] / low[n]["median_s"] for n in low]
        a, b = ([r["median_s"] for r in side.values()] for side in (low, high))
        say(f"RATIO {engine} {sizes[-1]:,}/{sizes[0]:,} (x{factor} patients): median "
            f"{statistics.median(b) / statistics.median(a):.2f}, p95 {nearest_rank(b, 95) / nearest_rank(a, 95):.2f}, "
            f"per query {min(ratios):.2f}-{max(ratios):.2f} (median {statistics.median(ratios):.2f})")
        off = [n for n in low if high[n]["patients"] != low[n]["patients"] * factor]
        say(f"CHECK {engine}: every cohort x{factor} at {sizes[-1]:,}: " + ("yes" if not off else f"NO: {', '.join(off)}"))
    for size in sorted({s for _, s in per_query}):
        counts = {e: {n: r["patients"] for n, r in found.items()} for (e, s), found in per_query.items() if s == size}
        if len(counts) > 1:
            first, *others = counts.values()
            off = sorted({n for other in others for n in first if other[n] != first[n]})
            say(f"CHECK {size:,}: {' and '.join(counts)} find the same cohort sizes: "
                + ("yes" if not off else f"NO: {', '.join(off)}"))


# ---------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=100_000, help="patients of the generated world")
    parser.add_argument("--sizes", default="", help="comma-separated patient counts, multiples of --patients "
                                                     "(default: --patients and 10x)")
    parser.add_argument("--engines", default="duckdb,postgres")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reference-date", type=date.fromisoformat, default=date(2026, 1, 1))
    parser.add_argument("--work", type=Path, default=Path("/tmp/dic-bench-cohort"), help="cache folder")
    parser.add_argument("--pg-url", default=None, help="a PostgreSQL maintenance database URL (default: a local "
                                                       "throwaway cluster under --work)")
    parser.add_argument("--postgres-sizes", default="", help="sizes to run on PostgreSQL (default: the smallest; "
                                                              "each is copied into its own database)")
    parser.add_argument("--postgres-indexes", action="store_true",
                        help="PostgreSQL with a B-tree on each code column and patient key (see is_indexed_column)")
    parser.add_argument("--prepare-only", action="store_true", help="build the cached databases, run no query")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 patients, sizes 2,000 and 20,000")
    args = parser.parse_args()
    if args.quick:
        args.patients = 2_000
    sizes = sorted(int(s) for s in args.sizes.split(",") if s) or [args.patients, args.patients * 10]
    if any(s % args.patients for s in sizes):
        raise SystemExit(f"--sizes must be multiples of --patients ({args.patients})")
    engines = [Engine(e) for e in args.engines.split(",") if e]
    pg_sizes = sorted(int(s) for s in args.postgres_sizes.split(",") if s) or sizes[:1]
    if not set(pg_sizes) <= set(sizes):
        raise SystemExit("--postgres-sizes must be among --sizes")
    args.work.mkdir(parents=True, exist_ok=True)
    say(f"cohort feasibility benchmark: world of {args.patients:,} patients (seed {args.seed}), sizes "
        f"{', '.join(f'{s:,}' for s in sizes)}, engines {', '.join(map(str, engines))}, {args.repeat} timed runs "
        f"after one warm-up, reference date {args.reference_date}, DuckDB memory_limit "
        f"{os.environ.get('DIC_DUCKDB_MEMORY_LIMIT', '1GB (default)')}")
    world = prepare_world(args.work, args.patients, args.seed)
    base = prepare_repository(args.work, world, args.patients)
    queries = compile_all(args.reference_date)
    say(f"compiled {len(queries)} queries: median {statistics.median(q['compile_s'] for q in queries) * 1000:.1f} ms "
        f"each (parse + compile)")
    read = views_read(queries)
    duckdb_paths = {s: base if s == args.patients else
                    prepare_replica(args.work, base, args.patients, s // args.patients, read) for s in sizes}
    if len(sizes) > 1:
        say(f"NOTE: sizes above {args.patients:,} are the {args.patients:,}-patient views replicated with rewritten "
            "keys, not generated worlds (see the module docstring)")
    stop_postgres = None
    urls: dict[int, str] = {}
    try:
        if Engine.postgres in engines:
            admin_url = args.pg_url
            if admin_url is None:
                admin_url, stop_postgres = start_postgres(args.work)
                say(f"postgres: local cluster under {args.work / 'pg'} ({', '.join(f'{k}={v}' for k, v in PG_SETTINGS.items())})")
            urls = {s: prepare_postgres(admin_url, duckdb_paths[s], s, args.work, read, args.postgres_indexes)
                    for s in pg_sizes}
        if args.prepare_only:
            return
        per_query: dict[tuple[str, int], dict[str, dict]] = {}
        for engine in engines:
            for size in pg_sizes if engine is Engine.postgres else sizes:
                db = connect(engine, duckdb_paths[size] if engine is Engine.duckdb else urls[size], read_only=True)
                try:
                    variant = f"{engine}{'+indexes' if engine is Engine.postgres and args.postgres_indexes else ''}"
                    label = f"{variant:8s} {size:>9,}"
                    results = time_queries(db, queries, args.repeat, label)
                finally:
                    db.close()
                per_query[(variant, size)] = {r["name"]: r for r in results}
                summarize(label.strip(), results)
        compare(per_query)
        say(f"peak RSS of this process: {peak_rss_mb():,.0f} MB (PostgreSQL's server processes not included)")
    finally:
        if stop_postgres:
            subprocess.run(stop_postgres, check=False, capture_output=True)


if __name__ == "__main__":
    main()
