"""Small helpers shared by the benchmarks: atomic writes, the machine block, plotting setup."""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def fields_of(config_type: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that ``config_type`` (a dataclass) declares as fields.

    The benchmarks splat one dict of URIs (``prepare_data``'s, with ``spec_uri``) into
    several stage configs; a config that takes no spec yet must not get one.
    """
    from dataclasses import fields

    names = {f.name for f in fields(config_type)}
    return {k: v for k, v in values.items() if k in names}


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename.

    A reader (or a second benchmark run) never sees half a file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for private servers)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ratio_text(a: float | None, b: float | None) -> str:
    """``a / b`` as ``"1.23×"``, or ``"n/a"`` when either side is missing or zero."""
    return f"{a / b:.2f}×" if a and b else "n/a"


def redraw(json_path: Path, markdown: Any, plot: Any) -> dict[str, Any]:
    """``--replot``: rewrite the ``.md`` and ``.png`` beside ``json_path`` from its report."""
    report: dict[str, Any] = json.loads(json_path.read_text())
    write_atomic(json_path.with_suffix(".md"), markdown(report))
    plot(report, json_path.with_suffix(".png"))
    return report


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    write_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


def machine() -> dict[str, Any]:
    """What the figures were measured on: they hold for this machine only."""
    total_kib = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    total_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(total_kib / 2**20, 1) if total_kib else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display), imported on demand."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 120) -> None:
    """Save ``fig`` as a PNG at ``path`` through a temporary file and a rename, and close it."""
    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)


def log_if_wide(ax: Any, values: list[float], span: float = 10.0) -> bool:
    """Put ``ax``'s y axis on a log scale when the positive ``values`` span more than ``span``×.

    Ticks at 1-2-5 steps as plain numbers: the default 10^n labels say little over one or
    two decades.
    """
    positive = [v for v in values if v and v > 0]
    if not positive or max(positive) / min(positive) <= span:
        return False
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    return True


def percentile(values: list[float], q: float) -> float:
    """``recops.serving.loadtest.percentile`` (interpolated), but NaN when empty: a
    benchmark row with no answered request must not read as 0 ms."""
    from recops.serving.loadtest import percentile as interpolated

    return interpolated(values, q) if values else float("nan")


def closed_loop(sender: Any, seconds: float, concurrency: int) -> dict[str, Any]:
    """``concurrency`` threads send back to back for ``seconds``; the rate achieved is the
    throughput ceiling and the latency is per request (service plus queueing).

    ``sender`` has ``send()`` (raises on a failed request) and ``close()``.
    """
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def worker() -> None:
        while time.perf_counter() < end:
            begin = time.perf_counter()
            try:
                sender.send()
                ok = True
            except Exception:  # counted
                ok = False
            took = (time.perf_counter() - begin) * 1000.0
            with lock:
                if ok:
                    latencies.append(took)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - begin
    sender.close()
    return {
        "ok": len(latencies),
        "errors": errors[0],
        "qps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
    }


def paced_loop(send: Any, rate: float, seconds: float) -> dict[str, Any]:
    """One client sends ``send()`` at ``rate`` per second for ``seconds``, closed loop.

    Request ``i`` goes out at ``start + i / rate``, or as soon as request ``i - 1``
    answers when that is later (never two in flight: a slow answer delays the next
    request instead of piling them up). Latency is from the actual send to the answer;
    ``send`` raises on a failed request, which is counted, not timed.

    Returns:
        ``latencies_ms`` (of the successful requests, in order), ``errors`` (count),
        ``error_samples`` (the first few error texts), ``requests``, ``seconds`` (wall)
        and ``achieved_rps``.
    """
    latencies: list[float] = []
    errors: list[str] = []
    period = 1.0 / rate
    start = time.perf_counter()
    end = start + seconds
    i = 0
    while True:
        due = start + i * period
        if due >= end:
            break
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        begin = time.perf_counter()
        try:
            send(i)
        except Exception as exc:  # counted, and a few kept to say what failed
            errors.append(f"{type(exc).__name__}: {exc}")
        else:
            latencies.append((time.perf_counter() - begin) * 1000.0)
        i += 1
    wall = time.perf_counter() - start
    return {
        "latencies_ms": latencies,
        "errors": len(errors),
        "error_samples": errors[:5],
        "requests": i,
        "seconds": round(wall, 2),
        "achieved_rps": round(i / wall, 1) if wall > 0 else 0.0,
    }
