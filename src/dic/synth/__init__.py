"""The test world: synthetic hospitals with known content for the demo, tests and benchmarks."""

from dic.synth.fhir_population import BAD_SAMPLE_FILE, generate_population, write_bad_samples, write_ndjson
from dic.synth.world import SOURCES, WorldReport, site_patients, write_world

__all__ = ["BAD_SAMPLE_FILE", "SOURCES", "WorldReport", "generate_population", "site_patients", "write_bad_samples",
           "write_ndjson", "write_world"]
