"""The views a repository materializes: the standard ones shipped here plus a site's own.

Every file is validated before anything runs, and all problems of all files are reported
at once. `standard/unions.json` declares views that are the union of several views of the
same columns (the `coding` view spans every resource type, which one ViewDefinition cannot).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import orjson

from dic.errors import DefinitionError, Problem
from dic.views.validation import validate_view
from dic.views.view_definition import ViewDefinition

RESERVED_NAMES = frozenset({"resource", "resource_history", "load_batch", "quarantine", "view_state", "query_log"})


@dataclass
class ViewCatalog:
    views: dict[str, ViewDefinition] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # view name → file it came from
    unions: dict[str, list[str]] = field(default_factory=dict)

    def names(self) -> list[str]:
        return sorted([*self.views, *self.unions])


def standard_folder() -> Path:
    return Path(str(files("dic.views") / "standard"))


def load_catalog(user_folder: Path | None = None) -> ViewCatalog:
    """Standard views, then the user's views (`*.json` in `user_folder`); raises once with every problem."""
    catalog = ViewCatalog()
    problems: list[Problem] = []
    folders = [standard_folder()] + ([user_folder] if user_folder and user_folder.is_dir() else [])
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            if path.name == "unions.json":
                continue
            _add_view(catalog, path, problems)
    unions_file = standard_folder() / "unions.json"
    catalog.unions = orjson.loads(unions_file.read_bytes())
    for union, members in catalog.unions.items():
        missing = [m for m in members if m not in catalog.views]
        if missing:
            problems.append(Problem(f"{unions_file}: /{union}", f"unknown views {missing}"))
    if problems:
        raise DefinitionError("views", problems)
    return catalog


def _add_view(catalog: ViewCatalog, path: Path, problems: list[Problem]) -> None:
    try:
        raw = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as error:
        problems.append(Problem(str(path), f"invalid JSON: {error}"))
        return
    try:
        view = validate_view(raw, str(path))
    except DefinitionError as error:
        problems.extend(Problem(f"{path}: {p.path}" if p.path else str(path), p.message) for p in error.problems)
        return
    name = view.name or path.stem
    if name in RESERVED_NAMES:
        problems.append(Problem(f"{path}: /name", f"'{name}' is a repository table; choose another name"))
    elif name in catalog.views:
        problems.append(Problem(f"{path}: /name", f"view '{name}' is already defined in {catalog.origins[name]}"))
    else:
        catalog.views[name] = view
        catalog.origins[name] = str(path)
