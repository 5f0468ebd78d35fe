"""The `dic` command line: parse, call one function of a lower layer, render."""

from dic.cli import conformance_commands, demo, repository_commands, view_commands  # noqa: F401  (registers commands)
from dic.cli.app import app, run

main = run

__all__ = ["app", "main"]
