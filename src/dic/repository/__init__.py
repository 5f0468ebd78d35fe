"""The repository: raw FHIR resources with provenance and history, quarantine, load batches."""

from dic.repository.load import BatchReport, drop_schema, ensure_schema, load_paths, load_records
from dic.repository.status import (
    quarantine_list,
    quarantine_record,
    quarantine_size,
    recent_batches,
    resource_counts,
)
from dic.repository.store import (
    RepositoryConfig,
    init_repository,
    open_repository,
    read_config,
    user_views_folder,
)

__all__ = [
    "BatchReport",
    "RepositoryConfig",
    "drop_schema",
    "ensure_schema",
    "init_repository",
    "load_paths",
    "load_records",
    "open_repository",
    "quarantine_list",
    "quarantine_record",
    "quarantine_size",
    "read_config",
    "recent_batches",
    "resource_counts",
    "user_views_folder",
]
