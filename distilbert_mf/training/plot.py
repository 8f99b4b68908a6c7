"""A PNG of a run's curves from ``log_history``: training loss (and learning rate), evaluation loss and metrics.

matplotlib is imported only when a plot is drawn (Agg backend, no display needed); it is in the ``test`` and
``bench`` extras, not a core dependency.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from distilbert_mf._io import atomic_path

# evaluation entries that are bookkeeping, not quality
_NOT_METRICS = ("eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "epoch", "step")


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for entry in history:
        if key in entry and "step" in entry and isinstance(entry[key], (int, float)):
            steps.append(int(entry["step"]))
            values.append(float(entry[key]))
    return steps, values


def plot_history(
    log_history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Draw ``log_history`` (transformers' layout) into the PNG ``path`` (written atomically).

    Left: training ``loss`` and ``eval_loss`` against the step, the learning rate on a second axis. Right: every
    other ``eval_*`` metric. Raises ValueError when the history holds no loss and no metric.
    """
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from err
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    metric_keys = sorted({k for entry in log_history for k in entry if k.startswith("eval_") and k not in _NOT_METRICS})
    train = _series(log_history, "loss")
    evaluation = _series(log_history, "eval_loss")
    if not train[0] and not evaluation[0] and not metric_keys:
        raise ValueError("log_history holds no 'loss', 'eval_loss' or eval metric to plot")
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    try:
        if train[0]:
            left.plot(*train, label="training loss", color="tab:blue")
        if evaluation[0]:
            left.plot(*evaluation, "o-", label="evaluation loss", color="tab:orange")
        left.set_xlabel("step")
        left.set_ylabel("loss")
        learning_rate = _series(log_history, "learning_rate")
        if learning_rate[0]:
            twin = left.twinx()
            twin.plot(*learning_rate, "--", color="tab:gray", linewidth=1, label="learning rate")
            twin.set_ylabel("learning rate")
        left.legend(loc="upper right")
        left.set_title("loss")
        for key in metric_keys:
            right.plot(*_series(log_history, key), "o-", label=key.removeprefix("eval_"))
        right.set_xlabel("step")
        right.set_title("evaluation")
        if metric_keys:
            right.legend(loc="lower right")
        if title:
            figure.suptitle(title)
        figure.tight_layout()
        path = Path(path)
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(figure)
    return path
