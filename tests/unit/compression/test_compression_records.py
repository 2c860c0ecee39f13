"""The compression configs refuse bad knobs with ParamError; canonical dicts read back.

Named ``test_compression_records`` because ``test_records`` belongs to ``recops.records``.
"""

from __future__ import annotations

import pytest
from recops.compression.records import (
    MissingInputError,
    SelectConfig,
    VariantConfig,
    canonical,
)
from recops.errors import ParamError, PermanentError


def _variant(**kw: object) -> VariantConfig:
    return VariantConfig(
        variant="int8_tables",
        training_set_uri="ts",
        items_uri="i",
        output_dir="o",
        train_dir="t",
        split_uri="s",
        users_uri="u",
        **kw,  # type: ignore[arg-type]
    )


def _select(**kw: object) -> SelectConfig:
    return SelectConfig(
        train_dir="t",
        split_uri="s",
        users_uri="u",
        output_dir="o",
        **{"variant_dirs": (), **kw},  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "bad",
    [{"batch_size": 0}, {"learning_rate": 0.0}, {"distill_alpha": 1.5}],
)
def test_variant_config_refuses_bad_knobs(bad: dict[str, object]) -> None:
    with pytest.raises(ParamError, match=next(iter(bad))):
        _variant(**bad)


@pytest.mark.parametrize(
    "bad",
    [
        {"quality_budget": 1.0},
        {"objective": ("nope",)},
        {"objective": ()},
        {"objective_tolerance": -0.1},
        {"latency_calls": 1},
    ],
)
def test_select_config_refuses_bad_knobs(bad: dict[str, object]) -> None:
    with pytest.raises(ParamError, match="SelectConfig"):
        _select(**bad)


def test_canonical_reads_back_as_json_does() -> None:
    config = _select(variant_dirs=("a", "b"))
    assert canonical(config)["variant_dirs"] == ["a", "b"]
    assert canonical(config)["objective"] == ["p99_ms_b1", "gzip_bytes"]


def test_missing_input_is_permanent_and_a_file_not_found() -> None:
    assert issubclass(MissingInputError, PermanentError)
    assert issubclass(MissingInputError, FileNotFoundError)
    assert issubclass(ParamError, ValueError)
