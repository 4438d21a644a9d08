"""A tabular dataset from an https CSV URL: read before and after registration, and inside a
job (as the dataset input itself, from the agent's copy); the same URL as an ``Input`` in a
ScriptRunConfig's arguments."""

import json
import os
import sys

from cairn.sdk import Dataset, Environment, Experiment, Input, ScriptRunConfig, Workspace

url = sys.argv[1]
ws = Workspace.from_config()
table = Dataset.Tabular.from_delimited_files(path=url)
before = table.to_pandas_dataframe()
table = table.register(workspace=ws, name="url table", create_new_version=True)
again = Dataset.get_by_name(ws, "url table")

os.makedirs("job", exist_ok=True)
with open("job/read.py", "w") as f:
    f.write(
        "from cairn.sdk import Run\n"
        "run = Run.get_context()\n"
        "df = run.input_datasets['t'].to_pandas_dataframe()\n"
        "run.log('rows', len(df))\n"
        "run.log('total', int(df['x'].sum()))\n"
    )
env = Environment("agent-python")
env.python.user_managed_dependencies = True
config = ScriptRunConfig(
    source_directory="job",
    script="read.py",
    arguments=[again.as_named_input("t")],
    environment=env,
)
run = Experiment(ws, "url-datasets").submit(config)
run.wait_for_completion()

with open("job/name.py", "w") as f:
    f.write(
        "import os, sys\n"
        "from cairn.sdk import Run\n"
        "run = Run.get_context()\n"
        "run.log('name', os.path.basename(sys.argv[2]))\n"
        "run.log('lines', len(open(sys.argv[2]).read().splitlines()))\n"
        "run.log('other', ','.join(sorted(os.listdir(sys.argv[4]))))\n"
    )
given = Input(type="uri_file", path=url, name="csv")
# another URL dataset: its own copy on the agent, not the table's (both have no datastore files)
other = Dataset.File.from_files(path=sys.argv[2]).register(workspace=ws, name="url file")
config = ScriptRunConfig(
    source_directory="job",
    script="name.py",
    arguments=["--f", given, "--g", other.as_named_input("g").as_download()],
    environment=env,
)
by_input = Experiment(ws, "url-datasets").submit(config)
by_input.wait_for_completion()
print(
    json.dumps(
        {
            "before": before["x"].tolist(),
            "after": again.to_pandas_dataframe()["x"].tolist(),
            "urls": again.spec.urls,
            "url_files": [[f.path, f.size, bool(f.validator)] for f in again.spec.url_files],
            "status": run.get_status(),
            "metrics": run.get_metrics(),
            "input": [str(given), by_input.get_status(), by_input.get_metrics()],
        }
    )
)
