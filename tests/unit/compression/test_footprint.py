"""Folder size, gzip size and stored parameters of an artifact."""

from __future__ import annotations

from pathlib import Path

from recops.compression.footprint import directory_bytes, gzip_bytes, saved_model_params
from recops.training import TrainResult


def test_sizes_count_every_file_and_gzip_shrinks_repetition(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"\0" * 10_000)
    (folder / "sub" / "b.bin").write_bytes(b"x" * 5_000)
    assert directory_bytes(folder) == 15_000
    packed = gzip_bytes(folder)
    assert 0 < packed < 1_000


def test_saved_model_params_counts_the_float_model(tiny_two_tower: TrainResult) -> None:
    params, nonzero = saved_model_params(tiny_two_tower.model_dir)
    assert params > 0 and 0 < nonzero <= params
