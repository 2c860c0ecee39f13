"""The contract's knobs and the stage's typed config and result.

``ContractConfig`` holds the thresholds and severities of the checks that are not plain
schema rules, ``ValidateConfig`` says what to validate and where reports and quarantined
files go, and ``ValidationResult`` is what a passing validation returns. ``contract_spec``
finds the dataset spec the suites are generated from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from recops.errors import ParamError
from recops.records import Record

if TYPE_CHECKING:
    from recops.dataset_spec import DatasetSpec

__all__ = [
    "DOCS_DIR",
    "REPORT_NAME",
    "SELF_CONTAINED_DOCS",
    "SEVERITIES",
    "ContractConfig",
    "ValidateConfig",
    "ValidationResult",
    "contract_spec",
]

#: The JSON report's file name, in the report folder and in quarantine.
REPORT_NAME = "validation.json"
#: The GX Data Docs folder inside the report folder.
DOCS_DIR = "data_docs"
#: The one-file page of the Data Docs inside ``DOCS_DIR``, which MLflow's viewer renders.
SELF_CONTAINED_DOCS = "data_docs_inline.html"
SEVERITIES: tuple[str, ...] = ("fail", "warn")


@dataclass(frozen=True, kw_only=True)
class ContractConfig(Record):
    """Thresholds and severities of the checks that are not plain schema rules.

    Structural checks (schema, dtypes, nulls, ranges, categoricals, uniqueness, items
    named by events, timestamps, empty partitions) fail by default, attribute constraints with
    the severity their spec gives; any of them can be downgraded to a warning by naming its
    check key in ``warn_only``. Volume and drift checks warn by default, except a weight
    PSI above ``weight_psi_extreme``, which always blocks. Events from users without a
    profile row warn (``unknown_user_severity``).

    Attributes:
        history_days: Trailing published partitions (before the interval) used as the
            row-count history and the drift reference window.
        row_count_factor: Today's rows must lie in ``[mean / f, mean * f]`` of the history.
        row_count_severity: ``fail`` or ``warn``.
        drift_min_rows: Drift checks are skipped (with a note) below this many rows today or
            in the reference window: PSI on a handful of events is noise.
        weight_psi_max: PSI of the event weight distribution (the explicit value, or the
            event-type mix) above which the check triggers.
        weight_psi_severity: ``fail`` or ``warn``.
        weight_psi_extreme: A weight PSI above this always blocks; None disables.
        item_psi_max: PSI of item popularity (top ``item_top_k`` items + "other").
        item_psi_severity: ``fail`` or ``warn``.
        item_top_k: Items of the reference window that get their own popularity bin.
        new_user_share_max: Share of today's distinct users unseen in the reference window.
        new_user_severity: ``fail`` or ``warn``.
        new_item_share_max: Share of today's distinct items unseen in the reference window.
        new_item_severity: ``fail`` or ``warn``.
        new_value_share_max: Per categorical user or item attribute: share of today's
            events whose value (any element, for a multi-valued one) was unseen in the
            reference window.
        new_value_severity: ``fail`` or ``warn``.
        unknown_user_severity: Events from users the users table has no row for (a user
            new since the users file, a key first seen by ``POST /v1/events``): ``warn``
            (served and trained without profile attributes) or ``fail``.
        allow_empty: Accept a partition with zero rows (blocked by default).
        warn_only: Check keys (``table.expectation_type[.column]``, as printed in the report's
            ``check`` field) whose failure only warns.

    Raises:
        recops.errors.ParamError: A severity or threshold is out of range (a ``ValueError``).
    """

    history_days: int = 14
    row_count_factor: float = 3.0
    row_count_severity: str = "warn"
    drift_min_rows: int = 50
    weight_psi_max: float = 0.2
    weight_psi_severity: str = "warn"
    weight_psi_extreme: float | None = 1.0
    item_psi_max: float = 0.5
    item_psi_severity: str = "warn"
    item_top_k: int = 20
    new_user_share_max: float = 0.5
    new_user_severity: str = "warn"
    new_item_share_max: float = 0.5
    new_item_severity: str = "warn"
    new_value_share_max: float = 0.2
    new_value_severity: str = "warn"
    unknown_user_severity: str = "warn"
    allow_empty: bool = False
    warn_only: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "row_count_severity",
            "weight_psi_severity",
            "item_psi_severity",
            "new_user_severity",
            "new_item_severity",
            "new_value_severity",
            "unknown_user_severity",
        ):
            value = getattr(self, name)
            if value not in SEVERITIES:
                raise ParamError(f"ContractConfig.{name}={value!r}: expected one of {SEVERITIES}")
        if self.history_days < 1 or self.item_top_k < 1 or self.drift_min_rows < 1:
            raise ParamError(
                "ContractConfig history_days, item_top_k and drift_min_rows must be >= 1"
            )
        if self.row_count_factor < 1:
            raise ParamError(
                f"ContractConfig.row_count_factor={self.row_count_factor} must be >= 1"
            )
        for name in ("new_user_share_max", "new_item_share_max", "new_value_share_max"):
            share = getattr(self, name)
            if not 0 <= share <= 1:
                raise ParamError(f"ContractConfig.{name}={share} must lie in [0, 1]")
        # Tuples keep the config hashable; a list from JSON is accepted and converted.
        object.__setattr__(self, "warn_only", tuple(self.warn_only))


@dataclass(frozen=True, kw_only=True)
class ValidateConfig(Record):
    """What to validate.

    Attributes:
        interactions_path: The partition, ``.../date=YYYY-MM-DD/part-0.parquet``. For
            :func:`validate_and_publish` this is the *staged* partition.
        users_path: ``users.parquet``; its ids are the allowed ``user_id`` values.
        items_path: ``items.parquet``; its ids are the allowed ``item_id`` values.
        interval_start: Start of the data interval (tz-aware, inclusive).
        interval_end: End of the data interval (tz-aware, exclusive).
        report_dir: Folder that receives ``validation.json`` and ``data_docs/``.
        quarantine_dir: Where rejected partitions go (``<quarantine_dir>/<date>/``); None
            disables quarantine.
        published_dir: The published ``interactions/`` folder: the history for the
            row-count band and drift checks, and where :func:`validate_and_publish` publishes.
            None skips history checks (recorded as a note).
        contract: Thresholds and severities.
        data_docs: Build GX Data Docs into ``<report_dir>/data_docs/``.
        spec_uri: The dataset spec the suites are generated from. ``""`` (the default):
            the ``spec.yaml`` an import left beside ``users_path`` (the dataset's data
            folder), else the spec of the dataset the environment's ``Settings`` name
            (``recops.layout.spec_path``).
    """

    interactions_path: str
    users_path: str
    items_path: str
    interval_start: datetime
    interval_end: datetime
    report_dir: str
    quarantine_dir: str | None = None
    published_dir: str | None = None
    contract: ContractConfig = field(default_factory=ContractConfig)
    data_docs: bool = True
    spec_uri: str = ""


@dataclass(frozen=True, kw_only=True)
class ValidationResult(Record):
    """Outcome of a passing validation (a failing one raises).

    ``warnings`` lists the checks that failed with severity ``warn``; ``drift`` holds the
    drift and volume metrics (None where a check was skipped, see ``notes``); ``dataset``
    names the spec the suites came from.
    """

    success: bool
    partition_uri: str
    partition_date: str
    n_rows: int
    n_expectations: int
    n_failed: int
    report_uri: str
    partition_sha256: str
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    drift: dict[str, float | None] = field(default_factory=dict)
    data_docs_uri: str = ""
    published: bool = False
    dataset: str = ""


def contract_spec(spec: DatasetSpec | str | Path | None = None) -> DatasetSpec:
    """The dataset spec a validation checks against.

    Args:
        spec: A loaded spec, a spec file, or None / ``""``: the spec of the dataset the
            environment's ``Settings`` name (its imported copy, else the shipped one).

    Raises:
        recops.errors.DataError: The spec is missing or invalid (names file and field).
    """
    from recops.dataset_spec import DatasetSpec, load_spec

    if isinstance(spec, DatasetSpec):
        return spec
    if spec:
        return load_spec(spec)
    from recops.config import Settings
    from recops.layout import active_spec

    return active_spec(Settings.from_env())
