"""Tests for the contract's config: severities and thresholds are checked on creation."""

from __future__ import annotations

import pytest
from recops.errors import ParamError
from recops.validation import ContractConfig


def test_contract_config_rejects_bad_severity_and_thresholds() -> None:
    with pytest.raises(ValueError, match=r"rating_psi_severity='block'"):
        ContractConfig(rating_psi_severity="block")
    with pytest.raises(ValueError, match="row_count_factor=0.5"):
        ContractConfig(row_count_factor=0.5)
    contract = ContractConfig(warn_only=["users.expect_column_values_to_be_in_set.gender"])  # type: ignore[arg-type]
    assert contract.warn_only == ("users.expect_column_values_to_be_in_set.gender",)
    assert ContractConfig.from_dict(contract.to_dict()) == contract


def test_contract_config_errors_are_permanent() -> None:
    with pytest.raises(ParamError, match="history_days, item_top_k and drift_min_rows"):
        ContractConfig(history_days=0)
