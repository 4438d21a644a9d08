"""A batch-scoring entry script: init() once per worker process, run(mini_batch) per
mini-batch. Each result row is ``x 2x token inits``: the worker's init token and how many
times init() ran in this process. SCORE_MODE=hang makes the first delivery of mini-batch 50
hang (its worker is killed there); SCORE_MODE=fail drops every tenth row (a failed item)."""

import os
import time
import uuid

TOKEN = ""
INITS = 0


def init():
    global TOKEN, INITS
    INITS += 1
    TOKEN = uuid.uuid4().hex[:8]


def run(mini_batch):
    mode = os.environ.get("SCORE_MODE", "")
    batch = os.environ["CAIRN_MINI_BATCH_ID"]
    if mode == "hang" and batch == "50" and os.environ["CAIRN_MINI_BATCH_DELIVERY"] == "1":
        time.sleep(600)
    rows = []
    for x in mini_batch["x"]:
        if mode == "fail" and x % 10 == 0:
            continue
        rows.append(f"{x} {x * 2} {TOKEN} {INITS}")
    return rows
