"""PNG plots for the evaluation report (report.py calls these; eval_metrics.summarize feeds them).

- pass@k curves per (model, benchmark);
- CoT length histograms split by correctness (AdvDistill's observation that wrong answers run
  longer, DistilQwen's length-per-benchmark comparison), one row of panels per model;
- grouped accuracy bars.

Headless by construction: the Agg backend is selected before pyplot is imported, and every
figure is closed after saving because a long eval sweep calls these many times in one process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)
import numpy as np  # noqa: E402

from distill_ray.eval.metrics import is_correct, is_error, is_missing, ordered_keys, to_records  # noqa: E402

Summary = dict[str, dict[str, dict[str, Any]]]
CORRECT_COLOR, INCORRECT_COLOR = "tab:green", "tab:red"
MARKERS = "osD^v<>Px*"


def benchmarks_of(summary: Summary) -> list[str]:
    """Benchmarks across all models, in first-appearance order."""
    return list(dict.fromkeys(b for benches in summary.values() for b in benches))


def _save(fig: Any, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _no_data(ax: Any, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    # Empty panels get no 0..1 ticks, which would read as real (zero) data.
    ax.set_xticks([])
    ax.set_yticks([])


def _pass_points(leaf: dict[str, Any]) -> list[tuple[int, float]]:
    points = [(int(key[5:]), v) for key, v in leaf.items() if key.startswith("pass@") and v is not None]
    return sorted(points)


def plot_pass_at_k(summary: Summary, path: Path | str) -> Path:
    """pass@k against k, one line per (model, benchmark): colour = model, marker = benchmark.

    Where only k=1 is available each series is a single point, which is still worth drawing.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    benches = benchmarks_of(summary)
    all_ks: set[int] = set()
    for mi, (model, cells) in enumerate(summary.items()):
        for bench, leaf in cells.items():
            points = _pass_points(leaf)
            if not points:
                continue
            xs, ys = zip(*points)
            all_ks.update(xs)
            ax.plot(xs, ys, marker=MARKERS[benches.index(bench) % len(MARKERS)],
                    color=colors[mi % len(colors)], label=f"{model} / {bench}")
    if all_ks:
        ax.set_xticks(sorted(all_ks))
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        _no_data(ax)
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("pass@k")
    ax.set_ylim(-0.03, 1.05)  # below 0 so a pass@k of exactly 0 is not hidden by the axis
    ax.set_title("pass@k (unbiased estimator)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _bins(tokens: list[float]) -> np.ndarray:
    """Shared edges for one benchmark's column so models are compared on the same scale."""
    if not tokens:
        return np.array([0.0, 1.0])
    lo, hi = min(tokens), max(tokens)
    if lo == hi:
        return np.array([lo - 0.5, hi + 0.5])
    return np.linspace(lo, hi, 31)


def _hist_panel(ax: Any, rows: list[dict[str, Any]], bins: np.ndarray) -> None:
    """Correct vs not-correct lengths overlaid, with dashed lines at each side's mean."""
    drawn = False
    for label, color, want in (("correct", CORRECT_COLOR, True), ("incorrect", INCORRECT_COLOR, False)):
        tokens = [float(r["completion_tokens"]) for r in rows
                  if is_correct(r) == want and not is_missing(r.get("completion_tokens"))]
        if not tokens:
            continue
        ax.hist(tokens, bins=bins, alpha=0.5, color=color, label=f"{label} (n={len(tokens)})")
        ax.axvline(float(np.mean(tokens)), color=color, linestyle="--", linewidth=1)
        drawn = True
    if drawn:
        ax.legend(fontsize=7)
    else:
        _no_data(ax, "no samples")


def plot_length_histograms(rows: Any, path: Path | str) -> Path:
    """CoT length histograms by correctness: one row of panels per model, one column per benchmark."""
    records = [r for r in to_records(rows) if not is_error(r)]
    models, benches = ordered_keys(records, "model"), ordered_keys(records, "benchmark")
    if not records:
        fig, ax = plt.subplots(figsize=(5, 3))
        _no_data(ax, "no samples")
        return _save(fig, path)
    fig, axes = plt.subplots(len(models), len(benches), squeeze=False,
                             figsize=(4.2 * len(benches), 2.8 * len(models)))
    for bi, bench in enumerate(benches):
        column = [r for r in records if str(r.get("benchmark")) == bench]
        bins = _bins([float(r["completion_tokens"]) for r in column if not is_missing(r.get("completion_tokens"))])
        for mi, model in enumerate(models):
            ax = axes[mi][bi]
            _hist_panel(ax, [r for r in column if str(r.get("model")) == model], bins)
            ax.set_title(f"{model} / {bench}", fontsize=9)
            if mi == len(models) - 1:
                ax.set_xlabel("completion tokens")
            if bi == 0:
                ax.set_ylabel("samples")
    fig.suptitle("CoT length by correctness (dashed: means)")
    fig.tight_layout()
    return _save(fig, path)


def _accuracy_of(leaf: dict[str, Any] | None) -> float | None:
    """pass@1 where computed (per-problem mean), else per-sample accuracy (ks without 1)."""
    if not leaf:
        return None
    return leaf.get("pass@1", leaf.get("accuracy"))


def plot_accuracy(summary: Summary, path: Path | str) -> Path:
    """Grouped bars: benchmarks on x, one bar per model; a missing cell is marked n/a."""
    benches, models = benchmarks_of(summary), list(summary)
    # Width grows with the number of bars so labels stay legible at 4 models x 3 benchmarks.
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + len(benches) * (0.6 + 0.45 * len(models))), 4.5))
    if not benches:
        _no_data(ax)
    width = 0.8 / max(1, len(models))
    x = np.arange(len(benches))
    for mi, model in enumerate(models):
        values = [_accuracy_of(summary[model].get(b)) for b in benches]
        offsets = x - 0.4 + width * (mi + 0.5)
        bars = ax.bar(offsets, [v or 0.0 for v in values], width, label=model)
        for bar, v in zip(bars, values):
            text = "n/a" if v is None else f"{v:.2f}"
            ax.text(bar.get_x() + bar.get_width() / 2, (v or 0.0) + 0.01, text,
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, benches)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("accuracy (pass@1)")
    ax.set_title("Accuracy per model and benchmark")
    if models:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_pass_intervals(points: dict[str, tuple[float, float, float]], path: Path | str,
                        title: str = "Greedy pass@1 with 95% interval") -> Path:
    """One bar per model (label -> (pass@1, low, high)) with its confidence interval as an error bar."""
    labels = list(points)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.8 * len(labels)), 4.5))
    if not labels:
        _no_data(ax)
    values = np.array([points[k][0] for k in labels], dtype=float)
    errors = np.array([[points[k][0] - points[k][1] for k in labels], [points[k][2] - points[k][0] for k in labels]])
    x = np.arange(len(labels))
    ax.bar(x, values, 0.6, yerr=errors if labels else None, capsize=4, color="tab:blue", alpha=0.8)
    for xi, v in zip(x, values):
        ax.text(xi, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("pass@1")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
