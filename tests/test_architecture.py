"""The package layout holds: no import cycle, a light `import uniroute_core`, serving never imports evaluation,
argparse only in the CLI (see ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("uniroute_core", "uniroute_langchain", "uniroute_llamaindex")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (never executed, so never part of a cycle)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not _is_type_checking_block(child):
                stack.append(child)


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``name`` imports at run time (module-level or inside functions).

    ``from . import x`` imports the sub-module ``x`` when it is one (not a name of the package), ``from .a import b``
    the module ``a`` (and ``a.b`` when that is a module); relative levels resolve against the module's package.
    """
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base in modules and base != name:
                out.add(base)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    out.add(sub)
    out.discard(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_builder_sees_relative_imports_and_cycles():
    graph = _graph()
    assert "uniroute_core.evaluation.protocol" in graph["uniroute_core.evaluation"]  # from .protocol import ...
    assert "uniroute_core.registry" in graph["uniroute_core.cluster_map"]  # from .registry import Registry
    assert "uniroute_core.cluster_map" in graph["uniroute_core.evaluation.methods"]  # from ..cluster_map import
    assert "uniroute_core.router" in graph["uniroute_llamaindex.base"]  # absolute import
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_the_three_packages():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_serving_modules_never_import_the_evaluation_side():
    graph = _graph()
    # tooling, not serving: the command line runs `uniroute eval`; `uniroute build` chooses K by validation Area;
    # the Ray engine (uniroute_core.scale, reached through its package) runs eval and replay on a cluster.
    # uniroute_core/__init__ re-exports the curve helpers lazily (no import edge).
    allowed = {"uniroute_core.cli", "uniroute_core.build", "uniroute_core.scale", "uniroute_core.scale.ray_engine"}
    for name, deps in graph.items():
        if name.startswith("uniroute_core.evaluation") or name in allowed:
            continue
        bad = sorted(d for d in deps if d.startswith("uniroute_core.evaluation"))
        assert not bad, f"{name} imports {bad}: the serving side must not depend on the evaluation subpackage"


def test_tooling_modules_are_used_only_by_tooling():
    tooling = {"uniroute_core.cli", "uniroute_core.build", "uniroute_core.scale", "uniroute_core.scale.ray_engine"}
    for name, deps in _graph().items():
        if name not in tooling and not name.startswith("uniroute_core.evaluation"):
            assert not deps & tooling, f"{name} imports {sorted(deps & tooling)}"


def test_adapters_use_only_the_serving_core():
    for name, deps in _graph().items():
        if name.startswith(("uniroute_langchain", "uniroute_llamaindex")):
            assert not any(d.startswith(("uniroute_core.evaluation", "uniroute_core.cli")) for d in deps), name


def test_argparse_lives_only_in_the_cli_module():
    users = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
                users.append(name)
            elif isinstance(node, ast.ImportFrom) and node.module == "argparse":
                users.append(name)
    assert sorted(set(users)) == ["uniroute_core.cli"]


HEAVY = ("torch", "sklearn", "scipy", "matplotlib", "sentence_transformers", "transformers")


@pytest.mark.parametrize(
    "statement",
    [
        "import uniroute_core",
        "from uniroute_core import UniRouter, ProbeSet, ClusterMap, KMeansClusterMap, LearnedMapClusterMap",
        "import uniroute_core.cli",
    ],
)
def test_importing_the_core_loads_no_heavy_dependency(statement):
    code = (
        f"import sys, json; {statement}; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_evaluation_side_loads_lazily_and_without_plotting_stack():
    code = (
        "import sys, json, uniroute_core; before = 'uniroute_core.evaluation' in sys.modules; "
        "from uniroute_core import area; import uniroute_core.evaluation; "
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}); "
        "print(json.dumps([before, 'uniroute_core.evaluation' in sys.modules, heavy]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [False, True, []]
