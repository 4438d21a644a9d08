"""The sync SDK's run listings: get_runs with a filter and an order, Run.list as in Azure ML v1,
and every run of a large experiment. Prints one JSON line."""

import json
import sys

from cairn.errors import InvalidInput
from cairn.sdk import Experiment, Run, Workspace

ws = Workspace.from_config()
name, mode = sys.argv[1], sys.argv[2]
experiment = Experiment(ws, name)
out: dict[str, object] = {}
if mode == "count":
    out["count"] = sum(1 for _ in experiment.get_runs(page_size=1000))
    out["distinct"] = len({r.id for r in experiment.get_runs(page_size=1000)})
else:
    out["best"] = [
        r.id
        for r in experiment.get_runs(filter="metrics.loss < 0.6", order_by=["metrics.loss.min"])
    ]
    out["paged"] = [
        r.id for r in experiment.get_runs(order_by=["metrics.loss.max DESC"], page_size=1)
    ]
    out["top_level"] = [r.id for r in Run.list(experiment)]
    out["with_children"] = [r.id for r in Run.list(experiment, include_children=True)]
    out["tagged"] = [r.id for r in Run.list(experiment, tags={"team": "a"}, include_children=True)]
    out["has_tag"] = [r.id for r in experiment.get_runs(tags="team")]
    out["completed"] = [r.id for r in Run.list(experiment, status="Completed")]
    out["unhydrated"] = [r.id for r in Run.list(experiment, _rehydrate_runs=False)]
    refused = []
    for kwargs in ({"type": "azureml.scriptrun"}, {"status": "Done"}):
        try:
            list(Run.list(experiment, **kwargs))
        except InvalidInput as exc:
            refused.append(str(exc))
    out["refused"] = refused
print(json.dumps(out))
