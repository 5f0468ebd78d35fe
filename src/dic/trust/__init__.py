"""The trust center: identifying data, record linkage, pseudonyms and consent, kept apart
from the research repository.

    TrustCenter.open(folder)        the service's one code path (audited, authorized)
    LocalTrust / HttpTrust          in-process and HTTP clients (both `PatientRegistry`)
    create_app(center)              the FastAPI app of `dic trust serve`
    read_pseudonymized(...)         FHIR loads through the trust center
    export_encodings, link_exports, resolve_links   cross-site linkage on Bloom-filter encodings

The heavy parts (linkage engine, FastAPI) load on first use, so `import dic.trust` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from dic.trust.consent import may_use, purposes, withdrawal_date
from dic.trust.identity import Idat, normalize
from dic.trust.pseudonym import Pid, Pseudonym, derive_pseudonym, is_valid_pseudonym, normalize_pseudonym
from dic.trust.registry import PatientRegistry, Registration

_LAZY = {
    "Caller": "dic.trust.access",
    "TrustCenter": "dic.trust.center",
    "InvalidIdat": "dic.trust.center",
    "Change": "dic.trust.center",
    "LocalTrust": "dic.trust.client",
    "HttpTrust": "dic.trust.client",
    "connect": "dic.trust.client",
    "create_app": "dic.trust.service",
    "read_pseudonymized": "dic.trust.fhir_pseudonymizer",
    "pseudonymize": "dic.trust.fhir_pseudonymizer",
    "patients_first": "dic.trust.fhir_pseudonymizer",
    "create_linkage_secret": "dic.trust.cross_site",
    "export_encodings": "dic.trust.cross_site",
    "link_exports": "dic.trust.cross_site",
    "resolve_links": "dic.trust.cross_site",
    "link_batch": "dic.trust.linkage",
    "pairwise_quality": "dic.trust.linkage",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dic.trust' has no attribute {name!r}")


__all__ = ["Idat", "PatientRegistry", "Pid", "Pseudonym", "Registration", "derive_pseudonym",  # noqa: PLE0604
           "is_valid_pseudonym", "may_use", "normalize", "normalize_pseudonym", "purposes", "withdrawal_date",
           *_LAZY]
