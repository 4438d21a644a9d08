"""The built wheel ships one import namespace, ``cairn``, and nothing else."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_only_cairn(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("cairn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"cairn"}
    assert "cairn/__init__.py" not in names  # a namespace spread over proto/, shared/, services/
    for module in (
        "cairn/proto/events.py",
        "cairn/bus/_store.py",
        "cairn/services/tracking/_service.py",
        "cairn/proto/schemas/envelope.json",
        "cairn/py.typed",
    ):
        assert module in names, module
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "cairn = cairn.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
