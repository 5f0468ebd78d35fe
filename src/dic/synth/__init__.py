"""The test world: synthetic hospitals with known content for the demo, tests and benchmarks."""

from dic.synth.bad_samples import BAD_SAMPLE_FILE, write_bad_samples
from dic.synth.fhir_population import generate_population, write_ndjson
from dic.synth.world import SOURCES, WorldReport, site_patients, write_world

__all__ = ["BAD_SAMPLE_FILE", "SOURCES", "WorldReport", "generate_population", "site_patients", "write_bad_samples",
           "write_ndjson", "write_world"]
