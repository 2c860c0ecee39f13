"""Training throughput benchmark on MovieLens-100K (a script, not a test).

    python -m benchmarks.training [--epochs 3] [--batch-size 1024]

Every measurement runs in its own subprocess, because logical CPU devices (and the
visible GPUs) are fixed once TensorFlow starts in a process:

- ``fit``: ``recops.training.train`` (early stopping off) with 1 and 2 replicas
  (logical CPU devices); examples/s over the epochs after the first (tracing).
- ``pandas``: the same model fed by a naive Python generator that slices a DataFrame
  and builds the model inputs every step, against the tf.data pipeline of ``train``.
- ``input_wait``: a custom loop over the distributed tf.data iterator that times
  ``next(iterator)`` and the compiled step apart, plus the same epoch over batches
  materialised in memory beforehand. The input-wait share is the time spent waiting on
  input over the epoch time (goal < 5 %).
- With GPUs visible: ``fit`` on 1 GPU and on all GPUs, and the scaling efficiency
  ``throughput(all) / (n_gpus * throughput(1))``.

The training set is built from the ml-100k files (profiles joined onto interactions),
under ``$RECOPS_HOME/benchmarks/training`` (set ``RECOPS_HOME`` to a scratch folder; the
ml-100k download is a one-time step). Results go to ``benchmarks/results/training.json``
and a table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._ml100k import prepare_data

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------- children


def _steady(durations: list[float]) -> float:
    """Mean epoch time without the first epoch (tracing), or the only one."""
    return float(np.mean(durations[1:] if len(durations) > 1 else durations))


def _epoch_clock() -> Any:
    import tf_keras

    class Clock(tf_keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.durations: list[float] = []
            self._start = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.durations.append(time.perf_counter() - self._start)

    return Clock()


def _child_fit(args: dict[str, Any]) -> dict[str, Any]:
    from recops.training import TrainConfig, train

    clock = _epoch_clock()
    config = TrainConfig(**args["config"])
    result = train(config, callbacks=[clock])
    steady = _steady(clock.durations)
    steps = result.train_rows // config.batch_size
    return {
        "strategy": result.strategy,
        "replicas": result.replicas,
        "mixed_precision": result.mixed_precision,
        "epoch_seconds": clock.durations,
        "examples_per_s": steps * config.batch_size / steady,
        "train_rows": result.train_rows,
    }


def _build(config_args: dict[str, Any]) -> dict[str, Any]:
    """What ``train`` builds before ``fit``: rows, spec, inputs, dataset, compiled model."""
    from recops.training import (
        TrainConfig,
        item_log_probabilities,
        make_dataset,
        read_training_set,
        seed_everything,
        select_strategy,
        split_interactions,
        train_rows,
    )

    config = TrainConfig(**config_args)
    frame = read_training_set(config.training_set_uri)
    split = split_interactions(frame["user_id"].to_numpy(), frame["item_id"].to_numpy())
    rows = train_rows(frame, split)
    strategy, _, replicas = select_strategy(config.replicas)
    seed_everything(config.seed)
    import tf_keras
    from recops_models.two_tower import (
        InBatchSoftmaxLoss,
        TwoTowerSpec,
        build_training_model,
        model_inputs,
    )

    spec = TwoTowerSpec.from_columns(
        **{c: rows[c].to_numpy() for c in ("user_id", "item_id", "gender", "occupation")},
        age=rows["age"].to_numpy(),
        release_year=rows["release_year"].to_numpy(),
        embedding_dim=config.embedding_dim,
        temperature=config.temperature,
    )
    logq = item_log_probabilities(rows["item_id"].to_numpy())
    features = model_inputs(spec, {c: rows[c].to_numpy() for c in rows.columns}, logq)
    dataset = make_dataset(features, batch_size=config.batch_size, seed=config.seed)
    with strategy.scope():
        model = build_training_model(spec)
        model.compile(
            optimizer=tf_keras.optimizers.Adam(learning_rate=config.learning_rate),
            loss=InBatchSoftmaxLoss(),
        )
    return {
        "config": config,
        "rows": rows,
        "spec": spec,
        "logq": logq,
        "dataset": dataset,
        "model": model,
        "strategy": strategy,
        "replicas": replicas,
        "steps": len(rows) // config.batch_size,
        "model_inputs": model_inputs,
    }


def _child_pandas(args: dict[str, Any]) -> dict[str, Any]:
    """tf.data pipeline vs a Python generator slicing a DataFrame every step."""
    built = _build(args["config"])
    config, rows, spec, logq = built["config"], built["rows"], built["spec"], built["logq"]
    model, steps, model_inputs = built["model"], built["steps"], built["model_inputs"]
    batch = config.batch_size

    def pandas_batches() -> Any:
        rng = np.random.default_rng(config.seed)
        while True:
            order = rng.permutation(len(rows))
            for start in range(0, steps * batch, batch):
                take = order[start : start + batch]
                chunk = rows.iloc[take]
                columns = {c: chunk[c].to_numpy() for c in chunk.columns}
                yield model_inputs(spec, columns, logq[take]), np.zeros(batch, np.int32)

    out: dict[str, Any] = {}
    for name, source, extra in (
        ("tf_data", built["dataset"], {}),
        ("pandas_generator", pandas_batches(), {"steps_per_epoch": steps}),
    ):
        clock = _epoch_clock()
        model.fit(source, epochs=args["epochs"], callbacks=[clock], verbose=0, **extra)
        out[name] = {
            "epoch_seconds": clock.durations,
            "examples_per_s": steps * batch / _steady(clock.durations),
        }
    out["speedup"] = out["tf_data"]["examples_per_s"] / out["pandas_generator"]["examples_per_s"]
    return out


def _child_input_wait(args: dict[str, Any]) -> dict[str, Any]:
    """Share of the epoch spent waiting on input, measured two ways.

    - ``input_wait_share``: epochs whose step pulls the next batch from the tf.data
      iterator inside the compiled function (as ``fit`` does) against epochs over the
      same batches materialised in memory beforehand; the share is the extra time over
      the real epoch (median over epochs). Real and materialised epochs alternate, so
      a change in machine load hits both.
    - ``eager_next_share``: ``next(iterator)`` timed from Python between compiled steps;
      an upper bound, as it adds eager dispatch that ``fit`` does not pay.
    """
    import tensorflow as tf

    built = _build(args["config"])
    model, strategy, steps = built["model"], built["strategy"], built["steps"]
    dist = strategy.experimental_distribute_dataset(built["dataset"])

    @tf.function
    def step_from(iterator: Any) -> Any:
        return strategy.run(model.train_step, args=(next(iterator),))

    @tf.function
    def step(batch: Any) -> Any:
        return strategy.run(model.train_step, args=(batch,))

    def sync(logs: Any) -> None:
        # Block until the step is done, so its time is not charged to what follows.
        strategy.experimental_local_results(logs["loss"])[0].numpy()

    iterator = iter(dist)
    batches = [next(iterator) for _ in range(steps)]
    sync(step_from(iter(dist)))  # trace both
    sync(step(batches[0]))
    real, materialized, eager_wait, eager_epoch = [], [], [], []
    for _ in range(args["epochs"]):
        iterator = iter(dist)
        t0 = time.perf_counter()
        for _ in range(steps):
            sync(step_from(iterator))
        real.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for batch in batches:
            sync(step(batch))
        materialized.append(time.perf_counter() - t0)
        iterator = iter(dist)
        wait = total = 0.0
        for _ in range(steps):
            t0 = time.perf_counter()
            batch = next(iterator)
            t1 = time.perf_counter()
            sync(step(batch))
            wait += t1 - t0
            total += time.perf_counter() - t0
        eager_wait.append(wait)
        eager_epoch.append(total)
    return {
        "replicas": built["replicas"],
        "steps_per_epoch": steps,
        "epoch_seconds": real,
        "materialized_epoch_seconds": materialized,
        # Median of per-epoch pairs: one epoch hit by a load spike does not decide it.
        "input_wait_share": float(1.0 - np.median(np.divide(materialized, real))),
        "eager_next_seconds": eager_wait,
        "eager_next_share": float(np.sum(eager_wait) / np.sum(eager_epoch)),
    }


CHILDREN = {"fit": _child_fit, "pandas": _child_pandas, "input_wait": _child_input_wait}


# --------------------------------------------------------------------------- parent


def _spawn(kind: str, payload: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    cmd = [sys.executable, "-m", "benchmarks.training", "--child", kind, json.dumps(payload)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env or dict(os.environ), check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{proc.stderr[-4000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def _gpu_count() -> int:
    code = "import tensorflow as tf; print('GPUS', len(tf.config.list_physical_devices('GPU')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("GPUS ")), "GPUS 0")
    return int(line.split()[1])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write ``benchmarks/results/training.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (first = warm-up)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.child:
        kind, payload = args.child
        print("RESULT", json.dumps(CHILDREN[kind](json.loads(payload))))
        return 0

    workdir = Path(os.environ.get("RECOPS_HOME", ".recops")) / "benchmarks" / "training"
    uris = prepare_data(workdir)
    base = {**uris, "epochs": args.epochs, "batch_size": args.batch_size}
    base["early_stopping_patience"] = 0

    def config(name: str, replicas: int) -> dict[str, Any]:
        return {**base, "replicas": replicas, "output_dir": str(workdir / "runs" / name)}

    # Completed folders would return their stored result without training.
    shutil.rmtree(workdir / "runs", ignore_errors=True)
    results: dict[str, Any] = {
        "dataset": "ml-100k",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "host": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    gpus = _gpu_count()
    results["gpus"] = gpus
    cpu_env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1"}
    fit = {
        f"cpu_{n}_replicas": _spawn("fit", {"config": config(f"cpu{n}", n)}, cpu_env)
        for n in (1, 2)
    }
    one, two = fit["cpu_1_replicas"], fit["cpu_2_replicas"]
    fit["cpu_speedup_2_vs_1"] = two["examples_per_s"] / one["examples_per_s"]
    fit["cpu_scaling_efficiency"] = fit["cpu_speedup_2_vs_1"] / 2
    if gpus:
        first = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}
        fit["gpu_1"] = _spawn("fit", {"config": config("gpu1", 1)}, first)
        fit["gpu_all"] = _spawn("fit", {"config": config("gpuall", 1)})
        fit["gpu_speedup_all_vs_1"] = (
            fit["gpu_all"]["examples_per_s"] / fit["gpu_1"]["examples_per_s"]
        )
        fit["gpu_scaling_efficiency"] = fit["gpu_speedup_all_vs_1"] / gpus
    results["fit"] = fit
    results["feed"] = _spawn(
        "pandas",
        {"config": config("feed", 1), "epochs": args.epochs},
        cpu_env if not gpus else None,
    )
    results["input_wait"] = _spawn(
        "input_wait", {"config": config("wait", 1), "epochs": args.epochs}, None
    )

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / "training.json"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
    os.replace(tmp, out)
    _print_table(results)
    print(f"wrote {out}")
    return 0


def _print_table(results: dict[str, Any]) -> None:
    fit, feed, wait = results["fit"], results["feed"], results["input_wait"]
    rows = [
        ("fit, 1 replica (CPU)", f"{fit['cpu_1_replicas']['examples_per_s']:,.0f} ex/s"),
        ("fit, 2 replicas (logical CPUs)", f"{fit['cpu_2_replicas']['examples_per_s']:,.0f} ex/s"),
        ("  speedup 2 vs 1", f"{fit['cpu_speedup_2_vs_1']:.2f}x"),
    ]
    if "gpu_1" in fit:
        rows += [
            ("fit, 1 GPU", f"{fit['gpu_1']['examples_per_s']:,.0f} ex/s"),
            (f"fit, all {results['gpus']} GPUs", f"{fit['gpu_all']['examples_per_s']:,.0f} ex/s"),
            ("  GPU scaling efficiency", f"{fit['gpu_scaling_efficiency']:.0%}"),
        ]
    rows += [
        ("feed: tf.data", f"{feed['tf_data']['examples_per_s']:,.0f} ex/s"),
        ("feed: pandas generator", f"{feed['pandas_generator']['examples_per_s']:,.0f} ex/s"),
        ("  tf.data speedup", f"{feed['speedup']:.1f}x"),
        ("input-wait share (vs materialised)", f"{wait['input_wait_share']:.1%}"),
        ("  eager next() share (upper bound)", f"{wait['eager_next_share']:.1%}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"ml-100k, batch {results['batch_size']}, {results['epochs']} epochs (first = warm-up)")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>14}")


if __name__ == "__main__":
    raise SystemExit(main())
