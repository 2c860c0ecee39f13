"""The TFLite int8 edge artifacts run in the TFLite interpreter and agree with the
SavedModel.

Threshold: on the tiny model, the full-int8 PTQ artifact's top-10 must share on average
at least 70 % of its items with the float SavedModel's top-10 (measured here: ~90 %).
Int8 activations quantize the candidate scores to 256 levels, so near-ties reorder; a
broken conversion (wrong inputs, unscaled outputs) shares ~10 % at random.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _compression_setup import VariantConfigFactory, profiles, serve
from _tiny_data import TinyData
from recops.compression import VariantResult, compress_variant
from recops.compression.tflite import edge_features
from recops.config import RETRIEVAL_K
from recops.training import TrainResult
from recops_models.tf_env import use_legacy_keras

use_legacy_keras()

MIN_MEAN_OVERLAP = 0.7


def _variant(make: VariantConfigFactory, variant: str, output_dir: Path) -> VariantResult:
    # The shared fast config, calibrated on more rows: the overlap bound needs them.
    return compress_variant(replace(make(variant, output_dir), calibration_rows=256))


def _top10_tflite(tflite_uri: str, users: pd.DataFrame) -> np.ndarray:
    import tensorflow as tf
    from recops_models.two_tower import TwoTowerSpec

    spec = TwoTowerSpec.from_json((Path(tflite_uri).parent / "spec.json").read_text())
    interpreter = tf.lite.Interpreter(model_path=tflite_uri)
    runner = interpreter.get_signature_runner("serving_default")
    out = runner(**edge_features(spec, users))
    assert out["item_ids"].shape == (len(users), RETRIEVAL_K)
    assert out["scores"].shape == (len(users), RETRIEVAL_K)
    assert np.isfinite(out["scores"]).all()
    return np.asarray(out["item_ids"][:, :10])


def _top10_saved_model(model_dir: str, users: pd.DataFrame) -> np.ndarray:
    return np.asarray(serve(model_dir, users)["item_ids"][:, :10])


def _mean_overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b, strict=True)]))


def test_int8_tflite_top10_overlaps_the_saved_model(
    data: TinyData, trained: TrainResult, variant_config: VariantConfigFactory, tmp_path: Path
) -> None:
    result = _variant(variant_config, "ptq_int8", tmp_path / "ptq_int8")
    assert result.status == "ok", result.reason
    assert result.tflite_uri is not None and result.tflite_bytes
    # The edge artifact is much smaller than the float SavedModel it came from.
    assert result.tflite_bytes < result.saved_model_bytes
    users = profiles(data.users_uri, np.arange(1, data.n_users + 1))
    overlap = _mean_overlap(
        _top10_tflite(result.tflite_uri, users), _top10_saved_model(trained.model_dir, users)
    )
    assert overlap >= MIN_MEAN_OVERLAP
    assert result.quality_from == "tflite" and 0 < result.ndcg_at_10 <= 1  # type: ignore[operator]


@pytest.mark.slow
def test_qat_int8_artifact_runs_and_is_scored(
    data: TinyData, trained: TrainResult, variant_config: VariantConfigFactory, tmp_path: Path
) -> None:
    result = _variant(variant_config, "qat_int8", tmp_path / "qat_int8")
    assert result.status == "ok", result.reason
    assert result.tflite_uri is not None and result.fine_tune_loss is not None
    users = profiles(data.users_uri, np.arange(1, data.n_users + 1))
    top = _top10_tflite(result.tflite_uri, users)
    # QAT fine-tunes the towers, so its ranking may move; it must still be a ranking.
    assert all(len(set(row)) == 10 for row in top)
    assert result.quality_from == "tflite" and 0 < result.ndcg_at_10 <= 1  # type: ignore[operator]
