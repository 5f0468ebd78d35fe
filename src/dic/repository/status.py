"""What is in a repository: resources per type, recent batches, quarantine."""

from __future__ import annotations

from sqlglot import exp

from dic.engines import Database, column, table


def resource_counts(db: Database) -> dict[str, int]:
    query = (
        exp.select(column("resource_type"), exp.func("count", exp.Star()).as_("n"))
        .from_(table("resource"))
        .where(exp.not_(column("deleted")))
        .group_by(column("resource_type"))
        .order_by(column("resource_type"))
    )
    return {t: int(n) for t, n in db.fetch(query, "count resources").rows}


def recent_batches(db: Database, limit: int = 10) -> list[dict]:
    query = exp.select("*").from_(table("load_batch")).order_by(exp.Ordered(this=column("batch_id"), desc=True))
    return db.fetch(query.limit(limit), "recent batches").dicts()


def quarantine_size(db: Database) -> int:
    return int(db.scalar(exp.select(exp.func("count", exp.Star())).from_(table("quarantine")), "quarantine size"))


def quarantine_list(db: Database, limit: int = 50, source: str | None = None) -> list[dict]:
    query = exp.select(
        column("quarantine_id"), column("batch_id"), column("source"), column("position"), column("reason"),
        column("raw_bytes"),
    ).from_(table("quarantine"))
    if source:
        query = query.where(column("source").eq(exp.Literal.string(source)))
    query = query.order_by(column("batch_id"), column("source"), column("position")).limit(limit)
    return db.fetch(query, "list quarantine").dicts()


def quarantine_record(db: Database, quarantine_id: str) -> dict | None:
    query = exp.select("*").from_(table("quarantine")).where(
        column("quarantine_id").eq(exp.Literal.string(quarantine_id))
    )
    rows = db.fetch(query, "show quarantined record").dicts()
    return rows[0] if rows else None
