"""The layers, read from the source (``ast``, nothing imported): services never import the
SDK; the SDK's modules import each other without a cycle, the sync facade wraps the async core
and never the other way round, and its classes go through the core's public calls, never its
RPC client; the CLI uses only the SDK's public names."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import cairn.sdk

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "shared" / "cairn" / "sdk"
#: the sync facade: Azure ML v1 names over the async core
FACADE = {
    "_runtime",
    "_sync",
    "_pipelines",
    "_parallel",
    "_parallel_driver",
    "_pipelineruns",
    "_assets",
    "_models",
    "_datastores",
    "_datasets",
    "_jobfile",
    "_schedulefile",
    "_schedules",
    "_pipelinefile",
    "_components",
    "_sweepfile",
    "_automl",
    "_automlfile",
    "_automl_trial",
    "_keyvault",
    "_compute",
    "_runconfig",
    "_estimators",
    "_offline",
    "_runs",
    "_webservice",
    "_onlinefile",
    "_batchfile",
}
#: the async core: what the facade wraps (and the async face users get from ``connect``)
CORE = {
    "_session",
    "_async",
    "_async_assets",
    "_async_models",
    "_async_data",
    "_async_secrets",
    "_async_schedules",
    "_async_events",
    "_async_endpoints",
    "_async_pipelines",
    "_jobs",
    "_hyperdrive",
    "_metrics",
    "_outbox",
    "_waiting",
    "_refusals",
    "_async_parallel",
}


def _imports(path: Path) -> Iterator[tuple[str, list[str], int]]:
    """Every import in the file (module level, in functions, under ``TYPE_CHECKING``): the
    module, the names taken from it, the line."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names], node.lineno


def _sdk_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SDK.glob("*.py"):
        edges = graph.setdefault(path.stem, set())
        for module, names, _ in _imports(path):
            if module == "cairn.sdk":
                edges.update(f"_{n}" if f"_{n}" in FACADE | CORE else "__init__" for n in names)
            elif module.startswith("cairn.sdk."):
                edges.add(module.removeprefix("cairn.sdk."))
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [*path, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_every_sdk_module_is_placed_in_a_layer() -> None:
    modules = {p.stem for p in SDK.glob("*.py")} - {"__init__"}
    assert modules == FACADE | CORE


def test_no_import_cycle_inside_the_sdk() -> None:
    assert _cycle(_sdk_graph()) is None


def test_the_cycle_check_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_async_core_never_imports_the_facade() -> None:
    graph = _sdk_graph()
    wrong = {(m, dep) for m in CORE for dep in graph[m] if dep in FACADE or dep == "__init__"}
    assert wrong == set()


def test_facade_classes_do_not_reach_into_the_cores_client() -> None:
    """``workspace.core.client`` (or any ``.client``) in the facade would bypass the core."""
    found = []
    for name in sorted(FACADE):
        tree = ast.parse((SDK / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("client", "conn"):
                found.append(f"{name}.py:{node.lineno}: .{node.attr}")
    assert found == []


def test_no_service_imports_the_sdk() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sorted((ROOT / "services").rglob("*.py"))
        for module, _, line in _imports(path)
        if module == "cairn.sdk" or module.startswith("cairn.sdk.")
    ]
    assert found == []


def test_the_data_layer_imports_no_sdk_no_service_no_cli() -> None:
    found = [
        f"{path.name}:{line}: {module}"
        for path in sorted((ROOT / "shared" / "cairn" / "data").glob("*.py"))
        for module, _, line in _imports(path)
        if module.split(".")[:2] in (["cairn", "sdk"], ["cairn", "services"], ["cairn", "cli"])
    ]
    assert found == []


def test_the_cli_uses_only_public_sdk_names() -> None:
    public = set(cairn.sdk.__all__)
    found = []
    for path in sorted((ROOT / "shared" / "cairn" / "cli").glob("_*.py")):
        for module, names, line in _imports(path):
            where = f"{path.name}:{line}"
            if module.startswith("cairn.sdk."):
                found.append(f"{where}: imports {module}")
            elif module == "cairn.sdk":
                found += [f"{where}: {n} is not public" for n in names if n not in public]
    assert found == []
