"""Tests for the contract's config: severities and thresholds are checked on creation."""

from __future__ import annotations

import pytest
from recops.errors import ParamError
from recops.validation import ContractConfig, ValidateConfig


def test_contract_config_rejects_bad_severity_and_thresholds() -> None:
    with pytest.raises(ValueError, match=r"weight_psi_severity='block'"):
        ContractConfig(weight_psi_severity="block")
    with pytest.raises(ValueError, match=r"new_value_severity='loud'"):
        ContractConfig(new_value_severity="loud")
    with pytest.raises(ValueError, match="row_count_factor=0.5"):
        ContractConfig(row_count_factor=0.5)
    with pytest.raises(ValueError, match=r"new_value_share_max=1.5 must lie in \[0, 1\]"):
        ContractConfig(new_value_share_max=1.5)
    contract = ContractConfig(warn_only=["users.expect_column_values_to_be_in_set.country"])  # type: ignore[arg-type]
    assert contract.warn_only == ("users.expect_column_values_to_be_in_set.country",)
    assert ContractConfig.from_dict(contract.to_dict()) == contract


def test_contract_config_errors_are_permanent() -> None:
    with pytest.raises(ParamError, match="history_days, item_top_k and drift_min_rows"):
        ContractConfig(history_days=0)


def test_validate_config_finds_the_spec_by_default() -> None:
    fields = {f: "x" for f in ("interactions_path", "users_path", "items_path", "report_dir")}
    config = ValidateConfig(**fields, interval_start=None, interval_end=None)  # type: ignore[arg-type]

    # "" is the spec of the environment's dataset, found when the validation runs.
    assert config.spec_uri == "" and config.to_dict()["spec_uri"] == ""
