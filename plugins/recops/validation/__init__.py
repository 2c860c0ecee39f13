"""Data contracts: validate interaction partitions (and the tables they join to) before use.

New data lands in ``staging/date=YYYY-MM-DD/part-0.parquet``; ``validate_and_publish``
publishes it into ``interactions/`` or quarantines it with its report and fails naming
every blocking check. See ``docs/data_contracts.md``. Nothing heavy is imported here.

- ``schema``: the published tables' columns and dtypes, derived from a dataset's layout.
- ``contract``: ``ContractConfig`` (thresholds, severities), ``ValidateConfig``, the result,
  ``contract_spec`` (the dataset spec the suites are generated from).
- ``checks``: ``Check``, one evaluated check flattened for the report and the message.
- ``tables``: reading a table from the very bytes that are hashed.
- ``suites``: the Great Expectations suites generated from the spec, running them, the
  Data Docs.
- ``drift``: the reference window, the row-count band, PSI, new-id shares and the
  new-value share of each categorical attribute.
- ``quarantine``: writing the failing report, the quarantine folder, the error.
- ``validate``: the entry points ``validate_partition``, ``validate_and_publish``,
  ``validate_history``.
"""

from __future__ import annotations

from recops.errors import DataValidationError
from recops.validation.contract import (
    ContractConfig,
    ValidateConfig,
    ValidationResult,
    contract_spec,
)
from recops.validation.drift import psi
from recops.validation.validate import (
    validate_and_publish,
    validate_history,
    validate_partition,
)

__all__ = [
    "ContractConfig",
    "DataValidationError",
    "ValidateConfig",
    "ValidationResult",
    "contract_spec",
    "psi",
    "validate_and_publish",
    "validate_history",
    "validate_partition",
]
