"""recops.io: atomic writes leave the old file or the new one, never half of either."""

from __future__ import annotations

import hashlib
import json
import stat
import threading
import time
from pathlib import Path

import pytest
from recops import io


def test_atomic_writes_replace_and_leave_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.json"
    io.atomic_write_json(target, {"b": 1, "a": Path("/x")})
    assert json.loads(target.read_text()) == {"a": "/x", "b": 1}
    io.atomic_write_text(target, "new", fsync=True)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    io.atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        io.atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_write_if_changed_skips_identical_bytes(tmp_path: Path) -> None:
    target = tmp_path / "p.parquet"
    assert io.write_if_changed(target, b"x")
    mtime = target.stat().st_mtime_ns
    assert not io.write_if_changed(target, b"x")
    assert target.stat().st_mtime_ns == mtime
    assert io.write_if_changed(target, b"y")


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    target = tmp_path / "big"
    payload = b"0123456789" * 300_000
    target.write_bytes(payload)
    assert io.sha256_file(target, chunk=4096) == hashlib.sha256(payload).hexdigest()


def test_publish_dir_replaces_a_folder_whole(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with io.staging_dir(target) as staging:
        (staging / "a").write_text("1")
    io.publish_dir(staging, target, marker=True)
    assert sorted(p.name for p in target.iterdir()) == ["_SUCCESS", "a"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    with io.staging_dir(target) as staging:
        (staging / "b").write_text("2")
    io.publish_dir(staging, target)
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failed_staging_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), io.staging_dir(target) as staging:
        (staging / "half").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_locked_serialises_holders(tmp_path: Path) -> None:
    lock = tmp_path / "state" / "server.lock"
    order: list[str] = []

    def second() -> None:
        with io.locked(lock):
            order.append("second")

    with io.locked(lock):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        order.append("first")
    thread.join(timeout=10)
    assert order == ["first", "second"]
