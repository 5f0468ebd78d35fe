"""Loading the linkage declarations (comparisons, blocking rules, training, default model): YAML
validated by a Pydantic model, every problem reported at once with its JSON pointer."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from dic.errors import DefinitionError, Problem

T = TypeVar("T")


def load_declarations(path: Path, schema: type[T] | object) -> T:
    """`path` parsed into `schema` (a model or a type such as list[Model]); raises DefinitionError
    naming every problem, including those of the model's own `problems()` cross-checks."""
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
        declared = TypeAdapter(schema).validate_python(raw)
    except ValidationError as error:
        problems = [Problem("/" + "/".join(str(p) for p in e["loc"]), e["msg"]) for e in error.errors()]
        raise DefinitionError(str(path), problems) from error
    items = declared if isinstance(declared, list) else [declared]
    problems = [Problem(f"/{n}{p.path}" if isinstance(declared, list) else p.path, p.message)
                for n, item in enumerate(items) if isinstance(item, BaseModel)
                for p in getattr(item, "problems", list)()]
    if problems:
        raise DefinitionError(str(path), problems)
    return declared
