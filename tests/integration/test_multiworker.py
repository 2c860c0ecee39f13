"""A real MultiWorkerMirroredStrategy run: two worker processes over loopback.

``recops.multiworker.train_multiworker`` (what the train task runs when
``RECOPS_TRAIN_WORKERS`` > 1) starts each worker as a subprocess running ``train`` with
its own ``TF_CONFIG`` (two ``127.0.0.1`` workers on free ports). Both must exit 0 with
the same result, the chief (worker 0) alone exports, and the exported SavedModel must
answer a request.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from recops.config import RETRIEVAL_K
from recops.multiworker import MultiWorkerError, train_multiworker
from recops.training import TrainConfig

from tests.unit._tiny_data import write_tiny_data

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_two_workers_train_and_only_the_chief_exports(tmp_path: Path) -> None:
    data = write_tiny_data(tmp_path / "data")
    output_dir = tmp_path / "train"
    config: dict[str, Any] = {
        "training_set_uri": data.training_set_uri,
        "users_uri": data.users_uri,
        "items_uri": data.items_uri,
        "spec_uri": data.spec_uri,
        "output_dir": str(output_dir),
        "epochs": 2,
        "embedding_dim": 16,
        "batch_size": 128,
    }
    # What the train task does with RECOPS_TRAIN_WORKERS=2.
    result = train_multiworker(TrainConfig(**config), 2, timeout=600)
    worker_dir = tmp_path / "train.workers"
    results = [json.loads((worker_dir / f"result-{i}.json").read_text()) for i in range(2)]
    assert results[0] == result.to_dict()
    chief, worker = results
    assert chief["strategy"] == worker["strategy"] == "MultiWorkerMirroredStrategy"
    assert chief["replicas"] == worker["replicas"] == 2
    # Same synchronous training on both: same epochs, loss and early-stopping history.
    assert chief["epochs_run"] == worker["epochs_run"] == 2
    assert chief["final_loss"] == pytest.approx(worker["final_loss"], rel=1e-5)
    assert chief["valid_ndcg_at_10"] == pytest.approx(worker["valid_ndcg_at_10"], rel=1e-5)

    # Only the chief published; no worker staging or backup is left behind.
    assert sorted(p.name for p in output_dir.iterdir()) == [
        "_SUCCESS",
        "config.json",
        "model",
        "result.json",
        "split.parquet",
        "weights",
    ]
    assert json.loads((output_dir / "result.json").read_text()) == chief

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    serve = tf.saved_model.load(chief["model_dir"]).signatures["serving_default"]
    # One input per signature argument, from the users table (strings or float32), and
    # each user's seen items, which the signature leaves out of its top-k.
    from recops.rank_signature import signature_request

    users = pd.read_parquet(data.users_uri).set_index("user_id").loc[[1, 2]].reset_index()
    seen = np.array([[1, 2], [3, -1]], np.int64)
    out = serve(**signature_request(serve, users, history_item_ids=seen))
    assert out["item_ids"].shape == (2, RETRIEVAL_K)
    assert set(out["item_ids"].numpy().ravel()) <= set(range(1, data.n_items + 1))
    assert np.all(np.diff(out["scores"].numpy(), axis=1) <= 1e-6)
    assert not {1, 2} & set(out["item_ids"].numpy()[0][:10].tolist())
    assert 3 not in out["item_ids"].numpy()[1][:10]


def test_a_failed_worker_fails_the_group_and_names_it(tmp_path: Path) -> None:
    data = write_tiny_data(tmp_path / "data")
    config = TrainConfig(
        training_set_uri=str(tmp_path / "missing.parquet"),
        users_uri=data.users_uri,
        items_uri=data.items_uri,
        spec_uri=data.spec_uri,
        output_dir=str(tmp_path / "train"),
        epochs=1,
    )
    with pytest.raises(
        MultiWorkerError, match=r"(?s)worker \d of 2 exited with 1.*missing\.parquet"
    ):
        train_multiworker(config, 2, timeout=300)
    assert not (tmp_path / "train" / "_SUCCESS").exists()
