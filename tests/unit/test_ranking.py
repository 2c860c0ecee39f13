"""The DCN ranker on the tiny dataset, driven by its spec: training, export, re-ranking."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _tiny_data import TinyData, write_tiny_data
from recops.errors import ParamError
from recops.rank_signature import load_signatures, signature_request, weight_rmse
from recops.ranking import (
    RankerConfig,
    RankerResult,
    click_metrics,
    popularity_negatives,
    train_ranker,
)
from recops.splits import split_interactions

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# The shared fixture trains one tiny ranker (about 20 s of CPU, more on a busy machine),
# so the tests that use it are marked slow. The split is made here, not by a retrieval
# run, so the ranker is tested on its own.


@dataclass(frozen=True)
class Setup:
    data: TinyData
    ranking_set_uri: str
    split_uri: str
    ranker: RankerResult
    config: RankerConfig


def _ranker_config(root: Path, data: TinyData, **overrides: Any) -> RankerConfig:
    settings: dict[str, Any] = {
        "training_set_uri": str(root / "ranking_set.parquet"),
        "split_uri": str(root / "split.parquet"),
        "users_uri": data.users_uri,
        "items_uri": data.items_uri,
        "spec_uri": data.spec_uri,
        "output_dir": str(root / "ranker"),
        "numeric_features": ("user_activity",),
        "item_numeric_features": ("item_popularity",),
        # Tiny-data weights are noise; the click head carries the planted clusters.
        "monitor": "logloss",
        "epochs": 8,
        "patience": 2,
        "embedding_dim": 8,
        "cross_layers": 1,
        "deep_units": (16,),
        "learning_rate": 0.01,
        "batch_size": 256,
        "negatives": 2,
        "replicas": 1,
        # The history path (off by default): each row with the user's other train items.
        "history_length": 5,
    }
    settings.update(overrides)
    return RankerConfig(**settings)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("ranking")
    data = write_tiny_data(root / "data")
    # Context columns, as the ranking feature service adds them.
    frame = pd.read_parquet(data.training_set_uri)
    frame["user_activity"] = frame.groupby("user_id")["item_id"].transform("size").astype(float)
    frame["item_popularity"] = frame.groupby("item_id")["user_id"].transform("size").astype(float)
    frame.to_parquet(root / "ranking_set.parquet", index=False)
    split = split_interactions(frame["user_id"].to_numpy(), frame["item_id"].to_numpy())
    split.to_parquet(root / "split.parquet", index=False)
    config = _ranker_config(root, data)
    return Setup(
        data=data,
        ranking_set_uri=str(root / "ranking_set.parquet"),
        split_uri=str(root / "split.parquet"),
        ranker=train_ranker(config),
        config=config,
    )


def _rows(setup: Setup, part: str) -> pd.DataFrame:
    rows = pd.read_parquet(setup.ranking_set_uri).merge(pd.read_parquet(setup.split_uri))
    return rows[rows["split"] == part].reset_index(drop=True)


@pytest.mark.slow
def test_ranker_result(setup: Setup) -> None:
    result = setup.ranker
    assert result.replicas >= 1
    assert 1 <= result.epochs_run <= 8 and 0 <= result.best_epoch < result.epochs_run
    # Weights are uniform 1..5 in the tiny data: a fitted mean scores about sqrt(2).
    assert 0.5 < result.rmse < 2.5 and 0.5 < result.valid_rmse < 2.5
    # Negatives are mostly out-of-cluster items, so the click head separates them.
    assert result.click_auc > 0.6 and np.isfinite(result.click_logloss)
    assert result.n_train == len(_rows(setup, "train"))
    run_dir = Path(setup.config.output_dir)
    assert (run_dir / "_SUCCESS").is_file() and (run_dir / "spec.json").is_file()
    assert not (run_dir / "_staging").exists()
    assert RankerResult.from_dict(result.to_dict()) == result
    from recops_models.dcn import RankerSpec

    spec = RankerSpec.from_json((run_dir / "spec.json").read_text())
    # The features are the spec's attributes plus the configured context features.
    assert [f.name for f in spec.user_features] == ["age", "gender", "occupation", "zip_code"]
    assert [f.name for f in spec.item_features] == ["title", "release_year", "genres"]
    assert [f.name for f in spec.user_context] == ["user_activity"]
    assert [f.name for f in spec.item_context] == ["item_popularity"]
    assert spec.deep_units == (16,) and len(spec.user_ids) == setup.data.n_users
    assert (spec.weight_min, spec.weight_max) == (1.0, 5.0)


@pytest.mark.slow
def test_rank_signature_takes_the_spec_features(setup: Setup) -> None:
    import tensorflow as tf
    from recops.rank_signature import rank_inputs

    loaded = load_signatures(setup.ranker.model_dir, ("rank",))
    _, inputs = loaded.signatures["rank"].structured_input_signature
    assert {name: spec.dtype for name, spec in inputs.items()} == {
        "user_id": tf.int64,
        "age": tf.float32,
        "gender": tf.string,
        "occupation": tf.string,
        "zip_code": tf.string,
        "user_activity": tf.float32,
        # The config's history_length: the user's newest seen items.
        "history_item_ids": tf.int64,
        "item_ids": tf.int64,
    }
    assert rank_inputs(loaded, setup.ranker.model_dir) == ("user_activity",)


@pytest.mark.slow
def test_second_call_returns_stored_result(setup: Setup) -> None:
    run_dir = Path(setup.config.output_dir)
    stamp = (run_dir / "model" / "saved_model.pb").stat().st_mtime_ns
    assert train_ranker(setup.config) == setup.ranker
    assert (run_dir / "model" / "saved_model.pb").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="different config"):
        train_ranker(_ranker_config(run_dir.parent, setup.data, epochs=9))


@pytest.mark.slow
def test_weight_rmse_matches_result(setup: Setup) -> None:
    from recops.layout import protocol_of
    from recops.splits import preceding_histories

    rows = pd.read_parquet(setup.ranking_set_uri).merge(pd.read_parquet(setup.split_uri))
    # Each row's history, as training cut it (the protocol's rule, train items only).
    history = preceding_histories(
        rows["user_id"].to_numpy(),
        rows["item_id"].to_numpy(),
        rows["event_timestamp"].to_numpy(),
        length=setup.config.history_length,
        eligible=(rows["split"] == "train").to_numpy(),
        before_only=protocol_of(setup.config.protocol, setup.config.spec_uri) != "random",
    )
    is_test = (rows["split"] == "test").to_numpy()
    test = rows[is_test].reset_index(drop=True)
    # Item features come from the model's catalogue; the rows' own values are unused.
    got = weight_rmse(setup.ranker.model_dir, test, history=history[is_test])
    assert got == pytest.approx(setup.ranker.rmse, rel=1e-5)
    # Without the histories, the ranker scores as for a user with none: other figures.
    assert weight_rmse(setup.ranker.model_dir, test) != pytest.approx(got, rel=1e-6)
    with pytest.raises(ValueError, match="user_activity"):
        weight_rmse(setup.ranker.model_dir, test.drop(columns="user_activity"))


@pytest.mark.slow
def test_reranking_beats_random_order(setup: Setup) -> None:
    rank = load_signatures(setup.ranker.model_dir, ("rank",)).signatures["rank"]
    test = _rows(setup, "test")
    known = pd.concat([_rows(setup, "train"), _rows(setup, "valid")])
    users = pd.read_parquet(setup.data.users_uri).set_index("user_id")
    users["user_activity"] = 30.0
    items = np.arange(1, setup.data.n_items + 1)
    recalls, chance = [], []
    for user, held_out in test.groupby("user_id")["item_id"]:
        # Every item the user has not interacted with in train/valid is a candidate.
        candidates = np.setdiff1d(items, known.loc[known["user_id"] == user, "item_id"])
        request = signature_request(
            rank, users.loc[[user]].reset_index(), item_ids=candidates.reshape(1, -1)
        )
        scores = rank(**request)["scores"].numpy()[0]
        top = candidates[np.argsort(-scores, kind="stable")[:10]]
        recalls.append(np.isin(held_out, top).mean())
        chance.append(10 / candidates.size)
    # Most held-out items are in the user's taste cluster (a third of the catalogue), so
    # a ranker that learned the clusters finds them well above chance.
    assert np.mean(recalls) > 1.8 * np.mean(chance)


def test_config_needs_a_spec_and_distinct_names(tmp_path: Path) -> None:
    data = write_tiny_data(tmp_path / "data", n_users=6, n_items=12, per_user=4)
    with pytest.raises(ParamError, match="spec_uri"):
        _ranker_config(tmp_path, data, spec_uri="")
    with pytest.raises(ParamError, match="reuses column names"):
        _ranker_config(tmp_path, data, numeric_features=("weight",))
    clash = _ranker_config(tmp_path, data, numeric_features=("occupation",))
    with pytest.raises(ParamError, match="occupation"):
        train_ranker(clash)
    assert not Path(clash.output_dir).exists()  # refused before anything is written


def test_click_metrics_by_hand() -> None:
    # Positives at 0.35 and 0.8, negatives at 0.1 and 0.4: 3 of 4 pairs ordered right.
    auc, logloss = click_metrics(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    assert auc == pytest.approx(0.75)
    expected = -(np.log(0.9) + np.log(0.6) + np.log(0.35) + np.log(0.8)) / 4
    assert logloss == pytest.approx(expected)
    with pytest.raises(ValueError, match="both"):
        click_metrics(np.array([0.5]), np.array([1]))


def test_popularity_negatives_avoid_known_pairs() -> None:
    positives = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 20, 10]})
    popularity = pd.Series([100.0, 1.0, 1.0], index=[10, 20, 30])
    rows, items = popularity_negatives(
        np.array([1, 2]), positives, popularity, 50, np.random.default_rng(0)
    )
    pairs = set(zip(np.array([1, 2])[rows].tolist(), items.tolist(), strict=True))
    assert pairs and not pairs & {(1, 10), (1, 20), (2, 10)}
    # User 1 can only get item 30; user 2 gets 20 or 30.
    assert {i for u, i in pairs if u == 1} == {30}
    assert {i for u, i in pairs if u == 2} <= {20, 30}


def test_a_refused_event_is_a_negative_example_and_draws_no_samples() -> None:
    from recops.ranking import _with_negatives

    rows = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 2],
            "item_id": [10, 20, 10, 30],
            "event_type": ["play", "skip", "save", "play"],
            "weight": [1.0, 0.5, 3.0, 1.0],
        }
    )
    popularity = pd.Series([5.0, 3.0, 2.0, 1.0], index=[10, 20, 30, 40])
    got = _with_negatives(
        rows, rows[["user_id", "item_id"]], popularity, 2, np.random.default_rng(3), ("skip",)
    )
    given = got.iloc[: len(rows)]
    assert given["click"].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert np.isnan(given["weight"].iloc[1]) and given["weight"].iloc[2] == 3.0
    sampled = got.iloc[len(rows) :]
    assert (sampled["click"] == 0.0).all() and sampled["weight"].isna().all()
    # Two draws per wanted row (three of them), none for the skip, none on a known pair.
    assert len(sampled) <= 6
    assert sampled["event_type"].isin(["play", "save"]).all()
    known = set(zip(rows["user_id"], rows["item_id"], strict=True))
    assert not known & set(zip(sampled["user_id"], sampled["item_id"], strict=True))


def test_popularity_negatives_draw_as_redrawing_every_clash() -> None:
    # The reference: check the whole array after every redraw (np.isin), as the sampler
    # did before it re-checked only the clashing rows. Same seed, same draws.
    rng_data = np.random.default_rng(5)
    positives = pd.DataFrame(
        {"user_id": rng_data.integers(0, 30, 400), "item_id": rng_data.integers(0, 12, 400)}
    )
    popularity = positives["item_id"].value_counts().sort_index().astype(float)
    users = rng_data.integers(0, 30, 200)

    def reference(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        items = popularity.index.to_numpy(np.int64)
        weights = popularity.to_numpy(np.float64) / popularity.sum()
        rows = np.repeat(np.arange(users.size), 3)
        who = users[rows]
        stride = int(max(items.max(), positives["item_id"].max())) + 1
        known = np.unique(positives["user_id"].to_numpy() * stride + positives["item_id"])
        drawn = rng.choice(items, rows.size, p=weights)
        for _ in range(5):
            clash = np.isin(who * stride + drawn, known)
            if not clash.any():
                break
            drawn[clash] = rng.choice(items, int(clash.sum()), p=weights)
        keep = ~np.isin(who * stride + drawn, known)
        return rows[keep], drawn[keep]

    got = popularity_negatives(users, positives, popularity, 3, np.random.default_rng(11))
    expected = reference(np.random.default_rng(11))
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[0].size < users.size * 3  # some rows kept clashing and were dropped
