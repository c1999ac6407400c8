"""AdvDistill group curation, preference pairing and the collector's quotas."""

from distill_ray.config import CurateConfig, PairsConfig
from distill_ray.data.curation import build_pairs, curate_group
from distill_ray.data.mixing import dedup_key, task_quotas


def _sample(i, correct, adv=0.0):
    return {"id": "p1", "sample_id": f"p1:s{i}", "problem": "2+2?", "reference": "4", "response": f"r{i}",
            "correct": correct, "reward": 1.0 if correct else -1.0, "advantage": adv, "completion_tokens": 10 + i}


def test_group_with_a_correct_response_becomes_one_row_in_sample_order():
    group, reason = curate_group([_sample(1, False, -1.0), _sample(0, True, 1.0)], CurateConfig())
    assert reason is None
    assert group["sample_ids"] == ["p1:s0", "p1:s1"] and group["correct"] == [True, False]
    assert group["advantages"] == [1.0, -1.0] and group["num_correct"] == 1


def test_groups_without_correct_answers_or_too_small_are_dropped_with_reasons():
    assert curate_group([_sample(0, False), _sample(1, False)], CurateConfig())[1].startswith("no correct response")
    assert curate_group([_sample(0, True)], CurateConfig())[1].startswith("group too small")
    unscored = [{**_sample(0, True), "advantage": None}, _sample(1, False)]
    assert curate_group(unscored, CurateConfig())[1].startswith("unscored group")


def test_correctness_pairs_put_a_correct_response_over_a_wrong_one():
    rows = [{**_sample(i, i % 2 == 0), "role": "teacher"} for i in range(4)]
    pairs, unused = build_pairs(rows, PairsConfig(max_pairs_per_problem=2, beta=0.2))
    assert len(pairs) == 2 and not unused
    by_text = {r["response"]: r["correct"] for r in rows}
    assert all(by_text[p["chosen"]] and not by_text[p["rejected"]] for p in pairs)
    assert {p["beta"] for p in pairs} == {0.2}
    one, unused = build_pairs(rows, PairsConfig())
    assert len(one) == 1 and len(unused) == 2 and unused[0][1].startswith("over max_pairs_per_problem")


def test_teacher_student_pairs_and_missing_student():
    rows = [{**_sample(0, True), "role": "teacher"}, {**_sample(1, None), "role": "student", "response": "stu"}]
    pairs, _ = build_pairs(rows, PairsConfig(mode="teacher_student"))
    assert pairs[0]["chosen"] == "r0" and pairs[0]["rejected"] == "stu"
    pairs, unused = build_pairs(rows[:1], PairsConfig(mode="teacher_student"))
    assert pairs == [] and unused[0][1] == "no student answer for this problem"


def test_quotas_apply_caps_then_weights_without_repeating_rows():
    counts = {"math": 100, "code": 30, "science": 10}
    assert task_quotas(counts, {"math": 50}, {}) == {"math": 50, "code": 30, "science": 10}
    # 2:1 share between math and code: code has 30 rows, so math keeps 60; science (no weight) keeps all.
    assert task_quotas(counts, {}, {"math": 2, "code": 1}) == {"math": 60, "code": 30, "science": 10}
    assert task_quotas(counts, {"code": 10}, {"math": 1, "code": 1}) == {"math": 10, "code": 10, "science": 10}


def test_dedup_key_ignores_case_and_whitespace():
    assert dedup_key("What is  2+2?\n") == dedup_key("what is 2+2?")
    assert dedup_key("What is 2+3?") != dedup_key("What is 2+2?")
