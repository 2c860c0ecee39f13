"""Launch one training as N MultiWorkerMirroredStrategy workers.

The train task calls :func:`train_multiworker` when the deployment asks for more than one
worker (``RECOPS_TRAIN_WORKERS``). Here the workers are local processes that talk over
loopback, each with its own ``TF_CONFIG``; under Kubernetes or compose they would be
replicas given the same ``TF_CONFIG`` cluster. MultiWorkerMirroredStrategy cannot lose
a worker: when one dies the others hang in their next collective, so the launcher
stops them all and fails the task, and Airflow's retry restarts the whole group, which
resumes from the chief's BackupAndRestore checkpoint.

``python -m recops.multiworker CONFIG_JSON RESULT_PATH`` is one worker (what the
launcher starts). The workers inherit the task's environment, MLflow run included
(``recops.tracking_epochs``): the chief alone logs each epoch to it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from recops.errors import MultiWorkerError, ParamError
from recops.io import atomic_write_text
from recops.training.config import TrainConfig, TrainResult

__all__ = ["MultiWorkerError", "train_multiworker", "workers_from_env"]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def workers_from_env() -> int:
    """``RECOPS_TRAIN_WORKERS`` (default 1: one process, MirroredStrategy)."""
    raw = os.environ.get("RECOPS_TRAIN_WORKERS", "").strip() or "1"
    try:
        n = int(raw)
    except ValueError as exc:
        raise ParamError(f"RECOPS_TRAIN_WORKERS={raw!r} is not an integer") from exc
    if not 1 <= n <= 64:
        raise ParamError(f"RECOPS_TRAIN_WORKERS={n}: expected 1..64")
    return n


def train_multiworker(config: TrainConfig, workers: int, *, timeout: float = 3600.0) -> TrainResult:
    """Train ``config`` with ``workers`` local worker processes over loopback.

    Args:
        config: What to train; ``output_dir`` is where the chief publishes.
        workers: Number of workers (at least 2).
        timeout: Seconds the whole group may take.

    Returns:
        The chief's result (worker 0 exports and publishes; the others only train).

    Raises:
        MultiWorkerError: A worker exited non-zero, or the group ran out of time; all
            workers are stopped first.
    """
    if workers < 2:
        raise ParamError(f"workers={workers}: a multi-worker run needs at least 2")
    log_dir = Path(config.output_dir).parent / (Path(config.output_dir).name + ".workers")
    log_dir.mkdir(parents=True, exist_ok=True)
    cluster = [f"127.0.0.1:{port}" for port in _free_ports(workers)]
    payload = json.dumps(asdict(config))
    procs: list[subprocess.Popen[bytes]] = []
    results = [log_dir / f"result-{i}.json" for i in range(workers)]
    logs = [log_dir / f"worker-{i}.log" for i in range(workers)]
    for path in results:
        path.unlink(missing_ok=True)
    try:
        for index in range(workers):
            env = {
                **os.environ,
                "TF_CONFIG": json.dumps(
                    {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}
                ),
            }
            with logs[index].open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "recops.multiworker", payload, str(results[index])],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )  # fmt: skip
                )
        deadline = time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in procs]
            failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i = failed[0]
                tail = logs[i].read_text(errors="replace")[-3000:]
                raise MultiWorkerError(
                    f"worker {i} of {workers} exited with {codes[i]}; "
                    f"its log ({logs[i]}) ends:\n{tail}"
                )
            if all(c == 0 for c in codes):
                break
            if time.monotonic() > deadline:
                raise MultiWorkerError(
                    f"the {workers} workers did not finish within {timeout:.0f} s; "
                    f"logs in {log_dir}"
                )
            time.sleep(1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return TrainResult(**json.loads(results[0].read_text()))


def _main(argv: list[str]) -> int:
    import logging

    # The launcher keeps each worker's output in its own file; make the training log land
    # there.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = TrainConfig(**json.loads(argv[0]))
    from recops.training.fit import train

    result: Any = train(config)
    # The launcher reads the file once the process exits 0; never half of it.
    atomic_write_text(Path(argv[1]), json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
