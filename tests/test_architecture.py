"""The import arrows of docs/architecture.md, checked on the source (every import statement,
at module level or inside a function)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dsoftmax"

#: Components of the package, by module path prefix.
PURE_CORE = ("objective", "metrics", "kernels", "optim", "sampling", "validation", "defaults")
IO_AND_CLUSTER = ("dask", "distributed", "zarr", "fsspec", "s3fs", "pyarrow", "pandas")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def _component(name: str) -> str | None:
    """``dsoftmax.engine.dask`` → ``engine``; None outside the package."""
    parts = name.split(".")
    return parts[1] if parts[0] == "dsoftmax" and len(parts) > 1 else None


SOURCES = sorted(PACKAGE.rglob("*.py"))


def _violations(source: str, forbidden_components: set[str], forbidden_packages=()) -> list:
    bad = []
    for path in SOURCES:
        if _component(_module_name(path)) != source and _module_name(path) != f"dsoftmax.{source}":
            continue
        for name in _imports(path):
            if _component(name) in forbidden_components or name.split(".")[0] in forbidden_packages:
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    return bad


def test_the_checker_sees_the_imports_it_is_given():
    engine_imports = _imports(PACKAGE / "engine" / "dask.py")
    assert "dsoftmax.engine.blocks" in engine_imports and "distributed" in engine_imports
    assert "dsoftmax.kernels" in _imports(PACKAGE / "engine" / "blocks.py")


def test_the_trainer_never_imports_scikit_learn_or_the_faces():
    # dsoftmax train fits with the trainer alone; test_cli_start checks the whole import chain.
    assert _violations("trainer", {"estimator", "cli"}, ("sklearn",)) == []


def test_the_training_loop_never_imports_an_engine():
    assert _violations("training", {"engine", "data", "estimator", "cli"}) == []


@pytest.mark.parametrize("core", PURE_CORE)
def test_the_pure_core_does_no_io_and_knows_no_cluster(core):
    faces_and_planes = {"engine", "data", "estimator", "cli", "cluster", "persist", "evaluation"}
    assert _violations(core, faces_and_planes, IO_AND_CLUSTER) == []


def test_the_data_layer_never_imports_the_engine_training_or_faces():
    assert _violations("data", {"engine", "training", "estimator", "cli", "evaluation"}) == []


@pytest.mark.parametrize(
    "component", ["engine", "training", "data", "persist", "objective", "kernels", "optim"]
)
def test_nothing_in_the_core_imports_the_faces(component):
    assert _violations(component, {"estimator", "cli"}) == []


def test_the_modules_workers_run_import_no_heavy_library():
    # Each worker process imports these; scikit-learn, pandas, pyarrow and matplotlib would add
    # ~130 MB to every worker's memory, which counts against its limit, and ml_dtypes (bfloat16
    # only) most of a second to every worker's first evaluation.
    code = (
        "import sys\n"
        "import dsoftmax.engine.blocks, dsoftmax.engine.actor, dsoftmax.data.write\n"
        "import dsoftmax.data.synth, dsoftmax.data.store, dsoftmax.data.values\n"
        "import dsoftmax.prediction, dsoftmax.engine.sources\n"
        "heavy = {'sklearn', 'pandas', 'pyarrow', 'matplotlib', 'ml_dtypes'}\n"
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert completed.stdout == "[]\n", completed.stdout + completed.stderr
