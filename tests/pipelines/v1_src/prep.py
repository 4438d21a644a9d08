import argparse
import os

from cairn.sdk import Run

p = argparse.ArgumentParser()
p.add_argument("--out")
p.add_argument("--scale")
a = p.parse_args()
run = Run.get_context()
frame = run.input_datasets["raw"].to_pandas_dataframe()
frame["x"] = frame["x"] * int(a.scale)
os.makedirs(a.out, exist_ok=True)
frame.to_csv(os.path.join(a.out, "prepped.csv"), index=False)
print("prep rows", len(frame), "sum", int(frame["x"].sum()))
