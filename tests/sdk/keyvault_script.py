# The workspace's Keyvault with the Azure ML v1 names, and a run reading secrets as itself.
import json

from cairn.errors import CairnError
from cairn.sdk import Experiment, Workspace

ws = Workspace.from_config()
kv = ws.get_default_keyvault()
out = {}
kv.set_secret("db-pass", "s3cr3t")
kv.set_secrets({"a-1": "x", "b-2": "y"})
out["value"] = kv.get_secret("db-pass")
out["many"] = kv.get_secrets(["a-1", "b-2"])
out["names"] = [s["name"] for s in kv.list_secrets()]
errors = []
for call in (
    lambda: kv.set_secret("not valid!", "v"),
    lambda: kv.set_secret("huge", "x" * (25 * 1024 + 1)),
    lambda: kv.get_secret("missing"),
):
    try:
        call()
    except CairnError as exc:
        errors.append(type(exc).__name__)
out["errors"] = errors
with Experiment(ws, "keyvault").start_logging() as run:
    out["run_id"] = run.id
    out["from_run"] = {"db-pass": run.get_secret("db-pass")}
    out["from_run"].update(run.get_secrets(["db-pass"]))
kv.delete_secret("b-2")
out["after_delete"] = [s["name"] for s in kv.list_secrets()]
print(json.dumps(out))
