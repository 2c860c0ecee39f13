"""What a model artifact costs on disk: folder size, gzip size and stored parameters.

Pruning and clustering pay off in the compressed artifact (``gzip_bytes``), not in RAM or
latency: TF Serving loads dense tensors.

This module is a leaf of the package; TensorFlow is imported only inside
``saved_model_params``.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from recops_models.tf_env import tensorflow

__all__ = ["directory_bytes", "gzip_bytes", "saved_model_params"]


def directory_bytes(path: Path) -> int:
    """Total size of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def gzip_bytes(path: Path) -> int:
    """Size of ``path`` packed as a gzip-compressed tarball (level 9)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=9) as tar:
        tar.add(path, arcname=path.name)
    return len(buffer.getvalue())


def saved_model_params(model_dir: str | Path) -> tuple[int, int]:
    """Count the weights stored in a SavedModel's variables checkpoint.

    Float and int8 tensors count; int32/int64 id arrays, strings and the object graph do
    not, so the float model, pruned, quantized and distilled variants are counted alike.

    Returns:
        ``(params, nonzero params)``.
    """
    tf = tensorflow()

    reader = tf.train.load_checkpoint(str(Path(model_dir) / "variables" / "variables"))
    counted = (tf.float16, tf.float32, tf.float64, tf.bfloat16, tf.int8)
    params, nonzero = 0, 0
    for name, dtype in reader.get_variable_to_dtype_map().items():
        if dtype not in counted or name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH"):
            continue
        value = np.asarray(reader.get_tensor(name))
        params += int(value.size)
        nonzero += int(np.count_nonzero(value))
    return params, nonzero
