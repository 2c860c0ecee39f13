"""Unit tests for ``recops.serving.rollout_staging``: installing and pruning version folders.

The folders here hold plain files (the copy does not read them as a SavedModel);
``check_saved_model`` on real SavedModels is covered by the roll-out integration tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from recops.errors import RolloutError
from recops.serving.rollout_staging import install_version, prune_disk, tree_digest
from recops.serving.servable import WARMUP_FILE


def _source(folder: Path, payload: bytes = b"graph") -> Path:
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(payload)
    (folder / "variables" / "variables.index").write_bytes(b"index")
    folder.chmod(0o755)
    return folder


def test_install_copies_with_warmup_and_leaves_no_staging(tmp_path: Path) -> None:
    source = _source(tmp_path / "export")
    version_dir = tmp_path / "models" / "m" / "3"
    assert install_version(source, version_dir, [b"record-1", b"record-2"]) is True
    assert (version_dir / "saved_model.pb").read_bytes() == b"graph"
    assert (version_dir / "variables" / "variables.index").read_bytes() == b"index"
    assert (version_dir / WARMUP_FILE).stat().st_size > 0
    assert sorted(p.name for p in version_dir.parent.iterdir()) == ["3"]
    assert version_dir.stat().st_mode & 0o777 == 0o755  # not the staging folder's 0700
    # The warmup file does not count: the same SavedModel is the same version.
    assert tree_digest(source) == tree_digest(version_dir)
    assert install_version(source, version_dir, [b"other"]) is False


def test_install_refuses_a_different_existing_version(tmp_path: Path) -> None:
    version_dir = tmp_path / "models" / "m" / "3"
    install_version(_source(tmp_path / "a"), version_dir, [])
    with pytest.raises(RolloutError, match="immutable"):
        install_version(_source(tmp_path / "b", b"other graph"), version_dir, [])
    assert (version_dir / "saved_model.pb").read_bytes() == b"graph"


def test_install_removes_its_staging_on_failure(tmp_path: Path) -> None:
    version_dir = tmp_path / "models" / "m" / "4"
    with pytest.raises(FileNotFoundError):
        install_version(tmp_path / "absent", version_dir, [])
    assert not version_dir.exists()
    assert list(version_dir.parent.iterdir()) == []


def test_prune_keeps_served_versions_and_other_files(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    for name in ("1", "2", "3", "notes"):
        (model_dir / name).mkdir(parents=True)
    (model_dir / "README").write_text("kept")
    prune_disk(model_dir, keep={2, 3})
    assert sorted(p.name for p in model_dir.iterdir()) == ["2", "3", "README", "notes"]
    prune_disk(tmp_path / "absent", keep=set())  # no folder: nothing to do
