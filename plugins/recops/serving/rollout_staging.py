"""Staging a version folder: check the SavedModel, copy it in with its warmup file.

``check_saved_model`` checks a SavedModel's ``serving_default`` against the smoke
instances and builds its warmup records; ``install_version`` copies it to
``<model_base_path>/<model>/<version>/`` through a staging folder and one rename, with the
warmup records as ``assets.extra/tf_serving_warmup_requests`` (an identical existing copy
is kept, a different one is refused: versions are immutable); ``prune_disk`` removes the
version folders no longer served.

TensorFlow and the serving modules are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

from recops.errors import RolloutError
from recops.io import publish_dir, staging_dir
from recops.serving.rollout_config import SCORES_OUTPUT, TOP_ITEMS_OUTPUT, RolloutConfig

__all__ = ["check_saved_model", "install_version", "prune_disk", "tree_digest"]

log = logging.getLogger("recops.serving.rollout")


def check_saved_model(source: Path, config: RolloutConfig) -> tuple[list[bytes], int | None]:
    """Check the SavedModel against the smoke instances.

    Returns the warmup records (serialized PredictionLogs) and the ranked-list length the
    signature promises (the static K of ``item_ids``, None if unknown).
    """
    from recops_models.tf_env import tensorflow

    from recops.errors import ServingError
    from recops.serving.codec import json_to_tensors
    from recops.serving.servable import DEFAULT_SIGNATURE, SignatureIO, read_signature_defs

    tf = tensorflow()
    from tensorflow_serving.apis import prediction_log_pb2

    if not source.is_dir():
        raise RolloutError(f"saved_model_dir {source} is not a folder")
    try:
        signature = read_signature_defs(source).get(DEFAULT_SIGNATURE)
    except Exception as exc:
        raise RolloutError(f"{source} is not a readable SavedModel: {exc}") from exc
    if signature is None:
        raise RolloutError(f"{source} has no '{DEFAULT_SIGNATURE}' signature")
    io = SignatureIO.from_signature_def(signature)
    ranked = io.outputs.get(TOP_ITEMS_OUTPUT)
    scored = io.outputs.get(SCORES_OUTPUT)
    if ranked is None and scored is not None and "item_ids" in io.inputs:
        ranked_length = None  # a scoring model (the ranker): candidates in, scores out
    elif ranked is None or ranked.dtype != "int64":
        raise RolloutError(
            f"{source}: '{DEFAULT_SIGNATURE}' has no int64 '{TOP_ITEMS_OUTPUT}' output "
            f"(retrieval) nor an 'item_ids' input with a '{SCORES_OUTPUT}' output (ranking)"
        )
    else:
        ranked_length = (
            ranked.shape[1] if ranked.shape is not None and len(ranked.shape) == 2 else None
        )
    try:
        arrays, _ = json_to_tensors({"instances": config.smoke_instances}, io.inputs)
    except ServingError as exc:
        raise RolloutError(f"smoke_instances do not fit {source}: {exc.message}") from exc
    for name, array in arrays.items():
        if not io.inputs[name].compatible(array.shape):
            raise RolloutError(
                f"smoke_instances: input {name} has shape {list(array.shape)}, "
                f"{source} expects {io.inputs[name].describe_shape()}"
            )
    record = prediction_log_pb2.PredictionLog()
    request = record.predict_log.request
    request.model_spec.name = config.model_name
    request.model_spec.signature_name = DEFAULT_SIGNATURE
    for name, array in arrays.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    return [record.SerializeToString()], ranked_length


def tree_digest(folder: Path) -> str:
    """Hash of every file under ``folder`` (paths and bytes), the warmup file excepted."""
    from recops.serving.servable import WARMUP_FILE

    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative == WARMUP_FILE:
            continue
        digest.update(relative.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def install_version(source: Path, version_dir: Path, warmup: list[bytes]) -> bool:
    """Copy ``source`` to ``version_dir`` atomically; returns whether this call created it."""
    from recops_models.tf_env import tensorflow

    from recops.serving.servable import WARMUP_FILE

    if version_dir.exists():
        if tree_digest(source) != tree_digest(version_dir):
            raise RolloutError(
                f"{version_dir} already exists with different content; versions are "
                "immutable, roll out under a new version number"
            )
        log.info("%s already holds this SavedModel; keeping it", version_dir)
        return False
    tf = tensorflow()
    # The staging folder's name is not all digits, so the server never takes it for a
    # version while it fills; it is removed if anything below fails. The rollout lock
    # keeps another writer away, so nothing can create ``version_dir`` meanwhile.
    with staging_dir(version_dir) as staging:
        # copytree also copies the source folder's mode over the private staging folder's.
        shutil.copytree(source, staging, dirs_exist_ok=True)
        (staging / WARMUP_FILE).parent.mkdir(parents=True, exist_ok=True)
        with tf.io.TFRecordWriter(str(staging / WARMUP_FILE)) as writer:
            for record in warmup:
                writer.write(record)
        publish_dir(staging, version_dir)
    return True


def prune_disk(model_dir: Path, keep: set[int]) -> None:
    """Remove version folders no longer served (the config was already reloaded without them)."""
    for path in model_dir.iterdir() if model_dir.is_dir() else []:
        if path.is_dir() and path.name.isdigit() and int(path.name) not in keep:
            log.info("removing %s: no longer among the served versions", path)
            shutil.rmtree(path, ignore_errors=True)
