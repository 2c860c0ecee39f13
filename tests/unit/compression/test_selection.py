"""The selection picks the best variant within budget or falls back to the float model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _tiny_data import TinyData
from recops.compression import SelectConfig, VariantResult, select_variant
from recops.compression.selection import _minimise
from recops.training import TrainResult
from recops_models.tf_env import use_legacy_keras

use_legacy_keras()


def _fake(real: VariantResult, name: str, ndcg: float, root: Path) -> str:
    """A result folder reusing a real variant's artifacts with a chosen NDCG@10."""
    folder = root / name
    folder.mkdir(parents=True)
    fake = VariantResult(**{**real.to_dict(), "variant": name, "ndcg_at_10": ndcg})
    (folder / "result.json").write_text(json.dumps(fake.to_dict()))
    return str(folder)


def _select(
    trained: TrainResult, data: TinyData, dirs: list[str], out: Path, **kw: object
) -> SelectConfig:
    return SelectConfig(
        train_dir=str(Path(trained.model_dir).parent),
        split_uri=trained.split_uri,
        users_uri=data.users_uri,
        variant_dirs=tuple(dirs),
        output_dir=str(out),
        latency_calls=5,
        warmup_calls=1,
        measure_memory=False,
        **kw,  # type: ignore[arg-type]
    )


def test_minimise_ties_within_tolerance_then_uses_the_next_key() -> None:
    rows = [
        {"name": "fast_big", "p99_ms_b1": 1.00, "gzip_bytes": 900.0},
        {"name": "slower_small", "p99_ms_b1": 1.10, "gzip_bytes": 100.0},
        {"name": "slow", "p99_ms_b1": 2.00, "gzip_bytes": 50.0},
    ]
    keys = ("p99_ms_b1", "gzip_bytes")
    assert _minimise(rows, keys, 0.15)["name"] == "slower_small"
    assert _minimise(rows, keys, 0.0)["name"] == "fast_big"


@pytest.mark.parametrize(
    "settings",
    [
        {"objective": ("gzip_bytes",)},
        # Default objective (p99 at batch 1, then gzip) with every latency counted as a
        # tie: gzip decides, so the outcome does not depend on timing noise.
        {"objective_tolerance": 1e6},
    ],
    ids=["gzip", "latency_tie_then_gzip"],
)
def test_select_picks_the_best_variant_within_budget(
    settings: dict[str, object],
    variants: dict[str, VariantResult],
    trained: TrainResult,
    data: TinyData,
    float_ndcg: float,
    tmp_path: Path,
) -> None:
    dirs = [
        # Smallest gzip of all, but 5 % worse: over the 1 % budget.
        _fake(variants["int8_tables"], "small_but_bad", float_ndcg * 0.95, tmp_path),
        # Within budget and smaller than the float model: the expected choice.
        _fake(variants["fp16_tables"], "within_budget", float_ndcg * 0.995, tmp_path),
        # Within budget but bigger than fp16 tables.
        _fake(variants["prune_80"], "bigger", float_ndcg, tmp_path),
        # A TFLite variant is tabled but never served, whatever its figures.
        _fake(variants["ptq_dynamic"], "edge_only", float_ndcg, tmp_path),
        str(tmp_path / "never_ran"),
    ]
    result = select_variant(_select(trained, data, dirs, tmp_path / "select", **settings))
    assert result.selected == "within_budget"
    assert result.model_dir == variants["fp16_tables"].model_dir
    assert "within the 1.00% budget" in result.selection_reason
    assert result.n_variants == 5 and result.n_failed == 1
    assert result.baseline_metrics["ndcg_at_10"] == pytest.approx(float_ndcg)
    assert result.selected_metrics["ndcg_rel_loss"] == pytest.approx(0.005)
    rows = json.loads(Path(result.table_uri).read_text())
    assert [r["name"] for r in rows][0] == "float" and len(rows) == 6
    for row in rows:
        if row["status"] == "ok":
            assert row["p99_ms_b1"] >= row["p50_ms_b1"] > 0 and row["rows_per_s_b64"] > 0
    assert "never_ran" in Path(result.table_md_uri).read_text()
    assert Path(result.pareto_png_uri).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_select_falls_back_to_float_when_none_qualifies(
    variants: dict[str, VariantResult],
    trained: TrainResult,
    data: TinyData,
    float_ndcg: float,
    tmp_path: Path,
) -> None:
    dirs = [
        _fake(variants["int8_tables"], "int8_bad", float_ndcg * 0.9, tmp_path),
        _fake(variants["distill_d32_int8"], "student_bad", float_ndcg * 0.98, tmp_path),
    ]
    result = select_variant(_select(trained, data, dirs, tmp_path / "select"))
    assert result.selected == "float" and result.model_dir == trained.model_dir
    assert "no SavedModel variant within" in result.selection_reason
    assert "int8_bad (+10.00%)" in result.selection_reason
    again = select_variant(_select(trained, data, dirs, tmp_path / "select"))
    assert again == result


@pytest.mark.slow
def test_select_measures_load_memory(
    variants: dict[str, VariantResult], trained: TrainResult, data: TinyData, tmp_path: Path
) -> None:
    dirs = [str(Path(variants["int8_tables"].model_dir).parent)]
    config = _select(trained, data, dirs, tmp_path / "select")
    result = select_variant(
        SelectConfig(**{**config.to_dict(), "measure_memory": True, "variant_dirs": tuple(dirs)})
    )
    rows = json.loads(Path(result.table_uri).read_text())
    assert all(row["load_rss_bytes"] > 0 for row in rows)
