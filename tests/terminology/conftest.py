"""A small synthetic world for the terminology tests, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dic.synth import write_world

    folder = tmp_path_factory.mktemp("terminology-world")
    write_world(folder, sites=1, patients=120, seed=7, formats=["his-fhir", "billing", "biobank"])
    return folder
