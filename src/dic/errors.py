"""The whole exception tree of the DIC.

    DicError
    ├── InputError(DicError, ValueError)        unusable input: a path that does not exist, no permission
    ├── DefinitionError(DicError, ValueError)   an invalid declaration; carries every Problem at once
    │   └── NotCompilableError                  valid, but beyond the SQL compiler: fall back to the evaluator
    ├── EngineError(DicError, RuntimeError)     a database driver failed; carries engine, step and SQL
    ├── ConsentError(DicError)                  a use the patient did not consent to
    ├── DisclosureError(DicError)               an output that would disclose too much
    ├── SiteError(DicError)                     a remote site or service answered badly; carries site and status
    ├── AccessError(DicError)                   a call the trust center refuses
    │   ├── NotAuthenticated                    no or unknown credentials (HTTP 401)
    │   └── NotAuthorized                       known caller, role not allowed (HTTP 403)
    └── ConfigError(DicError, ValueError)       a missing or invalid setting

Rejected *records* are not exceptions: they are `Rejection`s that go to quarantine
(see `dic.repository`), so a batch carries on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a declaration: where (a JSON pointer or file:line) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class DicError(Exception):
    """Root of every error the DIC raises on purpose."""


class InputError(DicError, ValueError):
    """The input cannot be used at all (missing path, no permission, unknown format)."""


class DefinitionError(DicError, ValueError):
    """A declaration (view, check, cohort, mapping) is invalid; lists every problem."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{lines}")


class NotCompilableError(DefinitionError):
    """A valid view uses a construct the SQL compiler does not cover.

    Callers fall back to the reference evaluator and say so; it is not a user error.
    """


class EngineError(DicError, RuntimeError):
    """A database engine rejected a statement; names the engine, the step and the SQL."""

    def __init__(self, engine: str, step: str, sql: str, cause: BaseException):
        self.engine = engine
        self.step = step
        self.sql = sql
        super().__init__(f"{engine}: step '{step}' failed: {cause}\n--- SQL ---\n{sql}")


class ConsentError(DicError):
    """The patient's consent does not cover this use."""


class DisclosureError(DicError):
    """An output would disclose too much and was stopped."""


class SiteError(DicError):
    """A remote site or service failed; carries the site and the HTTP status."""

    def __init__(self, site: str, status: int | None, message: str):
        self.site = site
        self.status = status
        super().__init__(f"{site}: {message}" + (f" (HTTP {status})" if status else ""))


class ConfigError(DicError, ValueError):
    """A setting is missing or invalid."""


class AccessError(DicError):
    """The trust center refuses a call."""


class NotAuthenticated(AccessError):
    """No credentials, or credentials nobody issued (or revoked ones)."""


class NotAuthorized(AccessError):
    """The caller is known but its role may not do this."""
