"""The shape of the code: imports point down the layers; the CLI starts without Spark."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "dic"

# architecture.md: top may use bottom. Packages on one row may not import each other.
LAYERS = [
    {"cli", "api"},
    {"cohort", "extract", "analytics", "federation", "quality"},
    {"trust", "privacy"},
    {"views"},
    {"repository"},
    {"engines"},
    {"terminology"},
    {"sources"},
    {"fhir"},  # resource helpers that every reader and view uses
    {"synth"},
]
RANK = {package: rank for rank, row in enumerate(LAYERS) for package in row}
SHARED = {"errors", "__init__", "__main__"}  # the exception tree, the public surface, the entry point


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dic."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("dic."))
    return found


def test_imports_point_down_the_layers() -> None:
    upward = []
    for path in SRC.rglob("*.py"):
        package = path.relative_to(SRC).parts[0].removesuffix(".py")
        if package in SHARED:
            continue
        assert package in RANK, f"{package} is in no layer of architecture.md"
        for imported in imports_of(path) - SHARED - {package}:
            if RANK[imported] <= RANK[package]:
                upward.append(f"{path.relative_to(SRC)} imports dic.{imported}")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_other_packages_import_from_a_package_root() -> None:
    deep = []
    for path in SRC.rglob("*.py"):
        package = path.relative_to(SRC).parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dic."):
                parts = node.module.split(".")
                if len(parts) > 2 and parts[1] != package and parts[1] not in SHARED:
                    deep.append(f"{path.relative_to(SRC)}: from {node.module}")
    assert not deep, "import other packages' names from their __init__:\n" + "\n".join(deep)


def test_help_does_not_import_pyspark() -> None:
    code = "import sys; from dic.cli import app; import typer.testing as t; " \
           "r = t.CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; " \
           "print('pyspark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_no_module_named_like_a_dumping_ground() -> None:
    bad = [p for p in SRC.rglob("*.py") if p.stem in {"utils", "helpers", "misc", "common"}]
    assert not bad


def test_exported_members() -> None:
    """The public surface changes only on purpose."""
    import dic

    assert dic.__all__ == sorted(dic.__all__)
    assert dic.__all__ == [
        "DicError", "Engine", "compile_view", "connect", "evaluate_view", "init_repository", "load_catalog",
        "load_paths", "open_repository", "refresh_views", "validate_view",
    ]
    assert all(hasattr(dic, name) for name in dic.__all__)
