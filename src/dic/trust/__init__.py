"""The trust center: identifying data, record linkage, pseudonyms and consent, kept apart
from the research repository (only its pseudonym functions exist so far)."""

from dic.trust.pseudonym import Pid, Pseudonym, derive_pseudonym, is_valid_pseudonym, normalize_pseudonym

__all__ = ["Pid", "Pseudonym", "derive_pseudonym", "is_valid_pseudonym", "normalize_pseudonym"]
