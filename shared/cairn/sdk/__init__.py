"""The Python SDK: an async core (``async with connect() as ws``) and a sync facade with the
Azure ML v1 names (``Workspace``, ``Experiment``, ``Run``, ``ScriptRunConfig``,
``RunConfiguration``, ``ComputeTarget``, ``AmlCompute``...), a thin wrapper over it.

Layers, each importing only those below it: ``_refusals`` (what is refused by name) and
``_session`` (connection, client, sequences seen) <- ``_waiting`` (what a wait on a run shows)
<- ``_async_assets``, ``_async_models``, ``_async_data``, ``_async_secrets``,
``_async_schedules``, ``_async_events``, ``_async_pipelines``, ``_jobs`` <- ``_async_parallel``
(parallel runs' core calls, batch endpoints' invocation) and
``_async_endpoints`` <- ``_hyperdrive`` (sweeps: their configuration and their core calls) <-
``_async`` (the async face) <- ``_runtime`` (the facade's event loop) <- ``_assets``,
``_compute``, ``_webservice`` <- ``_models``, ``_datastores``, ``_keyvault``, ``_offline`` <-
``_runconfig``, ``_datasets``, ``_jobfile`` <- ``_schedulefile``, ``_schedules``,
``_batchfile`` (batch endpoints' YAML) <-
``_estimators``, ``_sync`` <- ``_pipelineruns`` <- ``_pipelines`` (Azure ML v1's Python
pipelines) <- ``_parallel`` (``ParallelRunStep``, whose jobs run ``_parallel_driver``).
Bytes move through :mod:`cairn.data`.
"""

from cairn.sdk._assets import CondaDependencies, Environment
from cairn.sdk._async import AsyncExperiment, AsyncRun, AsyncWorkspace, connect, new_id
from cairn.sdk._async_events import FeedEvent
from cairn.sdk._async_parallel import get_batch_endpoint, invoke_batch_endpoint
from cairn.sdk._automl import AutoMLConfig
from cairn.sdk._batchfile import (
    create_batch_deployment,
    create_batch_endpoint,
    load_batch_deployment_file,
    load_batch_endpoint_file,
)
from cairn.sdk._compute import AmlCompute, ComputeTarget, ComputeTargetException
from cairn.sdk._datasets import Dataset
from cairn.sdk._datastores import Datastore
from cairn.sdk._estimators import Estimator, PyTorch, SKLearn, TensorFlow
from cairn.sdk._hyperdrive import (
    BanditPolicy,
    BayesianParameterSampling,
    GridParameterSampling,
    HyperDriveConfig,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    PrimaryMetricGoal,
    RandomParameterSampling,
    TruncationSelectionPolicy,
    choice,
    lognormal,
    loguniform,
    normal,
    qlognormal,
    qloguniform,
    qnormal,
    quniform,
    randint,
    uniform,
)
from cairn.sdk._jobfile import Input, load_job_file
from cairn.sdk._jobs import RunFailedError, ScriptRunConfig
from cairn.sdk._keyvault import Keyvault
from cairn.sdk._models import Model
from cairn.sdk._offline import OfflineRun
from cairn.sdk._onlinefile import load_deployment_file, load_endpoint_file
from cairn.sdk._outbox import replay_spool_dir
from cairn.sdk._parallel import ParallelRunConfig, ParallelRunStep
from cairn.sdk._pipelinefile import (
    LoadedPipeline,
    load_pipeline_file,
    lookup_components,
    register_component_file,
    registered_reference,
    submit_pipeline,
)
from cairn.sdk._pipelineruns import PipelineEndpoint, PipelineRun, PublishedPipeline, StepRun
from cairn.sdk._pipelines import (
    OutputFileDatasetConfig,
    Pipeline,
    PipelineData,
    PipelineParameter,
    PythonScriptStep,
)
from cairn.sdk._runconfig import (
    DEFAULT_CPU_IMAGE,
    DEFAULT_GPU_IMAGE,
    DockerConfiguration,
    RunConfiguration,
)
from cairn.sdk._schedulefile import load_schedule_file
from cairn.sdk._schedules import Schedule, ScheduleRecurrence
from cairn.sdk._sweepfile import read_job_file
from cairn.sdk._sync import AutoMLRun, Experiment, HyperDriveRun, Run, Workspace
from cairn.sdk._webservice import (
    AciWebservice,
    AksWebservice,
    InferenceConfig,
    LocalWebservice,
    Webservice,
    WebserviceException,
)

__all__ = [
    "DEFAULT_CPU_IMAGE",
    "DEFAULT_GPU_IMAGE",
    "AciWebservice",
    "AksWebservice",
    "AmlCompute",
    "AsyncExperiment",
    "AsyncRun",
    "AsyncWorkspace",
    "AutoMLConfig",
    "AutoMLRun",
    "BanditPolicy",
    "BayesianParameterSampling",
    "ComputeTarget",
    "ComputeTargetException",
    "CondaDependencies",
    "Dataset",
    "Datastore",
    "DockerConfiguration",
    "Environment",
    "Estimator",
    "Experiment",
    "FeedEvent",
    "GridParameterSampling",
    "HyperDriveConfig",
    "HyperDriveRun",
    "InferenceConfig",
    "Input",
    "Keyvault",
    "LoadedPipeline",
    "LocalWebservice",
    "MedianStoppingPolicy",
    "Model",
    "NoTerminationPolicy",
    "OfflineRun",
    "OutputFileDatasetConfig",
    "ParallelRunConfig",
    "ParallelRunStep",
    "Pipeline",
    "PipelineData",
    "PipelineEndpoint",
    "PipelineParameter",
    "PipelineRun",
    "PrimaryMetricGoal",
    "PublishedPipeline",
    "PyTorch",
    "PythonScriptStep",
    "RandomParameterSampling",
    "Run",
    "RunConfiguration",
    "RunFailedError",
    "SKLearn",
    "Schedule",
    "ScheduleRecurrence",
    "ScriptRunConfig",
    "StepRun",
    "TensorFlow",
    "TruncationSelectionPolicy",
    "Webservice",
    "WebserviceException",
    "Workspace",
    "choice",
    "connect",
    "create_batch_deployment",
    "create_batch_endpoint",
    "get_batch_endpoint",
    "invoke_batch_endpoint",
    "load_batch_deployment_file",
    "load_batch_endpoint_file",
    "load_deployment_file",
    "load_endpoint_file",
    "load_job_file",
    "load_pipeline_file",
    "load_schedule_file",
    "lognormal",
    "loguniform",
    "lookup_components",
    "new_id",
    "normal",
    "qlognormal",
    "qloguniform",
    "qnormal",
    "quniform",
    "randint",
    "read_job_file",
    "register_component_file",
    "registered_reference",
    "replay_spool_dir",
    "submit_pipeline",
    "uniform",
]
