"""Environments, datastores, datasets and compute targets: a table of decisions."""

from __future__ import annotations

import pytest

from cairn.domain import asset
from cairn.errors import AlreadyExists, InvalidInput, NotFound
from cairn.proto.assets import (
    AssetSpec,
    ComputeSpec,
    DataFile,
    DataPath,
    DatasetSpec,
    DatastoreSpec,
    EnvironmentSpec,
    RecordUpload,
)
from cairn.proto.events import (
    AssetDeleted,
    AssetRegistered,
    DatastoreCredentialsResealed,
    DatastoreFilesUploaded,
    Event,
)
from tests.domain.gwt import Case, check, ids

PY311 = EnvironmentSpec(python="3.11")
PY312 = EnvironmentSpec(python="3.12")
LOCAL = ComputeSpec(kind="local", max_nodes=1)
CSV = DatasetSpec(kind="tabular", paths=[DataPath(datastore="workspaceblobstore", pattern="a")])
CSV2 = DatasetSpec(kind="tabular", paths=[DataPath(datastore="workspaceblobstore", pattern="b")])


def registered(spec: AssetSpec, version: int = 1, name: str = "x") -> AssetRegistered:
    return AssetRegistered(name=name, version=version, spec=spec, spec_hash=asset.spec_hash(spec))


def register(spec: AssetSpec, new_version: bool = True) -> asset.RegisterAsset:
    return asset.RegisterAsset(name="x", spec=spec, new_version=new_version)


DELETE = asset.DeleteAsset(name="x")
FILES = [DataFile(datastore="workspaceblobstore", path="a.csv", size=3, etag="e")]
UPLOAD = RecordUpload(command_id="c", name="x", files=FILES)

S3 = DatastoreSpec(kind="s3", bucket="b", sealed_credentials="k1:old")
STORE: list[Event] = [registered(S3)]
RESEAL = asset.ResealCredentials(
    name="x", version=1, replaces="k1:old", sealed="k2:new", key_id="k2"
)
RESEALED = DatastoreCredentialsResealed(
    name="x", version=1, sealed_credentials="k2:new", key_id="k2"
)

ENV: list[Event] = [registered(PY311)]
DELETED_ENV = [*ENV, AssetDeleted(name="x")]

CASES = [
    Case("register", [], register(PY311), [registered(PY311)]),
    Case("register the same spec is a no-op", ENV, register(PY311), []),
    Case("register another spec", ENV, register(PY312), [registered(PY312, version=2)]),
    Case("register after a delete", DELETED_ENV, register(PY311), [registered(PY311, 2)]),
    Case("create a compute target", [], register(LOCAL), [registered(LOCAL)]),
    Case("create it again", [registered(LOCAL)], register(LOCAL), AlreadyExists, "compute"),
    Case(
        "a dataset's other spec needs create_new_version",
        [registered(CSV)],
        register(CSV2, new_version=False),
        AlreadyExists,
        "create_new_version",
    ),
    Case("a dataset's same spec", [registered(CSV)], register(CSV, new_version=False), []),
    Case(
        "a dataset's new version",
        [registered(CSV)],
        register(CSV2, new_version=True),
        [registered(CSV2, version=2)],
    ),
    Case(
        "a dataset's same spec with other tags is a new version",
        [registered(CSV)],
        asset.RegisterAsset(name="x", spec=CSV, tags={"format": "CSV"}),
        [
            AssetRegistered(
                name="x",
                version=2,
                spec=CSV,
                spec_hash=asset.spec_hash(CSV),
                tags={"format": "CSV"},
            )
        ],
    ),
    Case("delete", ENV, DELETE, [AssetDeleted(name="x")]),
    Case("delete again is a no-op", DELETED_ENV, DELETE, []),
    Case("delete what never existed", [], DELETE, NotFound, "does not exist"),
    Case("record an upload", [], UPLOAD, [DatastoreFilesUploaded(name="x", files=FILES)]),
    Case("reseal credentials", STORE, RESEAL, [RESEALED]),
    Case("reseal what was resealed meanwhile", [*STORE, RESEALED], RESEAL, []),
    Case("reseal a version that does not exist", [], RESEAL, []),
    Case("reseal a spec without credentials", ENV, RESEAL, []),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_decide(case: Case) -> None:
    check(asset.aggregate("environment"), case)


def test_one_aggregate_per_kind() -> None:
    assert {k: a.kind for k, a in asset.AGGREGATES.items()} == {
        k: k for k in ("environment", "datastore", "compute", "dataset", "component")
    }
    with pytest.raises(InvalidInput):
        asset.aggregate("model")


def test_resolve_a_version_or_the_builtin() -> None:
    state = asset.aggregate("environment").fold([*ENV, registered(PY312, 2)])
    assert asset.resolve(state, None, "environment", "x", None).spec == PY312
    assert asset.resolve(state, None, "environment", "x", 1).spec == PY311
    with pytest.raises(NotFound):
        asset.resolve(state, None, "environment", "x", 3)
    builtin = asset.resolve(asset.AssetState(), PY311, "environment", "x", None)
    assert (builtin.version, builtin.spec) == (1, PY311)


def test_a_reseal_changes_the_token_only() -> None:
    state = asset.aggregate("datastore").fold([*STORE, RESEALED])
    spec = state.versions[1].spec
    assert isinstance(spec, DatastoreSpec) and spec.sealed_credentials == "k2:new"
    assert spec.bucket == "b" and state.versions[1].spec_hash == registered(S3).spec_hash
