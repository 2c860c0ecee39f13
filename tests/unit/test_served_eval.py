"""The served-path evaluation: lists scored as the serving signature returns them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _tiny_data import TinyData
from recops.errors import ParamError
from recops.served_eval import MASKED_SCORE, ServedEvalConfig, evaluate_served
from recops.splits import known_histories, pad_histories
from recops.training import TrainResult
from recops_models.tf_env import use_legacy_keras

use_legacy_keras()

#: The fixed catalogue, best first for every user.
ITEMS = [10, 20, 30, 40, 50]


def _write_fixed_serving(path: Path, *, history: bool) -> None:
    """A ``serving_default`` that ranks ``ITEMS`` in order, masking the row's history."""
    import tensorflow as tf

    specs = [tf.TensorSpec([None], tf.int64, name="user_id")]
    if history:
        specs.append(tf.TensorSpec([None, None], tf.int64, name="history_item_ids"))

    class Fixed(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.items = tf.Variable(np.array(ITEMS, np.int64))

        def serve(self, user_id: Any, history_item_ids: Any = None) -> Any:
            batch = tf.shape(user_id)[0]
            base = tf.constant([5.0, 4.0, 3.0, 2.0, 1.0])
            scores = tf.tile(base[None, :], [batch, 1])
            if history_item_ids is not None:
                seen = tf.reduce_any(
                    self.items[None, :, None] == history_item_ids[:, None, :], axis=2
                )
                scores = tf.where(seen, tf.constant(MASKED_SCORE), scores)
            top = tf.math.top_k(scores, k=5)
            return {"item_ids": tf.gather(self.items, top.indices), "scores": top.values}

    module = Fixed()
    tf.saved_model.save(
        module,
        str(path),
        signatures={"serving_default": tf.function(module.serve, input_signature=specs)},
    )


@pytest.fixture(scope="module")
def cut(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """User 1 knows 10 (older) and 20 (newer) and later takes 30; user 2 knows 10, takes 20."""
    root = tmp_path_factory.mktemp("served")
    day = pd.Timestamp("2024-01-01", tz="UTC")
    rows = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 3],
            "item_id": [10, 20, 30, 10, 20, 40],
            "split": ["train", "valid", "test", "train", "test", "train"],
            "event_timestamp": [day, day + pd.Timedelta(days=1), day, day, day, day],
        }
    )
    rows[["user_id", "item_id", "split"]].to_parquet(root / "split.parquet")
    rows[["user_id", "item_id", "event_timestamp"]].to_parquet(root / "training.parquet")
    users = pd.DataFrame({"user_id": [1, 2, 3], "event_timestamp": [day] * 3})
    users.to_parquet(root / "users.parquet")
    for name, history in (("with", True), ("without", False)):
        _write_fixed_serving(root / name, history=history)
    return {
        "root": str(root),
        "split_uri": str(root / "split.parquet"),
        "users_uri": str(root / "users.parquet"),
        "training_set_uri": str(root / "training.parquet"),
    }


def _config(cut: dict[str, str], model: str, **extra: Any) -> ServedEvalConfig:
    return ServedEvalConfig(
        model_dir=str(Path(cut["root"]) / model),
        split_uri=cut["split_uri"],
        users_uri=cut["users_uri"],
        training_set_uri=cut["training_set_uri"],
        k=2,
        **extra,
    )


def test_history_is_excluded_inside_the_signature(cut: dict[str, str]) -> None:
    got = evaluate_served(_config(cut, "with"))
    # User 1 is served [30, 40] (10, 20 masked): a hit; user 2 is served [20, 30]: a hit.
    assert got.history_input
    assert got.seen_share == 0.0
    assert got.recall_at_k == 1.0
    assert got.hit_at_k == 1.0
    # User 1's hit is first (NDCG 1); user 2's too.
    assert got.ndcg_at_k == pytest.approx(1.0)
    assert got.n_users == 2
    assert got.short_lists == 0


def test_a_model_without_history_is_scored_as_it_serves(cut: dict[str, str]) -> None:
    got = evaluate_served(_config(cut, "without"))
    # Both users get [10, 20]: user 1 saw both, user 2 saw 10 and takes 20.
    assert not got.history_input
    assert got.seen_share == pytest.approx(3 / 4)
    assert got.recall_at_k == pytest.approx(0.5)


def test_a_capped_history_lets_the_oldest_seen_item_back(cut: dict[str, str]) -> None:
    got = evaluate_served(_config(cut, "with", history_max=1))
    # User 1's history is cut to the newer 20: the older 10 comes back first. It is
    # outside what the request carried (the service's window), so it is reported apart:
    # nothing the request carried came back.
    assert got.truncated_histories == 1
    assert got.seen_share == 0.0
    assert got.seen_share_beyond_history == pytest.approx(1 / 4)
    full = evaluate_served(_config(cut, "with"))
    assert (full.seen_share, full.seen_share_beyond_history) == (0.0, 0.0)


def test_baselines_run_on_the_same_cut(cut: dict[str, str]) -> None:
    got = evaluate_served(_config(cut, "with"))
    popularity = got.baselines["popularity"]
    # Known positives: 10 twice, 20 and 40 once (30 is only in the holdout, so unknown).
    # User 1 (knows 10, 20) gets [40] and misses 30; user 2 (knows 10) gets [20, 40] and
    # hits 20.
    assert popularity["recall_at_k"] == pytest.approx(0.5)
    assert "recall_at_k" in got.baselines["ease"]
    skipped = evaluate_served(_config(cut, "with", ease_max_items=1))
    assert "skipped" in skipped.baselines["ease"]
    # A second model on the same cut (the champion) skips them; its own figures stay.
    alone = evaluate_served(_config(cut, "with", baselines=False))
    assert alone.baselines == {}
    assert alone.recall_at_k == got.recall_at_k


def test_ease_learns_from_no_negative_event_but_is_handed_it_as_history(
    cut: dict[str, str],
) -> None:
    from recops.served_eval import _baselines

    day = pd.Timestamp("2024-01-01", tz="UTC")
    known = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 2, 2, 3, 3, 4, 4],
            "item_id": [10, 20, 10, 20, 30, 20, 30, 10, 40],
            "split": ["train"] * 9,
            "event_type": ["play", "play", "play", "skip", "play", "skip", "play", "play", "skip"],
            "event_timestamp": [day] * 9,
        }
    )
    users = np.array([1, 2, 3, 4])
    seen = known_histories(known, users)
    truth = [np.array([30]), np.array([40]), np.array([10]), np.array([20])]
    config = _config(cut, "with")
    declared = _baselines(config, known, known, users, seen, truth, ("skip",))
    # The same rows as history only (what a valid row is at the cut): the same figures.
    history_only = known.assign(split=np.where(known["event_type"] == "skip", "valid", "train"))
    expected = _baselines(config, history_only, known, users, seen, truth)
    assert declared["ease"] == expected["ease"]
    trained_on = _baselines(config, known, known, users, seen, truth)
    assert trained_on["ease"] != declared["ease"]


def test_histories_are_newest_first_without_repeats() -> None:
    day = pd.Timestamp("2024-01-01", tz="UTC")
    known = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2],
            "item_id": [5, 6, 5, 7],
            "event_timestamp": [day, day + pd.Timedelta(hours=1), day + pd.Timedelta(hours=2), day],
        }
    )
    got = known_histories(known, np.array([1, 2, 3]))
    assert [h.tolist() for h in got] == [[5, 6], [7], []]
    assert [h.tolist() for h in known_histories(known, np.array([1]), 1)] == [[5]]
    padded = pad_histories(got)
    assert padded.tolist() == [[5, 6], [7, -1], [-1, -1]]
    assert pad_histories([np.zeros(0, np.int64)]).shape == (1, 1)


def test_bad_config_is_refused(cut: dict[str, str]) -> None:
    with pytest.raises(ParamError, match="split"):
        _config(cut, "with", split="train")
    with pytest.raises(ParamError, match="history_max"):
        _config(cut, "with", history_max=0)


def test_trained_model_serves_no_seen_item(
    tiny_data: TinyData, tiny_two_tower: TrainResult
) -> None:
    got = evaluate_served(
        ServedEvalConfig(
            model_dir=tiny_two_tower.model_dir,
            split_uri=tiny_two_tower.split_uri,
            users_uri=tiny_data.users_uri,
            training_set_uri=tiny_data.training_set_uri,
            spec_uri=tiny_data.spec_uri,
        )
    )
    assert got.history_input
    assert got.seen_share == 0.0
    assert got.n_users == tiny_data.n_users
    # Random ranking hits 10 of the ~123 unseen items: Recall@10 about 0.08.
    assert got.recall_at_k > 0.2
    assert got.recall_at_k >= got.baselines["popularity"]["recall_at_k"]


def test_top_unseen_is_the_stable_sort_with_seen_items_last() -> None:
    from recops.served_eval import _top_unseen

    rng = np.random.default_rng(7)
    item_ids = np.array([3, 5, 8, 13, 21, 34, 55, 89], np.int64)
    # Integer scores: ties everywhere, as popularity has them.
    scores = rng.integers(0, 3, (6, item_ids.size)).astype(np.float64)
    seen = [
        np.array([], np.int64),
        np.array([5, 5, 89], np.int64),  # a repeat
        np.array([3, 5, 8, 13, 21, 34], np.int64),  # only 2 unseen: short list
        item_ids.copy(),  # nothing unseen
        np.array([1000, 8], np.int64),  # an item outside the catalogue
        np.array([55], np.int64),
    ]
    got = _top_unseen(scores, item_ids, seen, 4)
    for row, items in enumerate(seen):
        masked = np.where(np.isin(item_ids, items), -np.inf, scores[row])
        order = np.argsort(-masked, kind="stable")[:4]
        expected = np.where(np.isfinite(masked[order]), item_ids[order], -1)
        np.testing.assert_array_equal(got[row], expected)
    assert (got[3] == -1).all()
    assert (got[2, 2:] == -1).all() and (got[2, :2] != -1).all()


def test_ease_history_scores_are_the_dense_product() -> None:
    from recops.served_eval import _history_scores

    rng = np.random.default_rng(2)
    weights = rng.normal(size=(9, 9)).astype(np.float32)
    columns = [np.array([0, 4, 8]), np.array([], np.int64), np.array([3])]
    dense = np.zeros((3, 9), np.float32)
    for row, cols in enumerate(columns):
        dense[row, cols] = 1.0
    got = _history_scores(weights, columns)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, dense @ weights, rtol=1e-6)
    assert (got[1] == 0).all()
