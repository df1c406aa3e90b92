"""The golden image: WAA's prepared storage folder, copied to local disk before the setup, with
heartbeats going on during the copy (issue 9, part 1)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from shard_runner import runner
from tests.shard_runner.conftest import HERE, FakeWaa, Receiver, Run

MIB = 1024 * 1024


def _tree(root: Path) -> dict[str, tuple[str, int]]:
    """relative path -> (sha256 or link target, mode) of everything under root."""
    found: dict[str, tuple[str, int]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = path.lstat()
        if path.is_symlink():
            found[rel] = ("-> " + os.readlink(path), 0)
        elif path.is_dir():
            found[rel] = ("dir", st.st_mode & 0o7777)
        else:
            found[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mode & 0o7777)
    return found


def _golden_image(root: Path) -> Path:
    """A small stand-in for WAA's prepared `storage` folder (data.img and friends)."""
    root.mkdir()
    block = hashlib.sha256(b"windows").digest() * (MIB // 32)
    (root / "data.img").write_bytes(block * 3)  # 3 MiB
    (root / "windows.boot").write_bytes(b"boot" * 1000)
    (root / "windows.boot").chmod(0o640)
    (root / "tools").mkdir()
    (root / "tools" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "tools" / "run.sh").chmod(0o755)
    (root / "tools" / "empty").mkdir()
    (root / "tools" / "readonly").mkdir()
    (root / "tools" / "readonly" / "ro.txt").write_text("read only")
    (root / "tools" / "readonly" / "ro.txt").chmod(0o444)
    (root / "tools" / "readonly").chmod(0o555)
    (root / "current.img").symlink_to("data.img")
    return root


def test_copy_replaces_leftovers_and_heartbeats_go_on_during_it(
    start_runner: Any, receiver: Receiver, fake_waa: FakeWaa, tmp_path: Path
) -> None:
    source = _golden_image(tmp_path / "golden")
    before = _tree(source)
    dest = tmp_path / "storage"
    # The last attempt's leftovers: a changed disk, stray files and folders.
    (dest / "tools" / "old").mkdir(parents=True)
    (dest / "data.img").write_bytes(b"the previous attempt's dirty disk")
    (dest / "leftover.qcow2").write_bytes(b"x" * 100)
    (dest / "tools" / "old" / "stale.txt").write_text("stale")
    dump = tmp_path / "setup-dump.json"
    total = sum(p.stat().st_size for p in source.rglob("*") if p.is_file() and not p.is_symlink())

    run: Run = start_runner(
        ["ok-1"],
        WAA_STORAGE_SOURCE=str(source),
        WAA_STORAGE_DIR=str(dest),
        # 1 MiB/s: the 3 MiB copy lasts long enough for several 0.1 s heartbeats.
        WAA_STORAGE_COPY_RATE_BYTES=str(MIB),
        WAA_HEARTBEAT_INTERVAL_SECONDS="0.1",
        WAA_SETUP_COMMAND=f"{sys.executable} {HERE / 'fake_setup.py'} ready {fake_waa.marker}",
        FAKE_SETUP_DUMP=str(dump),
    )

    assert run.wait() == runner.EXIT_OK, run.stderr
    assert receiver.invalid == []
    # A pristine copy: exactly the source, modes included; the leftovers are gone.
    assert _tree(dest) == before
    assert not (dest / "leftover.qcow2").exists()
    # The source was only read.
    assert _tree(source) == before
    # The setup started after the copy was complete.
    assert json.loads(dump.read_text())["storage"] == {
        rel: (source / rel).lstat().st_size
        for rel in before
        if before[rel][0] != "dir" and not (source / rel).is_symlink()
    } | {"current.img": (source / "current.img").lstat().st_size}

    beats = [m for m in receiver.of_kind("heartbeat") if "storage" in m]
    during = [b["storage"] for b in beats if not b["storage"]["done"]]
    after = [b["storage"] for b in beats if b["storage"]["done"]]
    # Heartbeats kept coming while the copy ran, each with its progress.
    copied = [s["copied_bytes"] for s in during]
    assert len({c for c in copied if 0 < c < total}) >= 2, copied
    assert copied == sorted(copied)
    assert all(b["storage"]["total_bytes"] == total for b in beats)
    # ... and after it, with its time.
    assert after and all(s["copied_bytes"] == total for s in after)
    assert len({s["seconds"] for s in after}) == 1 and after[0]["seconds"] > 0
    assert receiver.kinds()[0] == "heartbeat"  # "container started" comes before the copy
    assert "copied the golden image: 4 file(s), " + f"{total} bytes" in run.stderr
    assert "removed 3 leftover entr(ies)" in run.stderr
    summary = json.loads((run.output_dir / "summary.json").read_text())
    assert summary["storage"]["copied_bytes"] == total and summary["storage"]["files"] == 4


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_missing_golden_image_is_a_failure_naming_the_path(
    problem: str, start_runner: Any, receiver: Receiver, fake_waa: FakeWaa, tmp_path: Path
) -> None:
    source = tmp_path / "mnt" / "golden-storage"
    if problem == "empty":
        (source / "only-a-folder").mkdir(parents=True)
    run: Run = start_runner(
        ["ok-1"], WAA_STORAGE_SOURCE=str(source), WAA_STORAGE_DIR=str(tmp_path / "storage")
    )

    assert run.wait() == runner.EXIT_CONFIG
    [failure] = receiver.of_kind("failure")
    assert failure["failure"]["code"] == "storage_missing"
    assert f"WAA_STORAGE_SOURCE={source}" in failure["failure"]["message"]
    expected = "is empty" if problem == "empty" else "does not exist"
    assert expected in failure["failure"]["message"]
    assert failure["failure"]["permanent"] is False
    assert receiver.of_kind("finished")[0]["exit_code"] == runner.EXIT_CONFIG
    assert receiver.of_kind("task_result") == []
    assert not fake_waa.marker.exists()  # no setup without the image
    assert not (tmp_path / "storage").exists()  # nothing was cleared or created


def test_copy_storage_in_process_keeps_modes_and_streams(tmp_path: Path) -> None:
    source = _golden_image(tmp_path / "golden")
    progress = runner.CopyProgress()
    files, size, removed = runner.copy_storage(str(source), str(tmp_path / "dest"), progress)
    assert (files, removed) == (4, 0)
    assert _tree(tmp_path / "dest") == _tree(source)
    snap = progress.snapshot()
    assert snap["done"] is True and snap["copied_bytes"] == snap["total_bytes"] == size
    # The destination inside the source (or the reverse) is refused: the source is read-only.
    with pytest.raises(runner.StorageError, match="overlap"):
        runner.copy_storage(str(source), str(source / "tools" / "x"), runner.CopyProgress())
