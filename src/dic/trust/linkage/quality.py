"""Linkage quality against a known truth: pairwise precision, recall and F1 (for the demo and
the benchmarks; nothing in the product has a truth to compare with)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping


def pairwise_quality(found: Mapping[Hashable, Hashable], truth: Mapping[Hashable, Hashable],
                     ) -> tuple[float, float, float]:
    """(precision, recall, F1) over record pairs: a pair is found when both records got the same
    person, true when the truth says so. Records missing from `truth` are left out."""
    keys = [k for k in found if k in truth]

    def pairs(groups: Counter) -> int:
        return sum(n * (n - 1) // 2 for n in groups.values())

    predicted, true = pairs(Counter(found[k] for k in keys)), pairs(Counter(truth[k] for k in keys))
    both = pairs(Counter((found[k], truth[k]) for k in keys))
    precision, recall = both / max(predicted, 1), both / max(true, 1)
    return precision, recall, 2 * precision * recall / (precision + recall) if precision + recall else 0.0
