"""Our sqlglot dialects: the stock ones plus the few quirks we fix, one entry each.

`render()` always goes through these, never through the stock dialects, so an engine quirk
is one TRANSFORMS entry here and nowhere else.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.dialects.postgres import Postgres
from sqlglot.dialects.spark import Spark

from dic.engines.engine import Engine


class DicDuckDB(DuckDB):
    class Generator(DuckDB.Generator):
        TRANSFORMS = {**DuckDB.Generator.TRANSFORMS}


class DicPostgres(Postgres):
    class Generator(Postgres.Generator):
        TRANSFORMS = {**Postgres.Generator.TRANSFORMS}
        # JSONB: indexed, de-duplicated keys, and the jsonb_* functions our views use.
        TYPE_MAPPING = {**Postgres.Generator.TYPE_MAPPING, exp.DataType.Type.JSON: "JSONB"}


class DicSpark(Spark):
    class Generator(Spark.Generator):
        TRANSFORMS = {**Spark.Generator.TRANSFORMS}
        # Spark keeps JSON as text and parses it with get_json_object/from_json.
        TYPE_MAPPING = {**Spark.Generator.TYPE_MAPPING, exp.DataType.Type.JSON: "STRING"}


DIALECTS = {Engine.duckdb: DicDuckDB, Engine.postgres: DicPostgres, Engine.spark: DicSpark}
