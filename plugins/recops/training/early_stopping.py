"""Early stopping on the valid split's NDCG@10, with state that survives a lost process.

``valid_ndcg_scorer`` scores the in-memory towers with full ranking on the valid split;
``early_stopping_callback`` calls it after every epoch, keeps the best weights and stops
on a plateau. Its state (one ``state-<epoch>.json`` per epoch plus the best weights as
``best-<epoch>.npz``) is written inside the backup folder, so a resumed run continues
where the lost one was; ``finished_state`` tells ``train`` when there is nothing left to
fit. tf_keras is imported inside the functions.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from recops_models.tf_env import use_legacy_keras

from recops.errors import CheckpointCorruptError, DataError, ParamError
from recops.io import atomic_write_bytes, atomic_write_text
from recops.splits import known_histories, of_types
from recops.training.config import TrainConfig

__all__ = [
    "EARLY_STOPPING_K",
    "early_stopping_callback",
    "finished_state",
    "load_states",
    "load_weights",
    "save_weights",
    "state_before",
    "valid_ndcg_scorer",
]

log = logging.getLogger(__name__)

#: Cut-off of the validation metric that early stopping watches.
EARLY_STOPPING_K = 10


def load_states(state_dir: Path | None) -> dict[int, dict[str, Any]]:
    """Every early-stopping state in ``state_dir``, by epoch (empty without a folder)."""
    if state_dir is None or not state_dir.is_dir():
        return {}
    states = {}
    for path in state_dir.glob("state-*.json"):
        state = json.loads(path.read_text())
        states[int(state["epoch"])] = state
    return states


def state_before(states: dict[int, dict[str, Any]], epoch: int) -> dict[str, Any] | None:
    """The newest state written before ``epoch`` began (the one its backup goes with)."""
    earlier = [e for e in states if e < epoch]
    return states[max(earlier)] if earlier else None


def load_weights(path: Path) -> list[np.ndarray]:
    """The weights ``save_weights`` stored at ``path``, in order."""
    with np.load(path) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


def early_stopping_callback(
    score: Callable[[Any], float],
    *,
    patience: int,
    state_dir: Path | None = None,
    write_state: bool = True,
) -> Any:
    """A Keras callback: score the model after each epoch, keep the best, stop on a plateau.

    The state after each epoch (score history, best epoch, the best weights) goes to
    ``state_dir`` before ``BackupAndRestore`` backs up that epoch, so put this callback
    before it. A resumed ``fit`` at epoch ``e`` picks up the newest state written before
    ``e`` and so agrees with the restored checkpoint even if the process died between
    the two writes. At the end of training the best weights are put back into the model.

    Args:
        score: Higher-is-better score of the model (valid NDCG@10 in ``train``).
        patience: Epochs without a strictly better score before stopping (>= 1).
        state_dir: Where the state lives (inside the backup folder); None keeps it in
            memory only.
        write_state: False on non-chief workers: they read the chief's state on resume
            but never write it.

    Returns:
        The callback; after ``fit`` it exposes ``history`` (scores, epoch 0 first),
        ``best_epoch``, ``best_score``, ``stopped_early`` and ``last_loss``.
    """
    if patience < 1:
        raise ParamError(f"patience={patience!r} must be >= 1")
    use_legacy_keras()
    import tf_keras

    class ValidationEarlyStopping(tf_keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.history: list[float] = []
            self.best_epoch: int | None = None
            self.best_score = -math.inf
            self.stopped_early = False
            self.last_loss: float | None = None
            self._wait = 0
            self._best_weights: list[np.ndarray] | None = None
            self._weights_file: str | None = None
            self._started = False
            self._halted = False

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            self._started = self._halted = False

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if self._started:
                return
            self._started = True
            state = state_before(load_states(state_dir), epoch)
            if epoch > 0 and state is None and not self.history:
                if state_dir is not None:
                    raise CheckpointCorruptError(
                        f"training resumed at epoch {epoch} but {state_dir} holds no "
                        "early-stopping state for the epochs before it"
                    )
            if state is not None:
                self._restore(state)
            if self.stopped_early:
                # Stopped before the interruption: end after this step, keep the best.
                self._halted = True
                self.model.stop_training = True

        def _restore(self, state: dict[str, Any]) -> None:
            self.history = [float(v) for v in state["history"]]
            self.best_epoch = state["best_epoch"]
            self.best_score = float(state["best_score"])
            self._wait = int(state["wait"])
            self.stopped_early = bool(state["stopped"])
            self.last_loss = state.get("loss")
            self._weights_file = state.get("weights_file")
            self._best_weights = None
            if self._weights_file and state_dir is not None:
                self._best_weights = load_weights(state_dir / self._weights_file)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if self._halted:
                return
            value = float(score(self.model))
            self.history.append(value)
            if logs is not None:  # later callbacks (the MLflow epoch logger) see it too
                logs[f"valid_ndcg_at_{EARLY_STOPPING_K}"] = value
            self.last_loss = float((logs or {}).get("loss", math.nan))
            if value > self.best_score:
                self.best_score, self.best_epoch, self._wait = value, epoch, 0
                self._best_weights = [w.copy() for w in self.model.get_weights()]
                if state_dir is not None and write_state:
                    self._weights_file = f"best-{epoch:05d}.npz"
                    save_weights(state_dir / self._weights_file, self._best_weights)
            else:
                self._wait += 1
            if self._wait >= patience:
                self.stopped_early = True
                self.model.stop_training = True
            log.info(
                "epoch %d: valid NDCG@%d %.4f (best %.4f at epoch %s)",
                epoch, EARLY_STOPPING_K, value, self.best_score, self.best_epoch,
            )  # fmt: skip
            if state_dir is not None and write_state:
                state = {
                    "epoch": epoch,
                    "history": self.history,
                    "best_epoch": self.best_epoch,
                    "best_score": self.best_score,
                    "wait": self._wait,
                    "stopped": self.stopped_early,
                    "loss": self.last_loss,
                    "step": int(self.model.optimizer.iterations.numpy()),
                    "weights_file": self._weights_file,
                }
                state_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(state_dir / f"state-{epoch:05d}.json", json.dumps(state))

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            if self._best_weights is not None:
                self.model.set_weights(self._best_weights)

    return ValidationEarlyStopping()


def save_weights(path: Path, weights: Sequence[np.ndarray]) -> None:
    """Store ``weights`` as an ``.npz`` archive at ``path``, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, *weights)
    atomic_write_bytes(path, buffer.getvalue())


def valid_ndcg_scorer(
    spec: Any,
    *,
    split: pd.DataFrame,
    profiles: pd.DataFrame,
    items: pd.DataFrame,
    k: int = EARLY_STOPPING_K,
    positive_types: Sequence[str] = (),
    seen_types: Sequence[str] = (),
    history_rows: pd.DataFrame | None = None,
) -> Callable[[Any], float]:
    """Full-ranking NDCG@k on the valid split, scoring with the in-memory towers.

    Users are ranked against the whole catalogue with their train items masked, as
    ``recops.evaluation`` does on the exported model.

    Args:
        spec: The model's ``TwoTowerSpec`` (vocabularies, feature definitions).
        split: ``user_id, item_id, split`` of the whole training set.
        profiles: One row per user: ``user_id`` and the spec's user feature columns.
        items: The catalogue, one row per item: ``item_id`` and the item feature columns.
        k: Cut-off.
        positive_types: Event types that count as hits (all when empty or when
            ``split`` has no ``event_type``), as in ``recops.evaluation``.
        seen_types: Event types masked as seen (all when empty or without
            ``event_type``).
        history_rows: The train rows (``user_id, item_id, event_timestamp`` and
            ``event_type`` when there); a model with a history encoding embeds each
            valid user with its seen items among them, newest first, as serving would.

    Returns:
        A function of the training model returning the user-averaged NDCG@k.

    Raises:
        DataError: If no valid user has a valid item in the catalogue.
    """
    from recops_models.metrics import ROW_BLOCK, ranking_metrics, top_k_items

    from recops.training.inputs import item_tower_inputs, user_tower_inputs

    item_ids = items["item_id"].to_numpy(np.int64)
    column_of = pd.Series(np.arange(item_ids.size), index=item_ids)
    cols = column_of.reindex(split["item_id"].to_numpy()).to_numpy()
    known = ~np.isnan(cols)
    frame = split.assign(col=np.where(known, cols, -1).astype(np.int64))[known]
    valid = of_types(frame[frame["split"] == "valid"], positive_types)
    truth = valid.groupby("user_id")["col"].apply(np.asarray)
    if truth.empty:
        raise DataError("the valid split has no positive items in the catalogue; cannot early-stop")
    users = truth.index.to_numpy(np.int64)
    train = of_types(frame[frame["split"] == "train"], seen_types)
    seen = train.groupby("user_id")["col"].apply(np.asarray)
    exclude = [seen.get(u, np.empty(0, np.int64)) for u in users.tolist()]
    ground_truth = truth.tolist()
    # A valid user without a profile row gets missing features (out of vocabulary).
    profile = profiles.set_index("user_id").reindex(users).rename_axis("user_id").reset_index()
    k = min(k, item_ids.size)
    histories = None
    if spec.history_length and history_rows is not None:
        known = of_types(history_rows, seen_types)
        histories = known_histories(known, users, spec.history_length)
    user_features = user_tower_inputs(spec, profile, histories)
    item_features = item_tower_inputs(spec, items)
    towers: dict[int, tuple[Any, Any]] = {}

    def score(model: Any) -> float:
        from recops_models.two_tower import embed_in_batches, towers_from_training_model

        if id(model) not in towers:
            towers.clear()
            towers[id(model)] = towers_from_training_model(model)
        user_tower, item_tower = towers[id(model)]
        user = embed_in_batches(user_tower, user_features)
        item = embed_in_batches(item_tower, item_features)
        # Score a block of users at a time: the whole users x items matrix is 4 GB at
        # 50k x 20k, and ranking it needs several copies.
        ranked = [
            top_k_items(user[rows] @ item.T, k, exclude[rows])
            for rows in (slice(i, i + ROW_BLOCK) for i in range(0, len(user), ROW_BLOCK))
        ]
        return float(ranking_metrics(np.concatenate(ranked), ground_truth, k).ndcg)

    return score


def finished_state(
    state_dir: Path, config: TrainConfig, saved_epoch: int | None
) -> dict[str, Any] | None:
    """The early-stopping state if training had finished (stopped or all epochs) before
    the interruption; None when there is training left to do."""
    if not config.early_stopping_patience or saved_epoch is None:
        return None
    # An epoch-end backup resumes at the next epoch. A step backup may resume inside its
    # own epoch; then the callback redoes that epoch's tail and decides again.
    resume_at = saved_epoch + 1 if config.backup_every_steps is None else saved_epoch
    state = state_before(load_states(state_dir), resume_at)
    if state is None or not state.get("weights_file"):
        return None
    return state if state["stopped"] or resume_at >= config.epochs else None
