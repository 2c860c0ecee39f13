"""A real MultiWorkerMirroredStrategy run: two worker processes over loopback.

Each worker is a subprocess running ``train`` with its own ``TF_CONFIG`` (two
``127.0.0.1`` workers on free ports). Both must exit 0 with the same result, the chief
(worker 0) alone exports, and the exported SavedModel must answer a request.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from recops.config import RETRIEVAL_K

from tests.unit._tiny_data import write_tiny_data

pytestmark = [pytest.mark.slow, pytest.mark.integration]

_WORKER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from recops.training import TrainConfig, train

    result = train(TrainConfig(**json.loads(sys.argv[1])))
    print("RESULT", json.dumps(result.to_dict()))
    """
)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_two_workers_train_and_only_the_chief_exports(tmp_path: Path) -> None:
    data = write_tiny_data(tmp_path / "data")
    output_dir = tmp_path / "train"
    config = {
        "training_set_uri": data.training_set_uri,
        "users_uri": data.users_uri,
        "items_uri": data.items_uri,
        "output_dir": str(output_dir),
        "epochs": 2,
        "embedding_dim": 16,
        "batch_size": 128,
    }
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _WORKER_SCRIPT, json.dumps(config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=400)
            outputs.append((proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for index, (code, _, stderr) in enumerate(outputs):
        assert code == 0, f"worker {index} exited {code}: {stderr[-3000:]}"
    results = [
        json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
        for _, out, _ in outputs
    ]
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
    out = serve(
        user_id=tf.constant([1, 2], tf.int64),
        age=tf.constant([30, 40], tf.int64),
        gender=tf.constant(["M", "F"]),
        occupation=tf.constant(["engineer", "artist"]),
    )
    assert out["item_ids"].shape == (2, RETRIEVAL_K)
    assert set(out["item_ids"].numpy().ravel()) <= set(range(1, data.n_items + 1))
    assert np.all(np.diff(out["scores"].numpy(), axis=1) <= 1e-6)
