"""Tests for distill_ray.eval.report and distill_ray.eval.plots: files written, PNGs valid, markdown content."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest

from distill_ray.eval import plots
from distill_ray.eval.metrics import summarize
from distill_ray.eval.report import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAIN_HEADER = ("| model | benchmark | problems | samples/problem | errors | pass@1 (%) | pass@2 (%) | "
               "accuracy (%) | format rate (%) | cut at the cap (%) | mean tokens (correct / incorrect) | "
               "verbosity ratio |")


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which the PNG spec requires to come first."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    length, chunk = struct.unpack(">I4s", data[8:16])
    assert chunk == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_valid_png(path: Path) -> None:
    width, height = png_size(path)
    assert width > 0 and height > 0
    image = mpimg.imread(path)
    assert image.shape[:2] == (height, width)


def _row(model, bench, pid, idx, correct, tokens, error=None, subject=None):
    return {
        "model": model, "benchmark": bench, "id": pid, "sample_index": idx, "correct": correct,
        "completion_tokens": tokens, "format_reward": 1.0 if correct else 0.0, "finish_reason": "stop",
        "error": error, "subject": subject,
    }


def rows() -> list[dict]:
    out = []
    for model, skill in (("qwen-1.5b-sft", 0.5), ("qwen-1.5b|adv", 0.75)):
        for bench in ("gsm8k", "math500"):
            for p in range(4):
                for s in range(2):
                    correct = ((p * 2 + s) % 4) < 4 * skill
                    subject = ("algebra", "geometry")[p % 2] if bench == "math500" else None
                    out.append(_row(model, bench, f"{bench}-{p}", s, correct, 100 + 50 * p + (0 if correct else 200),
                                    subject=subject))
    # A model that never gets anything right and one teacher failure: must not break any plot.
    out += [_row("base", "gsm8k", "gsm8k-0", 0, False, 700), _row("base", "gsm8k", "gsm8k-0", 1, None, 800),
            _row("base", "gsm8k", "gsm8k-1", 0, None, 0, error="HTTP 500"), _row("base", "gsm8k", "gsm8k-1", 1, False, 650)]
    return out


def test_write_report_files(tmp_path):
    written = write_report(pd.DataFrame(rows()), tmp_path / "report", ks=[1, 2], group_fields=["subject"])
    assert set(written) == {"json", "markdown", "pass_at_k", "length_histograms", "accuracy"}
    for name in ("pass_at_k", "length_histograms", "accuracy"):
        assert Path(written[name]).name == f"{name}.png"
        assert_valid_png(Path(written[name]))
    assert not list((tmp_path / "report").glob("*.tmp"))

    report = json.loads(Path(written["json"]).read_text())
    assert report["models"] == ["qwen-1.5b-sft", "qwen-1.5b|adv", "base"]
    assert report["benchmarks"] == ["gsm8k", "math500"]
    assert report["ks"] == [1, 2]
    assert report["totals"] == {"rows": 36, "errors": 1, "unverified": 1}
    assert report["results"]["base"]["gsm8k"]["pass@1"] == 0.0
    assert report["results"]["base"]["gsm8k"]["errors"] == 1
    assert report["results"]["qwen-1.5b-sft"]["gsm8k"]["pass@1"] == 0.5
    assert report["results"]["qwen-1.5b|adv"]["math500"]["by_group"]["subject"]["algebra"]["samples"] == 4


def test_markdown_content(tmp_path):
    written = write_report(rows(), tmp_path, ks=[1, 2], group_fields=["subject"], title="my eval")
    md = Path(written["markdown"]).read_text()
    assert md.startswith("# my eval\n")
    assert MAIN_HEADER in md
    for model in ("qwen-1.5b-sft", "qwen-1.5b\\|adv", "base"):   # `|` escaped inside a table cell
        assert f"| {model} |" in md
    # sft / gsm8k: 4 problems, 2 samples each, pass@1 50%, errors 0.
    # pass@1 with its bootstrap interval over the 4 problems (2 samples each), inside [0, 1] and around 50%.
    line = next(l for l in md.splitlines() if l.startswith("| qwen-1.5b-sft | gsm8k | 4 | 2 | 0 | 50.0 ["))
    low, high = (float(x) for x in line.split("50.0 [")[1].split("]")[0].split(", "))
    assert 0.0 <= low < 50.0 < high <= 100.0
    # base never correct: no correct-length mean, no verbosity ratio; its pass@1 interval is not empty.
    base_row = next(line for line in md.splitlines() if line.startswith("| base | gsm8k | 2 | 1 | 1 | 0.0 [0.0, "))
    assert base_row.endswith("| - |")  # no verbosity ratio
    assert "## CoT length (mean output tokens)\n\n| model | gsm8k | math500 |" in md
    assert "| base | 717 | - |" in md                            # (700 + 800 + 650) / 3
    assert "## Accuracy by subject: math500" in md
    assert "## Accuracy by subject: gsm8k" not in md
    for name in ("pass_at_k", "length_histograms", "accuracy"):
        assert f"]({name}.png)" in md


def test_plots_survive_degenerate_inputs(tmp_path):
    assert_valid_png(plots.plot_pass_at_k({}, tmp_path / "empty_pass.png"))
    assert_valid_png(plots.plot_accuracy({}, tmp_path / "empty_acc.png"))
    assert_valid_png(plots.plot_length_histograms([], tmp_path / "empty_hist.png"))
    # Only k=1 available (one sample per problem), all wrong, one equal-length pair: single points, n/a-free.
    one = [_row("m", "b", "q1", 0, False, 5), _row("m", "b", "q2", 0, False, 5)]
    summary = summarize(one, [1, 4], [])
    assert list(k for k in summary["m"]["b"] if k.startswith("pass@")) == ["pass@1"]
    assert_valid_png(plots.plot_pass_at_k(summary, tmp_path / "k1.png"))
    assert_valid_png(plots.plot_length_histograms(one, tmp_path / "k1_hist.png"))
    assert_valid_png(plots.plot_accuracy(summary, tmp_path / "k1_acc.png"))


def test_plots_close_their_figures(tmp_path):
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    summary = summarize(rows(), [1, 2], ["subject"])
    plots.plot_pass_at_k(summary, tmp_path / "a.png")
    plots.plot_length_histograms(rows(), tmp_path / "b.png")
    plots.plot_accuracy(summary, tmp_path / "c.png")
    assert len(plt.get_fignums()) == before
    assert plt.get_backend().lower() == "agg"


@pytest.mark.parametrize("n_models, n_benches", [(4, 3)])
def test_histogram_grid_scales(tmp_path, n_models, n_benches):
    grid = [_row(f"m{m}", f"b{b}", f"q{p}", 0, p % 2 == 0, 100 * (p + 1))
            for m in range(n_models) for b in range(n_benches) for p in range(6)]
    width, height = png_size(plots.plot_length_histograms(grid, tmp_path / "grid.png"))
    assert width > height > 0   # one row per model, one column per benchmark
