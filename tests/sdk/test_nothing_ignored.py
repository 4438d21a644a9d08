"""Nothing accepted is ignored: every parameter of every public SDK callable is read by its
body, refused by name (``@refuses``: a value other than its default raises ``Unsupported``
naming it) or recorded as honoured by nature (``@inherent``, with why); every key a job file
may hold is read by the loader or the CLI, or refused by name. Adding a parameter or a key
that nothing reads fails here."""

from __future__ import annotations

import ast
import dis
import importlib
import inspect
import pkgutil
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import cairn.sdk
from cairn.errors import Unsupported
from cairn.sdk import _automlfile, _jobfile, _sweepfile
from cairn.sdk._refusals import INHERENT, REFUSED, inherent, refuses

ROOT = Path(__file__).resolve().parents[2]


def _modules() -> list[types.ModuleType]:
    names = sorted(f"cairn.sdk.{m.name}" for m in pkgutil.iter_modules(cairn.sdk.__path__))
    return [importlib.import_module(name) for name in names]


def _classes() -> Iterator[tuple[str, type]]:
    """Every class the SDK's modules define (what public calls return and what they use),
    with the classes nested in them (``Dataset.Tabular``)."""
    pending = [
        (name, obj)
        for mod in _modules()
        for name, obj in vars(mod).items()
        if isinstance(obj, type) and obj.__module__ == mod.__name__
    ]
    seen: set[type] = set()
    while pending:
        name, cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        yield name, cls
        for key, value in vars(cls).items():
            if isinstance(value, type) and value.__module__.startswith("cairn.sdk"):
                pending.append((f"{name}.{key}", value))


def _functions(obj: Any) -> Iterator[Callable[..., Any]]:
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        obj = obj.fget
    if isinstance(obj, types.FunctionType):
        yield obj


def public_callables() -> list[tuple[str, Callable[..., Any]]]:
    """Every function and method the SDK's modules define (private ones too: a public call
    passes its arguments on to them), but the dunders other than ``__init__``."""
    found: dict[Callable[..., Any], str] = {}
    for cls_name, cls in _classes():
        for key, value in vars(cls).items():
            if key.startswith("__") and key != "__init__":
                continue
            for fn in _functions(value):
                found.setdefault(fn, f"{cls_name}.{key}")
    for mod in _modules():
        for name, obj in vars(mod).items():
            if getattr(obj, "__module__", None) == mod.__name__:
                for fn in _functions(obj):
                    found.setdefault(fn, f"{mod.__name__}.{name}")
    return sorted(((q, fn) for fn, q in found.items()), key=lambda item: item[0])


def _read_names(code: types.CodeType) -> set[str]:
    """The names the code (and the functions and comprehensions in it) reads."""
    names = set(code.co_cellvars)  # read by an inner function
    for ins in dis.get_instructions(code):
        if ins.opname.startswith("LOAD_"):
            if isinstance(ins.argval, str):
                names.add(ins.argval)
            elif isinstance(ins.argval, tuple):  # LOAD_FAST_LOAD_FAST (3.13)
                names.update(a for a in ins.argval if isinstance(a, str))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _read_names(const)
    return names


def ignored(fn: Callable[..., Any]) -> list[str]:
    """The parameters of ``fn`` that its body never reads and that are neither refused nor
    recorded as inherent."""
    declared = {**getattr(fn, REFUSED, {}), **getattr(fn, INHERENT, {})}
    inner = inspect.unwrap(fn)
    read = _read_names(inner.__code__)
    params = list(inspect.signature(inner).parameters)
    return [p for p in params if p not in ("self", "cls") and p not in read and p not in declared]


def test_the_walk_reaches_the_v1_surface() -> None:
    names = {q for q, _ in public_callables()}
    for expected in (
        "ScriptRunConfig.__init__",
        "Estimator.__init__",
        "Run.get_details_with_logs",
        "Tabular.from_delimited_files",
        "AmlCompute.provisioning_configuration",
        "ComputeTarget.create",
        "CondaDependencies.create",
        "TabularDataset.to_pandas_dataframe",
        "Datastore.register_s3",
        "Workspace.from_config",
        "load_job_file",
    ):
        assert any(n.endswith(expected) for n in names), expected
    assert len(names) > 300


def test_no_public_parameter_is_ignored() -> None:
    found = {q: bad for q, fn in public_callables() if (bad := ignored(fn))}
    assert found == {}


def test_the_check_finds_an_ignored_parameter() -> None:
    def takes(a: int, b: int = 0, **_: Any) -> int:
        return a

    @refuses(b="no b")
    def refusing(a: int, b: int = 0) -> int:
        return a

    @inherent(b="b always holds")
    def explained(a: int, b: int = 0) -> int:
        return a

    assert ignored(takes) == ["b", "_"]
    assert ignored(refusing) == [] and ignored(explained) == []


class _Given:
    """A value that equals no default."""

    def __eq__(self, other: object) -> bool:
        return other is self

    def __hash__(self) -> int:
        return id(self)


def _refused() -> list[tuple[str, Callable[..., Any], str]]:
    return [(q, fn, name) for q, fn in public_callables() for name in getattr(fn, REFUSED, {})]


@pytest.mark.parametrize(("where", "fn", "name"), _refused(), ids=lambda v: str(v)[:60])
def test_every_refused_parameter_is_refused_by_name(
    where: str, fn: Callable[..., Any], name: str
) -> None:
    sig = inspect.signature(fn)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for param in sig.parameters.values():
        if param.name == name:
            kwargs[name] = _Given()
        elif param.default is inspect.Parameter.empty and param.kind in (
            param.POSITIONAL_ONLY,
            param.POSITIONAL_OR_KEYWORD,
        ):
            args.append(object())
        elif param.default is inspect.Parameter.empty and param.kind == param.KEYWORD_ONLY:
            kwargs[param.name] = object()
    with pytest.raises(Unsupported, match=rf"\b{name}= is not supported; \S"):
        fn(*args, **kwargs)


def test_a_refused_parameter_left_at_its_default_is_fine() -> None:
    @refuses(b="no b")
    def refusing(a: int, b: int | None = None) -> int:
        return a

    assert refusing(1) == 1 and refusing(1, None) == 1
    with pytest.raises(Unsupported, match="refusing: b= is not supported; no b"):
        refusing(1, 2)


# -- job files ---------------------------------------------------------------------------


def _schema_structs() -> list[type[msgspec.Struct]]:
    return [
        obj
        for obj in vars(_jobfile).values()
        if isinstance(obj, type)
        and issubclass(obj, msgspec.Struct)
        and obj.__module__ == _jobfile.__name__
    ]


#: the expressions that hold each struct in the loader (``_jobfile``) and the CLI
_HELD_AS = {
    "JobFile": {"job", "spec"},
    "InlineEnvironment": {"value"},
    "Limits": {"job.limits"},
    "Output": {"item"},
    "DataInput": {"item"},
}


def _attributes_read() -> set[tuple[str, str]]:
    """``(expression, attribute)`` of every attribute the loader and the CLI read."""
    found: set[tuple[str, str]] = set()
    for path in (ROOT / "shared/cairn/sdk/_jobfile.py", ROOT / "shared/cairn/cli/_jobs.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                found.add((ast.unparse(node.value), node.attr))
    return found


def test_every_job_file_key_is_read_or_refused() -> None:
    read = _attributes_read()
    structs = _schema_structs()
    assert {s.__name__ for s in structs} == set(_HELD_AS)
    found = []
    for struct in structs:
        for field in msgspec.structs.fields(struct):
            where = f"{struct.__name__}.{field.name}"
            held = _HELD_AS[struct.__name__]
            if not any((e, field.name) in read for e in held) and where not in _jobfile.UNREAD_KEYS:
                found.append(where)
    assert found == []


# -- pipeline files ------------------------------------------------------------------------

#: the expressions that hold each struct of the pipeline loader (``_pipelinefile``)
_PIPELINE_HELD_AS = {
    "PipelineFile": {"pipeline", "file", "loaded.file"},
    "PipelineSettings": {"pipeline.settings", "settings", "file.settings"},
    "StepFile": {"step", "step.file", "file"},
    "ComponentFile": {"component", "step.component"},
    "ComponentInput": {"spec", "declared[key]"},
    "ComponentOutput": {"v", "out"},
}


def test_every_pipeline_file_key_is_read_or_refused() -> None:
    from cairn.sdk import _components, _pipelinefile

    read: set[tuple[str, str]] = set()
    sources = ("sdk/_pipelinefile.py", "sdk/_components.py", "cli/_pipelines.py")
    for path in (ROOT / "shared/cairn" / name for name in sources):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                read.add((ast.unparse(node.value), node.attr))
    structs = [
        obj
        for module in (_pipelinefile, _components)
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, msgspec.Struct)
        and obj.__module__ == module.__name__
    ]
    assert {s.__name__ for s in structs} == set(_PIPELINE_HELD_AS)
    found = []
    for struct in structs:
        for field in msgspec.structs.fields(struct):
            where = f"{struct.__name__}.{field.name}"
            held = _PIPELINE_HELD_AS[struct.__name__]
            unread = where in _pipelinefile.UNREAD_PIPELINE_KEYS
            if not any((e, field.name) in read for e in held) and not unread:
                found.append(where)
    assert found == []


#: the expressions that hold each struct of the sweep files' loader (``_sweepfile``) and the CLI
_SWEEP_HELD_AS = {
    "SweepFile": {"sweep", "spec"},
    "Trial": {"trial"},
    "SamplingObject": {"value"},
    "EarlyTermination": {"value"},
    "Limits": {"limits"},
}


def test_every_sweep_file_key_is_read_or_refused() -> None:
    read: set[tuple[str, str]] = set()
    for path in (ROOT / "shared/cairn/sdk/_sweepfile.py", ROOT / "shared/cairn/cli/_jobs.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                read.add((ast.unparse(node.value), node.attr))
    structs = [
        obj
        for obj in vars(_sweepfile).values()
        if isinstance(obj, type)
        and issubclass(obj, msgspec.Struct)
        and obj.__module__ == _sweepfile.__name__
    ]
    assert {s.__name__ for s in structs} == set(_SWEEP_HELD_AS)
    found = []
    for struct in structs:
        for field in msgspec.structs.fields(struct):
            where = f"{struct.__name__}.{field.name}"
            held = _SWEEP_HELD_AS[struct.__name__]
            if not any((e, field.name) in read for e in held):
                if where not in _sweepfile.UNREAD_SWEEP_KEYS:
                    found.append(where)
    assert found == []


#: the expressions that hold each struct of the automl files' loader and the CLI
_AUTOML_HELD_AS = {
    "AutoMLFile": {"automl", "spec"},
    "TableInput": {"value"},
    "AutoMLLimits": {"limits"},
    "Training": {"training"},
    "Featurization": {"automl.featurization"},
}


def test_every_automl_file_key_is_read_or_refused() -> None:
    read: set[tuple[str, str]] = set()
    for path in (ROOT / "shared/cairn/sdk/_automlfile.py", ROOT / "shared/cairn/cli/_jobs.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                read.add((ast.unparse(node.value), node.attr))
    structs = [
        obj
        for obj in vars(_automlfile).values()
        if isinstance(obj, type)
        and issubclass(obj, msgspec.Struct)
        and obj.__module__ == _automlfile.__name__
    ]
    assert {s.__name__ for s in structs} == set(_AUTOML_HELD_AS)
    found = []
    for struct in structs:
        for field in msgspec.structs.fields(struct):
            where = f"{struct.__name__}.{field.name}"
            if not any((e, field.name) in read for e in _AUTOML_HELD_AS[struct.__name__]):
                if where not in _automlfile.UNREAD_AUTOML_KEYS:
                    found.append(where)
    assert found == []
