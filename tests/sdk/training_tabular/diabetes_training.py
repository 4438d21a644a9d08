# The course's training script for a tabular dataset passed with as_named_input: the data
# comes from run.input_datasets, the dataset itself inside the job.
import argparse
import os

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from cairn.sdk import Run  # was: from azureml.core import Run

parser = argparse.ArgumentParser()
parser.add_argument("--regularization", type=float, dest="reg_rate", default=0.01)
parser.add_argument("--input-data", type=str, dest="training_dataset_id")
args = parser.parse_args()

run = Run.get_context()

print("Loading Data...")
dataset = run.input_datasets["training_data"]
print("input dataset:", type(dataset).__name__, dataset.name, dataset.version)
print("input argument is a folder:", os.path.isdir(args.training_dataset_id))
diabetes = dataset.to_pandas_dataframe()
X, y = diabetes[["a", "b", "c", "d"]].values, diabetes["Diabetic"].values
run.log("observations", len(y))
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.30, random_state=0)

print("Training a logistic regression model with regularization rate of", args.reg_rate)
run.log("Regularization Rate", float(args.reg_rate))
model = LogisticRegression(C=1 / args.reg_rate, solver="liblinear").fit(X_train, y_train)

y_hat = model.predict(X_test)
acc = np.average(y_hat == y_test)
run.log("Accuracy", float(acc))
auc = roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])
run.log("AUC", float(auc))

os.makedirs("outputs", exist_ok=True)
joblib.dump(value=model, filename="outputs/diabetes_model.pkl")
run.complete()
