import json

import joblib
import numpy as np

from cairn.sdk import Model


def init():
    global model
    model = joblib.load(Model.get_model_path("diabetes_model"))


def run(raw_data):
    data = np.array(json.loads(raw_data)["data"])
    return model.predict(data).tolist()
