"""Batch endpoints and deployments: ``cairn batch-endpoint`` and ``cairn batch-deployment``,
from YAML files in the Azure ML CLI v2 shape. An invocation is a pipeline run (``cairn job
show``/``stream`` follow it) whose parallel run step scores the input's files in
mini-batches and writes its results to the ``predictions`` output."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cairn.cli._base import cli, done, json_option, run, show, with_workspace, yaml_file_option

if TYPE_CHECKING:
    from cairn.sdk import AsyncWorkspace

_FILE = yaml_file_option()


@cli.group("batch-endpoint")
def batch_endpoint() -> None:
    """Batch endpoints: a name whose deployments score data in mini-batches on agents.

    \b
    Examples:
      cairn batch-endpoint create --file endpoint.yml
      cairn batch-endpoint invoke --name scorer --input ./images
      cairn batch-endpoint invoke --name scorer --input azureml:images:2
    """


@batch_endpoint.command("create")
@_FILE
@json_option
def endpoint_create(path: Path, as_json: bool) -> None:
    """Create a batch endpoint from a YAML file (name, description, tags).

    \b
    Example:
      cairn batch-endpoint create --file endpoint.yml
    """
    from cairn.sdk import create_batch_endpoint, load_batch_endpoint_file

    found = load_batch_endpoint_file(path)

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
        await create_batch_endpoint(ws, found)
        return await batch_endpoint_row(ws, found.name)

    show(_row(run(with_workspace(go))), as_json)


@batch_endpoint.command("show")
@click.option("--name", "-n", required=True, help="the endpoint's name")
@json_option
def endpoint_show(name: str, as_json: bool) -> None:
    """An endpoint: its default deployment, its deployments' settings and its scoring_uri
    (POST it with an API token to invoke the endpoint over HTTP).

    \b
    Example:
      cairn batch-endpoint show --name scorer
    """

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
        return await batch_endpoint_row(ws, name)

    show(_row(run(with_workspace(go))), as_json)


@batch_endpoint.command("invoke")
@click.option("--name", "-n", required=True, help="the endpoint's name")
@click.option(
    "--input",
    "given",
    required=True,
    help="a local file or folder, or a registered dataset (azureml:<name>:<version>)",
)
@click.option("--deployment-name", "-d", default=None, help="a deployment other than the default")
@click.option(
    "--experiment-name", default=None, help="the run's experiment (default: the endpoint's name)"
)
@json_option
def endpoint_invoke(
    name: str, given: str, deployment_name: str | None, experiment_name: str | None, as_json: bool
) -> None:
    """Score an input's files with the endpoint's default deployment (or the one named): a
    pipeline run whose 'predictions' output holds the results. Prints the run's id.

    \b
    Example:
      cairn batch-endpoint invoke --name scorer --input ./images
    """
    from cairn.sdk import invoke_batch_endpoint

    async def go(ws: AsyncWorkspace) -> str:
        return await invoke_batch_endpoint(
            ws, name, given, deployment=deployment_name, experiment_name=experiment_name
        )

    run_id = run(with_workspace(go))
    done(as_json, {"name": run_id, "run_id": run_id}, run_id)


@cli.group("batch-deployment")
def batch_deployment() -> None:
    """Batch deployments: the scoring script, environment and parallel settings an
    invocation of a batch endpoint runs.

    \b
    Example:
      cairn batch-deployment create --file deployment.yml --set-default
    """


@batch_deployment.command("create")
@_FILE
@click.option("--set-default", is_flag=True, help="make it the endpoint's default deployment")
@json_option
def deployment_create(path: Path, set_default: bool, as_json: bool) -> None:
    """Create a deployment from a YAML file (its code uploaded), or replace the spec of one of
    that name. The first deployment of an endpoint is its default.

    \b
    Example:
      cairn batch-deployment create --file deployment.yml
    """
    from cairn.sdk import create_batch_deployment, load_batch_deployment_file

    found = load_batch_deployment_file(path)

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
        await create_batch_deployment(ws, found, path.parent, make_default=set_default)
        return await batch_endpoint_row(ws, found.endpoint_name)

    show(_row(run(with_workspace(go))), as_json)


async def batch_endpoint_row(ws: AsyncWorkspace, name: str) -> dict[str, Any]:
    from cairn.sdk import get_batch_endpoint

    return await get_batch_endpoint(ws, name)


def _row(found: dict[str, Any]) -> dict[str, Any]:
    deployments = {
        name: {
            "workers": d["instance_count"] * d["max_concurrency_per_instance"],
            "compute": d["compute"],
            "scoring_script": d["scoring_script"],
            "mini_batch_size": d["mini_batch_size"],
            "output_file_name": d["output_file_name"],
        }
        for name, d in found["deployments"].items()
    }
    return {
        "name": found["name"],
        "description": found["description"],
        "tags": found["tags"],
        "default_deployment": found["default_deployment"],
        "deployments": deployments,
        "scoring_uri": found["scoring_uri"],
    }
