"""Evaluation: hand-checked masking and segments, event types, and a trained model.

The temporal split's tests live in ``test_splits.py``, beside the module that holds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _tiny_data import TinyData
from recops.errors import DataError
from recops.evaluation import (
    EvalConfig,
    columns_for,
    evaluate,
    evaluate_scores,
    event_roles_of,
    event_types_of,
    long_tail_items,
)
from recops.training import TrainResult
from recops_models.tf_env import use_legacy_keras

use_legacy_keras()

#: A spec with event types: purchases and carts are positives, every type is seen.
EVENTS_SPEC = """\
name: events
users: {key: u, key_type: integer}
items: {key: i, key_type: integer}
events:
  user_key: u
  item_key: i
  timestamp: {column: t, format: unix_seconds}
  event_type:
    column: e
    weights: {view: 1, cart: 3, purchase: 5}
    positives: [purchase, cart]
"""


def _write_fixed_model(path: Path, *, features: bool = True) -> None:
    """A SavedModel with the contract's signatures and known 1-D embeddings.

    Item scores for user 1 fall with the item id (10 best); user 2 sees the reverse. With
    ``features`` the user signature also takes a string and a float attribute (named as
    no dataset's column is, to show evaluation reads names from the signature); the
    model checks their values so a wrong feed fails the test.
    """
    import tensorflow as tf

    user_spec = [tf.TensorSpec([None], tf.int64, name="user_id")]
    if features:
        user_spec += [
            tf.TensorSpec([None], tf.string, name="segment"),
            tf.TensorSpec([None], tf.float32, name="spend"),
        ]

    class Fixed(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.users = tf.Variable([[1.0], [-1.0]])
            self.item_ids = tf.Variable(np.array([10, 20, 30, 40, 50], np.int64))
            self.items = tf.Variable([[5.0], [4.0], [3.0], [2.0], [1.0]])

        def embed(self, user_id: Any, segment: Any = None, spend: Any = None) -> Any:
            if segment is not None:
                # User 2's attributes are missing: "" and NaN reach the model as such.
                tf.debugging.assert_equal(segment, tf.where(user_id == 1, "a", ""))
                tf.debugging.assert_equal(tf.math.is_nan(spend), user_id == 2)
            return {"embedding": tf.gather(self.users, user_id - 1)}

        @tf.function(input_signature=[])  # type: ignore[untyped-decorator]
        def item_embeddings(self) -> Any:
            return {"item_ids": tf.identity(self.item_ids), "embeddings": tf.identity(self.items)}

    module = Fixed()
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            "user_embedding": tf.function(module.embed, input_signature=user_spec),
            "item_embeddings": module.item_embeddings,
        },
    )


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("fixed")
    _write_fixed_model(root / "model")
    split = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 2],
            "item_id": [10, 20, 30, 50, 40, 10],
            "split": ["train", "valid", "test", "train", "valid", "test"],
        }
    )
    split.to_parquet(root / "split.parquet")
    users = pd.DataFrame(
        {
            "user_id": [1, 2],
            "segment": ["a", None],
            "spend": [12.5, np.nan],
            "event_timestamp": pd.Timestamp("2020-01-01", tz="UTC"),
        }
    )
    users.to_parquet(root / "users.parquet")
    return {
        "model_dir": str(root / "model"),
        "split_uri": str(root / "split.parquet"),
        "users_uri": str(root / "users.parquet"),
    }


def test_test_split_masks_train_and_valid(fixed: dict[str, Any]) -> None:
    # User 1 ranks 30, 40, 50 once 10 and 20 are masked: hit at 1.
    # User 2 ranks 30, 20, 10 once 50 and 40 are masked: hit at 3.
    at1 = evaluate(EvalConfig(**fixed, k=1, split="test"))
    assert (at1.recall_at_k, at1.hit_at_k, at1.mrr_at_k, at1.ndcg_at_k) == (0.5, 0.5, 0.5, 0.5)
    at3 = evaluate(EvalConfig(**fixed, k=3, split="test"))
    assert at3.recall_at_k == pytest.approx(1.0)
    assert at3.mrr_at_k == pytest.approx((1 + 1 / 3) / 2)
    assert at3.ndcg_at_k == pytest.approx((1 + 0.5) / 2)
    assert at3.precision_at_k == pytest.approx(1 / 3)
    assert (at3.n_users, at3.k, at3.split) == (2, 3, "test")


def test_valid_split_masks_train_only(fixed: dict[str, Any]) -> None:
    # User 1: 20 is best once 10 is masked; user 2: 40 is best once 50 is masked.
    got = evaluate(EvalConfig(**fixed, k=1, split="valid"))
    assert got.recall_at_k == pytest.approx(1.0)
    assert got.to_dict()["split"] == "valid"


def test_a_user_without_a_row_is_scored_with_its_attributes_missing(
    fixed: dict[str, Any], tmp_path: Path
) -> None:
    # A user new since the users file: the model gets "" and NaN (it asserts so), as it
    # does for user 2's row of missing values, so the figures are the same.
    users = pd.read_parquet(fixed["users_uri"])
    users[users["user_id"] == 1].to_parquet(tmp_path / "users.parquet")
    without = evaluate(
        EvalConfig(**{**fixed, "users_uri": str(tmp_path / "users.parquet")}, k=3)
    ).to_dict()
    assert without == evaluate(EvalConfig(**fixed, k=3)).to_dict()
    assert without["recall_at_k"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="split='train'"):
        EvalConfig(**fixed, split="train")


def test_a_column_the_model_takes_is_named(fixed: dict[str, Any], tmp_path: Path) -> None:
    users = pd.read_parquet(fixed["users_uri"]).drop(columns="spend")
    users.to_parquet(tmp_path / "users.parquet")
    with pytest.raises(DataError, match=r"lacks columns \['spend'\].*segment"):
        evaluate(EvalConfig(**{**fixed, "users_uri": str(tmp_path / "users.parquet")}))


def test_a_model_of_ids_alone_reads_no_users_table(fixed: dict[str, Any], tmp_path: Path) -> None:
    _write_fixed_model(tmp_path / "ids", features=False)
    config = {**fixed, "model_dir": str(tmp_path / "ids"), "users_uri": str(tmp_path / "none")}
    at1 = evaluate(EvalConfig(**config, k=1))
    assert (at1.recall_at_k, at1.n_users) == (0.5, 2)


def _typed_split(root: Path) -> tuple[str, str]:
    """A split whose test rows mix positive and non-positive event types, and its spec."""
    split = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 2, 2],
            "item_id": [10, 20, 30, 50, 40, 10, 30],
            "split": ["train", "valid", "test", "train", "valid", "test", "test"],
            # User 1's only test event is a view: not a positive, so user 1 is not scored.
            # User 2 bought 30 and viewed 10.
            "event_type": ["view", "view", "view", "purchase", "cart", "view", "purchase"],
        }
    )
    split.to_parquet(root / "typed.parquet")
    (root / "spec.yaml").write_text(EVENTS_SPEC)
    return str(root / "typed.parquet"), str(root / "spec.yaml")


def test_only_positive_event_types_are_hits(fixed: dict[str, Any], tmp_path: Path) -> None:
    split_uri, spec_uri = _typed_split(tmp_path)
    assert event_types_of(spec_uri) == (("purchase", "cart"), ("view", "cart", "purchase"))
    assert event_types_of("") == ((), ())
    assert event_roles_of(spec_uri)[2] == () and event_roles_of("") == ((), (), ())
    # User 2 ranks 30, 20, 10 once 50 and 40 are masked: 30 (bought) is the hit at 1.
    typed = evaluate(EvalConfig(**{**fixed, "split_uri": split_uri}, spec_uri=spec_uri, k=1))
    assert (typed.n_users, typed.recall_at_k, typed.ndcg_at_k) == (1, 1.0, 1.0)
    # Without the spec every row counts: user 1 is scored too, user 2 has two targets.
    every = evaluate(EvalConfig(**{**fixed, "split_uri": split_uri}, k=1))
    assert every.n_users == 2
    assert every.recall_at_k == pytest.approx((1.0 + 0.5) / 2)


def test_seen_types_decide_what_is_masked() -> None:
    split = pd.DataFrame(
        {
            "user_id": [1, 1, 1],
            "item_id": [1, 2, 3],
            "split": ["train", "train", "test"],
            "event_type": ["view", "purchase", "purchase"],
        }
    )

    def scorer(users: np.ndarray) -> np.ndarray:
        return np.tile(np.array([3.0, 2.0, 1.0]), (users.size, 1))

    items = np.array([1, 2, 3])
    # Only purchases are seen: the viewed item 1 stays rankable and takes the top slot.
    narrow = evaluate_scores(scorer, split=split, item_ids=items, k=1, seen_types=("purchase",))
    assert narrow.recall_at_k == 0.0
    everything = evaluate_scores(scorer, split=split, item_ids=items, k=1)
    assert everything.recall_at_k == 1.0


def test_trained_model_beats_random(tiny_data: TinyData, tiny_two_tower: TrainResult) -> None:
    got = evaluate(
        EvalConfig(
            model_dir=tiny_two_tower.model_dir,
            split_uri=tiny_two_tower.split_uri,
            users_uri=tiny_data.users_uri,
            spec_uri=tiny_data.spec_uri,
        )
    )
    # Random ranking hits 10 of the ~123 unseen items: Recall@10 about 0.08.
    assert got.recall_at_k > 0.2
    assert got.n_users == tiny_data.n_users
    assert all(0.0 <= v <= 1.0 for v in (got.ndcg_at_k, got.hit_at_k, got.mrr_at_k))
    assert np.isfinite(got.precision_at_k)


def test_fixed_model_reports_segments(fixed: dict[str, Any]) -> None:
    # Train counts: 10 and 50 once each; the head (ceil(0.2 * 5) = 1 item) is 10, the
    # lower id of the tie. Both users have 1 train row, so both are cold.
    got = evaluate(EvalConfig(**fixed, k=1, split="test"))
    assert got.segments["cold_users"] == {"recall_at_k": 0.5, "ndcg_at_k": 0.5, "n_users": 2.0}
    # User 2's only test item (10) is the head item: only user 1 is in the segment.
    assert got.segments["long_tail"] == {"recall_at_k": 1.0, "ndcg_at_k": 1.0, "n_users": 1.0}
    nobody_cold = evaluate(EvalConfig(**fixed, k=1, cold_user_threshold=1))
    assert nobody_cold.segments["cold_users"]["n_users"] == 0.0
    assert np.isnan(nobody_cold.segments["cold_users"]["recall_at_k"])


def _write_fixed_ranker(path: Path) -> None:
    """A ``rank`` signature over the fixed model's users: clicks favour low item ids,
    the weight head high ones. It records one context feature, ``activity``, and checks
    the values it is fed (user 1: 7.0, user 2: 3.0; user 2's attributes missing)."""
    import tensorflow as tf

    spec = [
        tf.TensorSpec([None], tf.int64, name="user_id"),
        tf.TensorSpec([None], tf.string, name="segment"),
        tf.TensorSpec([None], tf.float32, name="activity"),
        tf.TensorSpec([None, None], tf.int64, name="item_ids"),
    ]

    class Ranker(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.context_features = tf.Variable(["activity"])

        @tf.function(input_signature=spec)  # type: ignore[untyped-decorator]
        def rank(self, user_id: Any, segment: Any, activity: Any, item_ids: Any) -> Any:
            tf.debugging.assert_equal(segment, tf.where(user_id == 1, "a", ""))
            tf.debugging.assert_equal(activity, tf.where(user_id == 1, 7.0, 3.0))
            ids = tf.cast(item_ids, tf.float32)
            return {"scores": -ids, "ratings": ids}

    module = Ranker()
    tf.saved_model.save(module, str(path), signatures={"rank": module.rank})


def test_rerank_reads_attributes_and_context_by_signature(
    fixed: dict[str, Any], tmp_path: Path
) -> None:
    from recops.evaluation import RerankConfig, evaluate_rerank

    _write_fixed_ranker(tmp_path / "ranker")
    pd.DataFrame(
        {
            "user_id": [1, 2, 2],
            "event_timestamp": pd.to_datetime(["2020-01-01", "2020-01-01", "2020-01-02"]),
            "activity": [7.0, 1.0, 3.0],  # user 2's newest value is 3.0
        }
    ).to_parquet(tmp_path / "context.parquet")
    common = {
        "retrieval_model_dir": fixed["model_dir"],
        "ranker_model_dir": str(tmp_path / "ranker"),
        "split_uri": fixed["split_uri"],
        "users_uri": fixed["users_uri"],
        "user_features_uri": str(tmp_path / "context.parquet"),
        "k": 1,
        "candidates": 3,
    }
    # Retrieval alone hits user 1 only at k=1 (see above); the click order (low ids
    # first) puts 30 first for user 1 and 10 for user 2: both hits.
    assert evaluate_rerank(RerankConfig(**common)).recall_at_k == 1.0
    # The weight head favours high ids: 50 for user 1, 30 for user 2, both misses.
    assert evaluate_rerank(RerankConfig(**common, rerank_by="weight")).recall_at_k == 0.0
    with pytest.raises(ValueError, match="user_features_uri"):
        evaluate_rerank(RerankConfig(**{**common, "user_features_uri": None}))


def _scores_split() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2, 2, 3, 3, 3, 3],
            "item_id": [1, 2, 3, 5, 1, 2, 1, 2, 3, 4],
            "split": ["train", "train", "test", "test", "train", "test"]
            + ["train", "train", "train", "test"],
        }
    )


def test_segments_by_hand() -> None:
    """Items 1..5 have train counts 3, 2, 1, 0, 0; users 1, 2, 3 have 2, 1, 3 train rows."""

    def scorer(users: np.ndarray) -> np.ndarray:
        # Users 1 and 2 prefer low ids, user 3 high ids.
        base = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
        return np.stack([base if u != 3 else base[::-1] for u in users.tolist()])

    got = evaluate_scores(
        scorer,
        split=_scores_split(),
        item_ids=np.arange(1, 6),
        k=2,
        name="fixed",
        cold_user_threshold=3,
        head_share=0.4,
    )
    idcg2 = 1 + 1 / np.log2(3)
    # User 1 ranks [3, 4] for test {3, 5}; user 2 ranks [2, 3] for {2}; user 3 ranks
    # [5, 4] for {4}.
    per_user = {
        1: (0.5, 1 / idcg2),
        2: (1.0, 1.0),
        3: (1.0, 1 / np.log2(3)),
    }
    assert got.recall_at_k == pytest.approx(np.mean([r for r, _ in per_user.values()]))
    assert got.ndcg_at_k == pytest.approx(np.mean([n for _, n in per_user.values()]))
    assert (got.n_users, got.model_dir) == (3, "fixed")
    # Cold: fewer than 3 train rows, users 1 and 2.
    cold = got.segments["cold_users"]
    assert cold["recall_at_k"] == pytest.approx((0.5 + 1.0) / 2)
    assert cold["ndcg_at_k"] == pytest.approx((1 / idcg2 + 1.0) / 2)
    assert cold["n_users"] == 2
    # Head = the 2 most popular items {1, 2}: user 2's test item is head, so the tail
    # segment holds user 1 (truth {3, 5}) and user 3 (truth {4}).
    tail = got.segments["long_tail"]
    assert tail["recall_at_k"] == pytest.approx((0.5 + 1.0) / 2)
    assert tail["ndcg_at_k"] == pytest.approx((1 / idcg2 + 1 / np.log2(3)) / 2)
    assert tail["n_users"] == 2


def test_long_tail_items_by_hand() -> None:
    train_items = np.array([7, 7, 7, 3, 3, 9, 9, 1])
    # Counts 7:3, 3:2, 9:2, 1:1, 5:0; ceil(0.4 * 5) = 2 head items: 7, then 3 (tie with 9,
    # lower id first).
    assert long_tail_items(train_items, np.array([1, 3, 5, 7, 9]), 0.4).tolist() == [1, 5, 9]
    assert long_tail_items(train_items, np.array([1, 3, 5, 7, 9]), 0.0).tolist() == [1, 3, 5, 7, 9]


def test_reciprocal_rank_fusion_by_hand() -> None:
    from recops.evaluation import _fuse

    # Retrieval order is the column order (ranks 1, 2, 3); the ranker ranks them 3, 1, 2.
    fused = _fuse(np.array([[0.1, 0.9, 0.5]]))
    expected = [1 / 61 + 1 / 63, 1 / 62 + 1 / 61, 1 / 63 + 1 / 62]
    np.testing.assert_allclose(fused[0], expected)
    # The item both orders like best wins; the one the ranker demotes falls behind.
    assert np.argsort(-fused[0]).tolist() == [1, 0, 2]


def test_columns_for_marks_items_outside_the_catalogue() -> None:
    frame = pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [10, 99, 98, 20]})
    got = columns_for(frame, np.array([2, 1, 3]), {10: 0, 20: 1})
    # Unknown items get distinct negative columns, in the order they are met.
    assert [g.tolist() for g in got] == [[-1, 1], [0, -2], []]


def test_old_private_names_stay_importable() -> None:
    from recops.evaluation import read_split, temporal_split, weight_rmse
    from recops.rank_signature import weight_rmse as leaf_weight_rmse
    from recops.splits import read_split as leaf_read_split
    from recops.splits import temporal_split as leaf_temporal_split

    assert (weight_rmse, read_split, temporal_split) == (
        leaf_weight_rmse,
        leaf_read_split,
        leaf_temporal_split,
    )
