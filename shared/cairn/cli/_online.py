"""Online endpoints and deployments: ``cairn online-endpoint`` and ``cairn online-deployment``,
from YAML files in the Azure ML CLI v2 shape."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cairn.cli._base import (
    cli,
    done,
    emit,
    json_option,
    run,
    show,
    with_workspace,
    yaml_file_option,
)

if TYPE_CHECKING:
    from cairn.sdk import AsyncWorkspace

_NAME = click.option("--name", "-n", required=True, help="the endpoint's name")
_FILE = yaml_file_option()


def _traffic(text: str) -> dict[str, int]:
    """``"blue=90 green=10"`` (spaces or commas between pairs)."""
    found: dict[str, int] = {}
    for pair in text.replace(",", " ").split():
        name, sep, weight = pair.partition("=")
        if not sep or not weight.strip().isdigit():
            raise click.BadParameter(
                f"{pair!r} is not <deployment>=<percent>", param_hint="--traffic"
            )
        found[name.strip()] = int(weight)
    return found


def _endpoint_row(
    row: dict[str, Any], requests: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """What ``show`` prints of an endpoint (never a key), with each deployment's request
    metrics when given."""
    deployments = {
        d["name"]: {
            "status": d["status"],
            "replicas": len(d["replicas"]),
            "ready": len(d["ready"]),
            **({"error": d["error"].strip().splitlines()[-1]} if d["error"].strip() else {}),
            **(
                {"update": "Failed, rolled back to the previous spec"}
                if d.get("update_error")
                else {}
            ),
            **({"autoscale": _scale_text(d)} if (d["spec"] or {}).get("scale") else {}),
            **(requests or {}).get(d["name"], {}),
        }
        for d in row["deployments"]
    }
    return {
        "name": row["name"],
        "auth_mode": row["auth_mode"],
        "description": row["description"],
        "tags": row["tags"],
        "traffic": row["traffic"],
        "mirror_traffic": row["mirror_traffic"],
        "deployments": deployments,
    }


def _scale_text(row: dict[str, Any]) -> str:
    scale = row["spec"]["scale"]
    return (
        f"{scale['min_replicas']}..{scale['max_replicas']} replicas at"
        f" {scale['target_utilization_pct']:g}% (every {scale['polling_interval_s']:g} s),"
        f" {row.get('scalings', 0)} changes"
    )


@cli.group("online-endpoint")
def online_endpoint() -> None:
    """Online endpoints: a scoring address with keys, and traffic split over deployments.

    The gateway serves each at POST /endpoints/<workspace>/<name>/score, with the header
    'Authorization: Bearer <key>' (or a member's API token).

    \b
    Examples:
      cairn online-endpoint create --file endpoint.yml
      cairn online-endpoint update --name diabetes --traffic "blue=90 green=10"
      cairn online-endpoint invoke --name diabetes --request-file sample.json
    """


@online_endpoint.command("create")
@_FILE
@json_option
def endpoint_create(path: Path, as_json: bool) -> None:
    """Create an endpoint from a YAML file (name, auth_mode: key, description, tags).

    Its two keys are made and kept as workspace secrets ('online-endpoint get-credentials').

    \b
    Example:
      cairn online-endpoint create --file endpoint.yml
    """
    from cairn.sdk import load_endpoint_file

    spec = load_endpoint_file(path)

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
        await ws.endpoints.create(spec.name, description=spec.description, tags=spec.tag_strings)
        row = _endpoint_row(await ws.endpoints.get(spec.name))
        return {**row, "scoring_uri": ws.endpoints.scoring_uri(spec.name)}

    show(run(with_workspace(go)), as_json)


@online_endpoint.command("update")
@_NAME
@click.option("--traffic", default=None, help='weights per deployment: "blue=90 green=10"')
@click.option(
    "--mirror-traffic",
    default=None,
    help='a share of requests copied to a deployment: "green=10" ("" for none)',
)
@click.option("--description", default=None, help="a new description")
@json_option
def endpoint_update(
    name: str,
    traffic: str | None,
    mirror_traffic: str | None,
    description: str | None,
    as_json: bool,
) -> None:
    """Set an endpoint's traffic (percentages adding up to 100), its mirrored share (one
    deployment without live traffic, at most 50 percent; its answers are dropped) or its
    description.

    \b
    Examples:
      cairn online-endpoint update --name diabetes --traffic "blue=90 green=10"
      cairn online-endpoint update --name diabetes --mirror-traffic "green=10"
    """
    weights = _traffic(traffic) if traffic is not None else None
    mirror = _traffic(mirror_traffic) if mirror_traffic is not None else None

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
        await ws.endpoints.update(
            name, traffic=weights, description=description, mirror_traffic=mirror
        )
        return _endpoint_row(await ws.endpoints.get(name))

    show(run(with_workspace(go)), as_json)


@online_endpoint.command("show")
@_NAME
@json_option
def endpoint_show(name: str, as_json: bool) -> None:
    """Show an endpoint: traffic, deployments and their state (never a key), and what each
    deployment answered: requests by status and their mean time in the replica.

    \b
    Example:
      cairn online-endpoint show --name diabetes
    """

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
        requests = await ws.endpoints.request_metrics(name)
        row = _endpoint_row(await ws.endpoints.get(name), requests)
        return {**row, "scoring_uri": ws.endpoints.scoring_uri(name)}

    show(run(with_workspace(go)), as_json)


@online_endpoint.command("list")
@json_option
def endpoint_list(as_json: bool) -> None:
    """List the workspace's endpoints.

    \b
    Example:
      cairn online-endpoint list
    """

    async def go(ws: AsyncWorkspace) -> list[dict[str, Any]]:
        return [
            {
                "name": row["name"],
                "traffic": " ".join(f"{k}={v}" for k, v in sorted(row["traffic"].items())),
                "deployments": ", ".join(d["name"] for d in row["deployments"]),
            }
            for row in await ws.endpoints.list()
        ]

    rows = run(with_workspace(go))
    emit(rows, as_json, [("name", "NAME"), ("traffic", "TRAFFIC"), ("deployments", "DEPLOYMENTS")])


@online_endpoint.command("delete")
@_NAME
@click.option("--yes", "-y", is_flag=True, help="do not ask")
@json_option
def endpoint_delete(name: str, yes: bool, as_json: bool) -> None:
    """Delete an endpoint, its deployments (their replicas stop) and its keys.

    \b
    Example:
      cairn online-endpoint delete --name diabetes --yes
    """
    if not yes:
        click.confirm(f"delete endpoint {name} and its deployments?", abort=True)
    run(with_workspace(lambda ws: ws.endpoints.delete(name)))
    done(as_json, {"name": name, "deleted": True}, f"endpoint {name} deleted")


@online_endpoint.command("get-credentials")
@_NAME
def endpoint_credentials(name: str) -> None:
    """Print the endpoint's primary and secondary keys (each read is recorded).

    \b
    Example:
      cairn online-endpoint get-credentials --name diabetes
    """
    primary, secondary = run(with_workspace(lambda ws: ws.endpoints.keys(name)))
    click.echo(json.dumps({"primaryKey": primary, "secondaryKey": secondary}, indent=2))


@online_endpoint.command("regenerate-keys")
@_NAME
@click.option(
    "--key-type",
    type=click.Choice(["primary", "secondary"]),
    default="primary",
    show_default=True,
    help="which key",
)
@json_option
def endpoint_regenerate(name: str, key_type: str, as_json: bool) -> None:
    """Make a new key; the old one stops working at once.

    \b
    Example:
      cairn online-endpoint regenerate-keys --name diabetes --key-type secondary
    """
    run(with_workspace(lambda ws: ws.endpoints.regen_key(name, key_type)))
    done(as_json, {"name": name, "regenerated": key_type}, f"{key_type} key of {name} replaced")


@online_endpoint.command("invoke")
@_NAME
@click.option(
    "--request-file",
    "-r",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="the JSON body to score",
)
@click.option(
    "--deployment-name",
    "-d",
    default=None,
    help="score with this deployment, whatever the traffic",
)
def endpoint_invoke(name: str, request_file: Path, deployment_name: str | None) -> None:
    """Score a request through the gateway with the endpoint's primary key; prints the answer.

    \b
    Examples:
      cairn online-endpoint invoke --name diabetes --request-file sample.json
      cairn online-endpoint invoke --name diabetes -r sample.json --deployment-name green
    """
    body = request_file.read_bytes()
    answer = run(
        with_workspace(lambda ws: ws.endpoints.invoke(name, body, deployment=deployment_name))
    )
    click.echo(json.dumps(answer))


@cli.group("online-deployment")
def online_deployment() -> None:
    """Online deployments: models served by replicas behind an endpoint.

    Each replica is a job on an agent of the deployment's compute target, in one slot; the
    scheduler replaces one that is lost.

    \b
    Examples:
      cairn online-deployment create --file blue.yml --all-traffic
      cairn online-deployment get-logs --name blue --endpoint-name diabetes
    """


_ENDPOINT = click.option("--endpoint-name", "-e", required=True, help="the endpoint's name")
_DEPLOYMENT = click.option("--name", "-n", required=True, help="the deployment's name")


@online_deployment.command("create")
@_FILE
@click.option("--all-traffic", is_flag=True, help="send the endpoint's whole traffic to it")
@click.option("--no-wait", is_flag=True, help="return once it is recorded")
@json_option
def deployment_create(path: Path, all_traffic: bool, no_wait: bool, as_json: bool) -> None:
    """Create a deployment from a YAML file, or replace the spec of one of that name.

    Waits until every replica ran init() (exit 1 if one failed: its traceback is printed).

    \b
    Example:
      cairn online-deployment create --file blue.yml --all-traffic
    """
    from cairn.sdk import load_deployment_file

    spec = load_deployment_file(path)
    base = path.parent

    async def go(ws: AsyncWorkspace) -> dict[str, Any]:
        await ws.endpoints.deploy(
            spec.endpoint_name,
            spec.name,
            entry_script=spec.code_configuration.scoring_script,
            source_directory=spec.source(base),
            models=spec.models,
            environment=spec.environment_ref(base),
            compute=spec.compute,
            replicas=spec.instance_count,
            env_vars={k: str(v) for k, v in spec.environment_variables.items()},
            request_timeout_s=spec.request_timeout_s,
            rollout_timeout_s=spec.rollout_timeout,
            max_concurrent_requests=spec.max_concurrent_requests,
            max_queue_wait_s=spec.max_queue_wait_s,
            description=spec.description,
            tags=spec.tag_strings,
            all_traffic=all_traffic,
            scale=spec.scale,
            data_collector=spec.collector(await ws.default_datastore())
            if spec.data_collector is not None
            else None,
        )
        if no_wait:
            return await ws.endpoints.deployment(spec.endpoint_name, spec.name)
        return await ws.endpoints.wait(spec.endpoint_name, spec.name)

    row = run(with_workspace(go))
    show(_deployment_row(row), as_json)
    if row["status"] == "Failed":
        if not as_json:
            click.echo(row["error"], err=True)
        sys.exit(1)


def _deployment_row(row: dict[str, Any]) -> dict[str, Any]:
    spec = row["spec"] or {}
    return {
        "name": row["name"],
        "endpoint_name": row["endpoint"],
        "status": row["status"],
        "replicas": row["replicas"],
        "ready": row["ready"],
        "models": [f"{m['name']}:{m['version']}" for m in spec.get("models", [])],
        "compute": spec.get("compute"),
        "entry_script": spec.get("entry_script"),
        "tags": spec.get("tags", {}),
        "error": row["error"],
        "update_error": row.get("update_error", ""),
        "scale": spec.get("scale"),
        "request_timeout_s": spec.get("request_timeout_s"),
        "rollout_timeout_s": spec.get("rollout_timeout_s"),
        #: replicas replaced while it served (gone for good: init() failed, the run ended)
        "replacements": row.get("replacements", 0),
    }


@online_deployment.command("show")
@_DEPLOYMENT
@_ENDPOINT
@json_option
def deployment_show(name: str, endpoint_name: str, as_json: bool) -> None:
    """Show a deployment: status, replicas (run ids), models, compute.

    \b
    Example:
      cairn online-deployment show --name blue --endpoint-name diabetes
    """
    row = run(with_workspace(lambda ws: ws.endpoints.deployment(endpoint_name, name)))
    show(_deployment_row(row), as_json)


@online_deployment.command("list")
@_ENDPOINT
@json_option
def deployment_list(endpoint_name: str, as_json: bool) -> None:
    """List an endpoint's deployments.

    \b
    Example:
      cairn online-deployment list --endpoint-name diabetes
    """

    async def go(ws: AsyncWorkspace) -> list[dict[str, Any]]:
        row = await ws.endpoints.get(endpoint_name)
        return [
            {
                "name": d["name"],
                "status": d["status"],
                "replicas": len(d["replicas"]),
                "ready": len(d["ready"]),
                "traffic": row["traffic"].get(d["name"], 0),
            }
            for d in row["deployments"]
        ]

    columns = [
        ("name", "NAME"),
        ("status", "STATUS"),
        ("replicas", "REPLICAS"),
        ("ready", "READY"),
        ("traffic", "TRAFFIC"),
    ]
    emit(run(with_workspace(go)), as_json, columns)


@online_deployment.command("get-logs")
@_DEPLOYMENT
@_ENDPOINT
@click.option("--lines", "-l", default=None, type=int, help="only the last N lines")
def deployment_logs(name: str, endpoint_name: str, lines: int | None) -> None:
    """Print what a deployment's replicas printed (a failed init()'s traceback first).

    \b
    Example:
      cairn online-deployment get-logs --name blue --endpoint-name diabetes --lines 100
    """
    text: str = run(with_workspace(lambda ws: ws.endpoints.logs(endpoint_name, name)))
    shown = text.splitlines()[-lines:] if lines else text.splitlines()
    click.echo("\n".join(shown))


@online_deployment.command("delete")
@_DEPLOYMENT
@_ENDPOINT
@click.option("--yes", "-y", is_flag=True, help="do not ask")
@json_option
def deployment_delete(name: str, endpoint_name: str, yes: bool, as_json: bool) -> None:
    """Delete a deployment (it must have no traffic); its replicas stop.

    \b
    Example:
      cairn online-deployment delete --name green --endpoint-name diabetes --yes
    """
    if not yes:
        click.confirm(f"delete deployment {name} of {endpoint_name}?", abort=True)
    run(with_workspace(lambda ws: ws.endpoints.delete_deployment(endpoint_name, name)))
    done(as_json, {"name": name, "deleted": True}, f"deployment {name} deleted")
