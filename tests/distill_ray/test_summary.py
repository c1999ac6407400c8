"""The summary's per-stage accounting."""

from distill_ray.summary import StageResult


def test_rejects_are_counted_by_kind_not_by_line():
    result = StageResult(name="generate", job_type="generate")
    result.count_rejects(["blank line: line 2", "blank line: line 9", "missing or empty prompt field 'q': line 4"])
    result.count_rejects(["chosen and rejected are identical"])
    assert result.rejected_reasons == {"blank line": 2, "missing or empty prompt field 'q'": 1,
                                       "chosen and rejected are identical": 1}  # fmt: skip
    assert result.rows_rejected == 4
