"""The Fellegi-Sunter parameters: per comparison level the m probability (the level's share among
true matches) and the u probability (its share among non-matches), and the prior (lambda, the
probability that two records drawn at random are the same person).

A pair's match weight is log2(lambda / (1 - lambda)) plus, per comparison, log2(m / u) of the level
it falls into; the null level (a value missing) weighs nothing. Its match probability is
1 / (1 + 2**-weight). `DEFAULT_MODEL` (default_model.yaml) is good enough before any training.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from dic.errors import ConfigError
from dic.trust.linkage.comparisons import Comparison, load_comparisons, unpack_patterns
from dic.trust.linkage.declarations import load_declarations

DEFAULT_MODEL_PATH = Path(__file__).with_name("default_model.yaml")


class LevelParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    m: float = Field(gt=0, le=1)
    u: float = Field(gt=0, le=1)


class ComparisonParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    levels: list[LevelParameters]  # in level order, without the null level


class LinkageModel(BaseModel):
    """m and u per comparison level, and the prior; frozen, JSON round-trips exactly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prior: float = Field(gt=0, lt=1, description="lambda: probability that two random records match")
    comparisons: list[ComparisonParameters]

    def to_json(self) -> str:
        return self.model_dump_json(indent=1)

    @classmethod
    def from_json(cls, text: str) -> LinkageModel:
        return cls.model_validate(json.loads(text))

    @classmethod
    def from_arrays(cls, prior: float, m: list[np.ndarray], u: list[np.ndarray],
                    comparisons: tuple[Comparison, ...] | None = None) -> LinkageModel:
        """From per-comparison arrays indexed by level (index 0, the null level, is ignored)."""
        comparisons = comparisons or load_comparisons()
        return cls(prior=float(prior), comparisons=[
            ComparisonParameters(name=c.name, levels=[
                LevelParameters(label=label, m=float(m_c[k]), u=float(u_c[k]))
                for k, label in enumerate(c.labels) if k > 0])
            for c, m_c, u_c in zip(comparisons, m, u, strict=True)])

    def arrays(self, which: str) -> list[np.ndarray]:
        """m or u per comparison as arrays indexed by level, 1.0 at the null level."""
        return [np.array([1.0, *(getattr(level, which) for level in c.levels)]) for c in self.comparisons]

    @cached_property
    def _weights(self) -> list[np.ndarray]:
        self.check(load_comparisons())
        return [np.log2(m) - np.log2(u) for m, u in zip(self.arrays("m"), self.arrays("u"), strict=True)]

    def check(self, comparisons: tuple[Comparison, ...]) -> None:
        """Refuse a model trained for other comparisons (renamed, re-levelled) than declared now."""
        ours = [(c.name, [level.label for level in c.levels]) for c in self.comparisons]
        declared = [(c.name, c.labels[1:]) for c in comparisons]
        if ours != declared:
            raise ConfigError("linkage model does not fit comparisons.yaml (comparisons or levels differ): "
                              "retrain it, or use DEFAULT_MODEL")

    def match_weights(self, patterns: np.ndarray) -> np.ndarray:
        """log2 Bayes factor of each packed pattern, prior included."""
        levels = unpack_patterns(np.asarray(patterns), len(self.comparisons))
        weight = np.full(len(levels), np.log2(self.prior) - np.log2(1 - self.prior))
        for c, w in enumerate(self._weights):
            weight += w[levels[:, c]]
        return weight

    def match_probabilities(self, patterns: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp2(-self.match_weights(patterns)))


def load_default_model(path: Path = DEFAULT_MODEL_PATH) -> LinkageModel:
    return load_declarations(path, LinkageModel)


DEFAULT_MODEL = load_default_model()
