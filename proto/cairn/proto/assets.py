"""Workspace assets other than models: environments, datastores and compute targets.

Each asset is an aggregate per name (``cairn.ev.<ws>.<kind>.<id>``) whose events are
``AssetRegistered`` (a new version of its spec) and ``AssetDeleted``. Datastore credentials
never appear here in clear: the registry seals them with the workspace key before they reach an
event, and replies show only whether a datastore has any.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from cairn.proto._base import Count, Digest, Id, Key, Name, Strict, TagKey, TagValue, Text
from cairn.proto.commands import AsOfQuery, Command

__all__ = [
    "ASSET_KINDS",
    "CURATED_PREFIX",
    "MAX_UPLOAD_RECORD",
    "AssetSpec",
    "ComponentPort",
    "ComponentSpec",
    "ComputeSpec",
    "CreateCompute",
    "DataFile",
    "DataPath",
    "DatasetSpec",
    "DatastoreSpec",
    "DeleteCompute",
    "EnvironmentSpec",
    "GetAsset",
    "ListAssets",
    "RecordUpload",
    "RegisterComponent",
    "RegisterDataset",
    "RegisterDatastore",
    "RegisterEnvironment",
    "UrlFile",
]

ASSET_KINDS = ("environment", "datastore", "compute", "dataset", "component")
#: names under this prefix are the curated environments; users cannot register them
CURATED_PREFIX = "cairn-"


class EnvironmentSpec(Strict, frozen=True, kw_only=True, tag="environment"):
    python: Name | None = None
    pip: list[Text] = msgspec.field(default_factory=list)
    conda: list[Text] = msgspec.field(default_factory=list)
    channels: list[Text] = msgspec.field(default_factory=list)
    env_vars: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    docker_image: Text | None = None
    #: install nothing: the job runs on the agent's interpreter (Azure's
    #: ``python.user_managed_dependencies``)
    user_managed: bool = False


class DatastoreSpec(Strict, frozen=True, kw_only=True, tag="datastore"):
    kind: Literal["local", "s3"]
    path: Text | None = None
    endpoint_url: Text | None = None
    bucket: Text | None = None
    prefix: Text = ""
    region: Text | None = None
    #: a Fernet token of the credentials under the workspace key; never the credentials
    sealed_credentials: str | None = None


class ComputeSpec(Strict, frozen=True, kw_only=True, tag="compute"):
    kind: Literal["local", "cluster", "instance", "attached"]
    min_nodes: Count = 0
    max_nodes: Count = 1
    vm_size: Text | None = None
    labels: list[Id] = msgspec.field(default_factory=list)


class DataPath(msgspec.Struct, frozen=True, array_like=True):
    """``[datastore, pattern]``: a path inside a datastore, ``*`` and ``?`` wildcards allowed."""

    datastore: Id
    pattern: Text


class DataFile(msgspec.Struct, frozen=True, array_like=True):
    """One file of a dataset version: ``[datastore, path, size, etag]`` — ``etag`` is the
    SHA-256 (local datastores) or the ETag (S3) the bytes had at registration — and, for a
    snapshot version, the digest of the copy in the artifact store."""

    datastore: Id
    path: Text
    size: Count
    etag: str
    blob: Digest | None = None


class UrlFile(msgspec.Struct, frozen=True, array_like=True):
    """One file of a dataset version read from a URL: ``[url, path, size, validator]`` —
    ``path`` is where it lands (relative: the URL's file name, or its path below a folder
    URL), ``validator`` what the server said identifies those bytes at registration (ETag,
    Last-Modified, size) — and, for a snapshot version, the digest of the copy in the
    artifact store."""

    url: Text
    path: Text
    size: Count
    validator: str
    blob: Digest | None = None


class DatasetSpec(Strict, frozen=True, kw_only=True, tag="dataset"):
    """What a dataset version is: tabular (delimited files) or file datasets over datastore
    paths with wildcards, and the fingerprint of every file they matched at registration, so
    a version means the same bytes forever (or, with ``snapshot``, copies of them)."""

    kind: Literal["tabular", "file"]
    paths: list[DataPath]
    separator: str = ","
    header: bool = True
    infer_column_types: bool = True
    files: list[DataFile] = msgspec.field(default_factory=list)
    snapshot: bool = False
    #: URLs as given (``https://``, ``s3://``, or an fsspec scheme); an ``s3://`` one is read
    #: through the registered S3 datastore of its bucket and lands in ``paths``/``files``
    urls: list[Text] = msgspec.field(default_factory=list)
    #: the files of the other URLs with their validators at registration
    url_files: list[UrlFile] = msgspec.field(default_factory=list)


class ComponentPort(Strict, frozen=True, kw_only=True):
    """A component's input or output: its type, and for an input its default and whether it
    may be left out."""

    type: Literal[
        "string",
        "integer",
        "number",
        "boolean",
        "uri_folder",
        "uri_file",
        "custom_model",
        "mlflow_model",
        "triton_model",
    ]
    default: str | int | float | bool | None = None
    optional: bool = False


class ComponentSpec(Strict, frozen=True, kw_only=True, tag="component"):
    """A command component, registered: its command (with ``${{inputs.x}}`` and
    ``${{outputs.y}}``), its code snapshot (uploaded before, to ``snapshot_area``), its
    environment (a registered name and version, or a spec), typed inputs and outputs.
    ``is_deterministic``: a pipeline may reuse an earlier run of it on the same inputs."""

    command: Text
    snapshot: Digest | None = None
    snapshot_area: Id | None = None
    environment_name: Name | None = None
    environment_version: Count | None = None
    environment: EnvironmentSpec | None = None
    inputs: dict[TagKey, ComponentPort] = msgspec.field(default_factory=dict)
    outputs: dict[TagKey, ComponentPort] = msgspec.field(default_factory=dict)
    env_vars: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)
    display_name: Name | None = None
    is_deterministic: bool = True


AssetSpec = EnvironmentSpec | DatastoreSpec | ComputeSpec | DatasetSpec | ComponentSpec


class RegisterEnvironment(Command, frozen=True, kw_only=True, tag=True):
    """A new version when the spec differs from the latest; the same spec again is a no-op."""

    VERB = "environment.register"
    name: Name
    spec: EnvironmentSpec
    description: Text = ""


class RegisterComponent(Command, frozen=True, kw_only=True, tag=True):
    """A new version when the spec differs from the latest; the same spec again is a no-op
    (``cairn component create --file``)."""

    VERB = "component.register"
    name: Name
    spec: ComponentSpec
    description: Text = ""


class RegisterDatastore(Command, frozen=True, kw_only=True, tag=True):
    """``credentials`` (e.g. access and secret keys) travel in this request only; the registry
    seals them before anything is stored."""

    VERB = "datastore.register"
    name: Key
    spec: DatastoreSpec
    credentials: dict[TagKey, TagValue] | None = None
    description: Text = ""


class CreateCompute(Command, frozen=True, kw_only=True, tag=True):
    """Only actors with the compute-operator role may create or delete compute targets."""

    VERB = "compute.create"
    name: Key
    spec: ComputeSpec
    description: Text = ""


class DeleteCompute(Command, frozen=True, kw_only=True, tag=True):
    VERB = "compute.delete"
    name: Key


class RecordUpload(Command, frozen=True, kw_only=True, tag=True):
    """What a client wrote into a datastore (paths, sizes, digests or ETags), at most
    ``MAX_UPLOAD_RECORD`` files per command."""

    VERB = "datastore.uploaded"
    name: Key
    files: list[DataFile]


#: files per RecordUpload (keeps its event well under the event size limit)
MAX_UPLOAD_RECORD = 1000


class RegisterDataset(Command, frozen=True, kw_only=True, tag=True):
    """Registering a name that exists is refused unless ``create_new_version``; then the spec
    becomes the next version (the same spec again is a no-op)."""

    VERB = "dataset.register"
    name: Name
    spec: DatasetSpec
    description: Text = ""
    create_new_version: bool = False
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)


AssetKind = Literal["environment", "datastore", "compute", "dataset", "component"]


class GetAsset(AsOfQuery, frozen=True, kw_only=True, tag=True):
    """``sealed``: a datastore's reply also carries its sealed credentials (the token, which
    only a holder of the workspace key can open), for a process that moves its data. As of a
    moment, "latest" is the latest version then."""

    NAME = "asset.get"
    asset_kind: AssetKind
    name: Name
    version: Count | None = None
    sealed: bool = False


class ListAssets(AsOfQuery, frozen=True, kw_only=True, tag=True):
    """The latest version of every asset of ``asset_kind``, the built-in ones included; with
    ``name``, every version of that one asset, oldest first (none: ``NotFound``)."""

    NAME = "asset.list"
    asset_kind: AssetKind
    name: Name | None = None
