# A HyperDrive trial: parameters as --name value, the primary metric logged with run.log.
# The metric is a known function of the parameters, so a test can tell the best trial.
import argparse
import time

from cairn.sdk import Run

parser = argparse.ArgumentParser()
parser.add_argument("--learning_rate", type=float, default=0.1)
parser.add_argument("--n_estimators", type=int, default=10)
parser.add_argument("--reports", type=int, default=1)
parser.add_argument("--pause", type=float, default=0.0)
parser.add_argument("--metric", default="AUC")
args = parser.parse_args()

run = Run.get_context()
for step in range(1, args.reports + 1):
    auc = 1.0 - abs(args.learning_rate - 0.05) - 1.0 / (args.n_estimators + step)
    run.log(args.metric, auc)
    run.flush()
    time.sleep(args.pause)
