"""What the compression tests share besides fixtures: the families built, a factory type."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from recops.compression import VariantConfig
from recops.rank_signature import signature_request

#: One variant per family (pruning, clustering, int8/fp16 tables, distillation + int8,
#: TFLite PTQ); the rest of the registry shares these code paths.
FAMILIES = (
    "prune_80",
    "cluster_16",
    "int8_tables",
    "fp16_tables",
    "distill_d32_int8",
    "ptq_dynamic",
)

#: ``variant_config(variant, output_dir)``, the conftest fixture's type.
VariantConfigFactory = Callable[[str, Path], VariantConfig]


def profiles(users_uri: str, user_ids: Any) -> pd.DataFrame:
    """Users ``user_ids`` of the users table, in order; an unknown id gets missing features."""
    users = pd.read_parquet(users_uri).set_index("user_id")
    return users.reindex(np.asarray(user_ids, np.int64)).rename_axis("user_id").reset_index()


def serve(model_dir: str, users: pd.DataFrame, signature: str = "serving_default") -> Any:
    """Call a SavedModel signature with one input per argument, from ``users``' columns."""
    import tensorflow as tf

    function = tf.saved_model.load(model_dir).signatures[signature]
    return {k: v.numpy() for k, v in function(**signature_request(function, users)).items()}
