"""Atomic file and folder writes: the one place recops turns bytes into files.

Every stage is a transaction: a reader (another task, the model server, a retry) sees
the old file or the new one, never half of either. A file is written to a temporary name
beside its target (same filesystem, so the rename is atomic), flushed, and moved over
the target with ``os.replace``; a folder is built in a staging folder beside its target
and renamed into place. On any error the temporary is removed and the target is as it
was.

This module is a leaf: it imports nothing from recops, so every module may use it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "SUCCESS_MARKER",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "locked",
    "publish_dir",
    "sha256_file",
    "staging_dir",
    "write_if_changed",
]

#: Empty file written last into a finished output folder; its presence means "complete".
SUCCESS_MARKER = "_SUCCESS"


def atomic_write_bytes(
    path: Path, payload: bytes, *, mode: int = 0o644, fsync: bool = False
) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename.

    Args:
        path: The target file; its parent folders are created.
        payload: The bytes to write.
        mode: Permission bits of the result (``mkstemp`` would leave 0600).
        fsync: Flush the data to disk before the rename, for files a crash must not
            leave empty (serving configs, ledgers).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique temporary name per writer: several processes (multi-worker training, a
    # retried task beside a zombie) may write the same target at once.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, *, fsync: bool = False) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see ``atomic_write_bytes``)."""
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: Path, payload: Any, *, indent: int | None = 2) -> None:
    """Write ``payload`` as sorted JSON (with a final newline) to ``path`` atomically.

    Values JSON cannot hold (dates, paths) are written as their ``str``.
    """
    text = json.dumps(payload, indent=indent, sort_keys=True, default=str) + "\n"
    atomic_write_text(path, text)


def write_if_changed(path: Path, payload: bytes) -> bool:
    """Write ``payload`` atomically unless ``path`` already holds exactly these bytes.

    Idempotent re-runs then leave files (and their modification times) untouched.

    Returns:
        True when the file was (re)written, False when identical bytes were already there.
    """
    if path.is_file() and path.read_bytes() == payload:
        return False
    atomic_write_bytes(path, payload)
    return True


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (training sets can be gigabytes)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A fresh staging folder beside ``target``, removed if the block raises.

    Use with ``publish_dir`` to replace a whole output folder in one rename.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging", dir=target.parent)
    )
    # mkdtemp makes 0700; a published folder is read by other processes and users (the
    # model server, a container), as a plain mkdir under the usual umask would allow.
    os.chmod(staging, 0o755)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish_dir(staging: Path, target: Path, *, marker: bool = False) -> Path:
    """Move a finished staging folder to ``target``, replacing what was there.

    Args:
        staging: A folder on the same filesystem as ``target`` (``staging_dir`` makes one).
        target: Where the folder should end up.
        marker: Write ``SUCCESS_MARKER`` into the folder before it is moved, so a reader
            that finds the marker knows every other file is complete.

    Returns:
        ``target``.
    """
    if marker:
        (staging / SUCCESS_MARKER).touch()
    if target.exists():
        # Two renames keep the window without a target to the time of one rmtree of the
        # old copy, which happens after the new folder is in place.
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
    return target


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    ``flock`` locks belong to the open file and every caller opens its own, so two
    threads of one process exclude each other as two processes on one host do.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
