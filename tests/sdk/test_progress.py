"""Bars of bytes: when they show, their totals, how they end, where a resumed transfer
starts, one bar for a model's files."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest

from cairn.data import open_datastore
from cairn.data._progress import PROGRESS_FROM, Progress, showing
from cairn.sdk import AsyncWorkspace


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _frames(err: str) -> list[str]:
    """tqdm's frames, in order (each redrawn after a carriage return)."""
    return [f.strip() for f in re.split(r"[\r\n]+", err) if "%|" in f]


def test_a_bar_shows_on_a_terminal_for_a_large_transfer_or_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stderr", _Tty())
    assert showing(None, PROGRESS_FROM) and not showing(None, PROGRESS_FROM - 1)
    assert not showing(False, PROGRESS_FROM) and not showing(None, 0)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a script's stderr: a file, a pipe
    assert not showing(None, 10 * PROGRESS_FROM)
    assert showing(True, 1) and not showing(True, 0)


def test_a_bar_ends_at_its_total_on_success_and_stays_where_it_was_on_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Progress(1000, "ok", show=True) as bar:
        bar.update(400)  # a file that shrank, or bytes counted short: the end says the total
    with pytest.raises(RuntimeError), Progress(1000, "broken", show=True) as bar:
        bar.update(300)
        bar.update(-100)  # a failed try's bytes, taken back
        raise RuntimeError
    frames = _frames(capsys.readouterr().err)
    assert [f for f in frames if f.startswith("ok")][-1].startswith("ok: 100%|")
    assert [f for f in frames if f.startswith("broken")][-1].startswith("broken:  20%|")


async def test_datastore_transfers_count_bytes_and_a_resumed_one_starts_at_what_is_there(
    ws: AsyncWorkspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"a" * 3_000_000)
    b.write_bytes(b"b" * 1_000_000)
    capsys.readouterr()
    await ws.datastores.upload("workspaceblobstore", [(a, "p/a.bin")], show_progress=True)
    frames = _frames(capsys.readouterr().err)
    assert "0%|" in frames[0] and "100%|" in frames[-1] and "3.00M/3.00M" in frames[-1]
    counted: list[int] = []  # a single file's bytes are counted as they are copied
    async with open_datastore(ws.client, "workspaceblobstore", ws.settings) as store:
        await store.put("q/a.bin", a, progress=counted.append)
        await store.get("q/a.bin", tmp_path / "a.copy", progress=counted.append)
    assert counted == [1 << 20, 1 << 20, 3_000_000 - 2 * (1 << 20)] * 2
    # again with b.bin: a.bin is there already (no overwrite), so the bar starts at its bytes
    pairs = [(a, "p/a.bin"), (b, "p/b.bin")]
    written = await ws.datastores.upload("workspaceblobstore", pairs, show_progress=True)
    assert [f.path for f in written] == ["p/b.bin"]
    frames = _frames(capsys.readouterr().err)
    assert " 75%|" in frames[0] and "3.00M/4.00M" in frames[0]
    assert "100%|" in frames[-1] and "4.00M/4.00M" in frames[-1]
    target = tmp_path / "back"
    (target / "p").mkdir(parents=True)
    (target / "p" / "b.bin").write_bytes(b"b" * 1_000_000)  # a download cut short, resumed
    got = await ws.datastores.download("workspaceblobstore", target, "p", show_progress=True)
    assert sorted(p.name for p in got) == ["a.bin", "b.bin"]
    frames = _frames(capsys.readouterr().err)
    assert " 25%|" in frames[0] and "100%|" in frames[-1] and "4.00M/4.00M" in frames[-1]
    assert (target / "p" / "a.bin").read_bytes() == a.read_bytes()


async def test_a_models_files_share_one_bar_and_a_default_shows_none_off_a_terminal(
    ws: AsyncWorkspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"w" * 2_000_000)
    (model / "config.json").write_text("{}")
    capsys.readouterr()
    staging, path = await ws.models.upload(model, show_progress=True)
    frames = _frames(capsys.readouterr().err)
    assert {f.split(":")[0] for f in frames} == {"model model"}
    assert "100%|" in frames[-1] and "2.00M/2.00M" in frames[-1]
    record = await ws.models.register("progress-model", path, staging_id=staging)
    await ws.models.download(record, tmp_path / "back")  # the default, off a terminal: quiet
    assert _frames(capsys.readouterr().err) == []
    assert (tmp_path / "back" / "model" / "weights.bin").stat().st_size == 2_000_000
