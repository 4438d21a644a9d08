# A trial whose accuracy curve its parameter decides: 1 - decay * (k - 1) at its k-th report,
# so which trials a bandit policy stops, and where, is known before it runs.
import argparse
import time

from cairn.sdk import Run

parser = argparse.ArgumentParser()
parser.add_argument("--decay", type=float, required=True)
parser.add_argument("--reports", type=int, default=8)
parser.add_argument("--pause", type=float, default=0.4)
args = parser.parse_args()

run = Run.get_context()
for k in range(1, args.reports + 1):
    run.log("accuracy", 1.0 - args.decay * (k - 1))
    run.flush()
    time.sleep(args.pause)
