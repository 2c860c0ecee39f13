"""Volume and drift checks against the trailing published partitions.

``load_history`` reads the reference window (the published days before the interval);
``row_count_band`` turns its row counts into the band that ``recops.validation.suites``
checks; ``drift_checks`` compares today's partition with the window: PSI of the rating
distribution and of item popularity, and the share of users and items never seen in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.validation.checks import MAX_LISTED, Check
from recops.validation.contract import ContractConfig
from recops.validation.schema import PARTITION_FILE, RATINGS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["History", "drift_checks", "load_history", "metric_check", "psi", "row_count_band"]

# Laplace-style pseudo-count per bin: keeps PSI finite when a bin is empty on one side.
_PSI_PSEUDO_COUNT = 0.5


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
            frame = pq.read_table(path, columns=["user_id", "item_id", "rating"]).to_pandas()
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
    frame: pd.DataFrame, history: History, contract: ContractConfig, notes: list[str]
) -> tuple[list[Check], dict[str, float | None]]:
    """Drift of today's partition against the reference window (the history)."""
    import numpy as np
    import pandas as pd

    drift: dict[str, float | None] = {
        "rating_psi": None,
        "item_popularity_psi": None,
        "new_user_share": None,
        "new_item_share": None,
        "reference_rows": None,
        "reference_days": float(len(history.days)),
    }
    reference = history.frame
    if reference is None or reference.empty:
        notes.append("drift checks skipped: no history (no reference window)")
        return [], drift
    drift["reference_rows"] = float(len(reference))
    columns = {"user_id", "item_id", "rating"}
    if not columns <= set(frame.columns) or frame[list(columns)].isna().any().any():
        notes.append("drift checks skipped: partition lacks clean user_id/item_id/rating")
        return [], drift
    if len(frame) < contract.drift_min_rows or len(reference) < contract.drift_min_rows:
        notes.append(
            f"drift checks skipped: {len(frame)} rows today, {len(reference)} in the reference "
            f"window; need {contract.drift_min_rows} in each"
        )
        return [], drift

    checks: list[Check] = []
    ref_ratings = pd.to_numeric(reference["rating"], errors="coerce")
    cur_ratings = pd.to_numeric(frame["rating"], errors="coerce")
    bins = list(RATINGS)
    rating_psi = psi(
        [int((ref_ratings == r).sum()) for r in bins],
        [int((cur_ratings == r).sum()) for r in bins],
    )
    drift["rating_psi"] = rating_psi
    extreme = contract.rating_psi_extreme
    if extreme is not None and rating_psi > extreme:
        checks.append(metric_check("rating_psi_extreme", "rating", rating_psi, extreme, "fail"))
    else:
        checks.append(
            metric_check(
                "rating_psi",
                "rating",
                rating_psi,
                contract.rating_psi_max,
                contract.rating_psi_severity,
            )
        )

    ref_counts = reference["item_id"].value_counts()
    top = ref_counts.index[: contract.item_top_k]
    cur_counts = frame["item_id"].value_counts()
    expected = np.append(ref_counts.reindex(top).to_numpy(), ref_counts.drop(top).sum())
    actual = np.append(
        cur_counts.reindex(top, fill_value=0).to_numpy(),
        cur_counts.drop(top, errors="ignore").sum(),
    )
    item_psi = psi(expected, actual)
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
    return checks, drift


def metric_check(name: str, column: str, value: float, limit: float, severity: str) -> Check:
    """A drift metric as a ``Check`` that passes when ``value <= limit``."""
    return Check(
        table="interactions",
        expectation_type=f"recops_{name}",
        kwargs={"column": column, "max_value": limit},
        success=value <= limit,
        observed_value=round(value, 4),
        check=f"interactions.{name}",
        severity=severity,
    )
