import argparse
import os

from cairn.sdk import Run

p = argparse.ArgumentParser()
p.add_argument("--data")
a = p.parse_args()
text = open(os.path.join(a.data, "prepped.csv")).read()
run = Run.get_context()
run.log("lines", len(text.splitlines()))
print("train read", text.replace("\n", "|"), "parent", run.parent.id if run.parent else None)
