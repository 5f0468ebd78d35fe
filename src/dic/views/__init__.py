"""SQL-on-FHIR v2: ViewDefinitions, their validation, the reference evaluator (FHIRPath),
the compiler to one SQL for every engine, the materializer, and the standard views."""

from dic.views.catalog import ViewCatalog, load_catalog, standard_folder
from dic.views.compiler import CompiledView, OutputColumn, compile_view
from dic.views.conformance import SuiteReport, format_lines, run_reference, run_suite
from dic.views.evaluator import ViewColumn, evaluate_view, view_columns
from dic.views.materialize import RefreshReport, refresh_views, view_status
from dic.views.suite_engines import SqlRunner, suite_runner
from dic.views.validation import validate_view
from dic.views.view_definition import ViewDefinition

__all__ = [
    "CompiledView",
    "OutputColumn",
    "RefreshReport",
    "SqlRunner",
    "SuiteReport",
    "ViewCatalog",
    "ViewColumn",
    "ViewDefinition",
    "compile_view",
    "evaluate_view",
    "format_lines",
    "load_catalog",
    "refresh_views",
    "run_reference",
    "run_suite",
    "standard_folder",
    "suite_runner",
    "validate_view",
    "view_columns",
    "view_status",
]
