# The sync facade's child runs, its number types and its `with run:` policy; prints one JSON line.
import json

from cairn.errors import InvalidInput
from cairn.sdk import Experiment, Workspace

exp = Experiment(Workspace.from_config(), "sync-family")
parent = exp.start_logging(display_name="parent")
a = parent.child_run("a")
a.tag("stage", "prod")
a.complete()
b = parent.child_run("b")
c = b.child_run("c")

out: dict[str, object] = {"made": [a.id, b.id, c.id]}
out["children"] = [r.id for r in parent.get_children()]
out["recursive"] = [r.id for r in parent.get_children(recursive=True)]
out["tagged"] = [r.id for r in parent.get_children(tags={"stage": "prod"})]
out["running"] = [r.id for r in parent.get_children(recursive=True, status="Running")]
try:
    parent.get_children(type="azureml.scriptrun")
except InvalidInput:
    out["type_refused"] = True
try:
    parent.get_children(**{"_rehydrate_runs": False})
except TypeError:
    out["unknown_refused"] = True

parent.log("epochs", 1)
parent.log("lr", 1.0)
parent.flush()
out["types"] = {k: type(v).__name__ for k, v in parent.get_metrics().items()}
c.complete()
b.complete()
parent.complete()

try:
    with exp.start_logging() as failing:
        raise ValueError("bad batch")
except ValueError:
    pass
out["failed"] = failing.get_status()
out["error"] = failing.get_details()["error"]
print(json.dumps(out))
