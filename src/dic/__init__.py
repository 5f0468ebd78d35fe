"""DIC — an open Data Integration Center: FHIR R4 repository, SQL-on-FHIR v2 views, three SQL engines.

The public Python surface; the packages (`dic.repository`, `dic.views`, ...) hold the rest.
"""

from dic.engines import Engine, connect
from dic.errors import DicError
from dic.repository import init_repository, load_paths, open_repository
from dic.views import compile_view, evaluate_view, load_catalog, refresh_views, validate_view

__version__ = "0.1.0"

__all__ = [
    "DicError",
    "Engine",
    "compile_view",
    "connect",
    "evaluate_view",
    "init_repository",
    "load_catalog",
    "load_paths",
    "open_repository",
    "refresh_views",
    "validate_view",
]
