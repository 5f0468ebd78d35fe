"""Take identifying data (IDAT) out of a resource before it reaches the research repository.

The elements are declared in `identifying_elements.yaml`. `remove_identifying` returns the
resource itself when it holds none of them (the common case: no copy, no re-serialization)
and otherwise a shallow copy without them. The trust center (its own layer) is where the
removed data belongs; this is the guard that keeps the repository clean whatever a source sends.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

RULES_PATH = Path(__file__).with_name("identifying_elements.yaml")


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AddressRule(_Rule):
    keep: list[str]
    postal_code_digits: int


class TypeRule(_Rule):
    remove: list[str] = []
    address: AddressRule | None = None


class IdentifyingElements(_Rule):
    every_resource: TypeRule
    types: dict[str, TypeRule]


@cache
def _rules() -> tuple[frozenset[str], dict[str, tuple[frozenset[str], AddressRule | None]]]:
    rules = IdentifyingElements.model_validate(yaml.safe_load(RULES_PATH.read_text(encoding="utf-8")))
    common = frozenset(rules.every_resource.remove)
    return common, {t: (common | frozenset(r.remove), r.address) for t, r in rules.types.items()}


def remove_identifying(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without identifying elements (the same object if it has none)."""
    common, by_type = _rules()
    remove, address_rule = by_type.get(resource.get("resourceType"), (common, None))
    found = [key for key in resource if key in remove]
    coarsen = address_rule is not None and "address" in resource
    if not found and not coarsen:
        return resource
    cleaned = {k: v for k, v in resource.items() if k not in remove}
    if coarsen:
        addresses = [_coarse(a, address_rule) for a in resource["address"] if isinstance(a, dict)]
        cleaned["address"] = [a for a in addresses if a]
        if not cleaned["address"]:
            del cleaned["address"]
    return cleaned


def _coarse(address: dict[str, Any], rule: AddressRule) -> dict[str, Any]:
    kept = {k: v for k, v in address.items() if k in rule.keep}
    code = kept.get("postalCode")
    if isinstance(code, str):
        if rule.postal_code_digits:
            kept["postalCode"] = code.strip()[: rule.postal_code_digits]
        else:
            del kept["postalCode"]
    return kept if set(kept) - {"type"} else {}
