"""Data contracts: validate interaction partitions (and the tables they join to) before use.

New data lands in ``staging/date=YYYY-MM-DD/part-0.parquet``; ``validate_and_publish``
publishes it into ``interactions/`` or quarantines it with its report and fails naming
every blocking check. See ``docs/data_contracts.md``. Nothing heavy is imported here.

- ``schema``: the published tables' columns, dtypes and allowed values; ``genre_mask``.
- ``contract``: ``ContractConfig`` (thresholds, severities), ``ValidateConfig``, the result.
- ``checks``: ``Check``, one evaluated check flattened for the report and the message.
- ``tables``: reading a table from the very bytes that are hashed.
- ``suites``: the Great Expectations suite per table, running them, the Data Docs.
- ``drift``: the reference window, the row-count band, PSI and new-id shares.
- ``quarantine``: writing the failing report, the quarantine folder, the error.
- ``validate``: the entry points ``validate_partition``, ``validate_and_publish``,
  ``validate_history``.
"""

from __future__ import annotations

from recops.errors import DataValidationError
from recops.validation.contract import ContractConfig, ValidateConfig, ValidationResult
from recops.validation.drift import psi
from recops.validation.schema import ML100K_OCCUPATIONS
from recops.validation.validate import (
    validate_and_publish,
    validate_history,
    validate_partition,
)

__all__ = [
    "ML100K_OCCUPATIONS",
    "ContractConfig",
    "DataValidationError",
    "ValidateConfig",
    "ValidationResult",
    "psi",
    "validate_and_publish",
    "validate_history",
    "validate_partition",
]
