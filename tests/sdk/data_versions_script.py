"""A version means the same bytes: a changed file is refused by name; a snapshot version
reads the bytes it was registered with; hostile paths and patterns are refused."""

import json
import sys
from pathlib import Path

from cairn.errors import CairnError
from cairn.sdk import Dataset, Datastore, Workspace

root = Path(sys.argv[1])
ws = Workspace.from_config()
store = Datastore.register_local(ws, "lake", str(root))
(root / "t").mkdir(parents=True)
(root / "t" / "a.csv").write_text("x,y\n1,2\n")
(root / "t" / "b.csv").write_text("x,y\n3,4\n")

plain = Dataset.Tabular.from_delimited_files(path=(store, "t/*.csv"))
plain = plain.register(ws, "plain")
frozen = Dataset.Tabular.from_delimited_files(path=(store, "t/*.csv"))
frozen = frozen.register(ws, "frozen", snapshot=True)
before = plain.to_pandas_dataframe()["x"].tolist()

(root / "t" / "b.csv").write_text("x,y\n30,40\n")  # the bytes behind both versions change
out: dict[str, object] = {"before": before}
try:
    Dataset.get_by_name(ws, "plain", version=1).to_pandas_dataframe()
except CairnError as exc:
    out["changed"] = [exc.code, "lake:t/b.csv" in exc.message]
out["frozen"] = Dataset.get_by_name(ws, "frozen", version=1).to_pandas_dataframe()["x"].tolist()
(root / "t" / "a.csv").unlink()
try:
    Dataset.get_by_name(ws, "plain").to_pandas_dataframe()
except CairnError as exc:
    out["gone"] = [exc.code, "t/a.csv is gone" in exc.message]
try:
    Dataset.Tabular.from_delimited_files(path=(store, "t/*.csv")).register(ws, "plain")
except CairnError as exc:
    out["exists"] = exc.code
out["new_version"] = (
    Dataset.Tabular.from_delimited_files(path=(store, "t/*.csv"))
    .register(ws, "plain", create_new_version=True)
    .version
)

(root.parent / "outside.csv").write_text("x\n666\n")
(root / "t" / "escape.csv").symlink_to(root.parent / "outside.csv")
refused = {}
for name, attempt in {
    "pattern_dotdot": lambda: Dataset.Tabular.from_delimited_files(path=(store, "../*.csv")),
    "pattern_absolute": lambda: Dataset.File.from_files(path=(store, "/etc/*")),
    "upload_target": lambda: store.upload_files(
        [str(root / "t" / "b.csv")], target_path="../../tmp"
    ),
    "download_prefix": lambda: store.download("./got", prefix="../"),
    "list_prefix": lambda: store.list_files("t/../.."),
    "symlink_read": lambda: store.download("./got", prefix="t/escape.csv"),
}.items():
    try:
        attempt()
        refused[name] = "accepted"
    except CairnError as exc:
        refused[name] = exc.code
out["refused"] = refused
out["listed"] = [f["path"] for f in store.list_files("t")]
print(json.dumps(out))
