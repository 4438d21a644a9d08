"""Warm starts: a job forked from the agent's zygote behaves as the same job started cold."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from cairn.services.agent._backends import Launched, ProcessBackend, Runtime

PYTHON = sys.executable
WARM = {"PYTHONUNBUFFERED": "1"}  # as the agent sets it for every job

PROBE = textwrap.dedent("""
    import atexit, json, os, sys, threading, time
    import sibling  # found next to the script: sys.path[0] is the script's folder

    def late():
        time.sleep(0.2)
        print("thread done", flush=True)

    threading.Thread(target=late).start()  # not a daemon: the exit waits for it
    atexit.register(lambda: print("atexit ran", flush=True))
    print("to stderr", file=sys.stderr, flush=True)
    with open(os.path.join(os.environ["OUT"], "seen.json"), "w") as f:
        json.dump({"argv": sys.argv, "name": __name__, "cwd": os.getcwd(),
                   "path0": sys.path[0], "var": os.environ.get("JOB_VAR"),
                   "parent": open(f"/proc/{os.getppid()}/cmdline").read(),
                   "session": os.getsid(0) == os.getpid(), "sibling": sibling.VALUE,
                   "file": __file__, "spec": repr(__spec__)}, f)
    sys.exit(int(sys.argv[1]))
""")


async def _python_for(_: object) -> Path:
    return Path(PYTHON)


async def _output(launched: Launched) -> tuple[str, int]:
    out = b""
    while chunk := await launched.output.read(65536):
        out += chunk
    return out.decode(), await launched.wait


def _job(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "job.py").write_text(PROBE)
    (src / "sibling.py").write_text("VALUE = 42\n")
    return src


async def test_a_warm_job_is_the_job_started_cold(tmp_path: Path) -> None:
    src = _job(tmp_path)
    env = {**WARM, "OUT": str(tmp_path), "JOB_VAR": "v"}
    seen = {}
    for warm in (True, False):
        backend = ProcessBackend(_python_for, warm=warm)
        try:
            launched = await backend.launch(
                Runtime(PYTHON), [PYTHON, "job.py", "3", "x"], src, env, {}, []
            )
            out, code = await _output(launched)
        finally:
            backend.close()
        assert code == 3
        assert out.splitlines() == ["to stderr", "thread done", "atexit ran"]
        seen[warm] = json.loads((tmp_path / "seen.json").read_text())
    assert "_zygote.py" in seen[True].pop("parent")
    assert "_zygote.py" not in seen[False].pop("parent")
    assert (
        seen[True]
        == seen[False]
        == {
            "argv": ["job.py", "3", "x"],
            "name": "__main__",
            "cwd": str(src),
            "path0": str(src),
            "var": "v",
            "session": True,
            "sibling": 42,
            "file": str(src / "job.py"),
            "spec": "None",
        }
    )


async def test_a_warm_job_that_raises_shows_its_own_traceback(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "job.py").write_text("def f():\n    raise ValueError('bad input')\nf()\n")
    outputs = []
    for warm in (True, False):
        backend = ProcessBackend(_python_for, warm=warm)
        try:
            launched = await backend.launch(Runtime(PYTHON), [PYTHON, "job.py"], src, WARM, {}, [])
            out, code = await _output(launched)
        finally:
            backend.close()
        assert code == 1
        outputs.append(out)
    assert outputs[0] == outputs[1]  # the same traceback, no zygote frame in it
    lines = outputs[0].splitlines()
    assert lines[1].startswith(f'  File "{src / "job.py"}", line 3')
    assert lines[-1] == "ValueError: bad input"


async def test_startup_variables_of_the_job_mean_a_cold_start(tmp_path: Path) -> None:
    src = _job(tmp_path)
    backend = ProcessBackend(_python_for)
    try:
        env = {**WARM, "OUT": str(tmp_path), "PYTHONPATH": str(tmp_path)}  # read at start-up
        launched = await backend.launch(Runtime(PYTHON), [PYTHON, "job.py", "0"], src, env, {}, [])
        _, code = await _output(launched)
    finally:
        backend.close()
    assert code == 0
    assert "_zygote.py" not in json.loads((tmp_path / "seen.json").read_text())["parent"]


async def test_a_dead_zygote_takes_its_jobs_and_the_next_job_starts_another(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "job.py").write_text(
        "import os, sys, time\nprint(os.getppid(), flush=True)\ntime.sleep(float(sys.argv[1]))\n"
    )
    backend = ProcessBackend(_python_for)
    try:
        first = await backend.launch(Runtime(PYTHON), [PYTHON, "job.py", "60"], src, WARM, {}, [])
        zygote = int(await first.output.readline())
        os.kill(zygote, signal.SIGKILL)
        _, code = await _output(first)
        assert code == -signal.SIGKILL  # gone with its zygote, as a cold job with its agent
        second = await backend.launch(Runtime(PYTHON), [PYTHON, "job.py", "0"], src, WARM, {}, [])
        out, code = await _output(second)
        assert code == 0 and int(out) != zygote
    finally:
        backend.close()


async def test_many_jobs_that_end_at_once_each_get_their_own_exit(tmp_path: Path) -> None:
    """A job can end before its start is answered: its exit is already awaited by then."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "job.py").write_text("import sys\nsys.exit(int(sys.argv[1]))\n")
    backend = ProcessBackend(_python_for)
    try:

        async def one(n: int) -> int:
            argv = [PYTHON, "job.py", str(n)]
            return (await _output(await backend.launch(Runtime(PYTHON), argv, src, WARM, {}, [])))[
                1
            ]

        assert await asyncio.gather(*(one(n) for n in range(40))) == list(range(40))
    finally:
        backend.close()


async def test_a_job_forked_after_its_launch_gave_up_runs_nothing_of_the_job(
    tmp_path: Path,
) -> None:
    """A zygote that answers too late must not run the job (the agent starts it cold once it
    gave up waiting): the child it forks finds its go pipe closed and leaves before running
    anything, however fast the job would have been; the zygote answers again after."""
    from cairn.services.agent._warm import Zygote

    src = tmp_path / "src"
    src.mkdir()
    marker = tmp_path / "ran"
    (src / "job.py").write_text(f"open({str(marker)!r}, 'a').write('x')\n")
    env = {**os.environ, **WARM}
    zygote = Zygote(PYTHON, env, lambda argv: argv, answer_s=0.5)
    try:
        _, output, exited, go = await zygote.launch(["job.py"], src, env)
        os.write(go, b"1")
        os.close(go)
        os.close(output)
        assert await exited == 0 and marker.read_text() == "x"
        marker.unlink()
        assert zygote._proc is not None
        os.kill(zygote._proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(TimeoutError):
                await zygote.launch(["job.py"], src, env)
            assert not zygote.answering
        finally:
            os.kill(zygote._proc.pid, signal.SIGCONT)
        async with asyncio.timeout(30):  # the late child forked, reported and gone
            while not zygote.answering or zygote._exits:
                await asyncio.sleep(0.01)
        assert not marker.exists()
        _, output, exited, go = await zygote.launch(["job.py"], src, env)
        os.write(go, b"1")
        os.close(go)
        os.close(output)
        assert await exited == 0 and marker.read_text() == "x"
    finally:
        zygote.close()


async def test_a_zygote_that_does_not_answer_is_passed_by_until_it_is_replaced(
    tmp_path: Path,
) -> None:
    """Its job starts cold after ``warm_answer_s``, the next one at once; once the stopped
    zygote is gone, the next job is forked by a new one."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "job.py").write_text("import os\nprint(os.getppid(), flush=True)\n")
    backend = ProcessBackend(_python_for, warm_answer_s=0.5)

    async def parent() -> int:
        launched = await backend.launch(Runtime(PYTHON), [PYTHON, "job.py"], src, WARM, {}, [])
        out, code = await _output(launched)
        assert code == 0
        return int(out)

    try:
        zygote = await parent()
        zygotes = list(backend._zygotes.values())
        os.kill(zygote, signal.SIGSTOP)
        assert await parent() == os.getpid()  # cold: after the wait
        assert not zygotes[0].answering
        assert await parent() == os.getpid()  # cold: at once
        os.kill(zygote, signal.SIGKILL)
        async with asyncio.timeout(30):
            while not zygotes[0].answering:  # its end read: the next use starts another
                await asyncio.sleep(0.01)
        assert await parent() not in (zygote, os.getpid())
    finally:
        backend.close()
