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
- ``tf_env``: the 2-replica ``fit`` at ``--env-batch-size`` (8192, the 5M nightly's)
  under TensorFlow's own defaults (its malloc-backed CPU allocator, Eigen kernels)
  against ``TF_CANDIDATE`` (the pooling BFC allocator, oneDNN).
- With GPUs visible: ``fit`` on 1 GPU and on all GPUs, and the scaling efficiency
  ``throughput(all) / (n_gpus * throughput(1))``.

The training set is built from the ml-100k files in the layout of their spec
(``datasets/movielens-100k.yaml``: user and item attributes joined onto interactions),
under ``$RECOPS_HOME/benchmarks/training`` (set ``RECOPS_HOME`` to a scratch folder; the
ml-100k download is a one-time step). Results go to ``benchmarks/results/training.json``,
``training.md`` (the table) and ``training.png`` (examples/s per configuration with the
ratios, and the input-wait share against its 5 % goal); ``--out`` picks another folder,
and ``--replot`` redraws the PNG and table from an existing ``training.json``.
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
from recops_models.tf_env import use_legacy_keras

from benchmarks._common import RESULTS_DIR, log_if_wide, pyplot, redraw, save_figure, write_atomic
from benchmarks._ml100k import prepare_data

#: TensorFlow's own choices (the baseline of the ``tf_env`` pair) and the candidate: the
#: pooling BFC allocator on the CPU and oneDNN's kernels. Not in ``TF_ENV``: with both, a
#: ``recops recommend`` process aborted at exit in the shop integration test.
TF_DEFAULTS = {"TF_CPU_ALLOCATOR_USE_BFC": "false", "TF_ENABLE_ONEDNN_OPTS": "0"}
TF_CANDIDATE = {"TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_ENABLE_ONEDNN_OPTS": "1"}

#: The input-wait share the tf.data pipeline should stay under.
INPUT_WAIT_GOAL = 0.05


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
        "batch_size": config.batch_size,
    }


def _build(config_args: dict[str, Any]) -> dict[str, Any]:
    """What ``train`` builds before ``fit``: rows, spec, inputs, dataset, compiled model.

    Built through the training stage's own doors (``recops.training.inputs``), so the
    features are the spec's, as ``train`` sees them.
    """
    from recops.splits import split_interactions, train_rows
    from recops.training import (
        TrainConfig,
        item_log_probabilities,
        make_dataset,
        read_items,
        read_training_set,
        read_users,
        seed_everything,
        select_strategy,
    )
    from recops.training.inputs import fit_model_spec, training_inputs

    config = TrainConfig(**config_args)
    layout = config.layout()
    frame = read_training_set(config.training_set_uri, layout)
    split = split_interactions(frame["user_id"].to_numpy(), frame["item_id"].to_numpy())
    rows = train_rows(frame, split)
    strategy, _, replicas = select_strategy(config.replicas)
    seed_everything(config.seed)
    import tf_keras
    from recops_models.two_tower import InBatchSoftmaxLoss, build_training_model

    spec = fit_model_spec(
        layout,
        rows=rows,
        users=read_users(config.users_uri, layout),
        items=read_items(config.items_uri, layout),
        embedding_dim=config.embedding_dim,
        temperature=config.temperature,
    )
    logq = item_log_probabilities(rows["item_id"].to_numpy())
    features = training_inputs(spec, rows, logq)
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
        "training_inputs": training_inputs,
    }


def _child_pandas(args: dict[str, Any]) -> dict[str, Any]:
    """tf.data pipeline vs a Python generator slicing a DataFrame every step."""
    built = _build(args["config"])
    config, rows, spec, logq = built["config"], built["rows"], built["spec"], built["logq"]
    model, steps, training_inputs = built["model"], built["steps"], built["training_inputs"]
    batch = config.batch_size

    def pandas_batches() -> Any:
        rng = np.random.default_rng(config.seed)
        while True:
            order = rng.permutation(len(rows))
            for start in range(0, steps * batch, batch):
                take = order[start : start + batch]
                # The frame is sliced and the inputs built in Python every step.
                chunk = rows.iloc[take]
                yield training_inputs(spec, chunk, logq[take]), np.zeros(batch, np.int32)

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
    parser.add_argument(
        "--env-batch-size", type=int, default=8192, help="batch of the TF environment pair"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="folder for training.json/.md/.png"
    )
    parser.add_argument(
        "--replot", action="store_true", help="redraw training.png/.md from training.json"
    )
    parser.add_argument("--child", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out_dir: Path = args.out
    if args.replot:
        redraw(out_dir / "training.json", markdown, plot)
        return 0
    use_legacy_keras()
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
    # TensorFlow's defaults against the candidate environment.
    env_config = {**config("env", 2), "batch_size": args.env_batch_size}
    fit["tf_defaults"] = _spawn("fit", {"config": env_config}, {**cpu_env, **TF_DEFAULTS})
    fit["tf_env"] = _spawn(
        "fit",
        {"config": {**env_config, "output_dir": env_config["output_dir"] + "_tf_env"}},
        {**cpu_env, **TF_CANDIDATE},
    )
    fit["tf_env_speedup"] = fit["tf_env"]["examples_per_s"] / fit["tf_defaults"]["examples_per_s"]
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

    out = out_dir / "training.json"
    write_atomic(out, json.dumps(results, indent=2, sort_keys=True))
    write_atomic(out_dir / "training.md", markdown(results))
    plot(results, out_dir / "training.png")
    _print_table(results)
    print(f"wrote {out}, training.md and training.png")
    return 0


def _print_table(results: dict[str, Any]) -> None:
    fit, feed, wait = results["fit"], results["feed"], results["input_wait"]
    rows = [
        ("fit, 1 replica (CPU)", f"{fit['cpu_1_replicas']['examples_per_s']:,.0f} ex/s"),
        ("fit, 2 replicas (logical CPUs)", f"{fit['cpu_2_replicas']['examples_per_s']:,.0f} ex/s"),
        ("  speedup 2 vs 1", f"{fit['cpu_speedup_2_vs_1']:.2f}x"),
    ]
    if "tf_env" in fit:
        batch = fit["tf_env"].get("batch_size", "?")
        rows += [
            (f"TF defaults, batch {batch}", f"{fit['tf_defaults']['examples_per_s']:,.0f} ex/s"),
            (
                f"BFC + oneDNN, batch {batch}",
                f"{fit['tf_env']['examples_per_s']:,.0f} ex/s",
            ),
            ("  speedup BFC + oneDNN / defaults", f"{fit['tf_env_speedup']:.2f}x"),
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


# --------------------------------------------------------------------------- output


def _comparisons(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The side-by-side pairs the JSON holds: (baseline, compared), examples/s and ratio."""
    fit, feed, gpus = results["fit"], results["feed"], results.get("gpus", 0)
    pairs = [
        {
            "name": "input feed (1 replica)",
            "bars": [("pandas generator", feed["pandas_generator"]["examples_per_s"]),
                     ("tf.data", feed["tf_data"]["examples_per_s"])],
            "ratio": feed["speedup"],
            "ratio_text": f"tf.data / pandas = {feed['speedup']:.2f}×",
        },
        {
            "name": "replicas (logical CPUs)",
            "bars": [("1 replica", fit["cpu_1_replicas"]["examples_per_s"]),
                     ("2 replicas", fit["cpu_2_replicas"]["examples_per_s"])],
            "ratio": fit["cpu_speedup_2_vs_1"],
            "ratio_text": f"2 / 1 = {fit['cpu_speedup_2_vs_1']:.2f}× "
                          f"(efficiency {fit['cpu_scaling_efficiency']:.0%})",
        },
    ]  # fmt: skip
    if "tf_env" in fit:
        pairs.append(
            {
                "name": f"TF environment (batch {fit['tf_env'].get('batch_size', '?')})",
                "bars": [("TF defaults", fit["tf_defaults"]["examples_per_s"]),
                         ("BFC + oneDNN", fit["tf_env"]["examples_per_s"])],
                "ratio": fit["tf_env_speedup"],
                "ratio_text": f"BFC + oneDNN / defaults = {fit['tf_env_speedup']:.2f}×",
            }
        )  # fmt: skip
    if "gpu_1" in fit:
        pairs.append(
            {
                "name": "GPUs",
                "bars": [("1 GPU", fit["gpu_1"]["examples_per_s"]),
                         (f"all {gpus} GPUs", fit["gpu_all"]["examples_per_s"])],
                "ratio": fit["gpu_speedup_all_vs_1"],
                "ratio_text": f"all / 1 = {fit['gpu_speedup_all_vs_1']:.2f}× "
                              f"(efficiency {fit['gpu_scaling_efficiency']:.0%})",
            }
        )  # fmt: skip
    return pairs


def _conditions(results: dict[str, Any]) -> str:
    host = results.get("host") or results.get("machine") or {}
    rows = results["fit"]["cpu_1_replicas"].get("train_rows")
    gpus = results.get("gpus", 0)
    return (
        f"{results.get('dataset', 'ml-100k')}, {rows:,} training rows, "
        f"batch {results['batch_size']}, "
        f"{results['epochs']} epochs (first = warm-up, not counted); {host.get('cpus', '?')} CPUs"
        + (f", {gpus} GPUs" if gpus else ", no GPU")
    )


def plot(results: dict[str, Any], path: Path) -> None:
    """examples/s per configuration, pair by pair with the ratio; input-wait share vs the goal."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter

    fig, (left, right) = plt.subplots(
        1, 2, figsize=(10, 4.5), gridspec_kw={"width_ratios": [3, 1.25]}
    )
    pairs = _comparisons(results)
    shades = [("#b7c7de", "#4c72b0"), ("#f3c6a5", "#dd8452"), ("#b4dcb4", "#55a868")]
    xs: list[float] = []
    labels: list[str] = []
    values: list[float] = []
    for i, pair in enumerate(pairs):
        base = i * 3.0
        for j, (label, value) in enumerate(pair["bars"]):
            bar = left.bar(base + j, value, 0.8, color=shades[i % len(shades)][j],
                           edgecolor="black", linewidth=0.4,
                           label=pair["name"] if j == 1 else None)  # fmt: skip
            left.bar_label(bar, labels=[f"{value:,.0f}"], fontsize=8, padding=2)
            xs.append(base + j)
            labels.append(label.replace(" generator", "\ngenerator"))
            values.append(value)
    wide = log_if_wide(left, values)
    top = max(values)
    for i, pair in enumerate(pairs):
        # The ratio above each pair, clear of the value labels.
        y = top * (4.0 if wide else 1.36)
        left.text(i * 3.0 + 0.5, y, pair["ratio_text"].replace(" (", "\n("), ha="center", va="top",
                  fontsize=8.5, fontweight="bold")  # fmt: skip
    left.set_ylim(top=top * (5.5 if wide else 1.45))
    if not wide:
        left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    left.set_xticks(xs)
    left.set_xticklabels(labels, fontsize=8.5)
    left.set_ylabel("training examples/s" + (" (log)" if wide else ""))
    left.set_title("Throughput, steady epochs (higher is better)", fontsize=10)
    left.legend(
        fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=len(pairs), frameon=False
    )
    left.grid(True, axis="y", alpha=0.3)

    wait = results["input_wait"]
    shares = [100 * wait["input_wait_share"], 100 * wait["eager_next_share"]]
    names = ["in-graph next()\nvs materialised", "eager next()\n(upper bound)"]
    bars = right.bar(
        [0, 1], shares, 0.6, color=["#4c72b0", "#a0a0a0"], edgecolor="black", linewidth=0.4
    )
    right.bar_label(bars, labels=[f"{v:.1f} %" for v in shares], fontsize=8, padding=2)
    right.axhline(100 * INPUT_WAIT_GOAL, color="tab:red", linestyle="--", linewidth=1,
                  label=f"goal < {INPUT_WAIT_GOAL:.0%}")  # fmt: skip
    right.axhline(0, color="black", linewidth=0.6)
    high = max([*shares, 100 * INPUT_WAIT_GOAL])
    low = min(shares)
    right.set_ylim(low - 0.15 * high if low < 0 else 0.0, high * 1.35)
    right.set_xticks([0, 1])
    right.set_xticklabels(names, fontsize=8)
    right.set_xlim(-0.6, 1.6)
    right.set_ylabel("share of epoch time waiting on input (%)")
    right.set_xlabel(
        f"{wait['replicas']} replica(s), {wait['steps_per_epoch']} steps/epoch", fontsize=8
    )
    right.set_title("Input wait (lower is better)", fontsize=10)
    right.legend(fontsize=8, loc="upper left")
    right.grid(True, axis="y", alpha=0.3)
    fig.suptitle(
        f"recops two-tower training: examples/s side by side\n{_conditions(results)}", fontsize=10
    )
    fig.tight_layout()
    save_figure(fig, path)


def markdown(results: dict[str, Any]) -> str:
    """The throughput pairs with their ratios, and the input-wait shares."""
    lines = [
        f"Training throughput of the two-tower: {_conditions(results)}.",
        "",
        "| comparison | configuration | examples/s | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for pair in _comparisons(results):
        (base, base_v), (other, other_v) = pair["bars"]
        lines.append(f"| {pair['name']} | {base} | {base_v:,.0f} | |")
        lines.append(f"| | {other} | {other_v:,.0f} | **{pair['ratio_text']}** |")
    wait = results["input_wait"]
    lines += [
        "",
        f"| input wait ({wait['replicas']} replica(s), {wait['steps_per_epoch']} steps/epoch) "
        "| share of epoch | goal |",
        "| --- | --- | --- |",
        "| in-graph `next()` vs batches materialised in memory "
        f"| **{wait['input_wait_share']:.1%}** | < {INPUT_WAIT_GOAL:.0%} |",
        "| eager `next()` between compiled steps (upper bound) "
        f"| {wait['eager_next_share']:.1%} | |",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
