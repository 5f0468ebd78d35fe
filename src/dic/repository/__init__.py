"""The repository: raw FHIR resources with provenance and history, quarantine, load batches."""

from dic.repository.load import BatchReport, drop_schema, ensure_schema, load_paths, load_records
from dic.repository.patients import merge_patient, merge_patients, resources_about
from dic.repository.reattribute import SOURCE_RECORD_TAG, Move, reattribute, record_tags
from dic.repository.specimens import attach_specimen_subjects
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
    resource_key,
    user_views_folder,
)

__all__ = [
    "SOURCE_RECORD_TAG",
    "BatchReport",
    "Move",
    "RepositoryConfig",
    "attach_specimen_subjects",
    "drop_schema",
    "ensure_schema",
    "init_repository",
    "load_paths",
    "load_records",
    "merge_patient",
    "merge_patients",
    "open_repository",
    "quarantine_list",
    "quarantine_record",
    "quarantine_size",
    "read_config",
    "reattribute",
    "recent_batches",
    "record_tags",
    "resource_counts",
    "resource_key",
    "resources_about",
    "user_views_folder",
]
