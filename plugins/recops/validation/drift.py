"""Volume and drift checks against the trailing published partitions.

``load_history`` reads the reference window (the published days before the interval);
``row_count_band`` turns its row counts into the band that ``recops.validation.suites``
checks; ``drift_checks`` compares today's partition with the window: PSI of the weight
distribution (the explicit value, or the event-type mix) and of item popularity, the
share of users and items never seen in it, and, per categorical user or item attribute,
the share of today's events whose value was never seen in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops_models.feature_defs import split_values

from recops.validation.checks import MAX_LISTED, Check
from recops.validation.contract import ContractConfig
from recops.validation.schema import KEY_COLUMNS, PARTITION_FILE

if TYPE_CHECKING:
    import pandas as pd
    from recops_models.feature_defs import FeatureDef

    from recops.layout import Layout

__all__ = [
    "History",
    "drift_checks",
    "load_history",
    "metric_check",
    "new_value_checks",
    "psi",
    "row_count_band",
    "weight_bins",
]

# Laplace-style pseudo-count per bin: keeps PSI finite when a bin is empty on one side.
_PSI_PSEUDO_COUNT = 0.5
#: Up to this many distinct reference weights, each value is its own PSI bin (a 1-5
#: rating, the event types' weights); above it the bins are reference deciles.
MAX_EXACT_BINS = 20
_QUANTILE_BINS = 10
#: Columns of a history partition the drift checks read.
_HISTORY_COLUMNS = ["user_id", "item_id", "weight"]
_CATEGORICAL_KINDS = frozenset({"categorical", "multi_categorical"})


@dataclass(frozen=True)
class History:
    """Published partitions before the interval: row counts and the drift reference."""

    days: list[str]
    counts: list[int]
    frame: pd.DataFrame | None
    notes: list[str]


def psi(expected: Any, actual: Any) -> float:
    """Population stability index of two count vectors over the same bins.

    ``sum((a - e) * ln(a / e))`` over bin shares, with a pseudo-count of 0.5 per bin so an
    empty bin on either side gives a large but finite value. Rules of thumb: < 0.1 stable,
    0.1-0.25 moderate shift, > 0.25 large shift.
    """
    import numpy as np

    e = np.asarray(expected, dtype=float) + _PSI_PSEUDO_COUNT
    a = np.asarray(actual, dtype=float) + _PSI_PSEUDO_COUNT
    e /= e.sum()
    a /= a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def load_history(published_dir: Path, day: str, n_days: int) -> History:
    """The ``n_days`` published partitions before ``day`` (their counts and concatenation)."""
    import pandas as pd
    import pyarrow.parquet as pq

    paths = sorted(published_dir.glob(f"date=*/{PARTITION_FILE}"))
    before = [p for p in paths if p.parent.name.removeprefix("date=") < day][-n_days:]
    if not before:
        return History(
            days=[],
            counts=[],
            frame=None,
            notes=["no history: no published partitions before this day"],
        )
    days: list[str] = []
    counts: list[int] = []
    frames = []
    notes = []
    for path in before:
        try:
            frame = pq.read_table(path, columns=_HISTORY_COLUMNS).to_pandas()
        except Exception as exc:  # pyarrow raises several types for corrupt files
            # A bad old partition must not block today's; it is noted and left out.
            notes.append(f"history partition {path} skipped: {type(exc).__name__}: {exc}")
            continue
        days.append(path.parent.name.removeprefix("date="))
        counts.append(len(frame))
        frames.append(frame)
    history = pd.concat(frames, ignore_index=True) if frames else None
    notes.append(
        f"history: {len(days)} published partition(s) {days[0]}..{days[-1]}"
        if days
        else "no history"
    )
    return History(days=days, counts=counts, frame=history, notes=notes)


def row_count_band(
    history: History, contract: ContractConfig, notes: list[str]
) -> tuple[int, int, str] | None:
    """``(low, high, severity)`` around the history's mean row count; None without history."""
    if not history.counts:
        notes.append("row-count band skipped: no history")
        return None
    mean = sum(history.counts) / len(history.counts)
    low = math.floor(mean / contract.row_count_factor)
    high = math.ceil(mean * contract.row_count_factor)
    return low, high, contract.row_count_severity


def drift_checks(
    frame: pd.DataFrame,
    history: History,
    contract: ContractConfig,
    notes: list[str],
    *,
    layout: Layout,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
) -> tuple[list[Check], dict[str, float | None]]:
    """Drift of today's partition against the reference window (the history).

    Args:
        frame: Today's interactions.
        history: The reference window.
        contract: Thresholds and severities.
        notes: Receives why a check was skipped.
        layout: The dataset's layout: its categorical attributes get a new-value share.
        users: The users table, for the user attributes' values (None: not checked).
        items: The items table, for the item attributes' values (None: not checked).

    Returns:
        The checks, and the metrics by name (None where skipped).
    """
    import numpy as np
    import pandas as pd

    attributes = [
        f for f in (*layout.user_features, *layout.item_features) if f.kind in _CATEGORICAL_KINDS
    ]
    drift: dict[str, float | None] = {
        "weight_psi": None,
        "item_popularity_psi": None,
        "new_user_share": None,
        "new_item_share": None,
        **{f"new_value_share.{f.name}": None for f in attributes},
        "reference_rows": None,
        "reference_days": float(len(history.days)),
    }
    reference = history.frame
    if reference is None or reference.empty:
        notes.append("drift checks skipped: no history (no reference window)")
        return [], drift
    drift["reference_rows"] = float(len(reference))
    columns = list(_HISTORY_COLUMNS)
    if not set(columns) <= set(frame.columns) or frame[columns].isna().any().any():
        notes.append("drift checks skipped: partition lacks clean user_id/item_id/weight")
        return [], drift
    if len(frame) < contract.drift_min_rows or len(reference) < contract.drift_min_rows:
        notes.append(
            f"drift checks skipped: {len(frame)} rows today, {len(reference)} in the reference "
            f"window; need {contract.drift_min_rows} in each"
        )
        return [], drift

    checks: list[Check] = []
    expected, actual = weight_bins(reference["weight"], frame["weight"])
    weight_psi = psi(expected, actual)
    drift["weight_psi"] = weight_psi
    extreme = contract.weight_psi_extreme
    if extreme is not None and weight_psi > extreme:
        checks.append(metric_check("weight_psi_extreme", "weight", weight_psi, extreme, "fail"))
    else:
        checks.append(
            metric_check(
                "weight_psi",
                "weight",
                weight_psi,
                contract.weight_psi_max,
                contract.weight_psi_severity,
            )
        )

    ref_counts = reference["item_id"].value_counts()
    top = ref_counts.index[: contract.item_top_k]
    cur_counts = frame["item_id"].value_counts()
    expected_items = np.append(ref_counts.reindex(top).to_numpy(), ref_counts.drop(top).sum())
    actual_items = np.append(
        cur_counts.reindex(top, fill_value=0).to_numpy(),
        cur_counts.drop(top, errors="ignore").sum(),
    )
    item_psi = psi(expected_items, actual_items)
    drift["item_popularity_psi"] = item_psi
    checks.append(
        metric_check(
            "item_popularity_psi",
            "item_id",
            item_psi,
            contract.item_psi_max,
            contract.item_psi_severity,
        )
    )

    for key, column, limit, severity in (
        ("new_user_share", "user_id", contract.new_user_share_max, contract.new_user_severity),
        ("new_item_share", "item_id", contract.new_item_share_max, contract.new_item_severity),
    ):
        today = pd.Index(frame[column].unique())
        new = today.difference(pd.Index(reference[column].unique()))
        share = len(new) / len(today) if len(today) else 0.0
        drift[key] = share
        check = metric_check(key, column, share, limit, severity)
        checks.append(replace(check, unexpected_sample=[int(v) for v in new[:MAX_LISTED]] or None))

    for table, attributes_table, features in (
        ("users", users, layout.user_features),
        ("items", items, layout.item_features),
    ):
        value_checks = new_value_checks(
            table, features, attributes_table, frame, reference, contract, notes
        )
        for check in value_checks:
            drift[f"new_value_share.{check.kwargs['column']}"] = check.observed_value
        checks += value_checks
    return checks, drift


def weight_bins(reference: pd.Series, current: pd.Series) -> tuple[list[int], list[int]]:
    """Counts of the reference and today's weights over the same bins, for PSI.

    Few distinct reference weights (a 1-5 rating, the event types' weights) are a bin each,
    plus an "other" bin when today brings values the reference never had; more are binned
    at the reference's deciles.
    """
    import numpy as np
    import pandas as pd

    ref = pd.to_numeric(reference, errors="coerce").dropna()
    cur = pd.to_numeric(current, errors="coerce").dropna()
    values = np.sort(ref.unique())
    if len(values) <= MAX_EXACT_BINS:
        expected = [int((ref == v).sum()) for v in values]
        actual = [int((cur == v).sum()) for v in values]
        other = int((~cur.isin(values)).sum())
        if other:
            expected.append(0)
            actual.append(other)
        return expected, actual
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, _QUANTILE_BINS + 1))[1:-1])
    ref_bins = np.bincount(np.searchsorted(edges, ref), minlength=len(edges) + 1)
    cur_bins = np.bincount(np.searchsorted(edges, cur), minlength=len(edges) + 1)
    return [int(c) for c in ref_bins], [int(c) for c in cur_bins]


def new_value_checks(
    table: str,
    features: tuple[FeatureDef, ...],
    attributes: pd.DataFrame | None,
    frame: pd.DataFrame,
    reference: pd.DataFrame,
    contract: ContractConfig,
    notes: list[str],
) -> list[Check]:
    """Per categorical attribute of ``table``: the share of today's events with a new value.

    An event's value is its user's (or item's) attribute in the published table. A value
    is new when no event of the reference window had it; for a multi-valued categorical
    an event counts as new when any of its elements is. Missing values are never new
    (``not_null`` covers them).

    Args:
        table: ``users`` or ``items``.
        features: That table's attributes (only the categorical ones are checked).
        attributes: That table (None: skipped without a note, nothing to compare).
        frame: Today's interactions.
        reference: The reference window's interactions.
        contract: ``new_value_share_max`` and ``new_value_severity``.
        notes: Receives why an attribute was skipped.
    """
    categorical = [f for f in features if f.kind in _CATEGORICAL_KINDS]
    if attributes is None or not categorical:
        return []
    key = KEY_COLUMNS[table]
    missing = [c for c in (key, *(f.name for f in categorical)) if c not in attributes.columns]
    if missing:
        notes.append(f"new-value shares of {table} skipped: no column(s) {', '.join(missing)}")
        return []
    # One row per key (the newest) so the lookup below is a plain index.
    lookup = attributes.drop_duplicates(key, keep="last").set_index(key)
    checks: list[Check] = []
    for feature in categorical:
        values = lookup[feature.name]
        seen = set().union(
            *_cell_elements(values.reindex(reference[key].unique()), feature).values()
        )
        today = values.reindex(frame[key])
        new_cells = {
            cell: elements - seen
            for cell, elements in _cell_elements(today, feature).items()
            if not elements <= seen
        }
        share = int(today.isin(list(new_cells)).sum()) / len(frame) if len(frame) else 0.0
        new_values = sorted(set().union(*new_cells.values()))[:MAX_LISTED]
        check = metric_check(
            f"new_value_share.{feature.name}",
            feature.name,
            share,
            contract.new_value_share_max,
            contract.new_value_severity,
            table=table,
        )
        checks.append(
            replace(
                check,
                unexpected_sample=new_values or None,
                details={"new_values": new_values} if new_values else None,
            )
        )
    return checks


def _cell_elements(cells: pd.Series, feature: FeatureDef) -> dict[Any, frozenset[str]]:
    """The values in each distinct non-missing cell (its elements, for a multi-valued one)."""
    distinct = list(cells.dropna().unique())
    if feature.kind != "multi_categorical":
        return {cell: frozenset({str(cell)}) for cell in distinct}
    # One split over the distinct cells: a catalogue repeats the same few combinations.
    split = split_values(distinct, feature.separator or "")
    return {cell: frozenset(values) for cell, values in zip(distinct, split, strict=True)}


def metric_check(
    name: str,
    column: str,
    value: float,
    limit: float,
    severity: str,
    *,
    table: str | None = None,
) -> Check:
    """A drift metric as a ``Check`` that passes when ``value <= limit``.

    Drift is a property of today's partition, so the check is reported under the
    interactions; ``table`` names the table ``column`` belongs to when it is not theirs.
    """
    kwargs: dict[str, Any] = {"column": column, "max_value": limit}
    if table is not None:
        kwargs = {"table": table, **kwargs}
    return Check(
        table="interactions",
        expectation_type=f"recops_{name.split('.')[0]}",
        kwargs=kwargs,
        success=value <= limit,
        observed_value=round(value, 4),
        check=f"interactions.{name}",
        severity=severity,
    )
