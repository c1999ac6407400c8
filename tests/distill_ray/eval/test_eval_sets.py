"""Benchmark presets and the group-field join used by the eval report."""

import json

import pytest

from distill_ray.config import BenchmarkConfig, DatasetConfig
from distill_ray.data.sources import normalize_row
from distill_ray.errors import ConfigError
from distill_ray.eval.eval_sets import group_lookup, resolve_benchmarks


def test_presets_fill_source_fields_and_templates_and_config_wins():
    benches = resolve_benchmarks(
        [BenchmarkConfig(name="g", preset="gsm8k", limit=5),
         BenchmarkConfig(name="m", preset="math500", group_fields=["level"], user_template="Q: {problem}")],
        DatasetConfig(limit=99), "{problem}",
    )  # fmt: skip
    g, m = benches
    assert g.dataset.instruction_path == "bundled:gsm8k/test" and g.dataset.answer_format == "gsm8k"
    assert g.dataset.limit == 5 and "boxed" in g.user_template
    assert m.dataset.id_field == "unique_id" and m.group_fields == ["level"] and m.user_template == "Q: {problem}"
    assert m.dataset.limit is None  # the job's dataset.limit does not leak into a benchmark


def test_benchmarks_need_a_path_and_unique_names():
    with pytest.raises(ConfigError, match="path"):
        resolve_benchmarks([BenchmarkConfig(name="a", preset="aime")], DatasetConfig(), "{problem}")
    with pytest.raises(ConfigError, match="unique"):
        resolve_benchmarks([BenchmarkConfig(name="a", preset="gsm8k")] * 2, DatasetConfig(), "{problem}")


def test_no_benchmarks_means_the_dataset_section():
    (bench,) = resolve_benchmarks([], DatasetConfig(instruction_path="x.jsonl", limit=3), "T {problem}")
    assert bench.name == "dataset" and bench.dataset.limit == 3 and bench.user_template == "T {problem}"


def test_group_lookup_on_math500_joins_by_the_ids_rows_carry():
    (bench,) = resolve_benchmarks([BenchmarkConfig(name="m", preset="math500")], DatasetConfig(), "{problem}")
    lookup = group_lookup(bench)
    assert len(lookup) == 500
    first = json.loads(bench_path(bench).read_text().splitlines()[0])
    row_id = normalize_row(first, bench.dataset)["id"]
    assert lookup[row_id] == {"level": str(first["level"]), "subject": first["subject"]}


def bench_path(bench):
    from distill_ray.data.sources import resolve_source

    return resolve_source(bench.dataset.instruction_path).path
