"""The `dic` command line: parse, call one function of a lower layer, render."""

from dic.cli import (  # noqa: F401  (registers commands)
    api_commands,
    cohort_commands,
    conformance_commands,
    demo,
    listen_commands,
    repository_commands,
    synth_commands,
    term_commands,
    trust_commands,
    view_commands,
)
from dic.cli.app import app, run

main = run

__all__ = ["app", "main"]
