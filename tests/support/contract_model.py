"""A tiny but real SavedModel that follows the retrieval contract (see recops.config)."""

from __future__ import annotations

from pathlib import Path

from recops_models.tf_env import tensorflow


def export_contract_model(
    path: Path, *, n_items: int = 20, dim: int = 4, k: int = 100, seed: int = 0, n_users: int = 50
) -> Path:
    """Export a random two-tower-shaped tf.Module with the three contract signatures.

    ``n_users`` rows of user embeddings (ids wrap around) and ``n_items`` item embeddings
    of size ``dim``, scored by brute force; ml-100k sizes are 943 and 1682.
    """
    tf = tensorflow()
    gen = tf.random.Generator.from_seed(seed)

    class Contract(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.user_table = tf.Variable(gen.normal([n_users, dim]))
            self.items = tf.Variable(gen.normal([n_items, dim]))
            self.item_ids = tf.constant(list(range(1, n_items + 1)), dtype=tf.int64)

        def _user(self, user_id, age, gender, occupation):  # noqa: ANN001, ANN202
            base = tf.gather(self.user_table, user_id % n_users)
            bias = tf.cast(age, tf.float32)[:, None] * 0.01
            bias += (
                tf.cast(tf.strings.length(gender) + tf.strings.length(occupation), tf.float32)[
                    :, None
                ]
                * 0.001
            )
            return base + bias

        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.int64, name="user_id"),
            tf.TensorSpec([None], tf.int64, name="age"),
            tf.TensorSpec([None], tf.string, name="gender"),
            tf.TensorSpec([None], tf.string, name="occupation"),
        ])  # fmt: skip
        def serve(self, user_id, age, gender, occupation):  # noqa: ANN001, ANN201
            scores = tf.matmul(
                self._user(user_id, age, gender, occupation), self.items, transpose_b=True
            )
            kk = min(k, n_items)
            values, idx = tf.math.top_k(scores, kk)
            pad = k - kk
            values = tf.pad(values, [[0, 0], [0, pad]], constant_values=-1e9)
            ids = tf.pad(tf.gather(self.item_ids, idx), [[0, 0], [0, pad]], constant_values=0)
            return {"item_ids": ids, "scores": values}

        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.int64, name="user_id"),
            tf.TensorSpec([None], tf.int64, name="age"),
            tf.TensorSpec([None], tf.string, name="gender"),
            tf.TensorSpec([None], tf.string, name="occupation"),
        ])  # fmt: skip
        def user_embedding(self, user_id, age, gender, occupation):  # noqa: ANN001, ANN201
            return {"embedding": self._user(user_id, age, gender, occupation)}

        @tf.function(input_signature=[])
        def item_embeddings(self):  # noqa: ANN201
            return {"item_ids": self.item_ids, "embeddings": tf.identity(self.items)}

    module = Contract()
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            "serving_default": module.serve,
            "user_embedding": module.user_embedding,
            "item_embeddings": module.item_embeddings,
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
    """
    tf = tensorflow()
    loaded = tf.saved_model.load(str(path))
    columns = {}
    for key in instances[0]:
        values = [row[key] for row in instances]
        dtype = tf.string if isinstance(values[0], str) else tf.int64
        columns[key] = tf.constant(values, dtype=dtype)
    outputs = loaded.signatures["serving_default"](**columns)
    return {name: value.numpy().tolist() for name, value in outputs.items()}
