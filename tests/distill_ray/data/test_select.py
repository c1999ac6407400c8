"""Target-aware sampling of one problem's CoTs."""

from distill_ray.config import SelectConfig
from distill_ray.data.select import select_group


def _cot(i, rv, cd, correct=True, difficulty="medium"):
    return {"id": "p", "sample_id": f"s{i}", "rv": rv, "cd": cd, "correct": correct, "difficulty": difficulty}


def test_keeps_fitting_correct_cots_closest_to_the_centre_first_and_caps():
    cfg = SelectConfig(rv=(3, 5), cd=(4, 4), max_per_problem=2)
    rows = [_cot(0, 3, 4), _cot(1, 4, 4), _cot(2, 5, 4), _cot(3, 4, 4, correct=False), _cot(4, 8, 4)]
    kept, rejected = select_group(rows, cfg)
    assert [r["sample_id"] for r in kept] == ["s1", "s0"]  # rv 4 is the centre; ties by id
    assert not any(r["fallback"] for r in kept)
    reasons = {r["sample_id"]: why for r, why in rejected}
    assert reasons["s2"].startswith("over max_per_problem")
    assert reasons["s3"] == "incorrect answer"
    assert reasons["s4"].startswith("rv outside target")
    assert len(kept) + len(rejected) == len(rows)


def test_no_fit_rejects_the_problem_unless_nearest_fallback():
    rows = [_cot(0, 8, 4), _cot(1, 7, 4), _cot(2, 1, 4, correct=False)]
    kept, rejected = select_group(rows, SelectConfig(rv=(3, 5)))
    assert kept == [] and all(why.startswith("no CoT of the problem fits") for _, why in rejected)

    kept, rejected = select_group(rows, SelectConfig(rv=(3, 5), fallback="nearest", max_per_problem=1))
    assert [r["sample_id"] for r in kept] == ["s1"] and kept[0]["fallback"] is True  # rv 7 is nearest; s2 is wrong
    assert dict((r["sample_id"], why) for r, why in rejected)["s2"] == "incorrect answer"


def test_difficulty_filter_and_missing_scores():
    rows = [_cot(0, None, 4, difficulty="hard"), _cot(1, 4, 4, difficulty="easy")]
    kept, _ = select_group(rows, SelectConfig(difficulty=["hard"]))
    assert [r["sample_id"] for r in kept] == ["s0"]
    kept, rejected = select_group(rows, SelectConfig(rv=(0, 9)))
    assert [r["sample_id"] for r in kept] == ["s1"]  # a missing rv cannot be inside the interval
