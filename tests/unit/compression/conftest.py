"""Fixtures shared by the compression tests: one variant per family, built once.

The variants are session-scoped (on the session's tiny two-tower) so the variant and
selection tests reuse one build of each family instead of one per test module.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _compression_setup import FAMILIES, VariantConfigFactory
from _tiny_data import TinyData
from recops.compression import VariantConfig, VariantResult, compress_variant
from recops.evaluation import EvalConfig, evaluate
from recops.training import TrainResult


@pytest.fixture(scope="session")
def data(tiny_data: TinyData) -> TinyData:
    return tiny_data


@pytest.fixture(scope="session")
def trained(tiny_two_tower: TrainResult) -> TrainResult:
    return tiny_two_tower


@pytest.fixture(scope="session")
def variant_config(data: TinyData, trained: TrainResult) -> VariantConfigFactory:
    """``variant_config(variant, output_dir)``: a fast config on the tiny model."""

    def make(variant: str, output_dir: Path) -> VariantConfig:
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

    return make


@pytest.fixture(scope="session")
def variants(
    variant_config: VariantConfigFactory, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, VariantResult]:
    root = tmp_path_factory.mktemp("variants")
    return {v: compress_variant(variant_config(v, root / v)) for v in FAMILIES}


@pytest.fixture(scope="session")
def float_ndcg(data: TinyData, trained: TrainResult) -> float:
    return evaluate(
        EvalConfig(
            model_dir=trained.model_dir,
            split_uri=trained.split_uri,
            users_uri=data.users_uri,
            # Its times order each history the model's tower reads, as selection's do.
            training_set_uri=data.training_set_uri,
        )
    ).ndcg_at_k
