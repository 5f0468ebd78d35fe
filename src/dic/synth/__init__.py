"""The test world: synthetic hospitals with known content for the demo, tests and benchmarks."""

from dic.synth.fhir_population import BAD_SAMPLE_FILE, generate_population, write_bad_samples, write_ndjson

__all__ = ["BAD_SAMPLE_FILE", "generate_population", "write_bad_samples", "write_ndjson"]
