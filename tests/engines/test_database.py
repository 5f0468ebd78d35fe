from __future__ import annotations

import pytest
from sqlglot import exp

from dic.engines import ColumnDef, Database, Engine, column, render, table
from dic.errors import DefinitionError, EngineError

COLUMNS = [ColumnDef("k", "TEXT"), ColumnDef("n", "BIGINT"), ColumnDef("doc", "JSON")]


def _roundtrip(db: Database) -> None:
    db.create_table("t", COLUMNS)
    db.insert_rows("t", ["k", "n", "doc"], [("a", 1, '{"x": 1}'), ("b", 2, '{"x": 2}')])
    db.create_table("s", COLUMNS)
    db.insert_rows("s", ["k", "n", "doc"], [("b", 20, '{"x": 20}'), ("c", 3, '{"x": 3}')])
    db.replace_rows("t", ["k"], "s", ["k", "n", "doc"], "replace")
    rows = db.fetch(exp.select(column("k"), column("n")).from_(table("t")).order_by(column("k")), "read").rows
    assert rows == [("a", 1), ("b", 20), ("c", 3)]


def test_roundtrip_and_replace_rows(db: Database) -> None:
    _roundtrip(db)


@pytest.mark.spark
def test_roundtrip_and_replace_rows_on_spark(spark_db: Database) -> None:
    _roundtrip(spark_db)


def test_transaction_rolls_back(db: Database) -> None:
    db.create_table("t", COLUMNS)
    with pytest.raises(RuntimeError), db.transaction():
        db.insert_rows("t", ["k", "n", "doc"], [("a", 1, "{}")])
        raise RuntimeError("killed mid-batch")
    assert db.scalar(exp.select(exp.func("count", exp.Star())).from_(table("t")), "count") == 0


def test_driver_error_names_engine_step_and_sql(db: Database) -> None:
    with pytest.raises(EngineError) as caught:
        db.fetch(exp.select("*").from_(table("missing_table")), "read missing")
    assert caught.value.engine == str(db.engine)
    assert caught.value.step == "read missing"
    assert '"missing_table"' in caught.value.sql


def test_render_rejects_unknown_functions() -> None:
    with pytest.raises(DefinitionError, match="list_sum"):
        render(exp.select(exp.Anonymous(this="list_sum", expressions=[exp.column("x")])), Engine.spark)


def test_json_type_per_engine() -> None:
    create = exp.Create(this=exp.Schema(this=table("t"), expressions=[
        exp.ColumnDef(this=exp.to_identifier("d"), kind=exp.DataType.build("JSON"))]), kind="TABLE")
    assert "JSONB" in render(create, Engine.postgres)
    assert "STRING" in render(create, Engine.spark)
    assert "JSON" in render(create, Engine.duckdb)
