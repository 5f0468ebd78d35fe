"""Loading the test world's declarations: YAML validated by a Pydantic model, every problem
reported at once with its JSON pointer (DefinitionError), plus the model's own cross-checks."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from dic.errors import DefinitionError, Problem

Model = TypeVar("Model", bound=BaseModel)


def load_declarations(path: Path, model: type[Model]) -> Model:
    """`path` parsed into `model`; raises DefinitionError naming every problem."""
    try:
        declared = model.model_validate(yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader))
    except ValidationError as error:
        problems = [Problem("/" + "/".join(str(p) for p in e["loc"]), e["msg"]) for e in error.errors()]
        raise DefinitionError(str(path), problems) from error
    if problems := getattr(declared, "problems", list)():
        raise DefinitionError(str(path), problems)
    return declared
