"""Train the DCN-v2 ranker and export it as a SavedModel with a ``rank`` signature.

``train_ranker(RankerConfig(...))`` reads the training set, joins the retrieval model's
split (so ranker and retriever train, tune and test on the same rows), trains on the
train rows plus popularity-sampled negatives, stops early on the valid split's weight
RMSE (or click log loss), and writes into ``output_dir``::

    model/        ranker SavedModel: rank(user_id, <user attributes>,
                  <numeric context features>, item_ids[b, n]) -> scores, ratings
    spec.json     vocabularies and stats of the graph
    config.json   the config this folder belongs to
    result.json   RankerResult
    _SUCCESS      written last; its presence means the folder is complete

The features are the dataset's: the user and item attributes its spec declares
(``spec_uri``, through ``recops.layout``) plus the numeric context features the config
names. The label of the regression head is the interaction's ``weight`` (the explicit
value when the dataset has one, else the event type's weight).

Like training, a task is a transaction: outputs are staged and renamed into place, and a
call on a completed folder returns the stored result without training.

TensorFlow is imported inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from recops_models.contract import HISTORY_INPUT
from recops_models.tf_env import tensorflow, use_legacy_keras
from recops_models.vocab import OOV_INDEX, lookup_index

from recops.dataset_spec import load_spec
from recops.errors import DataError, ParamError
from recops.layout import history_length_of, layout_from_spec, protocol_of
from recops.params import stage_default
from recops.records import Record
from recops.splits import positive_rows, preceding_histories, read_split
from recops.tables import latest_rows, read_items, read_parquet_columns, read_users
from recops.tracking_epochs import epoch_logger

if TYPE_CHECKING:
    from recops.layout import Layout

__all__ = [
    "RankerConfig",
    "RankerResult",
    "click_metrics",
    "popularity_negatives",
    "train_ranker",
]

log = logging.getLogger(__name__)

#: Columns of the training set the ranker always reads; the user attributes and the
#: context features come on top. Item attributes come from the items table (the
#: catalogue the SavedModel embeds), so training sees what serving will.
_ROW_COLUMNS = ("user_id", "item_id", "event_timestamp", "weight")
#: Column tying each example (negatives included) to its row of the history array.
_HISTORY_ROW = "_history_row"
#: Names a context feature may not take: the ranker's own inputs and outputs.
_RESERVED = ("user_id", "item_id", "item_ids", "event_timestamp", "event_type", "weight", "click")
#: Early-stopping choices and the Keras history key each one watches.
_MONITORS = {"rmse": "val_weight_rmse", "logloss": "val_click_loss"}


@dataclass(frozen=True, kw_only=True)
class RankerConfig(Record):
    """What to train on, where to write, and the knobs.

    Attributes:
        training_set_uri: Parquet training set (the ranking feature service's) with
            ``user_id, item_id, event_timestamp, weight``, the user attributes and the
            numeric features.
        split_uri: The retrieval model's split parquet ``user_id, item_id, split``.
        users_uri: users.parquet; the user attributes' vocabularies and statistics are
            fitted on its rows of the train split's users.
        items_uri: items.parquet, the catalogue embedded in the SavedModel; the item
            attributes are fitted on its rows of the train split's items.
        spec_uri: The dataset spec YAML: which attributes the model takes, and of what
            kind (``recops.layout.layout_from_spec``).
        output_dir: Folder owned by this run.
        numeric_features: Numeric user/context features; the caller sends them with
            each ``rank`` request (the training set's event-time values train them).
        item_numeric_features: Numeric item features; the newest train-split value per
            item is embedded in the SavedModel and used for every example, positives and
            negatives alike, so the model cannot tell them apart by feature freshness.
        epochs: Most passes over the data (early stopping may end sooner).
        patience: Epochs without a better valid metric before stopping.
        monitor: Early-stopping metric on the valid split: ``rmse`` (weight head) or
            ``logloss`` (click head, positives vs sampled negatives).
        embedding_dim: Size of the user and item id embeddings.
        cross_layers: DCN-v2 cross layers.
        deep_units: Widths of the MLP above the cross layers.
        learning_rate: Adam learning rate.
        l2: L2 penalty on embeddings and kernels.
        dropout: Dropout after each MLP layer.
        batch_size: Global batch (split over replicas).
        negatives: Popularity-sampled negatives per positive for the click head.
        click_weight: Weight of the click loss relative to the weight-head loss.
        replicas: Logical CPU devices to mirror over when there is no GPU.
        seed: Seed for weights, shuffling and negatives.
        history_length: Newest seen items the ranker pools, as retrieval's user tower
            does; 0 trains without a history input; None: the dataset spec's
            ``training.history_length``, read when training starts.
        protocol: The split's protocol, which sets each row's history as retrieval's
            training does: the user's train items before the row's event (``temporal``)
            or the user's newest other train items (``random``); a negative takes its
            positive's. None: the dataset spec's first ``evaluation.protocols``, as
            training resolves it.
    """

    training_set_uri: str
    split_uri: str
    users_uri: str
    items_uri: str
    spec_uri: str
    output_dir: str
    numeric_features: tuple[str, ...] = ()
    item_numeric_features: tuple[str, ...] = ()
    # On ml-100k (80/10/10, seed 2020) these reach test RMSE 0.903 and click AUC 0.83 at
    # the 5th epoch, in about 3 minutes on 2 CPU cores. click_weight 0.5 gave RMSE 0.908
    # but AUC 0.71, and its re-ranking lost to the retriever's own order; batch 1024 at
    # lr 0.001 was 2.5x slower per epoch.
    epochs: int = stage_default("rank", "epochs")
    patience: int = 3
    monitor: str = "rmse"
    embedding_dim: int = 32
    cross_layers: int = 2
    deep_units: tuple[int, ...] = (128, 64)
    learning_rate: float = 0.003
    l2: float = 1e-5
    dropout: float = 0.0
    batch_size: int = 4096
    negatives: int = 4
    click_weight: float = 2.0
    replicas: int = stage_default("rank", "replicas")
    seed: int = stage_default("rank", "seed")
    history_length: int | None = stage_default("rank", "history_length")
    protocol: str | None = stage_default("rank", "protocol")

    def __post_init__(self) -> None:
        if not self.spec_uri:
            raise ParamError("RankerConfig.spec_uri is empty: give the dataset spec YAML")
        for name in ("epochs", "patience", "embedding_dim", "batch_size", "replicas"):
            if getattr(self, name) < 1:
                raise ParamError(f"RankerConfig.{name}={getattr(self, name)!r} must be >= 1")
        for name in ("cross_layers", "negatives", "history_length"):
            if (getattr(self, name) or 0) < 0:
                raise ParamError(f"RankerConfig.{name}={getattr(self, name)!r} must be >= 0")
        if self.protocol not in (None, "random", "temporal"):
            raise ParamError(
                f"RankerConfig.protocol={self.protocol!r} must be 'random' or 'temporal'"
            )
        if self.monitor not in _MONITORS:
            raise ParamError(
                f"RankerConfig.monitor={self.monitor!r}: expected one of {sorted(_MONITORS)}"
            )
        if not self.learning_rate > 0:
            raise ParamError(f"RankerConfig.learning_rate={self.learning_rate!r} must be > 0")
        for name in ("l2", "click_weight"):
            if getattr(self, name) < 0:
                raise ParamError(f"RankerConfig.{name}={getattr(self, name)!r} must be >= 0")
        if not 0 <= self.dropout < 1:
            raise ParamError(f"RankerConfig.dropout={self.dropout!r} must be in [0, 1)")
        if any(units < 1 for units in self.deep_units):
            raise ParamError(f"RankerConfig.deep_units={self.deep_units!r} must be >= 1 each")
        both = set(self.numeric_features) & set(self.item_numeric_features)
        if both:
            raise ParamError(f"RankerConfig: {sorted(both)} listed as user and item features")
        clash = set(self.numeric_features) & set(_RESERVED)
        if clash:
            raise ParamError(f"RankerConfig.numeric_features reuses column names {sorted(clash)}")
        # Tuples arrive as lists from JSON (Airflow params, result.json); keep them tuples
        # so configs compare equal.
        for name in ("numeric_features", "item_numeric_features", "deep_units"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def layout(self) -> Layout:
        """The published layout of the dataset ``spec_uri`` declares.

        Raises:
            DataError: If the spec file is missing or invalid (the message names it).
        """
        from recops.dataset_spec import load_spec
        from recops.layout import layout_from_spec

        return layout_from_spec(load_spec(self.spec_uri))


@dataclass(frozen=True, kw_only=True)
class RankerResult(Record):
    """Where the ranker went and how it did.

    Attributes:
        model_dir: Ranker SavedModel (``rank`` signature).
        rmse: Weight RMSE on the test split (through the SavedModel).
        valid_rmse: Weight RMSE on the valid split at the kept epoch.
        click_auc: AUC of the click score, test positives vs popularity negatives.
        click_logloss: Log loss of the click score on the same rows.
        n_train: Positive train rows.
        epochs_run: Epochs trained.
        best_epoch: Epoch (0-based) whose weights were kept.
        strategy: Distribution strategy class name.
        replicas: Replicas in sync.
        duration_s: Wall time of the call.
        history: Keras' per-epoch logs (``loss``, ``val_weight_rmse``...), epoch 0 first.
    """

    model_dir: str
    rmse: float
    valid_rmse: float
    click_auc: float
    click_logloss: float
    n_train: int
    epochs_run: int
    best_epoch: int
    strategy: str
    replicas: int
    duration_s: float
    history: dict[str, list[float]] = field(default_factory=dict)


# --------------------------------------------------------------------------- data


def _read_rows(config: RankerConfig, layout: Layout) -> pd.DataFrame:
    """The training set joined with the split: one row per (user, item), with ``split``.

    A pair seen several times keeps one row by ``recops.tables.read_training_set``'s
    rule (the newest with an explicit value, else the strongest event), so the ranker's
    rows are the retrieval model's rows.
    """
    columns = (
        *_ROW_COLUMNS,
        # Only a dataset with negative events needs the (string) type of 20M rows.
        *(("event_type",) if layout.negative_types else ()),
        *(f.name for f in layout.user_features),
        *config.numeric_features,
        *config.item_numeric_features,
    )
    frame = read_parquet_columns(config.training_set_uri, columns, "training set")
    order = ["user_id", "item_id", "event_timestamp"]
    if layout.value_range is None:
        order = ["user_id", "item_id", "weight", "event_timestamp"]
    frame = frame.sort_values(order, kind="stable")
    frame = frame.drop_duplicates(["user_id", "item_id"], keep="last").reset_index(drop=True)
    split = read_split(config.split_uri)
    if split.duplicated(["user_id", "item_id"]).any():
        raise DataError(f"split {config.split_uri} has duplicate (user_id, item_id) pairs")
    joined = frame.merge(split, on=["user_id", "item_id"], how="left", validate="one_to_one")
    if joined["split"].isna().any():
        missing = int(joined["split"].isna().sum())
        raise DataError(
            f"split {config.split_uri} lacks {missing} (user_id, item_id) pairs of the "
            f"training set {config.training_set_uri}"
        )
    for part in ("train", "valid", "test"):
        if not (joined["split"] == part).any():
            raise DataError(f"split {config.split_uri} leaves no {part!r} training-set rows")
    return joined


def popularity_negatives(
    user_id: np.ndarray,
    positives: pd.DataFrame,
    popularity: pd.Series,
    per_row: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``per_row`` negative items for each row, by popularity, avoiding known pairs.

    Args:
        user_id: User of each row that gets negatives.
        positives: ``user_id, item_id`` pairs that are not negatives (all interactions).
        popularity: Train count per item id (the sampling weights).
        per_row: Negatives per row.
        rng: Random generator.

    Returns:
        ``(row, item_id)``: the source row index of each negative and its item. Draws
        still colliding after a few retries are dropped.
    """
    items = popularity.index.to_numpy(dtype=np.int64)
    weights = popularity.to_numpy(dtype=np.float64)
    weights = weights / weights.sum()
    rows = np.repeat(np.arange(len(user_id)), per_row)
    users = np.asarray(user_id, dtype=np.int64)[rows]
    stride = int(max(items.max(), positives["item_id"].max())) + 1
    known = np.unique(
        positives["user_id"].to_numpy(np.int64) * stride + positives["item_id"].to_numpy(np.int64)
    )
    drawn = rng.choice(items, rows.size, p=weights)
    # Only the rows still clashing are redrawn and checked again (in row order, so the
    # draws are those of redrawing every clash of the whole array), by binary search in
    # the sorted known pairs: np.isin sorts the 16M draws with them on every call.
    clashing = np.flatnonzero(lookup_index(known, users * stride + drawn) != OOV_INDEX)
    for _ in range(5):
        if not clashing.size:
            break
        drawn[clashing] = rng.choice(items, clashing.size, p=weights)
        still = lookup_index(known, users[clashing] * stride + drawn[clashing]) != OOV_INDEX
        clashing = clashing[still]
    keep = np.ones(rows.size, dtype=bool)
    keep[clashing] = False
    return rows[keep], drawn[keep]


def _with_negatives(
    rows: pd.DataFrame,
    positives: pd.DataFrame,
    popularity: pd.Series,
    per_row: int,
    rng: np.random.Generator,
    negative_types: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Positive rows (``click`` 1) plus sampled negatives (``click`` 0, weight NaN).

    Rows of the ``negative_types`` (the user skipped or removed the item) are negatives
    the user gave: ``click`` 0 and weight NaN, and they draw no sampled negatives.
    Sampled negatives copy their source row's user and context features; item features
    are joined from the catalogue afterwards, for every row alike.
    """
    refused = (
        rows["event_type"].isin(list(negative_types)).to_numpy()
        if negative_types
        else np.zeros(len(rows), bool)
    )
    weight = rows["weight"].to_numpy(np.float64)
    rows = rows.assign(click=np.where(refused, 0.0, 1.0), weight=np.where(refused, np.nan, weight))
    if per_row == 0:
        return rows
    wanted = rows[~refused].reset_index(drop=True)
    source, items = popularity_negatives(
        wanted["user_id"].to_numpy(), positives, popularity, per_row, rng
    )
    negatives = wanted.iloc[source].reset_index(drop=True)
    negatives = negatives.assign(item_id=items, click=0.0, weight=np.nan)
    return pd.concat([rows, negatives], ignore_index=True)


def _catalogue(
    config: RankerConfig, layout: Layout, rows: pd.DataFrame, train: pd.DataFrame
) -> pd.DataFrame:
    """Items with their attributes and the newest train value of the item context features.

    Raises:
        DataError: If the items table lacks an item of ``rows``.
    """
    catalogue = read_items(config.items_uri, layout).drop(columns="event_timestamp")
    unknown = np.setdiff1d(rows["item_id"].unique(), catalogue["item_id"].to_numpy())
    if unknown.size:
        raise DataError(
            f"items {config.items_uri} lacks item_id {unknown[:10].tolist()} of the training set"
        )
    if config.item_numeric_features:
        newest = latest_rows(
            train[["item_id", "event_timestamp", *config.item_numeric_features]], "item_id"
        )
        catalogue = catalogue.merge(
            newest.drop(columns="event_timestamp"), on="item_id", how="left"
        )
    return catalogue.reset_index(drop=True)


def click_metrics(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """AUC (ties count half) and log loss of probabilities against 0/1 labels.

    Raises:
        DataError: If the labels are not all 0/1 or hold only one class (a ``ValueError``).
    """
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if not np.isin(labels, (0.0, 1.0)).all():
        raise DataError("click labels must be 0 or 1")
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataError("click metrics need both positive and negative rows")
    ranks = rankdata(scores)
    auc = (ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    logloss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    return float(auc), float(logloss)


def _histories_of(frame: pd.DataFrame, histories: np.ndarray | None) -> dict[str, np.ndarray]:
    """``HISTORY_INPUT`` of ``frame``'s rows (by ``_HISTORY_ROW``), or nothing."""
    if histories is None:
        return {}
    return {HISTORY_INPUT: histories[frame[_HISTORY_ROW].to_numpy(np.int64)]}


def _dataset(
    spec: Any,
    frame: pd.DataFrame,
    *,
    batch_size: int,
    seed: int,
    shuffle: bool,
    histories: np.ndarray | None = None,
) -> Any:
    """(features, labels, sample weights) batches; the weight loss skips negatives."""
    from recops_models.dcn import ranking_inputs

    from recops.training.inputs import indexed_dataset

    # Only the model's columns: converting the others too cost half a minute at 20M rows.
    names = ("user_id", "item_id", *(f.name for f in spec.features))
    columns = {c: frame[c].to_numpy() for c in names}
    if histories is not None:
        # One placeholder column here; each batch gathers its rows' histories below.
        # Copying a history per example (negatives included) would hold 20M x L ids.
        columns[HISTORY_INPUT] = np.zeros((len(frame), 1), np.int64)
    features = ranking_inputs(spec, columns)
    if histories is not None:
        features[HISTORY_INPUT] = frame[_HISTORY_ROW].to_numpy(np.int64)
    weight = frame["weight"].to_numpy(np.float64)
    positive = np.isfinite(weight)
    labels = {
        "weight": np.where(positive, weight, 0.0).astype(np.float32).reshape(-1, 1),
        "click": frame["click"].to_numpy(np.float32).reshape(-1, 1),
    }
    weights = {
        "weight": positive.astype(np.float32),
        "click": np.ones(len(frame), np.float32),
    }
    dataset = indexed_dataset(
        (features, labels, weights), len(frame),
        batch_size=batch_size, seed=seed, shuffle=shuffle, drop_remainder=False,
    )  # fmt: skip
    if histories is None:
        return dataset
    tf = tensorflow()
    # int32 halves the table; ids beyond 2**31 keep int64.
    small = histories.size == 0 or np.abs(histories).max() < 2**31
    table = tf.constant(histories.astype(np.int32) if small else histories)

    def with_history(features: Any, labels: Any, weights: Any) -> Any:
        rows = tf.gather(table, features[HISTORY_INPUT])
        return {**features, HISTORY_INPUT: tf.cast(rows, tf.int64)}, labels, weights

    return dataset.map(with_history, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- train


def train_ranker(config: RankerConfig) -> RankerResult:
    """Train the DCN-v2 ranker and export its SavedModel.

    Args:
        config: What to train and where to write.

    Returns:
        The result; the stored one when ``output_dir`` is already complete.

    Raises:
        DataError: On bad input data or spec (all of these are ``ValueError``s).
        ParamError: If a numeric feature is also an attribute of the dataset.
        OutputConflictError: If ``output_dir`` holds a completed run of another config.
        TrainingDivergedError: If the training loss is not finite.
        InputMissingError: If an input is missing (a ``FileNotFoundError``).
    """
    from recops.training.export import load_completed, prepare_output_dir, publish
    from recops.training.fit import TrainingDivergedError
    from recops.training.strategy import seed_everything, select_strategy

    started = time.perf_counter()
    output_dir = Path(config.output_dir)
    # The JSON form: result.json stores tuples as lists, and the two must compare equal.
    config_dict = json.loads(json.dumps(config.to_dict()))
    done = load_completed(output_dir, config_dict)
    if done is not None:
        log.info("%s is complete; returning its result without training", output_dir)
        return RankerResult.from_dict(done)
    # Checked before staging: a config the dataset refuses writes nothing.
    # Read once: every choice of this run comes from the same version of the file.
    dataset_spec = load_spec(config.spec_uri)
    layout = layout_from_spec(dataset_spec)
    taken = {f.name for f in (*layout.user_features, *layout.item_features)}
    clash = sorted(taken & {*config.numeric_features, *config.item_numeric_features})
    if clash:
        raise ParamError(
            f"RankerConfig: numeric features {clash} are attributes of the dataset "
            f"{layout.name!r} already; rename them or leave them out"
        )
    staging = prepare_output_dir(output_dir, config_dict, None)

    rows = _read_rows(config, layout)
    histories = None
    history_length = history_length_of(config.history_length, dataset_spec)
    if history_length:
        # As retrieval's rows (``training.inputs.training_inputs``): what evaluation
        # under the protocol hands over. Negatives copy their source row, and with it
        # this row number.
        histories = preceding_histories(
            rows["user_id"].to_numpy(),
            rows["item_id"].to_numpy(),
            rows["event_timestamp"].to_numpy(),
            length=history_length,
            eligible=(rows["split"] == "train").to_numpy(),
            before_only=protocol_of(config.protocol, dataset_spec) != "random",
        )
        rows[_HISTORY_ROW] = np.arange(len(rows))
    train = rows[rows["split"] == "train"].reset_index(drop=True)
    catalogue = _catalogue(config, layout, rows, train)
    # Every example takes its item's features from the catalogue, as serving will: the
    # model cannot tell positives from negatives by the freshness of item features.
    rows = rows.drop(columns=list(config.item_numeric_features))
    kept = positive_rows(train, layout.negative_types)
    popularity = (train if kept is None else train[kept])["item_id"].value_counts().sort_index()
    pairs = rows[["user_id", "item_id"]]
    rng = np.random.default_rng(config.seed)
    parts = {
        name: _with_negatives(
            rows[rows["split"] == name].reset_index(drop=True),
            pairs,
            popularity,
            config.negatives,
            rng,
            layout.negative_types,
        ).merge(catalogue, on="item_id", how="left", validate="many_to_one")
        for name in ("train", "valid", "test")
    }

    use_legacy_keras()
    # The strategy comes first: logical devices can only be set before TF starts.
    strategy, strategy_name, replicas = select_strategy(config.replicas)
    seed_everything(config.seed)
    import tf_keras
    from recops_models.dcn import RankerSpec, build_ranking_model, export_ranking_model, save_spec

    users = read_users(config.users_uri, layout)
    spec = RankerSpec.fit(
        train=parts["train"][parts["train"]["click"] == 1.0],
        users={c: users[c].to_numpy() for c in users.columns},
        items={c: catalogue[c].to_numpy() for c in catalogue.columns},
        user_defs=layout.user_features,
        item_defs=layout.item_features,
        user_context=config.numeric_features,
        item_context=config.item_numeric_features,
        embedding_dim=config.embedding_dim,
        cross_layers=config.cross_layers,
        deep_units=config.deep_units,
        l2=config.l2,
        dropout=config.dropout,
        history_length=history_length,
    )
    train_data, valid_data = (
        _dataset(
            spec,
            parts[name],
            batch_size=config.batch_size,
            seed=config.seed,
            shuffle=name == "train",
            histories=histories,
        )
        for name in ("train", "valid")
    )
    # Keras averages each head's loss over the whole batch, negatives included; scaling
    # by (1 + negatives) makes the weight loss a mean over positives again.
    weight_loss_weight = 1.0 + config.negatives
    with strategy.scope():
        model = build_ranking_model(spec)
        model.compile(
            optimizer=tf_keras.optimizers.Adam(learning_rate=config.learning_rate),
            loss={
                "weight": tf_keras.losses.MeanSquaredError(),
                "click": tf_keras.losses.BinaryCrossentropy(from_logits=True),
            },
            loss_weights={"weight": weight_loss_weight, "click": config.click_weight},
            weighted_metrics={"weight": [tf_keras.metrics.RootMeanSquaredError(name="rmse")]},
        )
    stopper = tf_keras.callbacks.EarlyStopping(
        monitor=_MONITORS[config.monitor],
        mode="min",
        patience=config.patience,
        restore_best_weights=True,
    )
    history = model.fit(
        train_data,
        validation_data=valid_data,
        epochs=config.epochs,
        # Each epoch's logs reach the task's MLflow run as they happen (when tracked).
        callbacks=[stopper, *filter(None, [epoch_logger("rank.")])],
        verbose=0,
    )
    valid_curve = history.history["val_weight_rmse"]
    if not all(math.isfinite(v) for v in history.history["loss"]):
        raise TrainingDivergedError(
            "ranker training diverged (non-finite loss); lower learning_rate"
        )
    best_epoch = int(np.argmin(history.history[_MONITORS[config.monitor]]))

    # A plain copy of the weights: the export must not depend on the strategy.
    plain = build_ranking_model(spec)
    plain.set_weights(model.get_weights())
    save_spec(spec, staging)
    export_ranking_model(
        model=plain,
        spec=spec,
        catalogue={c: catalogue[c].to_numpy() for c in catalogue.columns},
        export_dir=staging / "model",
    )
    rmse, auc, logloss = _test_metrics(staging / "model", parts["test"], histories)
    result = RankerResult(
        model_dir=str(output_dir / "model"),
        rmse=rmse,
        valid_rmse=float(valid_curve[best_epoch]),
        click_auc=auc,
        click_logloss=logloss,
        n_train=len(train),
        epochs_run=len(valid_curve),
        best_epoch=best_epoch,
        strategy=strategy_name,
        replicas=replicas,
        duration_s=time.perf_counter() - started,
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
    )
    publish(staging, output_dir, ("model", "spec.json"), result.to_dict())
    log.info("trained ranker %s", result.to_dict())
    return result


def _test_metrics(
    model_dir: Path, test: pd.DataFrame, histories: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Test RMSE (positives) and click AUC / log loss (all rows) through the SavedModel,
    each row with its history when the ranker takes one."""
    from recops.rank_signature import load_signatures, signature_request, weight_rmse

    positives = test[test["click"] == 1.0]
    rmse = weight_rmse(
        str(model_dir), positives, history=_histories_of(positives, histories).get(HISTORY_INPUT)
    )
    rank = load_signatures(str(model_dir), ("rank",)).signatures["rank"]
    scores = []
    for start in range(0, len(test), 8192):
        part = test.iloc[start : start + 8192]
        items = part["item_id"].to_numpy(np.int64).reshape(-1, 1)
        fixed = _histories_of(part, histories)
        scores.append(
            rank(**signature_request(rank, part, item_ids=items, **fixed))["scores"].numpy()
        )
    auc, logloss = click_metrics(np.concatenate(scores)[:, 0], test["click"].to_numpy())
    return rmse, auc, logloss
