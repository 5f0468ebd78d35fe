"""Data shared by the linkage tests: FEBRL4 and a small dic synth world, each loaded once."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from linkage_data import febrl4, synth_world

from dic.synth import write_world


@pytest.fixture(scope="session")
def febrl() -> tuple[pa.Table, set[tuple[str, str]]]:
    return febrl4()


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, dict[str, str]]:
    """Identity records of a 2-site world of 1,500 patient records (HIS, lab, registry, biobank)."""
    folder: Path = tmp_path_factory.mktemp("linkage-world")
    write_world(folder, sites=2, patients=1500, seed=11, formats=["his-fhir", "lab", "ms-registry", "biobank"])
    return synth_world(folder)
