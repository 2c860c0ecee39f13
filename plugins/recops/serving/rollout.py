"""The pipeline's roll-out stage: put a SavedModel version behind the serving label.

``rollout(RolloutConfig(...))`` does, in order:

1. check the SavedModel's ``serving_default`` signature against the smoke instances and
   copy it to ``<model_base_path>/<model>/<version>/`` atomically (a temp folder beside
   it, then a rename), with a warmup file built from the smoke instances; an identical
   existing copy is kept, a different one is an error;
2. load it: write ``models.config`` with the new version added and the label unchanged,
   make sure the server runs, reload, and poll the status until AVAILABLE;
3. move the label to the new version (a second reload: TF Serving only lets a label point
   at a version that is already AVAILABLE);
4. smoke-test through REST on the label and check the output shape;
5. trim to ``keep_versions`` versions (a third reload).

On any failure the previous ``models.config`` is written back and reloaded, a version
folder this run created is removed, and ``RolloutError`` is raised: nothing is left half
served. Re-running a version that is already out is a no-op that still smoke-tests.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.records import Record

if TYPE_CHECKING:
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

    from recops.config import Settings
    from recops.serving.client import ServingClient

__all__ = ["TOP_ITEMS_OUTPUT", "RolloutConfig", "RolloutError", "RolloutResult", "rollout"]

log = logging.getLogger("recops.serving.rollout")

#: The ``serving_default`` output holding the ranked item ids (``int64 [batch, K]``).
TOP_ITEMS_OUTPUT = "item_ids"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class RolloutError(RuntimeError):
    """The roll-out failed; the previous serving config is back in place."""


@dataclass(frozen=True, kw_only=True)
class RolloutConfig(Record):
    """What to roll out.

    Attributes:
        model_name: Served model name (``/v1/models/<model_name>``).
        version: Serving version number (the folder name under the model's base path).
        saved_model_dir: The SavedModel to serve (the retrieval contract).
        label: Version label moved to the new version once it is AVAILABLE.
        keep_versions: Versions served after the roll-out, the new one included; the older
            ones stay loaded for an instant rollback by moving the label back.
        smoke_instances: Row-format instances (one object per request row) sent to the
            label after the move; also written as the version's warmup requests.
        load_timeout_s: How long to wait for the new version to become AVAILABLE.
    """

    model_name: str
    version: int
    saved_model_dir: str
    label: str = "stable"
    keep_versions: int = 2
    smoke_instances: list[dict[str, Any]]
    load_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.model_name):
            raise ValueError(f"model_name {self.model_name!r}: use letters, digits, '_', '.', '-'")
        if not _NAME.fullmatch(self.label):
            raise ValueError(f"label {self.label!r}: use letters, digits, '_', '.', '-'")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"version must be a positive integer, got {self.version!r}")
        if self.keep_versions < 1:
            raise ValueError(f"keep_versions must be at least 1, got {self.keep_versions}")
        if not self.smoke_instances or not all(isinstance(i, dict) for i in self.smoke_instances):
            raise ValueError("smoke_instances must be a non-empty list of objects (row format)")
        if self.load_timeout_s <= 0:
            raise ValueError(f"load_timeout_s must be positive, got {self.load_timeout_s}")


@dataclass(frozen=True, kw_only=True)
class RolloutResult(Record):
    """What is served after the roll-out, and how the smoke test went."""

    model_name: str
    version: int
    served_versions: list[int]
    labels: dict[str, int]
    rest_url: str
    grpc_target: str
    smoke_latency_ms: float
    smoke_top_item_ids: list[int]


def rollout(config: RolloutConfig, settings: Settings | None = None) -> RolloutResult:
    """Serve ``config.saved_model_dir`` as ``config.version`` behind ``config.label``.

    Args:
        config: What to roll out.
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        The served versions and labels, the endpoints, and the smoke test's outcome.

    Raises:
        RolloutError: Any step failed; the previous config was restored (the message says
            whether restoring worked too).
    """
    from recops.config import Settings
    from recops.serving.client import ServingClient
    from recops.serving.models_config import find_model, read_config
    from recops.serving.server import locked

    settings = settings or Settings.from_env()
    source = Path(config.saved_model_dir)
    model_dir = settings.model_base_path / config.model_name
    version_dir = model_dir / str(config.version)
    settings.serving_dir.mkdir(parents=True, exist_ok=True)

    # One roll-out at a time per state folder: models.config has a single writer.
    with locked(settings.serving_dir / "rollout.lock"):
        # What can be checked before the server is touched is checked first.
        warmup, ranked_length = _check_saved_model(source, config)
        previous = read_config(settings.models_config_path)
        entry = find_model(previous, config.model_name)
        if entry is not None and entry.base_path != str(model_dir):
            raise RolloutError(
                f"{settings.models_config_path} serves {config.model_name} from "
                f"{entry.base_path}, not {model_dir}; refusing to take it over"
            )
        created = _install_version(source, version_dir, warmup)

        client = ServingClient.from_settings(settings, timeout_s=max(30.0, config.load_timeout_s))
        try:
            result = _serve(config, settings, client, previous, ranked_length)
        except Exception as exc:
            restored = _restore(settings, client, previous)
            if created:
                shutil.rmtree(version_dir, ignore_errors=True)
            raise RolloutError(
                f"roll-out of {config.model_name} version {config.version} failed: {exc}. "
                f"{restored}"
            ) from exc
        finally:
            client.close()
    log.info("rolled out %s", result.to_dict())
    return result


def _serve(
    config: RolloutConfig,
    settings: Settings,
    client: ServingClient,
    previous: ModelServerConfig,
    ranked_length: int | None,
) -> RolloutResult:
    from recops.serving.models_config import (
        find_model,
        make_model_config,
        specific_versions,
        version_labels,
        with_model,
        write_config,
    )
    from recops.serving.server import start_background

    entry = find_model(previous, config.model_name)
    old_versions = specific_versions(entry) if entry is not None else []
    labels = version_labels(entry) if entry is not None else {}
    new = config.version
    # Versions other labels point at stay; otherwise keep the newest ones.
    pinned = {v for name, v in labels.items() if name != config.label}
    older = sorted((v for v in old_versions if v != new), reverse=True)
    final = sorted({new, *pinned, *older[: config.keep_versions - 1]})
    # Until the smoke test passes, everything served before stays loaded, so restoring the
    # previous config never has to load anything.
    loading = sorted({*old_versions, *labels.values(), *final})
    moved = {**labels, config.label: new}

    def apply(versions: list[int], version_labels_now: dict[str, int]) -> None:
        model = make_model_config(
            name=config.model_name,
            base_path=settings.model_base_path / config.model_name,
            versions=versions,
            labels=version_labels_now,
        )
        updated = with_model(previous, model)
        write_config(settings.models_config_path, updated)
        client.reload_config(updated, timeout_s=config.load_timeout_s + 30.0)

    start_background(settings)
    apply(loading, labels)
    client.wait_available(config.model_name, new, config.load_timeout_s)
    apply(loading, moved)
    latency_ms, top_items = _smoke(config, client, ranked_length)
    if final != loading:
        apply(final, moved)
    return RolloutResult(
        model_name=config.model_name,
        version=new,
        served_versions=final,
        labels=moved,
        rest_url=client.model_url(config.model_name),
        grpc_target=client.grpc_target,
        smoke_latency_ms=latency_ms,
        smoke_top_item_ids=top_items,
    )


def _smoke(
    config: RolloutConfig, client: ServingClient, ranked_length: int | None
) -> tuple[float, list[int]]:
    """Predict the smoke instances on the label; expect one ranked id list per instance."""
    started = time.perf_counter()
    reply = client.predict_rest(
        config.model_name, instances=config.smoke_instances, label=config.label
    )
    latency_ms = (time.perf_counter() - started) * 1000.0
    predictions = reply.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(config.smoke_instances):
        raise RolloutError(
            f"smoke test: expected {len(config.smoke_instances)} predictions, "
            f"got {_brief(predictions)}"
        )
    rows = []
    for row in predictions:
        items = row.get(TOP_ITEMS_OUTPUT) if isinstance(row, dict) else None
        if not isinstance(items, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in items
        ):
            raise RolloutError(
                f"smoke test: each prediction must hold a list of integer "
                f"'{TOP_ITEMS_OUTPUT}', got {_brief(row)}"
            )
        if ranked_length is not None and len(items) != ranked_length:
            raise RolloutError(
                f"smoke test: '{TOP_ITEMS_OUTPUT}' holds {len(items)} ids, the signature "
                f"promises {ranked_length}"
            )
        rows.append(items)
    if not rows[0] or len({len(items) for items in rows}) != 1:
        raise RolloutError("smoke test: ranked lists are empty or of different lengths")
    log.info(
        "smoke test of %s@%s: %d rows in %.1f ms",
        config.model_name,
        config.label,
        len(rows),
        latency_ms,
    )
    return latency_ms, [int(i) for i in rows[0]]


def _brief(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _restore(settings: Settings, client: ServingClient, previous: ModelServerConfig) -> str:
    """Write back and reload the previous config; returns a sentence for the error."""
    from recops.serving.models_config import write_config
    from recops.serving.server import is_running

    try:
        write_config(settings.models_config_path, previous)
        if not is_running(settings):
            return "The previous models.config was written back (no server is running)."
        client.reload_config(previous)
    except Exception as exc:  # the original error matters more; report both
        log.exception("restoring the previous serving config failed")
        return f"Restoring the previous serving config ALSO failed: {exc}."
    return "The previous serving config was restored and reloaded."


# -- the version folder -------------------------------------------------------------------


def _check_saved_model(source: Path, config: RolloutConfig) -> tuple[list[bytes], int | None]:
    """Check the SavedModel against the smoke instances.

    Returns the warmup records (serialized PredictionLogs) and the ranked-list length the
    signature promises (the static K of ``item_ids``, None if unknown).
    """
    from recops.serving.server import (
        DEFAULT_SIGNATURE,
        ServingError,
        SignatureIO,
        import_tensorflow,
        json_to_tensors,
        read_signature_defs,
    )

    tf = import_tensorflow()
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
    if ranked is None or ranked.dtype != "int64":
        raise RolloutError(
            f"{source}: '{DEFAULT_SIGNATURE}' has no int64 '{TOP_ITEMS_OUTPUT}' output"
        )
    ranked_length = ranked.shape[1] if ranked.shape is not None and len(ranked.shape) == 2 else None
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


def _tree_digest(folder: Path) -> str:
    """Hash of every file under ``folder`` (paths and bytes), the warmup file excepted."""
    from recops.serving.server import WARMUP_FILE

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


def _install_version(source: Path, version_dir: Path, warmup: list[bytes]) -> bool:
    """Copy ``source`` to ``version_dir`` atomically; returns whether this call created it."""
    from recops.serving.server import WARMUP_FILE, import_tensorflow

    if version_dir.exists():
        if _tree_digest(source) != _tree_digest(version_dir):
            raise RolloutError(
                f"{version_dir} already exists with different content; versions are "
                "immutable, roll out under a new version number"
            )
        log.info("%s already holds this SavedModel; keeping it", version_dir)
        return False
    tf = import_tensorflow()
    version_dir.parent.mkdir(parents=True, exist_ok=True)
    # Not all digits, so the server never takes it for a version.
    staging = version_dir.parent / f".tmp-{version_dir.name}-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(source, staging)
        (staging / WARMUP_FILE).parent.mkdir(parents=True, exist_ok=True)
        with tf.io.TFRecordWriter(str(staging / WARMUP_FILE)) as writer:
            for record in warmup:
                writer.write(record)
        os.rename(staging, version_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return True
