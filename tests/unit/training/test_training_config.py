"""``TrainConfig`` checks its fields; ``identity`` leaves out the operational ones."""

from __future__ import annotations

from typing import Any

import pytest
from _tiny_data import TinyData
from recops.errors import ParamError
from recops.training import TrainConfig, TrainResult


def _config(**overrides: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "training_set_uri": "set.parquet",
        "users_uri": "users.parquet",
        "items_uri": "items.parquet",
        "spec_uri": "spec.yaml",
        "output_dir": "out",
    }
    return TrainConfig(**(settings | overrides))


def test_bad_protocol_is_rejected() -> None:
    with pytest.raises(ValueError, match="protocol='weekly'"):
        _config(protocol="weekly")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": 0}, "epochs=0 must be >= 1"),
        ({"temperature": 0.0}, "temperature=0.0 must be > 0"),
        ({"max_rows": 0}, "max_rows=0 must be >= 1 or None"),
        ({"early_stopping_patience": -1}, "early_stopping_patience=-1 must be >= 0"),
        ({"spec_uri": ""}, "spec_uri is empty"),
    ],
)
def test_bad_values_name_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ParamError, match=message):
        _config(**overrides)


def test_identity_leaves_out_operational_fields() -> None:
    config = _config(discard_corrupt_backup=True)
    assert "discard_corrupt_backup" not in config.identity()
    assert config.identity() == _config().identity()
    assert config.identity()["epochs"] == 15


def test_result_round_trips_through_json_dicts() -> None:
    result = TrainResult(
        model_dir="m", weights_uri="w", split_uri="s", strategy="MirroredStrategy",
        replicas=2, epochs_run=1, final_loss=1.0, resumed_from_epoch=0, train_rows=10,
        n_users=2, n_items=3, n_candidates=3, examples_per_s=1.0, seconds_per_epoch=1.0,
        k=10, valid_ndcg_at_10=[0.5],
    )  # fmt: skip
    assert TrainResult.from_dict(result.to_dict()) == result


def test_layout_comes_from_the_spec(tiny_data: TinyData) -> None:
    layout = _config(spec_uri=tiny_data.spec_uri).layout()
    assert layout.name == "tiny"
    assert [f.kind for f in layout.item_features] == ["text", "numeric", "multi_categorical"]
    assert layout.value_range == (1.0, 5.0)
