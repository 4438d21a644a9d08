"""Phase lines: what an agent tells the person waiting while it prepares a job reaches the
job's log stream in order, from the loop and from worker threads; an image build's stream
becomes phase lines (the layers' ids left out) and its error the build's failure."""

from __future__ import annotations

import asyncio

from cairn.services.agent._backends import _tell_build
from cairn.services.agent._phases import PhaseLines, phase, reporting


async def test_phase_lines_keep_their_order_from_the_loop_and_from_threads() -> None:
    shipped: list[bytes] = []

    async def ship(line: bytes) -> None:
        await asyncio.sleep(0)
        shipped.append(line)

    def build() -> None:  # the environment builder, in a worker thread
        for i in range(50):
            phase(f"step {i}")

    phase("nowhere: no step is being reported")
    async with PhaseLines(ship) as lines:
        with reporting(lines):
            phase("first")
            await asyncio.to_thread(build)
            phase("  last\n  ")
    phase("after: not reported")
    expected = ["first", *(f"step {i}" for i in range(50)), "last"]
    assert shipped == [f"[cairn] {text}\n".encode() for text in expected]


def test_an_image_builds_stream_becomes_phase_lines() -> None:
    told: list[str] = []
    chunks = [
        {"stream": "Step 1/3 : FROM cairn-base:bookworm\n"},
        {"stream": " ---> 1f2e3d4c5b6a\n"},
        {"stream": "Step 2/3 : RUN pip install tinypkg\n"},
        {"stream": "\x1b[91mSuccessfully installed tinypkg-0.1\n\x1b[0m\n"},
        {"stream": "Removing intermediate container 400fc9faf5ad\n"},
        {"aux": {"ID": "sha256:abc"}},
    ]
    with reporting(told.append):
        assert _tell_build(chunks) is None
        failed = _tell_build(
            [{"stream": "Step 1/3 : FROM x\n"}, {"error": "pip failed", "errorDetail": {}}]
        )
    assert told == [
        "Step 1/3 : FROM cairn-base:bookworm",
        "Step 2/3 : RUN pip install tinypkg",
        "Successfully installed tinypkg-0.1",
        "Step 1/3 : FROM x",
    ]
    assert failed == "Step 1/3 : FROM x\npip failed"
