"""The report's one drawn plot: per-epoch training history, as PNG bytes.

Matplotlib is imported inside the function (and set to the Agg backend) so importing the
report package stays light.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["plot_history"]


def plot_history(history: Mapping[str, Sequence[tuple[int, float]]], best_epoch: Any) -> bytes:
    """One panel per metric series over epochs, the kept epoch marked; PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    keys = sorted(history)
    figure, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 3.4), squeeze=False)
    for axis, key in zip(axes[0], keys, strict=True):
        steps = [s for s, _ in history[key]]
        values = [v for _, v in history[key]]
        axis.plot(steps, values, marker="o", color="tab:blue")
        if isinstance(best_epoch, int) and best_epoch in steps:
            axis.axvline(
                best_epoch,
                color="tab:red",
                linestyle="--",
                linewidth=1,
                label=f"kept epoch {best_epoch}",
            )
            axis.legend(loc="best", fontsize=8)
        axis.set_title(key)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96)
    plt.close(figure)
    return buffer.getvalue()
