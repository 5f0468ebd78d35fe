"""The three SQL engines, named as sqlglot names their dialects."""

from __future__ import annotations

from enum import Enum


class Engine(str, Enum):
    duckdb = "duckdb"
    postgres = "postgres"
    spark = "spark"

    def __str__(self) -> str:
        return self.value
