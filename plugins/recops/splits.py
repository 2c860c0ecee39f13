"""Train/valid/test splits of the interactions, shared by training, ranking and evaluation.

Two protocols cut each user's interactions with RecBole's per-user counts
(``split_counts``): ``split_interactions`` at random (seed ``SPLIT_SEED``, the RecBole
protocol) and ``temporal_split`` by time (oldest to train, newest to test). Training
writes the result as ``split.parquet``; ``read_split`` reads it back for the ranker and
for evaluation, and ``train_rows`` joins a table with it.

This module is a leaf: it imports no other recops stage, so training and evaluation both
use it without an import cycle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from recops_models.contract import HISTORY_PAD

from recops.config import SPLIT_SEED
from recops.errors import DataError, ParamError
from recops.tables import read_parquet_columns

__all__ = [
    "SPLITS",
    "known_histories",
    "of_types",
    "pad_histories",
    "positive_rows",
    "preceding_histories",
    "read_split",
    "read_typed_split",
    "split_counts",
    "split_interactions",
    "temporal_split",
    "train_rows",
    "with_times",
]

SPLITS = ("train", "valid", "test")


def split_counts(total: int, ratios: tuple[float, ...] = (0.8, 0.1, 0.1)) -> list[int]:
    """RecBole's ``_calcu_split_ids`` counts for one user."""
    counts = [int(r * total) for r in ratios]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def _check_ratios(caller: str, ratios: Sequence[float]) -> None:
    """Refuse anything but three non-negative shares summing to 1, naming ``caller``."""
    if len(ratios) != 3 or min(ratios) < 0 or not math.isclose(sum(ratios), 1.0):
        raise ParamError(f"{caller}: ratios={tuple(ratios)!r} must be 3 shares summing to 1")


def split_interactions(
    user_id: np.ndarray,
    item_id: np.ndarray,
    seed: int = SPLIT_SEED,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> pd.DataFrame:
    """Split each user's interactions at random into train/valid/test, as RecBole does.

    The rows are shuffled with ``seed``; then each user's rows, in shuffled order, are cut
    by ``split_counts`` (at the default shares ``n - 2·int(0.1n)`` train, ``int(0.1n)``
    valid and ``int(0.1n)`` test), with RecBole's rule for small users (a part whose share
    is in (0, 1) gets one row while train keeps more than one).

    Args:
        user_id: User of each interaction.
        item_id: Item of each interaction.
        seed: Shuffle seed (``SPLIT_SEED`` for the RecBole protocol).
        ratios: Shares of train, valid and test (a dataset spec's ``random_split``).

    Returns:
        A frame ``user_id, item_id, split`` in the input row order.

    Raises:
        ParamError: If the ratios are not three non-negative shares summing to 1.
    """
    _check_ratios("split_interactions", ratios)
    user_id = np.asarray(user_id, dtype=np.int64)
    n = user_id.size
    order = np.random.default_rng(seed).permutation(n)
    order = order[np.argsort(user_id[order], kind="stable")]
    _, starts, counts = np.unique(user_id[order], return_index=True, return_counts=True)
    labels = np.empty(n, dtype=object)
    for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
        n_train, n_valid, _ = split_counts(count, tuple(ratios))
        rows = order[start : start + count]
        labels[rows[:n_train]] = "train"
        labels[rows[n_train : n_train + n_valid]] = "valid"
        labels[rows[n_train + n_valid :]] = "test"
    return pd.DataFrame(
        {
            "user_id": user_id,
            "item_id": np.asarray(item_id, dtype=np.int64),
            "split": pd.array(labels, dtype="string"),
        }
    )


def temporal_split(
    user_id: np.ndarray,
    item_id: np.ndarray,
    timestamp: np.ndarray,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> pd.DataFrame:
    """Split each user's interactions by time: oldest to train, newest to test.

    RecBole's "TO" ordering: each user's rows are sorted by ``timestamp`` (ties keep the
    input order) and cut with the same per-user counts as the random split
    (``split_counts``), so only which rows land where differs.

    Args:
        user_id: User of each interaction.
        item_id: Item of each interaction.
        timestamp: Time of each interaction (numbers or datetimes; only order matters).
        ratios: Shares of train, valid and test.

    Returns:
        A frame ``user_id, item_id, split`` in the input row order.

    Raises:
        DataError: If the arrays differ in length or a timestamp is missing.
        ParamError: If the ratios are not three non-negative shares summing to 1.
    """
    user_id = np.asarray(user_id, dtype=np.int64)
    item_id = np.asarray(item_id, dtype=np.int64)
    times = pd.Series(np.asarray(timestamp))
    if not user_id.size == item_id.size == times.size:
        raise DataError(
            f"temporal_split: user_id ({user_id.size}), item_id ({item_id.size}) and "
            f"timestamp ({times.size}) differ in length"
        )
    _check_ratios("temporal_split", ratios)
    if times.isna().any():
        raise DataError("temporal_split: timestamp has missing values")
    # Dense ranks of the times give one integer order for any comparable dtype.
    time_rank = times.rank(method="dense").to_numpy()
    order = np.lexsort((np.arange(user_id.size), time_rank, user_id))
    _, starts, counts = np.unique(user_id[order], return_index=True, return_counts=True)
    labels = np.empty(user_id.size, dtype=object)
    for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
        n_train, n_valid, _ = split_counts(count, tuple(ratios))
        rows = order[start : start + count]
        labels[rows[:n_train]] = "train"
        labels[rows[n_train : n_train + n_valid]] = "valid"
        labels[rows[n_train + n_valid :]] = "test"
    return pd.DataFrame(
        {"user_id": user_id, "item_id": item_id, "split": pd.array(labels, dtype="string")}
    )


def read_split(uri: str) -> pd.DataFrame:
    """Read a split parquet, checking its columns and split values.

    Raises:
        InputMissingError: If the file is missing (a ``FileNotFoundError``).
        DataError: If columns are missing or a split value is unknown.
    """
    split = read_parquet_columns(uri, ("user_id", "item_id", "split"), "split")
    unknown = set(split["split"].unique()) - set(SPLITS)
    if unknown:
        raise DataError(f"split {uri} has unknown split values {sorted(unknown)}")
    return split


def read_typed_split(uri: str) -> pd.DataFrame:
    """``read_split``, plus the ``event_type`` column when training wrote one."""
    import pyarrow.parquet as pq

    split = read_split(uri)
    if "event_type" in pq.read_schema(uri).names:
        types = pd.read_parquet(uri, columns=["event_type"])["event_type"]
        split = split.assign(event_type=types.to_numpy())
    return split


def of_types(frame: pd.DataFrame, types: Sequence[str]) -> pd.DataFrame:
    """Rows of ``frame`` whose event type is in ``types`` (all when either is absent).

    Evaluation counts hits of the spec's positive types and masks its seen types this way;
    a split without event types (MovieLens: every rating) keeps every row.
    """
    if not types or "event_type" not in frame.columns:
        return frame
    return frame[frame["event_type"].isin(list(types))]


def positive_rows(rows: pd.DataFrame, negative_types: Sequence[str]) -> np.ndarray | None:
    """Which of ``rows`` are not of a negative event type; None when all are.

    Raises:
        DataError: When every row is negative (nothing to learn from).
    """
    if not negative_types or "event_type" not in rows.columns:
        return None
    keep = ~rows["event_type"].isin(list(negative_types)).to_numpy()
    if keep.all():
        return None
    if not keep.any():
        raise DataError(
            f"every training row is a negative event ({', '.join(negative_types)}); "
            "nothing to learn from"
        )
    return np.asarray(keep)


def train_rows(frame: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``frame`` that ``split`` puts in train, joined on (user_id, item_id).

    Raises:
        DataError: If the split is missing pairs of the training set or has duplicates.
    """
    keys = split[["user_id", "item_id", "split"]]
    if keys.duplicated(["user_id", "item_id"]).any():
        raise DataError("split has duplicate (user_id, item_id) pairs")
    joined = frame.merge(keys, on=["user_id", "item_id"], how="left", validate="one_to_one")
    if joined["split"].isna().any():
        missing = int(joined["split"].isna().sum())
        raise DataError(f"split lacks {missing} (user_id, item_id) pairs of the training set")
    return joined[joined["split"] == "train"].drop(columns="split").reset_index(drop=True)


def with_times(split: pd.DataFrame, training_set_uri: str = "") -> pd.DataFrame:
    """The split with each row's ``event_timestamp``, joined from the training set.

    Without a training set, the row order stands in for time (later rows newer).

    Raises:
        DataError: The training set has no row for a pair of the split.
    """
    if "event_timestamp" in split.columns:
        return split
    if not training_set_uri:
        return split.assign(event_timestamp=np.arange(len(split), dtype=np.int64))
    times = read_parquet_columns(
        training_set_uri, ("user_id", "item_id", "event_timestamp"), "training set"
    ).drop_duplicates(["user_id", "item_id"], keep="last")
    joined = split.merge(times, on=["user_id", "item_id"], how="left", validate="many_to_one")
    if joined["event_timestamp"].isna().any():
        missing = joined[joined["event_timestamp"].isna()].iloc[0]
        raise DataError(
            f"training set {training_set_uri} has no row for split row user_id="
            f"{int(missing['user_id'])}, item_id={int(missing['item_id'])}"
        )
    return joined


def known_histories(
    known: pd.DataFrame, users: np.ndarray, history_max: int | None = None
) -> list[np.ndarray]:
    """Each user's items, most recent first, without repeats (capped when asked).

    This is what the online history hands the serving signature at a cut: evaluation
    builds it from the rows known before the holdout.

    Args:
        known: Rows ``user_id, item_id, event_timestamp`` known at the cut.
        users: The users, in output order.
        history_max: Keep only the most recent this many items.

    Returns:
        One int64 array per user (empty for a user with no known rows).
    """
    ordered = known.sort_values(
        ["user_id", "event_timestamp", "item_id"], ascending=[True, False, True], kind="stable"
    ).drop_duplicates(["user_id", "item_id"], keep="first")
    groups = {
        int(user): items.to_numpy(np.int64)
        for user, items in ordered.groupby("user_id", sort=False)["item_id"]
    }
    empty = np.zeros(0, np.int64)
    out = [groups.get(int(user), empty) for user in users]
    return [h[:history_max] for h in out] if history_max is not None else out


def preceding_histories(
    user_id: np.ndarray,
    item_id: np.ndarray,
    times: np.ndarray,
    *,
    length: int,
    eligible: np.ndarray | None = None,
    before_only: bool = True,
) -> np.ndarray:
    """Each row's history: the user's items of strictly earlier rows (``before_only``),
    or of every other row.

    Before its event is what the online history held when the row's event arrived, so a
    model trained on it sees what serving at a time cut hands it (``known_histories`` is
    the same at one cut for every user). Rows at the same time as the row are not in
    its history: neither came first. Under the random protocol, evaluation hands a
    user's whole known history, later items included, so there each row's history is
    the user's newest other items (``before_only=False``; the row's own item left out).

    Args:
        user_id: ``[n]`` user of each row.
        item_id: ``[n]`` item of each row.
        times: ``[n]`` event time of each row (any orderable dtype).
        length: History entries per row (the newest).
        eligible: ``bool [n]``: rows that enter histories (the spec's seen types); all
            when None. Every row gets a history either way.

    Returns:
        ``int64 [n, length]``, most recent first, right-padded with ``HISTORY_PAD``, in
        the rows' own order.
    """
    n = len(user_id)
    out = np.full((n, length), HISTORY_PAD, np.int64)
    if n == 0 or length == 0:
        return out
    users = np.asarray(user_id)
    stamps = np.asarray(times)
    order = np.lexsort((np.asarray(item_id), stamps, users))
    users, stamps = users[order], stamps[order]
    items = np.asarray(item_id, np.int64)[order]
    keep = np.ones(n, bool) if eligible is None else np.asarray(eligible, bool)[order]
    # Eligible rows counted before each sorted position; a run of equal (user, time)
    # takes the count at its start, so same-time rows stay out of each other's history.
    before = np.concatenate([[0], np.cumsum(keep)[:-1]])
    new_run = np.ones(n, bool)
    new_run[1:] = (users[1:] != users[:-1]) | (stamps[1:] != stamps[:-1])
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(n), 0))
    new_user = np.ones(n, bool)
    new_user[1:] = users[1:] != users[:-1]
    user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
    floor = before[user_start]
    kept_items = items[keep]
    sorted_out = np.full((n, length), HISTORY_PAD, np.int64)
    if before_only:
        count = before[run_start]
        for slot in range(length):
            at = count - 1 - slot
            inside = at >= floor
            sorted_out[inside, slot] = kept_items[at[inside]]
    else:
        # The user's eligible rows are kept_items[floor:end]; walk back from the newest,
        # stepping over the row's own entry (``own``, -1 when the row is not eligible).
        last_of_user = np.ones(n, bool)
        last_of_user[:-1] = users[1:] != users[:-1]
        user_end = np.minimum.accumulate(np.where(last_of_user, np.arange(n), n)[::-1])[::-1]
        end = before[user_end] + keep[user_end]
        own = np.where(keep, before, -1)
        for slot in range(length):
            at = end - 1 - slot
            at = np.where(at <= own, at - 1, at)
            inside = at >= floor
            sorted_out[inside, slot] = kept_items[at[inside]]
    out[order] = sorted_out
    return out


def pad_histories(histories: Sequence[np.ndarray]) -> np.ndarray:
    """``[len(histories), longest]`` int64, right-padded with ``HISTORY_PAD`` (width >= 1)."""
    width = max([1, *(h.size for h in histories)])
    out = np.full((len(histories), width), HISTORY_PAD, np.int64)
    for row, items in enumerate(histories):
        out[row, : items.size] = items
    return out
