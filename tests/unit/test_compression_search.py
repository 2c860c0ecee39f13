"""Compression as a gated search on a tiny trained model: each variant family keeps the
serving contract, int8 tables match the float model, failures are contained, and the
selection picks the best variant within budget or falls back to the float model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from _tiny_data import TinyData
from recops.compression import (
    SelectConfig,
    VariantConfig,
    VariantResult,
    compress_variant,
    pareto_front,
    select_variant,
)
from recops.config import RETRIEVAL_K
from recops.evaluation import EvalConfig, evaluate
from recops.training import TrainResult

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

DIM = 16
#: One variant per family (pruning, clustering, int8/fp16 tables, distillation + int8,
#: TFLite PTQ); the rest of the registry shares these code paths.
FAMILIES = (
    "prune_80",
    "cluster_16",
    "int8_tables",
    "fp16_tables",
    "distill_d32_int8",
    "ptq_dynamic",
)
CONTRACT = {"serving_default", "user_embedding", "item_embeddings"}


@pytest.fixture(scope="module")
def data(tiny_data: TinyData) -> TinyData:
    return tiny_data


@pytest.fixture(scope="module")
def trained(tiny_two_tower: TrainResult) -> TrainResult:
    return tiny_two_tower


def _config(data: TinyData, trained: TrainResult, variant: str, output_dir: Path) -> VariantConfig:
    return VariantConfig(
        variant=variant,
        train_dir=str(Path(trained.model_dir).parent),
        training_set_uri=data.training_set_uri,
        split_uri=trained.split_uri,
        users_uri=data.users_uri,
        items_uri=data.items_uri,
        output_dir=str(output_dir),
        batch_size=128,
        fine_tune_epochs=2,
        distill_epochs=2,
        calibration_rows=64,
    )


@pytest.fixture(scope="module")
def variants(
    data: TinyData, trained: TrainResult, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, VariantResult]:
    root = tmp_path_factory.mktemp("variants")
    return {v: compress_variant(_config(data, trained, v, root / v)) for v in FAMILIES}


@pytest.fixture(scope="module")
def float_ndcg(data: TinyData, trained: TrainResult) -> float:
    return evaluate(
        EvalConfig(
            model_dir=trained.model_dir, split_uri=trained.split_uri, users_uri=data.users_uri
        )
    ).ndcg_at_k


def _serve(model_dir: str, user_ids: np.ndarray, data: TinyData) -> dict[str, np.ndarray]:
    import pandas as pd
    import tensorflow as tf

    users = pd.read_parquet(data.users_uri).set_index("user_id").reindex(user_ids)
    # Unknown users still come with a profile; their id hits the OOV row.
    users = users.fillna({"age": 30, "gender": "M", "occupation": "engineer"})
    model = tf.saved_model.load(model_dir)
    out = model.signatures["serving_default"](
        user_id=tf.constant(user_ids, tf.int64),
        age=tf.constant(users["age"].to_numpy().astype(np.int64), tf.int64),
        gender=tf.constant(users["gender"].to_numpy().astype(str)),
        occupation=tf.constant(users["occupation"].to_numpy().astype(str)),
    )
    return {name: value.numpy() for name, value in out.items()}


@pytest.mark.parametrize("variant", FAMILIES)
def test_variant_keeps_the_serving_contract(
    variant: str, variants: dict[str, VariantResult], data: TinyData
) -> None:
    import tensorflow as tf

    result = variants[variant]
    assert result.status == "ok", result.reason
    model = tf.saved_model.load(result.model_dir)
    assert set(model.signatures) == CONTRACT
    out = _serve(result.model_dir, np.array([1, 5, 9999]), data)  # 9999: unknown user
    assert out["item_ids"].dtype == np.int64 and out["item_ids"].shape == (3, RETRIEVAL_K)
    assert out["scores"].dtype == np.float32 and out["scores"].shape == (3, RETRIEVAL_K)
    assert np.all(np.diff(out["scores"], axis=1) <= 1e-6)  # best first
    embedding = model.signatures["user_embedding"](
        user_id=tf.constant([1], tf.int64),
        age=tf.constant([30], tf.int64),
        gender=tf.constant(["M"]),
        occupation=tf.constant(["engineer"]),
    )["embedding"]
    catalogue = model.signatures["item_embeddings"]()
    assert catalogue["item_ids"].shape == (data.n_items,)
    assert catalogue["embeddings"].shape == (data.n_items, embedding.shape[1])
    assert np.isfinite(catalogue["embeddings"].numpy()).all()
    assert 0 < result.ndcg_at_10 <= 1 and 0 < result.recall_at_10 <= 1  # type: ignore[operator]
    assert 0 < result.gzip_bytes < result.saved_model_bytes and result.params > 0


def test_families_record_what_they_serve(variants: dict[str, VariantResult]) -> None:
    ptq = variants["ptq_dynamic"]
    assert ptq.serves == "tflite" and ptq.quality_from == "tflite"
    assert ptq.tflite_uri is not None and Path(ptq.tflite_uri).stat().st_size == ptq.tflite_bytes
    assert (Path(ptq.tflite_uri).parent / "spec.json").is_file()
    # A TFLite variant leaves TF Serving on the float SavedModel.
    assert Path(ptq.model_dir).parent.name == "train"
    prune = variants["prune_80"]
    assert prune.serves == "saved_model" and prune.tflite_uri is None
    # Sparsity is measured over every stored weight; the candidate matrix stays dense.
    assert 0.2 < prune.sparsity < 0.8
    for result in variants.values():
        assert (Path(result.model_dir).parent / "_SUCCESS").is_file()


def test_int8_tables_match_float_top_k_and_shrink(
    variants: dict[str, VariantResult], trained: TrainResult, data: TinyData
) -> None:
    import tensorflow as tf

    users = np.arange(1, data.n_users + 1)
    base = _serve(trained.model_dir, users, data)["item_ids"][:, :10]
    int8 = _serve(variants["int8_tables"].model_dir, users, data)["item_ids"][:, :10]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(base, int8, strict=True)])
    assert overlap >= 0.9
    float_items = tf.saved_model.load(trained.model_dir).signatures["item_embeddings"]()
    int8_items = tf.saved_model.load(variants["int8_tables"].model_dir).signatures[
        "item_embeddings"
    ]()
    # Per-row scales bound the error at half a step of each row's largest value.
    error = np.abs(float_items["embeddings"].numpy() - int8_items["embeddings"].numpy())
    assert error.max() <= 0.5 / 127 + 1e-6
    float_result = _float_sizes(trained)
    assert variants["int8_tables"].gzip_bytes < variants["fp16_tables"].gzip_bytes
    assert variants["fp16_tables"].gzip_bytes < float_result


def _float_sizes(trained: TrainResult) -> int:
    from recops.compression import gzip_bytes

    return gzip_bytes(Path(trained.model_dir))


def test_unknown_variant_is_recorded_not_raised(
    data: TinyData, trained: TrainResult, tmp_path: Path
) -> None:
    result = compress_variant(_config(data, trained, "no_such_variant", tmp_path / "v"))
    assert result.status == "failed" and "unknown variant 'no_such_variant'" in result.reason
    stored = json.loads((tmp_path / "v" / "result.json").read_text())
    assert stored["status"] == "failed"
    assert not (tmp_path / "v" / "_SUCCESS").exists()  # a retry tries again
    assert not (tmp_path / "v" / "_staging").exists()


def test_broken_variant_input_is_contained(
    data: TinyData, trained: TrainResult, tmp_path: Path
) -> None:
    config = _config(data, trained, "int8_tables", tmp_path / "v")
    broken = VariantConfig(**{**config.to_dict(), "items_uri": str(tmp_path / "missing.parquet")})
    result = compress_variant(broken)
    assert result.status == "failed"
    assert "FileNotFoundError" in result.reason and "missing.parquet" in result.reason
    assert result.model_dir == "" and result.ndcg_at_10 is None


def test_incomplete_train_dir_still_raises(
    data: TinyData, trained: TrainResult, tmp_path: Path
) -> None:
    config = _config(data, trained, "int8_tables", tmp_path / "v")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        compress_variant(
            VariantConfig(**{**config.to_dict(), "train_dir": str(tmp_path / "nowhere")})
        )


def test_completed_variant_is_returned_as_is(
    variants: dict[str, VariantResult], data: TinyData, trained: TrainResult
) -> None:
    done = variants["int8_tables"]
    again = compress_variant(_config(data, trained, "int8_tables", Path(done.model_dir).parent))
    assert again == done


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


def test_pareto_front_keeps_only_undominated_points() -> None:
    # (quality, cost): b dominates d; a, b, c trade off.
    points = [(0.30, 10.0), (0.28, 5.0), (0.20, 1.0), (0.27, 6.0), (0.30, 12.0)]
    assert pareto_front(points) == [0, 1, 2]


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
