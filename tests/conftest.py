"""Fixtures shared by the whole suite: the shared conformance data, real engines.

PostgreSQL is a real server: the session starts a throwaway cluster on 127.0.0.1 (or uses
DIC_TEST_POSTGRES_URL) and gives each test a fresh database. Spark is one local session
per test run. Under CI=true a missing server, Java or data suite fails; elsewhere it skips.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dic.engines import Database, Engine, connect

if TYPE_CHECKING:
    from dic.trust.database import TrustDatabase

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip locally, fail under CI: in CI a missing dependency is a broken set-up."""
    if IN_CI:
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = (ROOT / ".." / "shared" / "data").resolve()
    if not path.is_dir():
        unavailable(f"shared conformance data not found at {path}")
    return path


# ---------------------------------------------------------------- PostgreSQL
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a running PostgreSQL server's maintenance database."""
    if url := os.environ.get("DIC_TEST_POSTGRES_URL"):
        yield url
        return
    bindir = _postgres_bin()
    if bindir is None:
        unavailable("PostgreSQL server binaries not installed (apt-get install postgresql)")
    data_dir = Path(tempfile.mkdtemp(prefix="dic-pg-"))
    port = _free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(data_dir, "postgres", "postgres")
    subprocess.run(
        [*as_postgres, str(bindir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust",
         "-E", "UTF8", "--locale=C.UTF-8"],
        check=True, capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k /tmp -c fsync=off -c synchronous_commit=off"
    subprocess.run(
        [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data_dir), "-l", str(data_dir / "server.log"),
         "-w", "-t", "60", "-o", options, "start"],
        check=True, capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(data_dir), "stop", "-m", "fast"],
                       capture_output=True)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def postgres_database_url(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- Spark
@pytest.fixture(scope="session")
def spark_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("java") is None:
        unavailable("Java is not installed (Spark needs OpenJDK 17)")
    try:
        import pyspark  # noqa: F401
    except ImportError:
        unavailable("PySpark is not installed")
    return tmp_path_factory.mktemp("spark-warehouse")


# ---------------------------------------------------------------- one fixture, every engine
@pytest.fixture
def make_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[Engine], Database]]:
    """Factory: a fresh, empty repository database on the given engine."""
    opened: list[Database] = []

    def make(engine: Engine | str) -> Database:
        engine = Engine(engine)
        if engine is Engine.duckdb:
            db = connect(engine, tmp_path / f"{uuid.uuid4().hex[:8]}.duckdb")
        elif engine is Engine.postgres:
            db = connect(engine, request.getfixturevalue("postgres_database_url"))
        else:
            warehouse = request.getfixturevalue("spark_warehouse")
            db = connect(engine, f"local[2]?warehouse={warehouse}&database=t_{uuid.uuid4().hex[:10]}")
        opened.append(db)
        return db

    yield make
    for db in opened:
        db.close()


@pytest.fixture(params=[Engine.duckdb, Engine.postgres], ids=str)
def db(request: pytest.FixtureRequest, make_database: Callable[[Engine], Database]) -> Database:
    """A fresh repository database on DuckDB and on PostgreSQL (the full-suite engines)."""
    return make_database(request.param)


@pytest.fixture
def spark_db(make_database: Callable[[Engine], Database]) -> Database:
    """A fresh repository database on local Spark (the smaller Spark tests)."""
    return make_database(Engine.spark)


# ---------------------------------------------------------------- the CLI, in process
@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def dic(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run `dic ARGS` in this process exactly as the console script does (same entry point,
    same exit codes); `cwd` sets the working folder, `check` fails the test on a non-zero exit."""
    from dic.cli import main

    def run(*args: str, cwd: Path | None = None, check: bool = True) -> CliResult:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["dic", *args])
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        if check and code != 0:
            raise AssertionError(f"dic {' '.join(args)} exited {code}\n{out}\n{err}")
        return CliResult(code, out, err)

    return run


# ---------------------------------------------------------------- trust center: SQLite and PostgreSQL
@pytest.fixture(params=["sqlite", "postgres"])
def trust_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres_database_url")
    return str(tmp_path / "trust.sqlite")


@pytest.fixture
def trust_db(trust_db_url: str) -> Iterator[TrustDatabase]:
    from dic.trust.database import TrustDatabase

    db = TrustDatabase(trust_db_url)
    yield db
    db.close()
