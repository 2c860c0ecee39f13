"""A tiny but real SavedModel that follows the retrieval contract (see recops.config).

Its signatures take what a trained two-tower's do: ``user_id`` (int64) and one input per
user feature, a string for categorical, multi-valued and text features and a float32 for
numeric ones (``recops_models.feature_defs``). The features default to MovieLens'
demographics; pass a dataset's own (``Layout.user_features``) to mimic its model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recops_models.feature_defs import FeatureDef
from recops_models.tf_env import tensorflow

#: The user features of the default contract model.
DEFAULT_USER_FEATURES: tuple[FeatureDef, ...] = (
    FeatureDef("age", "numeric"),
    FeatureDef("gender", "categorical"),
    FeatureDef("occupation", "categorical"),
)


def export_contract_model(
    path: Path,
    *,
    n_items: int = 20,
    dim: int = 4,
    k: int = 100,
    seed: int = 0,
    n_users: int = 50,
    user_features: Sequence[FeatureDef] = DEFAULT_USER_FEATURES,
) -> Path:
    """Export a random two-tower-shaped tf.Module with the three contract signatures.

    ``n_users`` rows of user embeddings (ids wrap around) and ``n_items`` item embeddings
    of size ``dim``, scored by brute force; ml-100k sizes are 943 and 1682. Each user
    feature nudges the user's embedding, so every input reaches the output.
    """
    tf = tensorflow()
    gen = tf.random.Generator.from_seed(seed)
    features = tuple(user_features)
    signature = [
        tf.TensorSpec([None], tf.int64, name="user_id"),
        *(tf.TensorSpec([None], tf.string if f.is_string else tf.float32, name=f.name)
          for f in features),
    ]  # fmt: skip

    class Contract(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.user_table = tf.Variable(gen.normal([n_users, dim]))
            self.items = tf.Variable(gen.normal([n_items, dim]))
            self.item_ids = tf.constant(list(range(1, n_items + 1)), dtype=tf.int64)

        def _user(self, user_id: Any, values: Sequence[Any]) -> Any:
            base = tf.gather(self.user_table, user_id % n_users)
            for feature, value in zip(features, values, strict=True):
                if feature.is_string:
                    nudge = tf.cast(tf.strings.length(value), tf.float32) * 0.001
                else:
                    # A missing number (NaN) nudges nothing, as the encoder maps it to 0.
                    nudge = tf.where(tf.math.is_nan(value), 0.0, value) * 0.01
                base += nudge[:, None]
            return base

        def serve(self, user_id: Any, *values: Any) -> dict[str, Any]:
            scores = tf.matmul(self._user(user_id, values), self.items, transpose_b=True)
            kk = min(k, n_items)
            top, idx = tf.math.top_k(scores, kk)
            pad = k - kk
            top = tf.pad(top, [[0, 0], [0, pad]], constant_values=-1e9)
            ids = tf.pad(tf.gather(self.item_ids, idx), [[0, 0], [0, pad]], constant_values=0)
            return {"item_ids": ids, "scores": top}

        def user_embedding(self, user_id: Any, *values: Any) -> dict[str, Any]:
            return {"embedding": self._user(user_id, values)}

        def item_embeddings(self) -> dict[str, Any]:
            return {"item_ids": self.item_ids, "embeddings": tf.identity(self.items)}

    module = Contract()
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            "serving_default": tf.function(module.serve, input_signature=signature),
            "user_embedding": tf.function(module.user_embedding, input_signature=signature),
            "item_embeddings": tf.function(module.item_embeddings, input_signature=[]),
        },
    )
    return path


def corrupt_variables(path: Path) -> Path:
    """Truncate the SavedModel's ``variables.data-*`` shards to half their size, in place.

    The graph and signatures still parse (so a roll-out gets as far as loading it), but
    restoring the variables fails: a torn copy, as a full disk or an interrupted upload
    leaves it.
    """
    shards = sorted((path / "variables").glob("variables.data-*"))
    if not shards:
        raise FileNotFoundError(f"{path} has no variables.data-* shard")
    for shard in shards:
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])
    return path


def offline_outputs(path: Path, instances: list[dict[str, object]]) -> dict[str, list[object]]:
    """``serving_default`` outputs for row-format ``instances``, computed in this process.

    What a pipeline hands the roll-out as ``expected_outputs``: one value per instance.
    Each input is converted to the dtype the signature declares for it.
    """
    tf = tensorflow()
    serving = tf.saved_model.load(str(path)).signatures["serving_default"]
    specs = serving.structured_input_signature[1]
    columns = {
        name: tf.constant([row[name] for row in instances], dtype=spec.dtype)
        for name, spec in specs.items()
    }
    outputs = serving(**columns)
    return {name: value.numpy().tolist() for name, value in outputs.items()}
