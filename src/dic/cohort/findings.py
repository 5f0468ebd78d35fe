"""What reading one CCDL document found: problems (with JSON pointers) and warnings, plus shape checks.

    Findings         .problem(path, message), .warn(path, message), and the checks
                     .keys(raw, path, allowed, required), .text(raw, key, path), .array(raw, path)

A check reports what is wrong and carries on, so a document's every problem is listed at once.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from dic.errors import Problem


@dataclass
class Findings:
    """What is wrong (problems) or worth knowing (warnings) in one document, each with its JSON pointer."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{path}: {message}")

    def keys(self, raw: Any, path: str, allowed: tuple[str, ...] | set[str], required: tuple[str, ...] = (),
             what: str = "an object") -> bool:
        """Is `raw` an object with only `allowed` keys and every `required` one? Reports what is not."""
        if not isinstance(raw, dict):
            self.problem(path, f"expected {what}, got {type(raw).__name__}")
            return False
        for key in raw:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), list(allowed), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (allowed: {', '.join(allowed)})"
                self.problem(f"{path}/{key}", f"unknown key {key!r}{hint}")
        for key in required:
            if key not in raw:
                self.problem(f"{path}/{key}", f"{key!r} is required")
        return True

    def text(self, raw: dict[str, Any], key: str, path: str, empty: bool = False) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or (not empty and not value.strip()):
            self.problem(f"{path}/{key}", f"{key!r} must be a{'' if empty else ' non-empty'} string")
            return None
        return value

    def array(self, raw: Any, path: str, required: bool = True) -> list[Any]:
        if not isinstance(raw, list) or (required and not raw):
            self.problem(path, "expected a non-empty array")
            return []
        return raw
