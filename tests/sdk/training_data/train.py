# Reads a dataset input and a mounted datastore folder, writes an output folder.
import argparse
import os

from cairn.sdk import Run

parser = argparse.ArgumentParser()
parser.add_argument("--data")
parser.add_argument("--extra")
parser.add_argument("--out")
args = parser.parse_args()
run = Run.get_context()

data_path = run.input_datasets["raw"]
assert os.path.samefile(data_path, args.data), (data_path, args.data)
rows = 0
for name in sorted(os.listdir(data_path)):
    with open(os.path.join(data_path, name)) as f:
        rows += len(f.read().splitlines()) - 1
run.log("rows", rows)
run.log("mounted_files", len(os.listdir(args.extra)))
try:
    open(os.path.join(args.extra, "new.txt"), "w").write("x")
    run.log("mount_writable", 1)
except OSError:
    run.log("mount_writable", 0)
os.makedirs("outputs", exist_ok=True)
open("outputs/model.txt", "w").write(f"trained on {rows} rows")
open(os.path.join(args.out, "weights.bin"), "w").write("w")
print("read", rows, "rows")
