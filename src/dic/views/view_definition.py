"""The SQL-on-FHIR v2 ViewDefinition as a Pydantic model, plus `parse_view`.

Structure only; the semantic rules (names, FHIRPath syntax, unionAll shape, where
types) live in `validation.py` so every problem is reported at once with its JSON pointer.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr


class _Element(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Tag(_Element):
    name: StrictStr
    value: StrictStr


class Column(_Element):
    name: StrictStr
    path: StrictStr
    description: StrictStr | None = None
    collection: StrictBool | None = None
    type: StrictStr | None = None
    tag: list[Tag] = Field(default_factory=list)


class Select(_Element):
    column: list[Column] = Field(default_factory=list)
    select: list[Select] = Field(default_factory=list)
    forEach: StrictStr | None = None
    forEachOrNull: StrictStr | None = None
    repeat: list[StrictStr] | None = None
    unionAll: list[Select] = Field(default_factory=list)


class Where(_Element):
    path: StrictStr
    description: StrictStr | None = None


class Constant(_Element):
    """A named constant; its value is the single `value[x]` element given."""

    name: StrictStr

    @property
    def value_key(self) -> str | None:
        keys = [k for k in (self.model_extra or {}) if k.startswith("value")]
        return keys[0] if len(keys) == 1 else None

    @property
    def value(self) -> Any:
        key = self.value_key
        return None if key is None else (self.model_extra or {})[key]


class ViewDefinition(_Element):
    resourceType: StrictStr = "ViewDefinition"
    url: StrictStr | None = None
    name: StrictStr | None = None
    title: StrictStr | None = None
    status: StrictStr | None = None
    description: StrictStr | None = None
    resource: StrictStr
    fhirVersion: list[StrictStr] | None = None
    constant: list[Constant] = Field(default_factory=list)
    select: list[Select] = Field(default_factory=list)
    where: list[Where] = Field(default_factory=list)
