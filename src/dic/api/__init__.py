"""The DIC's research API over HTTP (`dic api serve`): cohort counts, table 1 and member lists."""

from dic.api.app import create_app, from_environment

__all__ = ["create_app", "from_environment"]
