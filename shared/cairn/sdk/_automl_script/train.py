"""One AutoML trial, as a job runs it (the job's code snapshot is this folder)."""

import sys

from cairn.sdk import Run
from cairn.sdk._automl_trial import main

sys.exit(main(Run.get_context))
