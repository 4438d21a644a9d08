# Workspace.create and Workspace.list through the sync SDK, as Azure ML code calls them.
import json
import sys
import warnings

from cairn.errors import AlreadyExists
from cairn.sdk import Workspace

name = sys.argv[1]
out = {}
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    ws = Workspace.create(name, subscription_id="sub", resource_group="rg", show_output=False)
out["warned"] = [str(w.message) for w in seen]
out["name"] = ws.name
try:
    Workspace.create(name, show_output=False)
    out["again"] = "created"
except AlreadyExists:
    out["again"] = "already_exists"
out["exist_ok"] = Workspace.create(name, exist_ok=True, show_output=False).name
try:
    Workspace.create(name, friendlyname="x", show_output=False)
    out["unknown"] = "accepted"
except TypeError as exc:
    out["unknown"] = str(exc)
out["listed"] = [w.name for w in Workspace.list().get(name, [])]
print(json.dumps(out))
