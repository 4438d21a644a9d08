"""The seeds' real-time deployment with only the import line changed: register a model,
deploy it with an entry script, score it, manage its keys, read its logs, delete it."""

import json
import sys

import joblib
import numpy as np

from cairn.sdk import (
    AciWebservice,
    AksWebservice,
    Environment,
    InferenceConfig,
    Model,
    Webservice,
    Workspace,
)

model_file, source = sys.argv[1], sys.argv[2]
ws = Workspace.from_config()

model = Model.register(workspace=ws, model_path=model_file, model_name="diabetes_model")

env = Environment("diabetes-serving")
env.python.user_managed_dependencies = True
inference_config = InferenceConfig(
    source_directory=source, entry_script="score.py", environment=env
)
deployment_config = AciWebservice.deploy_configuration(cpu_cores=1, memory_gb=1)
service = Model.deploy(ws, "diabetes-service", [model], inference_config, deployment_config)
service.wait_for_deployment(show_output=True)
state = service.state

x_new = np.random.default_rng(3).normal(size=(5, 4)).tolist()
predictions = service.run(input_data=json.dumps({"data": x_new}))
expected = joblib.load(model_file).predict(np.array(x_new)).tolist()

primary, secondary = service.get_keys()
service.regen_key("Primary")
new_primary, same_secondary = service.get_keys()

# two replicas in place of one, rolled out on an agent with two slots
service.update(inference_config=inference_config, num_replicas=2)
service.wait_for_deployment()
after_update = [service.state, service.run(json.dumps({"data": x_new}))]

found = Webservice(ws, "diabetes-service")
listed = [s.name for s in Webservice.list(ws, model_name="diabetes_model")]
by_type = [s.name for s in Webservice.list(ws, compute_type="ACI")]

broken = Model.deploy(
    ws,
    "broken-service",
    [model],
    InferenceConfig(source_directory=source, entry_script="broken_score.py"),
    AksWebservice.deploy_configuration(num_replicas=1),
)
broken.wait_for_deployment()
broken_state = broken.state
broken_logs = broken.get_logs()
broken.delete()

service.delete()
print(
    json.dumps(
        {
            "state": state,
            "predictions": predictions,
            "expected": expected,
            "scoring_uri": service.scoring_uri,
            "swagger_uri": service.swagger_uri,
            "keys_changed": [new_primary != primary, same_secondary == secondary],
            "after_update": after_update,
            "found": found.scoring_uri,
            "listed": listed,
            "by_type": [by_type, found.compute_type],
            "broken_state": broken_state,
            "broken_logs": broken_logs,
            "after_delete": [s.name for s in Webservice.list(ws)],
        }
    )
)
