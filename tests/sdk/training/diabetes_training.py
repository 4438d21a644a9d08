# The training script of the seeds, as a job runs it: argparse, Run.get_context(), a
# scikit-learn fit, run.log, joblib.dump into outputs/.
import argparse
import os

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from cairn.sdk import Run

parser = argparse.ArgumentParser()
parser.add_argument("--reg_rate", type=float, dest="reg", default=0.01)
args = parser.parse_args()
reg = args.reg

run = Run.get_context()

print("Loading Data...")
data = np.loadtxt("diabetes.csv", delimiter=",", skiprows=1)
X, y = data[:, :-1], data[:, -1]
run.log("observations", len(y))
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.30, random_state=0)

print("Training a logistic regression model with regularization rate of", reg)
run.log("Regularization Rate", float(reg))
model = LogisticRegression(C=1 / reg, solver="liblinear").fit(X_train, y_train)

y_hat = model.predict(X_test)
acc = np.average(y_hat == y_test)
print("Accuracy:", acc)
run.log("Accuracy", float(acc))

y_scores = model.predict_proba(X_test)
auc = roc_auc_score(y_test, y_scores[:, 1])
print("AUC: " + str(auc))
run.log("AUC", float(auc))

os.makedirs("outputs", exist_ok=True)
joblib.dump(value=model, filename="outputs/diabetes_model.pkl")

run.complete()
