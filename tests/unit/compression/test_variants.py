"""Each variant family keeps the serving contract, int8 tables match the float model,
failures are contained, and the registry agrees with the DAG's variant names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _compression_setup import FAMILIES, VariantConfigFactory, profiles, serve
from _tiny_data import TinyData
from recops.compression import VariantConfig, VariantResult, compress_variant
from recops.compression.variants import TFLITE_VARIANTS, VARIANTS, _builder
from recops.config import RETRIEVAL_K
from recops.errors import ParamError
from recops.params import VARIANT_NAMES
from recops.training import TrainResult
from recops_models.tf_env import use_legacy_keras

use_legacy_keras()

CONTRACT = {"serving_default", "user_embedding", "item_embeddings"}


def test_variants_match_the_param_names() -> None:
    # params keeps the names by value (no TensorFlow at DAG parse time): one list, two homes.
    assert sorted(VARIANTS) == sorted(VARIANT_NAMES)
    assert len(VARIANT_NAMES) == len(set(VARIANT_NAMES))
    assert TFLITE_VARIANTS <= set(VARIANTS)


def test_every_variant_has_a_builder() -> None:
    for name in VARIANTS:
        assert callable(_builder(name))
    with pytest.raises(ParamError, match="unknown variant 'nope'"):
        _builder("nope")


def _serve(model_dir: str, user_ids: np.ndarray, data: TinyData) -> dict[str, np.ndarray]:
    # Unknown users come with missing features; their id hits the OOV row.
    out: dict[str, np.ndarray] = serve(model_dir, profiles(data.users_uri, user_ids))
    return out


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
    embedding = serve(result.model_dir, profiles(data.users_uri, [1]), signature="user_embedding")[
        "embedding"
    ]
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
    variant_config: VariantConfigFactory, tmp_path: Path
) -> None:
    result = compress_variant(variant_config("no_such_variant", tmp_path / "v"))
    assert result.status == "failed" and "unknown variant 'no_such_variant'" in result.reason
    stored = json.loads((tmp_path / "v" / "result.json").read_text())
    assert stored["status"] == "failed"
    assert not (tmp_path / "v" / "_SUCCESS").exists()  # a retry tries again
    assert not (tmp_path / "v" / "_staging").exists()


def test_broken_variant_input_is_contained(
    variant_config: VariantConfigFactory, tmp_path: Path
) -> None:
    config = variant_config("int8_tables", tmp_path / "v")
    broken = VariantConfig(**{**config.to_dict(), "items_uri": str(tmp_path / "missing.parquet")})
    result = compress_variant(broken)
    assert result.status == "failed"
    # The class name in the reason is the reader's (FileNotFoundError before the error tree,
    # recops.tables.InputMissingError now, a FileNotFoundError subclass); the text is stable.
    assert "not found" in result.reason and "missing.parquet" in result.reason
    assert result.model_dir == "" and result.ndcg_at_10 is None


def test_incomplete_train_dir_still_raises(
    variant_config: VariantConfigFactory, tmp_path: Path
) -> None:
    config = variant_config("int8_tables", tmp_path / "v")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        compress_variant(
            VariantConfig(**{**config.to_dict(), "train_dir": str(tmp_path / "nowhere")})
        )


def test_completed_variant_is_returned_as_is(
    variants: dict[str, VariantResult], variant_config: VariantConfigFactory
) -> None:
    done = variants["int8_tables"]
    again = compress_variant(variant_config("int8_tables", Path(done.model_dir).parent))
    assert again == done
