"""What a training run is asked for (``TrainConfig``) and what it reports (``TrainResult``).

Both are ``Record``s: they travel through XCom and are stored as ``config.json`` and
``result.json`` in the run's folder. ``TrainConfig`` checks its own fields on creation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recops.errors import ParamError
from recops.params import stage_default
from recops.records import Record

if TYPE_CHECKING:
    from recops.layout import Layout

__all__ = ["OPERATIONAL_FIELDS", "PROTOCOLS", "TrainConfig", "TrainResult"]

PROTOCOLS = ("random", "temporal")
#: Config fields that change how a run copes with failures, not what it produces; they
#: are left out of the stored config so flipping one on a retry keeps the backup.
OPERATIONAL_FIELDS = ("discard_corrupt_backup",)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Record):
    """What to train on, where to write, and the knobs.

    Attributes:
        training_set_uri: Parquet training set (Feast historical features), with the
            layout's ``training_set_columns``.
        users_uri: users.parquet; the user features' vocabularies and statistics are
            fitted on its rows of the users seen in the train split.
        items_uri: items.parquet, the candidate catalogue embedded at export; the item
            features are fitted on its rows of the items seen in the train split.
        spec_uri: The dataset spec YAML: which attributes the model takes, and of what
            kind (``recops.layout.layout_from_spec``).
        output_dir: Folder owned by this run (key it on the data interval).
        epochs: Passes over the train split.
        embedding_dim: Output size of both towers.
        batch_size: Global batch; each replica gets ``batch_size / replicas`` rows and,
            with ``cross_replica_negatives``, uses every other row of the global batch
            as a negative (otherwise only the other rows of its slice).
        learning_rate: Adam learning rate.
        temperature: Softmax temperature of the cosine logits.
        history_length: Newest seen items the user tower pools, each training row's
            taken from the user's rows before it (0: no history encoding; None: the
            dataset spec's ``training.history_length``, read when training starts).
        logq_correction: Subtract each in-batch item's log sampling probability.
        replicas: Logical CPU devices to mirror over when there is no GPU (with GPUs,
            all of them are used; with ``TF_CONFIG``, one replica per worker device).
        seed: Seed for weights, shuffling and ``max_rows`` sampling (the split uses
            ``SPLIT_SEED``).
        max_rows: Train on at most this many train-split rows (sampled); the split itself
            always covers the whole training set.
        early_stopping_patience: Stop after this many epochs without a better valid
            NDCG@10 and keep the best epoch's weights; 0 disables early stopping (and
            the per-epoch validation).
        protocol: ``"random"`` (RecBole's per-user random split) or ``"temporal"``
            (``recops.splits.temporal_split``, each user's events by time), with the
            shares and seed of the spec's ``evaluation`` block; None: the spec's first
            ``evaluation.protocols``, read when training starts.
        backup_every_steps: Back up every this many steps instead of every epoch (for
            long epochs); None backs up at each epoch end.
        mixed_precision: Train under ``mixed_float16`` when GPUs are used (never on
            CPU); logits and loss stay float32.
        cross_replica_negatives: Score each replica's users against the items of the
            whole global batch, so the loss does not depend on the replica count.
        discard_corrupt_backup: On a corrupt backup, log it and start over instead of
            raising ``CheckpointCorruptError``. Not part of the run's identity.
    """

    training_set_uri: str
    users_uri: str
    items_uri: str
    spec_uri: str
    output_dir: str
    # Picked on ml-100k's valid split. logQ correction lifts Recall@10 from ~0.06 to ~0.25:
    # without it in-batch negatives over-penalise popular items. Temperature 0.2-0.3 beat
    # 0.05-0.1 and 0.5; epochs, dim and lr moved results by less than 0.01.
    epochs: int = stage_default("train", "epochs")
    embedding_dim: int = stage_default("train", "embedding_dim")
    batch_size: int = stage_default("train", "batch_size")
    learning_rate: float = stage_default("train", "learning_rate")
    temperature: float = stage_default("train", "temperature")
    history_length: int | None = stage_default("train", "history_length")
    logq_correction: bool = True
    replicas: int = stage_default("train", "replicas")
    seed: int = stage_default("train", "seed")
    max_rows: int | None = None
    early_stopping_patience: int = stage_default("train", "early_stopping_patience")
    protocol: str | None = stage_default("train", "protocol")
    backup_every_steps: int | None = None
    mixed_precision: bool = True
    cross_replica_negatives: bool = True
    discard_corrupt_backup: bool = False

    def __post_init__(self) -> None:
        if not self.spec_uri:
            raise ParamError("TrainConfig.spec_uri is empty: give the dataset spec YAML")
        for name in ("epochs", "embedding_dim", "batch_size", "replicas"):
            if getattr(self, name) < 1:
                raise ParamError(f"TrainConfig.{name}={getattr(self, name)!r} must be >= 1")
        for name in ("learning_rate", "temperature"):
            if not getattr(self, name) > 0:
                raise ParamError(f"TrainConfig.{name}={getattr(self, name)!r} must be > 0")
        if self.history_length is not None and self.history_length < 0:
            raise ParamError(f"TrainConfig.history_length={self.history_length!r} must be >= 0")
        for name in ("max_rows", "backup_every_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ParamError(f"TrainConfig.{name}={value!r} must be >= 1 or None")
        if self.early_stopping_patience < 0:
            raise ParamError(
                f"TrainConfig.early_stopping_patience={self.early_stopping_patience!r} must be >= 0"
            )
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise ParamError(f"TrainConfig.protocol={self.protocol!r} must be one of {PROTOCOLS}")

    def layout(self) -> Layout:
        """The published layout of the dataset ``spec_uri`` declares.

        Raises:
            DataError: If the spec file is missing or invalid (the message names it).
        """
        from recops.dataset_spec import load_spec
        from recops.layout import layout_from_spec

        return layout_from_spec(load_spec(self.spec_uri))

    def identity(self) -> dict[str, Any]:
        """The fields that define what the run produces (stored as ``config.json``)."""
        return {k: v for k, v in self.to_dict().items() if k not in OPERATIONAL_FIELDS}


@dataclass(frozen=True, kw_only=True)
class TrainResult(Record):
    """Where the trained model went and how training went.

    Attributes:
        model_dir: Float retrieval SavedModel.
        weights_uri: Folder with ``spec.json`` and the weights checkpoint.
        split_uri: The per-user split parquet.
        strategy: Distribution strategy class name.
        replicas: Replicas in sync.
        epochs_run: Epochs trained by this call (fewer than configured after a resume).
        final_loss: Mean training loss of the last epoch.
        resumed_from_epoch: First epoch this call ran (0 unless resumed from a backup).
        train_rows: Examples trained on per epoch (after ``max_rows``).
        n_users: Users in the model's vocabulary (seen in train).
        n_items: Items in the model's vocabulary (seen in train).
        n_candidates: Items embedded as retrieval candidates (the catalogue).
        examples_per_s: Training throughput over this call's epochs.
        seconds_per_epoch: Mean wall time per epoch (the first includes tracing).
        k: Candidates returned by ``serving_default``.
        resumed_from_step: ``optimizer.iterations`` right after the backup was restored
            (0 for a fresh start).
        best_epoch: Epoch whose weights were exported (early stopping), None when early
            stopping is disabled.
        valid_ndcg_at_10: Valid NDCG@10 after each epoch so far, epoch 0 first (also
            the epochs of an interrupted call that this one resumed).
        stopped_early: True if early stopping ended training before ``epochs``.
        protocol: The split protocol used.
        mixed_precision: True if training ran under ``mixed_float16``.
        loss_history: Training loss after each epoch this call ran (empty when it only
            exported a training finished before an interruption).
    """

    model_dir: str
    weights_uri: str
    split_uri: str
    strategy: str
    replicas: int
    epochs_run: int
    final_loss: float
    resumed_from_epoch: int
    train_rows: int
    n_users: int
    n_items: int
    n_candidates: int
    examples_per_s: float
    seconds_per_epoch: float
    k: int
    resumed_from_step: int = 0
    best_epoch: int | None = None
    valid_ndcg_at_10: list[float] = field(default_factory=list)
    stopped_early: bool = False
    protocol: str = "random"
    mixed_precision: bool = False
    loss_history: list[float] = field(default_factory=list)
