"""Sources and row normalisation: what becomes a problem row, and the reason when nothing can."""

import pytest

from distill_ray.config import DatasetConfig
from distill_ray.data.sources import (
    RowError,
    normalize_row,
    parse_json_line,
    procedural_arithmetic,
    resolve_source,
    stable_id,
)
from distill_ray.errors import ConfigError, InputFileError


def test_procedural_is_reproducible_and_correct():
    rows = procedural_arithmetic(50, seed=3, max_operand=9)
    assert rows == procedural_arithmetic(50, seed=3, max_operand=9)
    for r in rows:
        expr = r["question"].removeprefix("What is ").removesuffix("?")
        assert str(eval(expr)) == r["answer"]  # noqa: S307 - our own generated "a op b"
    assert len({r["id"] for r in rows}) == 50


def test_procedural_train_and_test_splits_are_disjoint():
    train = {r["question"] for r in procedural_arithmetic(400, 1, 9, "train")}
    test = {r["question"] for r in procedural_arithmetic(100, 2, 9, "test")}
    assert train and test and not train & test


def test_resolve_source_kinds_and_errors(tmp_path):
    assert resolve_source("procedural:arithmetic?max_operand=9&split=test").split == "test"
    with pytest.raises(ConfigError):
        resolve_source("procedural:geometry")
    with pytest.raises(ConfigError):
        resolve_source("procedural:arithmetic?level=3")
    with pytest.raises(InputFileError):
        resolve_source(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ConfigError):
        resolve_source(str(tmp_path / "prompts.txt"))
    assert resolve_source("bundled:gsm8k/test").path.name == "test.jsonl"
    with pytest.raises(ConfigError):
        resolve_source("bundled:nope")


def test_normalize_row_gsm8k_and_rejections():
    cfg = DatasetConfig(prompt_field="question", answer_field="answer", answer_format="gsm8k")
    row = normalize_row({"question": "Q?", "answer": "work... #### 1,234"}, cfg)
    assert row == {"id": stable_id("Q?"), "problem": "Q?", "reference": "1234"}
    with pytest.raises(RowError, match="question"):
        normalize_row({"question": "   ", "answer": "#### 1"}, cfg)
    with pytest.raises(RowError, match="answer"):
        normalize_row({"question": "Q?"}, cfg)
    with pytest.raises(RowError, match="malformed JSON"):
        parse_json_line('{"question": ')
    with pytest.raises(RowError, match="JSON object"):
        parse_json_line("[1, 2]")
    no_ref = normalize_row({"q": "x", "k": 7}, DatasetConfig(prompt_field="q", answer_field=None, id_field="k"))
    assert no_ref == {"id": "7", "problem": "x", "reference": None}
