"""Privacy by construction: after loading every source of a synthetic world (HIS FHIR, lab HL7 v2,
§21 billing, MS registry, biobank, VCF) through the trust center, no identifying data of the truth
appears anywhere in the research repository or the output."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

import duckdb

from dic.cli.demo import SITE_SOURCES


def _identifying_values(world: Path) -> dict[str, set[str]]:
    """The truth's names, streets, cities, insurance numbers and every source patient id."""
    found: dict[str, set[str]] = {"name": set(), "street": set(), "city": set(), "kvnr": set(), "source id": set()}
    with (world / "truth" / "persons.csv").open(newline="") as stream:
        for person in csv.DictReader(stream):
            for field in ("given_names", "family", "birth_name"):
                found["name"] |= {w for w in re.split(r"[\s-]+", person[field]) if len(w) >= 5}
            found["street"] |= {s for s in (person["street"], person["previous_street"]) if s}
            found["city"] |= {c for c in (person["city"], person["previous_city"]) if len(c) >= 5}
            found["kvnr"] |= {person["insurance_number"]} - {""}
    with (world / "truth" / "linkage.csv").open(newline="") as stream:
        found["source id"] |= {row["record_id"] for row in csv.DictReader(stream)}
    for site in ("site-a", "site-b"):  # case numbers and biobank sample ids
        with (world / site / "billing" / "FALL.csv").open(newline="", encoding="utf-8") as stream:
            found["source id"] |= {row["KH-internes-Kennzeichen"] for row in csv.DictReader(stream, delimiter=";")}
        with (world / site / "biobank" / "samples.csv").open(newline="", encoding="utf-8") as stream:
            found["source id"] |= {row["sample_id"] for row in csv.DictReader(stream, delimiter=";")}
    for site in ("site-a", "site-b"):  # the HIS's own Patient resource ids (Encounter ids embed them)
        for line in (world / site / "his-fhir" / "Patient.ndjson").read_text().splitlines():
            found["source id"].add(re.search(r'"id":"([^"]+)"', line).group(1))
    return found


def _all_text(repository: Path) -> str:
    """Every text value of every table of the repository, one per line."""
    with duckdb.connect(str(repository / "repository.duckdb"), read_only=True) as con:
        tables = [name for (name,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        parts = []
        for name in tables:
            rows = con.execute(f'SELECT * FROM "{name}"').fetchall()
            parts += [str(value) for row in rows for value in row if value is not None]
    return "\n".join(parts)


def test_no_identifying_data_reaches_the_repository_or_the_output(dic: Callable, tmp_path: Path) -> None:
    world, repo = tmp_path / "world", tmp_path / "repo"
    dic("synth", "--sites", "2", "--patients", "300", "--seed", "12", "--out", str(world))
    dic("--repo", str(repo), "init")
    output = []
    for site in ("site-a", "site-b"):  # every source, its format detected
        for folder, system in SITE_SOURCES:
            output.append(dic("--repo", str(repo), "load", "--source-system", f"{system}@{site}",
                              str(world / site / folder)))
    output.append(dic("--repo", str(repo), "views", "refresh"))
    text = _all_text(repo)
    printed = "\n".join(r.stdout + r.stderr for r in output)
    words = set(re.findall(r"[\w.-]+", text)) | set(re.findall(r"[\w.-]+", printed))
    assert "Patient" in text and len(text) > 100_000  # the scan saw the data
    for kind, values in _identifying_values(world).items():
        single = {v for v in values if " " not in v}
        leaked = (single & words) | {v for v in values - single if v in text or v in printed}
        assert not leaked, f"{kind} in the repository or output: {sorted(leaked)[:5]}"
    # the trust center holds them, in its own folder beside (not inside) the repository
    assert (tmp_path / "repo-trust" / "trust-center.sqlite").exists()
    assert not any(p.suffix == ".sqlite" for p in repo.rglob("*"))
