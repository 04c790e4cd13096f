"""The package layout: no import cycles, and data flows one way through the pipeline stages.

Every ``import`` of every module under ``src/otrain`` is parsed (ast), including imports inside
functions and under ``TYPE_CHECKING``: a lazy import hides a cycle, it does not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "otrain"

#: Pipeline stages, lowest first. A module may import its own stage package and any stage of
#: a strictly lower layer; never a stage of its own layer nor of a higher one.
LAYERS: list[set[str]] = [
    {"_version", "errors"},
    {"outputs", "progress", "parallel", "metrics", "cluster"},   # shared plumbing
    {"cutouts", "alerts", "simulate"},                            # data in
    {"datacube"},
    {"convert", "models"},
    {"training"},
    {"inference"},
    {"evaluation", "broker"},                                     # reports; models out
    {"label"},
    {"cli"},
    {""},                                                         # otrain/__init__: the facade
]
RANK = {stage: i for i, layer in enumerate(LAYERS) for stage in layer}


def module_name(path: Path) -> str:
    """Dotted name of a source file (``otrain.x.y``; a package is its ``__init__``)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_module(name: str) -> bool:
    """Whether a dotted ``otrain...`` name is a module or package of the source tree."""
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports_of(path: Path) -> set[str]:
    """The otrain modules a file imports (resolved to modules, not names)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "otrain")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "otrain":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if is_module(sub) else target)
    found.discard(name)
    return found


def stage_of(module: str) -> str:
    """The stage a module belongs to: its first component below ``otrain``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


GRAPH = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_stage_has_a_layer():
    stages = {stage_of(m) for m in GRAPH}
    assert stages <= set(RANK), f"modules outside every layer: {sorted(stages - set(RANK))}"


def test_no_module_imports_a_higher_or_sibling_stage():
    bad = []
    for module, deps in GRAPH.items():
        own = stage_of(module)
        for dep in deps:
            other = stage_of(dep)
            if other != own and RANK[other] >= RANK[own]:
                bad.append(f"{module} -> {dep}")
    assert not bad, "imports against the flow of data:\n" + "\n".join(sorted(bad))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checks_catch_what_they_claim():
    # the cycle finder and the stage rule on a made-up graph, so a broken checker cannot pass
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert RANK[stage_of("otrain.datacube.hdf5")] < RANK[stage_of("otrain.training.loop")]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: module_name(p))
def test_files_stay_readable(path):
    n_lines = len(path.read_text().splitlines())
    assert n_lines <= 400, f"{path.name}: {n_lines} lines; split it by responsibility"


def test_no_top_level_module_carries_a_stage_prefix():
    stages = {s for layer in LAYERS[2:-1] for s in layer}
    flat = [p.stem for p in PACKAGE.glob("*.py")]
    prefixed = [f for f in flat if any(f.startswith(f"{s}_") for s in stages)]
    assert not prefixed, f"top-level modules named after a stage: {prefixed}"


def test_every_subpackage_has_a_public_face():
    for init in PACKAGE.glob("*/__init__.py"):
        if init.parent.name == "cli":
            continue
        tree = ast.parse(init.read_text())
        names = [t.id for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name)]
        assert "__all__" in names, f"{init} has no __all__"
        assert ast.get_docstring(tree), f"{init} has no docstring"
