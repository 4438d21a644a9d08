"""A schedule's pipeline submission (the second variant of ``Submission``), pinned when the
schedule is made or updated as a job's is: each step's registered environment becomes that
version's spec inline (name and version kept), so every fire runs the same code in the same
environments. The fire sends it as ``pipeline.submit`` with the fire's ids and ``scheduled``;
the pipelines service checks the fire in the schedule's log, as the scheduler does a job's.
"""

from __future__ import annotations

import msgspec

from cairn import lookup
from cairn.bus import AggregateCache
from cairn.domain import asset
from cairn.domain.environment import CURATED, parse_reference
from cairn.proto import subjects
from cairn.proto.assets import EnvironmentSpec
from cairn.proto.jobs import JobEnvironment
from cairn.proto.pipelines import PipelineStep, SubmitPipeline
from cairn.settings import Settings

__all__ = ["pin_pipeline"]


async def pin_pipeline(
    cache: AggregateCache, settings: Settings, ws: str, submission: SubmitPipeline
) -> SubmitPipeline:
    """``submission`` with every step's environment resolved now, its experiment checked."""
    await lookup.experiment_id(cache, ws, submission.experiment_name)
    steps = [await _pin_step(cache, settings, ws, step) for step in submission.pipeline.steps]
    pipeline = msgspec.structs.replace(submission.pipeline, steps=steps)
    return msgspec.structs.replace(submission, pipeline=pipeline)


async def _pin_step(
    cache: AggregateCache, settings: Settings, ws: str, step: PipelineStep
) -> PipelineStep:
    ref = step.environment_name
    if ref is None:
        return step
    name, version = parse_reference(ref)
    if name == ref or name not in CURATED:
        version = step.environment_version if version is None else version
    kind = "environment"
    state = await lookup.state(
        cache, asset.aggregate(kind), ws, subjects.name_to_id(name), fresh=True
    )
    builtin = asset.builtin_assets(settings.home_path, ws, kind).get(name)
    ev = asset.resolve(state, builtin, kind, name, version)
    assert isinstance(ev.spec, EnvironmentSpec)
    env = JobEnvironment(name=name, version=ev.version, spec=ev.spec, spec_hash=ev.spec_hash)
    job = msgspec.structs.replace(step.job, environment=env)
    return msgspec.structs.replace(step, job=job, environment_name=None, environment_version=None)
