"""Disclosure control: what a count or breakdown may show outside the site, and the query log.

    load_rules(site_file=None), site_rules(folder)       the rules (disclosure.yaml), validated
    site_secret(folder)                                  the HMAC key that seeds the noise
    fingerprint(members)                                 what a count is of: its member set
    release_count(raw, fingerprint, rules, secret)       "< 5" or a perturbed number
    release_breakdown(cells, fingerprint, rules, secret) cells perturbed, small ones suppressed
    age_band(age_years, rules), age_band_labels(rules)   the breakdowns' age bands
    record / entries / verify (dic.privacy.query_log)    the hash-chained log of raw and released counts
    Client, authenticate, require, issue_key, …          API keys and roles (access.py, loaded on first use)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from dic.privacy import query_log  # the module too: query_log.record(...) reads well
from dic.privacy.disclosure import (
    SUPPRESSED,
    ReleasedCell,
    ReleasedCount,
    fingerprint,
    release_breakdown,
    release_count,
)
from dic.privacy.query_log import (
    QueryLogEntry,
    Verification,
    ensure_query_log,
)
from dic.privacy.query_log import entries as query_log_entries
from dic.privacy.query_log import record as record_query
from dic.privacy.query_log import verify as verify_query_log
from dic.privacy.rules import (
    BreakdownRules,
    DisclosureRules,
    NoiseRules,
    age_band,
    age_band_labels,
    load_rules,
    site_rules,
)
from dic.privacy.secret import site_secret

# access.py belongs to the research API's keys; loaded on first use so the disclosure names stay cheap
_LAZY = {name: "dic.privacy.access" for name in
         ("Client", "authenticate", "issue_key", "list_keys", "permissions", "require", "revoke_key")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dic.privacy' has no attribute {name!r}")


__all__ = [  # noqa: PLE0604
    "SUPPRESSED",
    "BreakdownRules",
    "DisclosureRules",
    "NoiseRules",
    "QueryLogEntry",
    "ReleasedCell",
    "ReleasedCount",
    "Verification",
    "age_band",
    "age_band_labels",
    "ensure_query_log",
    "fingerprint",
    "load_rules",
    "query_log",
    "query_log_entries",
    "record_query",
    "release_breakdown",
    "release_count",
    "site_rules",
    "site_secret",
    "verify_query_log",
    *_LAZY,
]
