"""Snapshots: reproducible archives with ignore files pruned, and an unpacker that refuses
hostile members before writing anything (more hostile archives: tests/test_hostile_inputs.py)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from cairn.errors import InvalidInput, PayloadTooLarge
from cairn.snapshot import SnapshotRefused, digest_of, pack, unpack


def _tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "train.py").write_text("print('hi')\n")
    (root / "pkg" / "util.py").write_text("X = 1\n")
    (root / "data").mkdir()
    (root / "data" / "huge.bin").write_bytes(b"\0" * 10_000)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref\n")
    (root / ".gitignore").write_text("data/\n*.log\n")
    (root / "run.log").write_text("noise\n")
    os.symlink("pkg/util.py", root / "link.py")
    return root


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def test_pack_prunes_ignored_paths_and_is_reproducible(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    first = pack(root)
    assert _names(first) == [".gitignore", "link.py", "pkg", "pkg/util.py", "train.py"]
    os.utime(root / "train.py", (1, 1))  # times do not matter, content does
    assert digest_of(pack(root)) == digest_of(first)
    (root / "train.py").write_text("print('changed')\n")
    assert digest_of(pack(root)) != digest_of(first)
    (root / ".cairnignore").write_text("pkg/\n")  # .cairnignore replaces .gitignore
    assert "pkg/util.py" not in _names(pack(root)) and "data/huge.bin" in _names(pack(root))


def test_pack_refuses_links_out_of_the_tree_and_oversized_trees(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", root / "escape")
    with pytest.raises(InvalidInput, match="leads out"):
        pack(root)
    (root / "escape").unlink()
    with pytest.raises(PayloadTooLarge, match=r"\.cairnignore"):
        pack(root, max_bytes=10)


def test_a_packed_tree_unpacks_to_the_same_files(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    archive = tmp_path / "s.tar.gz"
    archive.write_bytes(pack(root))
    unpack(archive, tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "util.py").read_text() == "X = 1\n"
    assert os.readlink(tmp_path / "out" / "link.py") == "pkg/util.py"


def _hostile(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if data else None)
    return archive


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (_member("../evil.txt"), "leaves"),
        (_member("a/../../evil.txt"), "leaves"),
        (_member("/etc/evil.txt"), "leaves"),
        (_member("up", tarfile.SYMTYPE, "../../etc/passwd"), "links out"),
        (_member("abs", tarfile.SYMTYPE, "/etc/passwd"), "links out"),
        (_member("hard", tarfile.LNKTYPE, "fine.txt"), "hard link"),
        (_member("dev", tarfile.CHRTYPE), "device"),
        (_member("pipe", tarfile.FIFOTYPE), "device"),
    ],
)
def test_hostile_members_are_refused_and_nothing_is_written(
    tmp_path: Path, member: tarfile.TarInfo, why: str
) -> None:
    archive = _hostile(tmp_path, member, b"x" if member.isfile() else b"")
    target = tmp_path / "out"
    with pytest.raises(SnapshotRefused, match=why):
        unpack(archive, target)
    assert not target.exists()  # unpacked beside it, renamed only when complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar"]  # nothing left over


def test_a_size_bomb_is_refused(tmp_path: Path) -> None:
    archive = _hostile(tmp_path, _member("big.bin"), b"x" * 5000)
    with pytest.raises(SnapshotRefused, match="expands past"):
        unpack(archive, tmp_path / "out", max_bytes=1000)
    with pytest.raises(SnapshotRefused, match="not a readable archive"):
        (tmp_path / "junk").write_bytes(b"not a tar at all")
        unpack(tmp_path / "junk", tmp_path / "out2")
