"""The evaluation report: eval rows -> report.json + report.md + three PNG plots in one folder.

Flow: the eval job writes one row per generated sample -> eval_metrics.summarize computes the
`{model: {benchmark: metrics}}` numbers -> **write_report** stores them (report.json, for tools),
renders them (report.md, for people) and draws them (plots.py). The markdown follows the papers'
tables: a main results table, DistilQwen's mean-CoT-length table (models x benchmarks), and
per-group accuracy (e.g. MATH level / subject) where a benchmark carries group columns.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from distill_ray.eval import plots
from distill_ray.eval.metrics import is_error, is_missing, natural_key, summarize, to_records

PLOT_FILES = {
    "pass_at_k": "pass_at_k.png",
    "length_histograms": "length_histograms.png",
    "accuracy": "accuracy.png",
}
MISSING = "-"


def write_report(
    rows: Any,
    out_dir: Path,
    ks: list[int],
    group_fields: list[str],
    title: str = "distill-ray evaluation",
) -> dict[str, str]:
    """Write report.json, report.md and the plots into `out_dir`; return {name: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = to_records(rows)  # normalised once; summarize and the histograms reuse it
    results = summarize(records, ks, group_fields)
    report = {
        "title": title,
        "models": list(results),
        "benchmarks": plots.benchmarks_of(results),
        "ks": sorted(set(int(k) for k in ks)),
        "group_fields": list(group_fields),
        "totals": _totals(records),
        "results": results,
        "plots": dict(PLOT_FILES),
    }
    paths = {
        "pass_at_k": plots.plot_pass_at_k(results, out_dir / PLOT_FILES["pass_at_k"]),
        "length_histograms": plots.plot_length_histograms(records, out_dir / PLOT_FILES["length_histograms"]),
        "accuracy": plots.plot_accuracy(results, out_dir / PLOT_FILES["accuracy"]),
    }
    paths["json"] = _write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    paths["markdown"] = _write_text(out_dir / "report.md", render_markdown(report))
    return {name: str(path) for name, path in paths.items()}


def _totals(records: list[dict[str, Any]]) -> dict[str, int]:
    errors = sum(1 for r in records if is_error(r))
    unverified = sum(1 for r in records if not is_error(r) and is_missing(r.get("correct")))
    return {"rows": len(records), "errors": errors, "unverified": unverified}


def _write_text(path: Path, text: str) -> Path:
    """Write via a temporary file and rename, so a reader never sees half a report."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def render_markdown(report: dict[str, Any]) -> str:
    """The human-readable report from report.json's content."""
    totals = report["totals"]
    lines = [
        f"# {report['title']}",
        "",
        f"{len(report['models'])} model(s) x {len(report['benchmarks'])} benchmark(s); "
        f"{totals['rows']} rows, {totals['errors']} teacher-error rows excluded, "
        f"{totals['unverified']} unverifiable samples counted as incorrect.",
        "",
        "## Results",
        "",
        *_main_table(report),
        "",
        "pass@k is the unbiased estimator averaged over problems; `-` where some problem has fewer than "
        "k samples; pass@1's 95% interval is in brackets (Wilson for one sample per problem, else a bootstrap "
        "over problems). Accuracy is per sample; cut at the cap: replies that hit the token limit. "
        "Verbosity ratio = mean incorrect length / mean correct length.",
        "",
        "## CoT length (mean output tokens)",
        "",
        *_length_table(report),
        "",
        *_group_sections(report),
        "## Plots",
        "",
        *[f"![{name}]({file})" for name, file in report["plots"].items()],
        "",
    ]
    return "\n".join(lines)


def _row(cells: list[Any]) -> str:
    # A `|` inside a model label would split the cell.
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _header(cells: list[str]) -> list[str]:
    return [_row(cells), _row(["---"] * len(cells))]


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}"


def _num(value: float | None, fmt: str = ".0f") -> str:
    return MISSING if value is None else format(value, fmt)


def _main_table(report: dict[str, Any]) -> list[str]:
    """One row per (model, benchmark): size, pass@k, accuracy, format, lengths, verbosity."""
    ks = report["ks"]
    lines = _header(
        ["model", "benchmark", "problems", "samples/problem", "errors"]
        + [f"pass@{k} (%)" for k in ks]
        + ["accuracy (%)", "format rate (%)", "cut at the cap (%)", "mean tokens (correct / incorrect)",
           "verbosity ratio"]
    )
    for model, cells in report["results"].items():
        for bench, leaf in cells.items():
            tok = leaf["tokens"]
            lines.append(_row(
                [model, bench, leaf["problems"], leaf["samples_per_problem"], leaf["errors"]]
                + [_pass_cell(leaf, k) for k in ks]
                + [_pct(leaf["accuracy"]), _pct(leaf["format_rate"]), _pct(_share(leaf["truncated"], leaf["samples"])),
                   f"{_num(tok['mean_correct'])} / {_num(tok['mean_incorrect'])}",
                   _num(leaf["verbosity_ratio"], ".2f")]
            ))
    return lines


def _pass_cell(leaf: dict[str, Any], k: int) -> str:
    """pass@k in percent; pass@1 with its 95% interval (metrics.pass1_interval) in brackets."""
    cell = _pct(leaf.get(f"pass@{k}"))
    interval = leaf.get("pass1_ci95") if k == 1 else None
    return f"{cell} [{_pct(interval[0])}, {_pct(interval[1])}]" if interval and cell != "-" else cell


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _length_table(report: dict[str, Any]) -> list[str]:
    """DistilQwen Table 3 layout: models as rows, benchmarks as columns, mean output tokens."""
    benches = report["benchmarks"]
    lines = _header(["model"] + benches)
    for model, cells in report["results"].items():
        means = [_num(cells[b]["tokens"]["mean"]) if b in cells else MISSING for b in benches]
        lines.append(_row([model] + means))
    return lines


def _group_sections(report: dict[str, Any]) -> list[str]:
    """Per (benchmark, group field): group values as rows, models as columns, accuracy (n)."""
    lines: list[str] = []
    results = report["results"]
    for bench in report["benchmarks"]:
        for field in report["group_fields"]:
            tables = {m: cells[bench]["by_group"].get(field, {}) for m, cells in results.items() if bench in cells}
            models = [m for m, t in tables.items() if t]
            if not models:
                continue
            values = sorted({v for m in models for v in tables[m]}, key=natural_key)
            lines += [f"## Accuracy by {field}: {bench}", "", *_header([field] + models)]
            for value in values:
                cells = [_group_cell(tables[m].get(value)) for m in models]
                lines.append(_row([value] + cells))
            lines.append("")
    return lines


def _group_cell(stats: dict[str, Any] | None) -> str:
    if not stats:
        return MISSING
    return f"{_pct(stats['accuracy'])} (n={stats['samples']})"
