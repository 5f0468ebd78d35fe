"""Record linkage for the patient list: Fellegi-Sunter with EM-trained m/u, blocking, batch runs.

    blocking_keys(record)                      the keys the trust center indexes a record under
    score_candidates(model, record, candidates) / score_pairs(model, left, right)
    train(records) -> LinkageModel              u from random pairs, m and prior by EM
    link_batch(records) -> BatchLinkage         clusters (persons) and scored pairs of a first load

Records are `dic.trust.identity.normalize(idat)` dicts (or an arrow table of them with
`record_id`). Comparisons, blocking rules, training sessions and the default model are declared
in the YAML files beside the modules.
"""

from __future__ import annotations

import pyarrow as pa

from dic.trust.linkage.batch import BatchLinkage, link_batch
from dic.trust.linkage.blocking import blocking_keys
from dic.trust.linkage.model import DEFAULT_MODEL, LinkageModel
from dic.trust.linkage.quality import pairwise_quality
from dic.trust.linkage.scoring import score_candidates, score_pairs
from dic.trust.linkage.training import fit_model
from dic.trust.linkage.workspace import Workspace


def train(records: pa.Table, *, start: LinkageModel = DEFAULT_MODEL, seed: int = 0,
          link_only: bool = False) -> LinkageModel:
    """A model trained on `records` (record_id and the normalized fields; `dataset` if link_only)."""
    workspace = Workspace(records, link_only=link_only)
    try:
        return fit_model(workspace, start, seed)
    finally:
        workspace.close()


__all__ = ["DEFAULT_MODEL", "BatchLinkage", "LinkageModel", "blocking_keys", "link_batch", "pairwise_quality", "score_candidates",
           "score_pairs", "train"]
