"""The shape of the package, from its import graph (grimp, which import-linter uses).

pyproject's import-linter contract checks that the layers only import downwards; these
tests check what a layers contract cannot: no cycle between any two modules (imports
inside functions and under TYPE_CHECKING included), a core that stands alone, and
commands that do not load the heavy libraries they do not use.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("ray", "sionna", "mitsuba", "drjit", "optuna", "torch", "matplotlib")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("hpcopt", exclude_type_checking_imports=False)


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Each group of modules that import one another in a ring (a strongly connected
    component of more than one module, or one that imports itself), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1 or module in graph.find_modules_directly_imported_by(module):
                cycles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return sorted(cycles)


def test_no_module_imports_itself_back_through_others(graph):
    cycles = import_cycles(graph)
    where = {
        " <-> ".join(c): [
            f"{d['importer']}:{d['line_number']} {d['line_contents']}"
            for a in c
            for b in c
            for d in graph.get_import_details(importer=a, imported=b)
        ]
        for c in cycles
    }
    assert not cycles, json.dumps(where, indent=2)


def test_the_cycle_finder_finds_a_ring_of_three():
    ring = grimp.ImportGraph()
    for importer, imported in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        ring.add_import(importer=importer, imported=imported)
    assert import_cycles(ring) == [["p.a", "p.b", "p.c"]]


def test_core_imports_nothing_else_from_hpcopt(graph):
    outside = {
        (module, imported)
        for module in graph.find_descendants("hpcopt.core") | {"hpcopt.core"}
        for imported in graph.find_modules_directly_imported_by(module)
        if not (imported == "hpcopt.core" or imported.startswith("hpcopt.core."))
    }
    assert not outside, sorted(outside)


@pytest.mark.parametrize("module", ["hpcopt.config", "hpcopt.driver.campaign", "hpcopt.cli"])
def test_importing_a_command_layer_loads_no_heavy_library(module):
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    loaded = {name.split(".")[0] for name in json.loads(done.stdout)}
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
