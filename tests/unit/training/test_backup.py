"""Backup verification without training: missing, incomplete and unreadable state.

The damaged-checkpoint cases that need a real training run live in
``tests/reliability/test_train_resume.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from recops.errors import CheckpointCorruptError
from recops.training.backup import prepare_backup, verify_backup


def test_no_backup_means_a_fresh_start(tmp_path: Path) -> None:
    assert verify_backup(tmp_path / "backup") is None
    (tmp_path / "backup" / "chief").mkdir(parents=True)
    assert verify_backup(tmp_path / "backup") is None


def test_checkpoint_without_its_state_file_is_named(tmp_path: Path) -> None:
    ckpt = tmp_path / "backup" / "chief"
    ckpt.mkdir(parents=True)
    (ckpt / "ckpt-1.index").write_bytes(b"x")
    with pytest.raises(CheckpointCorruptError, match="state file .*checkpoint is missing"):
        verify_backup(tmp_path / "backup")
    # A save killed before its rename leaves only a temp folder: nothing to resume.
    (ckpt / "ckpt-1.index").unlink()
    (ckpt / "ckpt-1_temp").mkdir()
    assert verify_backup(tmp_path / "backup") is None


def test_missing_index_is_named(tmp_path: Path) -> None:
    ckpt = tmp_path / "backup" / "chief"
    ckpt.mkdir(parents=True)
    (ckpt / "checkpoint").write_text('model_checkpoint_path: "ckpt-3"\n')
    with pytest.raises(CheckpointCorruptError, match=r"ckpt-3\.index is missing"):
        verify_backup(tmp_path / "backup")


def test_early_stopping_state_is_checked(tmp_path: Path) -> None:
    state_dir = tmp_path / "backup" / "early_stopping"
    state_dir.mkdir(parents=True)
    (state_dir / "state-00000.json").write_text(json.dumps({"weights_file": "best-00000.npz"}))
    with pytest.raises(CheckpointCorruptError, match="best-00000.npz named by"):
        verify_backup(tmp_path / "backup")
    (state_dir / "state-00000.json").write_text("{not json")
    with pytest.raises(CheckpointCorruptError, match="state-00000.json is unreadable"):
        verify_backup(tmp_path / "backup")


def test_prepare_backup_discards_only_when_asked(tmp_path: Path) -> None:
    state_dir = tmp_path / "backup" / "early_stopping"
    state_dir.mkdir(parents=True)
    (state_dir / "state-00000.json").write_text("{not json")
    with pytest.raises(CheckpointCorruptError):
        prepare_backup(tmp_path / "backup", discard_corrupt=False)
    assert state_dir.is_dir()
    assert prepare_backup(tmp_path / "backup", discard_corrupt=True) is None
    assert not (tmp_path / "backup").exists()
