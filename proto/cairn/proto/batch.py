"""Batch endpoints: a name whose deployments score data in batches, each invocation a pipeline
run of one parallel run step (``cairn.proto.parallel``).

A batch endpoint (``cairn.ev.<ws>.batch_endpoint.<name id>``, the pipelines service) is created
once (``CreateBatchEndpoint``, ``batch.endpoint.create``); ``SetBatchDeployment``
(``batch.deployment.set``) adds a deployment or replaces its spec, the first one becoming the
default (``make_default`` moves it). A deployment's spec is what every invocation runs: the
job template (code snapshot, environment, variables) of its workers and its parallel
settings. ``GetBatchEndpoint`` (``batch.endpoint.get``) reads it back. Invoking one
(``cairn batch-endpoint invoke``) submits a pipeline run (``pipeline.submit``) of its workers
and gather step over the given input.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from cairn.proto._base import Count, Id, Int64, Key, Name, TagKey, TagValue, Text
from cairn.proto.commands import Command, Query
from cairn.proto.jobs import JobSpec

__all__ = [
    "BATCH_COMMAND_TYPES",
    "BATCH_QUERY_TYPES",
    "BatchDeploymentSpec",
    "CreateBatchEndpoint",
    "GetBatchEndpoint",
    "SetBatchDeployment",
]


class BatchDeploymentSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an invocation of a deployment runs: ``job`` is its workers' job without command
    or inputs (the code snapshot, the inline environment, the variables), on ``compute``;
    ``instance_count * max_concurrency_per_instance`` workers score ``mini_batch_size`` files
    at a time with ``scoring_script``; the results go to ``output_file_name``."""

    job: JobSpec
    compute: Key = "local"
    environment_name: Name | None = None
    environment_version: Count | None = None
    scoring_script: Text
    instance_count: Count = 1
    max_concurrency_per_instance: Count = 1
    mini_batch_size: Count = 10
    output_action: Literal["append_row", "summary_only"] = "append_row"
    output_file_name: Text = "predictions.csv"
    error_threshold: Int64 = -1
    max_retries: Count = 3
    timeout_s: float = 30.0
    logging_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    description: Text = ""
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)


class CreateBatchEndpoint(Command, frozen=True, kw_only=True, tag=True):
    VERB = "batch.endpoint.create"
    name: Name
    description: Text = ""
    tags: dict[TagKey, TagValue] = msgspec.field(default_factory=dict)


class SetBatchDeployment(Command, frozen=True, kw_only=True, tag=True):
    """Add deployment ``name`` to endpoint ``endpoint`` (or replace its spec); the first one
    is the default, ``make_default`` makes this one the default."""

    VERB = "batch.deployment.set"
    endpoint: Name
    name: Id
    spec: BatchDeploymentSpec
    make_default: bool = False


class GetBatchEndpoint(Query, frozen=True, kw_only=True, tag=True):
    """An endpoint with its deployments' specs and its default deployment."""

    NAME = "batch.endpoint.get"
    name: Name


BATCH_COMMAND_TYPES: tuple[type[Command], ...] = (CreateBatchEndpoint, SetBatchDeployment)
BATCH_QUERY_TYPES: tuple[type[Query], ...] = (GetBatchEndpoint,)
