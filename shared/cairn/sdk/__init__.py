"""The Python SDK: an async core (``async with connect() as ws``) and a sync facade with the
Azure ML v1 names (``Workspace``, ``Experiment``, ``Run``)."""

from cairn.sdk._assets import ComputeTarget, CondaDependencies, Environment
from cairn.sdk._async import AsyncExperiment, AsyncRun, AsyncWorkspace, connect, new_id
from cairn.sdk._datasets import Dataset
from cairn.sdk._datastores import Datastore
from cairn.sdk._jobs import Estimator, RunFailedError, ScriptRunConfig
from cairn.sdk._models import Model
from cairn.sdk._sync import Experiment, OfflineRun, Run, Workspace

__all__ = [
    "AsyncExperiment",
    "AsyncRun",
    "AsyncWorkspace",
    "ComputeTarget",
    "CondaDependencies",
    "Dataset",
    "Datastore",
    "Environment",
    "Estimator",
    "Experiment",
    "Model",
    "OfflineRun",
    "Run",
    "RunFailedError",
    "ScriptRunConfig",
    "Workspace",
    "connect",
    "new_id",
]
