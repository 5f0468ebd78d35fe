"""The trust center: identifying data, record linkage, pseudonyms and consent, kept apart
from the research repository (so far: pseudonyms and the consent check)."""

from dic.trust.consent import may_use, purposes
from dic.trust.pseudonym import Pid, Pseudonym, derive_pseudonym, is_valid_pseudonym, normalize_pseudonym

__all__ = ["Pid", "Pseudonym", "derive_pseudonym", "is_valid_pseudonym", "may_use", "normalize_pseudonym",
           "purposes"]
