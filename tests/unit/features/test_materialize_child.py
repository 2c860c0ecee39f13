"""Materialization in a child process (``recops.features.materialize_child``)."""

from __future__ import annotations

import fcntl
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from _pit_data import CRAFTED_END, DATASETS, applied_home, settings_for
from recops.errors import UnavailableError
from recops.features import recops_home_env
from recops.features.materialize_child import MaterializeProcess, writer_lock

_END = CRAFTED_END


def test_the_child_materializes_every_view_and_reports_their_ends(tmp_path: Path) -> None:
    settings, _, store = applied_home(tmp_path / "home", DATASETS[0])
    with writer_lock(settings) as lock, MaterializeProcess(settings, _END, lock=lock) as child:
        reached = child.result()
    with recops_home_env(settings):
        store.refresh_registry()
        views = {v.name: v for v in store.list_feature_views()}
    assert set(reached) == set(views)
    assert set(reached.values()) == {_END.isoformat()}
    for name, view in views.items():
        assert view.most_recent_end_time is not None, name


def test_a_failed_child_raises_a_retryable_error_with_its_output(tmp_path: Path) -> None:
    # The repo folder is missing: the child cannot open the store.
    settings = replace(settings_for(tmp_path / "home", DATASETS[0]), feature_repo=tmp_path / "no")
    with writer_lock(settings) as lock, MaterializeProcess(settings, _END, lock=lock) as child:
        with pytest.raises(UnavailableError, match="materializing the online store failed"):
            child.result()


_PARENT = """
import pickle, sys, time
from recops.features.materialize_child import MaterializeProcess, writer_lock
settings, end = pickle.loads(bytes.fromhex(sys.argv[1]))
with writer_lock(settings) as lock, MaterializeProcess(settings, end, lock=lock):
    print("started", flush=True)
    time.sleep(120)
"""


def test_a_killed_parents_child_keeps_the_lock_until_it_is_done(tmp_path: Path) -> None:
    """kill -9 of the task: its child finishes, and holds the writer lock until then."""
    settings, _, store = applied_home(tmp_path / "home", DATASETS[0])
    arg = pickle.dumps((settings, _END)).hex()
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, arg], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None and parent.stdout.readline().strip() == "started"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    path = settings.feast_dir / "writer.lock"
    with path.open("a+b") as other:
        # The child (still importing Feast) holds the lock its dead parent took.
        with pytest.raises(BlockingIOError):
            fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        deadline = time.monotonic() + 120
        while True:
            try:
                fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "the orphaned child never released the lock"
                time.sleep(0.2)
    # Once free, the orphan's work is whole: every view records its end.
    with recops_home_env(settings):
        store.refresh_registry()
        ends = {v.name: v.most_recent_end_time for v in store.list_feature_views()}
    assert ends and all(end is not None for end in ends.values()), ends
