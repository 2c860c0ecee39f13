"""The run's output folder: staging, the SavedModel export, and publishing with ``_SUCCESS``.

A stage is a transaction. ``prepare_output_dir`` stores the config and makes an empty
staging folder; the outputs are written there (``export_model`` writes the weights and
the retrieval SavedModel); ``publish`` renames them into place, writes ``result.json``
and then ``_SUCCESS``, whose presence is what ``load_completed`` checks. The ranker and
compression stages use the same three steps.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recops.config import RETRIEVAL_K
from recops.errors import PermanentError
from recops.io import SUCCESS_MARKER, atomic_write_text, publish_dir

__all__ = [
    "CONFIG_FILE",
    "RESULT_FILE",
    "STAGING_DIR",
    "SUCCESS_MARKER",
    "OutputConflictError",
    "export_model",
    "load_completed",
    "prepare_output_dir",
    "publish",
]

RESULT_FILE = "result.json"
CONFIG_FILE = "config.json"
STAGING_DIR = "_staging"


class OutputConflictError(PermanentError, ValueError):
    """The output folder holds a completed run of another config; use a new folder."""


def load_completed(output_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """Return the stored result if ``output_dir`` is complete for this same config.

    Raises:
        OutputConflictError: If the folder is complete but was produced by a different
            config (a ``ValueError``).
    """
    if not (output_dir / SUCCESS_MARKER).is_file():
        return None
    stored = json.loads((output_dir / CONFIG_FILE).read_text())
    if stored != config:
        raise OutputConflictError(
            f"{output_dir} already holds a completed run with a different config; "
            "use a new output_dir"
        )
    result: dict[str, Any] = json.loads((output_dir / RESULT_FILE).read_text())
    return result


def prepare_output_dir(
    output_dir: Path,
    config: dict[str, Any],
    backup: Path | None,
    *,
    staging_name: str = STAGING_DIR,
) -> Path:
    """Create ``output_dir``, drop stale state from another config, and a fresh staging.

    Args:
        output_dir: The run's folder.
        config: The config this folder belongs to (stored as ``config.json``).
        backup: Backup folder to drop if the stored config differs.
        staging_name: Staging folder name; each process of a multi-worker run needs
            its own.

    Returns:
        The empty staging folder.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    config_path = output_dir / CONFIG_FILE
    if config_path.is_file() and json.loads(config_path.read_text()) != config:
        # A backup from other settings would be restored into the wrong model.
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    # Workers of one multi-worker run write the same file: the write is atomic per writer.
    atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True))
    staging = output_dir / staging_name
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def publish(staging: Path, output_dir: Path, names: Sequence[str], result: dict[str, Any]) -> None:
    """Move staged outputs into place, then write the result and the success marker.

    Args:
        staging: The staging folder (removed afterwards).
        output_dir: The run's folder.
        names: Files and folders of ``staging`` to move into ``output_dir``.
        result: Written as ``result.json`` once every output is in place.
    """
    for name in names:
        source, target = staging / name, output_dir / name
        if source.is_dir():
            if target.exists() and not target.is_dir():
                target.unlink()
            publish_dir(source, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            # A rename replaces a file in one step.
            os.replace(source, target)
    atomic_write_text(output_dir / RESULT_FILE, json.dumps(result, indent=2, sort_keys=True))
    shutil.rmtree(staging, ignore_errors=True)
    atomic_write_text(output_dir / SUCCESS_MARKER, "")


def export_model(
    weights: Sequence[np.ndarray], spec: Any, items: pd.DataFrame, staging: Path
) -> int:
    """Write the weights checkpoint and the float retrieval SavedModel into ``staging``.

    Args:
        weights: The trained model's weights (``model.get_weights()``).
        spec: The model's ``TwoTowerSpec``.
        items: The catalogue, one row per item: ``item_id`` and the spec's item feature
            columns (the candidates).
        staging: The run's staging folder; ``weights/`` and ``model/`` are written there.

    Returns:
        ``k``, the candidates ``serving_default`` returns.
    """
    from recops_models.two_tower import (
        build_training_model,
        export_retrieval_model,
        save_trained_model,
    )

    from recops.training.inputs import catalogue

    # A plain float32 copy of the weights: the export must not depend on the strategy.
    plain = build_training_model(spec)
    plain.set_weights(weights)
    save_trained_model(plain, spec, staging / "weights")
    k: int = export_retrieval_model(
        model=plain,
        spec=spec,
        items=catalogue(spec, items),
        export_dir=staging / "model",
        k=RETRIEVAL_K,
    )
    return k
