"""A deliberately broken FHIR file: good resources among records the loader must quarantine.

    write_bad_samples(out_dir) -> [(file, line, reason keyword)]
"""

from __future__ import annotations

from pathlib import Path

import orjson

_GOOD_PATIENT = {"resourceType": "Patient", "id": "bad-sample-good-1", "gender": "female", "birthDate": "1970-05-01",
                 "address": [{"postalCode": "04", "country": "DE"}]}
_GOOD_CONDITION = {"resourceType": "Condition", "id": "bad-sample-good-2",
                   "code": {"coding": [{"system": "http://fhir.de/CodeSystem/bfarm/icd-10-gm", "version": "2024",
                                        "code": "G35.10"}]},
                   "subject": {"reference": "Patient/bad-sample-good-1"}, "recordedDate": "2024-03-01"}
# (line text, reason keyword the loader's quarantine reason contains); None: a good line
_BAD_LINES: list[tuple[bytes, str | None]] = [
    (orjson.dumps(_GOOD_PATIENT), None),
    (b'{"resourceType": "Patient", "id": "bad-sample-1", "gender": ', "invalid JSON"),
    (b"[1, 2, 3]", "not a FHIR resource"),
    (b'{"resourceType": "Pateint", "id": "bad-sample-2"}', "unknown resourceType"),
    (b'{"resourceType": "Observation", "status": "final", "code": {"text": "no id"}}', "no id"),
    (orjson.dumps(_GOOD_CONDITION), None),
    (b'{"resourceType": "Patient", "id": "bad-sample-3", "birthDate": 12}', "birthDate"),
    (b'{"resourceType": "Patient", "id": "bad sample 4"}', "not a valid FHIR id"),
    (b'{"resourceType": "Encounter", "id": "bad-sample-5", "status": "finished", "subject": "Patient/x"}', "subject"),
]
BAD_SAMPLE_FILE = "bad-records.ndjson"


def write_bad_samples(out_dir: Path) -> list[tuple[Path, int, str]]:
    """Write `bad-records.ndjson`: good resources among broken lines; [(file, line, reason keyword)].

    Lines count from 1. Each keyword is a word the repository's quarantine reason contains.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / BAD_SAMPLE_FILE
    path.write_bytes(b"".join(line + b"\n" for line, _ in _BAD_LINES))
    return [(path, number, keyword) for number, (_, keyword) in enumerate(_BAD_LINES, start=1) if keyword]
