"""distill-ray's library: pure Python and torch, no Ray Serve, Data or Train (see docs/architecture.md).

The grader is its most used public entry: `grade(reply, reference, finish_reason=None) -> Grade` (correct,
final_answer, reason), the one verdict behind every kept CoT, reward and eval number, and `answers_equal`
for two final answers (distill_ray/grading/grader.py documents the rules).
"""

from distill_ray.grading.grader import Grade, answers_equal, grade

__all__ = ["Grade", "answers_equal", "grade"]
