"""The pipeline's layering: walks every import in src/seglab (module level and inside functions)
and fails on a cycle between packages or on a lower stage importing a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "seglab"

# The pipeline from the bottom up: a unit (a subpackage or a top-level module of seglab) may
# import only units on lower rows. `infer` sits below `train` (training validates with it).
LAYERS = [
    {"errors", "__version__", "case", "device"},
    {"data"},
    {"models"},
    {"plan_check"},
    {"plan_instances", "plan_temporal", "plan_model", "plan_inference"},
    {"plan"},
    {"plan_budget"},
    {"preprocess"},
    {"run"},
    {"run_setup"},
    {"postprocess", "metrics", "measure", "uncertainty", "sliding_window"},
    {"instance_split"},
    {"infer_inputs"},
    {"infer"},
    {"infer_objects", "cluster"},
    {"train"},
    {"evaluate", "export", "explain"},
    {"serve_page"},
    {"serve"},
    {"report"},
    {"classical"},
    {"compare"},
    {"api"},
    {"cli_commands"},
    {"cli", "__main__"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    """'seglab.train.loop' -> 'train'; 'seglab.plan' -> 'plan'; 'seglab' -> 'seglab'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "seglab"


def _imported_modules(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module == "seglab":  # from seglab import models, __version__
            return [f"seglab.{alias.name}" for alias in node.names]
        return [node.module]
    return []


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, str]]:
    """{unit: {imported unit: a file that imports it}} between different units of seglab."""
    graph: dict[str, dict[str, str]] = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        source = _unit(".".join(parts).removesuffix(".__init__"))
        graph.setdefault(source, {})
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for module in _imported_modules(node):
                target = _unit(module)
                if module.startswith("seglab.") and target != source:
                    graph[source].setdefault(target, str(path.relative_to(package)))
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One cycle of units as a path [a, b, ..., a], or None."""
    state: dict[str, str] = {}

    def visit(unit: str, path: list[str]) -> list[str] | None:
        state[unit] = "open"
        for target in graph.get(unit, {}):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target, path + [target])):
                return found
        state[unit] = "done"
        return None

    for unit in graph:
        if unit not in state and (found := visit(unit, [unit])):
            return found
    return None


def test_find_cycle_finds_a_cycle_and_accepts_a_chain() -> None:
    assert find_cycle({"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": ""}, "b": {"c": ""}, "c": {}}) is None


def test_no_import_cycle_between_packages() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_unit_has_a_layer() -> None:
    assert set(import_graph()) - {"seglab"} <= set(RANK)


@pytest.mark.parametrize("source", sorted(RANK))
def test_no_stage_imports_a_higher_one(source: str) -> None:
    graph = import_graph()
    upward = {target: where for target, where in graph.get(source, {}).items()
              if target in RANK and RANK[target] > RANK[source]}
    assert not upward, f"{source} imports higher stages: {upward}"
