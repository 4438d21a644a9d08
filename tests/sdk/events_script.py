# The event feed from the sync SDK: typed events, a type filter, a durable position.
import json
import sys

from cairn.errors import UnknownEventType
from cairn.proto.events import ExperimentCreated
from cairn.sdk import Experiment, Workspace

ws = Workspace.from_config()
for name in ("alpha", "beta"):
    Experiment(ws, name).start_logging().complete()
out = {}
created = list(ws.events(["ExperimentCreated"], follow=False))
out["names"] = [e.event.name for e in created if isinstance(e.event, ExperimentCreated)]
first = next(iter(ws.events(durable="sync", follow=False)))
out["first"] = first.type
resumed = list(ws.events(durable="sync", follow=False))
out["resumed_from"] = resumed[0].seq
out["first_seq"] = first.seq
try:
    list(ws.events(["RunDone"], follow=False))
except UnknownEventType as exc:
    out["error"] = exc.code
print(json.dumps(out))
sys.exit(0)
