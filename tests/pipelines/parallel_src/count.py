import argparse
import os

p = argparse.ArgumentParser()
p.add_argument("--scored")
a = p.parse_args()
with open(os.path.join(a.scored, "parallel_run_step.txt")) as f:
    print("scored lines", sum(1 for _ in f))
