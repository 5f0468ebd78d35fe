"""The disclosure rules: a Pydantic model over `disclosure.yaml`, a site's overrides, age bands.

    load_rules(site_file=None) -> DisclosureRules   the shipped defaults, overridden key by key
    site_rules(folder) -> DisclosureRules           defaults + `folder/disclosure.yaml` if present
    age_band(age_years, rules) -> str               "0-17", "18-29", …, "80+"
    age_band_labels(rules) -> list[str]             every band, youngest first (zero cells too)

Every problem of a rules file is reported at once, each naming the file and the key's JSON
pointer (`/noise/max`).
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dic.errors import ConfigError, DefinitionError, Problem

DEFAULT_RULES_PATH = Path(__file__).with_name("disclosure.yaml")
SITE_RULES_NAME = "disclosure.yaml"


class _Strict(BaseModel):
    # strict: a quoted "5" or `true` is a typo in a rules file, not a number
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoiseRules(_Strict):
    max: int = Field(ge=0, le=100)
    round_to: int = Field(default=1, ge=1, le=1000)


class BreakdownRules(_Strict):
    min_cell: int = Field(ge=1)
    age_bands: list[int] = Field(min_length=1)
    complementary_suppression: bool = True


class DisclosureRules(_Strict):
    threshold: int = Field(ge=1)
    noise: NoiseRules
    breakdowns: BreakdownRules

    def problems(self) -> list[Problem]:
        """What the schema alone cannot say: how the values must relate."""
        found = []
        bands = self.breakdowns.age_bands
        if bands[0] != 0:
            found.append(Problem("/breakdowns/age_bands/0", "the first band must start at 0 so every age has a band"))
        found += [Problem(f"/breakdowns/age_bands/{n}", f"{bands[n]} does not follow {bands[n - 1]}: "
                          "bands must strictly increase") for n in range(1, len(bands)) if bands[n] <= bands[n - 1]]
        if self.breakdowns.min_cell < self.threshold:
            found.append(Problem("/breakdowns/min_cell", f"must be at least threshold ({self.threshold}): a "
                                 "breakdown's only cell would otherwise release what a count hides"))
        return found


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` over `base`, mapping by mapping; lists and scalars are replaced whole."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) \
            else value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: no disclosure rules file here") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise DefinitionError(str(path), [Problem(where, f"not valid YAML: {error}")]) from error
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DefinitionError(str(path), [Problem("", "expected a mapping of rules (threshold, noise, breakdowns)")])
    return raw


def _validate(raw: dict[str, Any], source: Path) -> DisclosureRules:
    try:
        rules = DisclosureRules.model_validate(raw)
    except ValidationError as error:
        problems = [Problem("/" + "/".join(str(p) for p in e["loc"]), e["msg"]) for e in error.errors()]
        raise DefinitionError(str(source), problems) from error
    if problems := rules.problems():
        raise DefinitionError(str(source), problems)
    return rules


@cache
def _default_raw() -> dict[str, Any]:
    return _read_yaml(DEFAULT_RULES_PATH)


def load_rules(site_file: Path | None = None) -> DisclosureRules:
    """The shipped rules, with `site_file`'s keys (if given) in place of the defaults.

    Problems name `site_file` when there is one: the defaults are tested to be valid."""
    if site_file is None:
        return _validate(_default_raw(), DEFAULT_RULES_PATH)
    return _validate(_merge(_default_raw(), _read_yaml(site_file)), site_file)


def site_rules(folder: Path) -> DisclosureRules:
    """The rules in force for the site whose files are in `folder`."""
    path = folder / SITE_RULES_NAME
    return load_rules(path if path.exists() else None)


def age_band_labels(rules: DisclosureRules) -> list[str]:
    bands = rules.breakdowns.age_bands
    return [f"{low}-{high - 1}" for low, high in itertools.pairwise(bands)] + [f"{bands[-1]}+"]


def age_band(age_years: int, rules: DisclosureRules) -> str:
    """The label of the band holding `age_years` (whole years, not negative)."""
    if age_years < 0:
        raise ValueError(f"an age cannot be negative (got {age_years})")
    bands = rules.breakdowns.age_bands
    return age_band_labels(rules)[bisect_right(bands, age_years) - 1]
