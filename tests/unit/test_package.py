"""The package's shape: no import cycle, modules split by concern, tests named after them.

These are cheap consistency checks in the TFX-template spirit: they read the source with
``ast`` and never import the modules, so they run in well under a second.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "recops": ROOT / "plugins" / "recops",
    "recops_models": ROOT / "models" / "recops_models",
}
MAX_LINES = 800
#: The orchestration glue: only the DAG-facing layer may import it.
GLUE = "recops.pipeline"
GLUE_CALLERS = {"recops.cli.demo", "recops.cli.run"}
#: Unit-test files that test something other than one module, and what they test.
NOT_A_MODULE = {
    "test_package.py": "the package's shape (this file)",
    "test_bench_byod.py": "benchmarks/byod.py",
    "test_bench_pipeline.py": "benchmarks/pipeline.py",
    "test_bench_recommend.py": "benchmarks/recommend.py (its service part)",
    "test_bench_scale.py": "benchmarks/scale.py (its engines and reports)",
    "test_compose.py": "docker-compose.yaml and compose/",
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in PACKAGES.values():
        for path in root.rglob("*.py"):
            parts = path.relative_to(root.parent).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every recops module ``name`` imports, at any depth (function-level imports too)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_package else name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


GRAPH = {name: set(_imports(name, path)) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(GRAPH[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    assert _cycles() == []


def test_no_module_over_the_size_limit() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}


def test_only_the_dag_layer_imports_the_glue() -> None:
    importers = {name for name, targets in GRAPH.items() if GLUE in targets}
    assert importers <= GLUE_CALLERS, sorted(importers - GLUE_CALLERS)


def test_model_code_never_imports_the_pipeline_package() -> None:
    offenders = {
        name: sorted(t for t in targets if t.split(".")[0] == "recops")
        for name, targets in GRAPH.items()
        if name.split(".")[0] == "recops_models"
    }
    assert {n: t for n, t in offenders.items() if t} == {}


def _tested_module(test_file: Path) -> list[str]:
    """Module names a unit-test file may be named after (its path mirrors the package)."""
    rel = test_file.relative_to(ROOT / "tests" / "unit")
    stem = test_file.stem.removeprefix("test_")
    folder = list(rel.parts[:-1])
    if folder[:1] == ["models"]:
        return [f"recops_models.{stem}"]
    prefix = ".".join(["recops", *folder])
    candidates = [f"{prefix}.{stem}"]
    # A basename must be unique across tests/, so a clash may prefix the package's name.
    if folder and stem.startswith(f"{folder[-1]}_"):
        candidates.append(f"{prefix}.{stem.removeprefix(folder[-1] + '_')}")
    return candidates


@pytest.mark.parametrize(
    "test_file",
    sorted((ROOT / "tests" / "unit").rglob("test_*.py")),
    ids=lambda p: str(p.relative_to(ROOT / "tests" / "unit")),
)
def test_unit_test_files_are_named_after_their_module(test_file: Path) -> None:
    if test_file.name in NOT_A_MODULE:
        return
    candidates = _tested_module(test_file)
    assert any(c in MODULES for c in candidates), (
        f"{test_file.relative_to(ROOT)} names no module (looked for {candidates})"
    )


def test_test_basenames_are_unique() -> None:
    # pytest's rootdir import mode imports test files by basename.
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
