"""A file entry script: each row is ``<file name> <its length> <suffix from argv>``; a file
named slow.txt takes longer than run_invocation_timeout (every try of its mini-batch fails)."""

import argparse
import os
import time

SUFFIX = ""


def init():
    global SUFFIX
    p = argparse.ArgumentParser()
    p.add_argument("--suffix")
    SUFFIX = p.parse_args().suffix


def run(mini_batch):
    if any(os.path.basename(f) == "slow.txt" for f in mini_batch):
        time.sleep(30)
    return [f"{os.path.basename(f)} {os.path.getsize(f)} {SUFFIX}" for f in mini_batch]
