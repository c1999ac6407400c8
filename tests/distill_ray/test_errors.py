"""one_line: the message of the exception raised where the work ran, out of Ray's and Ray Train's wrappers."""

from ray.exceptions import RayTaskError
from ray.train.v2._internal.exceptions import UserExceptionWithTraceback
from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

from distill_ray.errors import one_line, original_error

TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 3\n    raise ValueError(f"{n} rows")\n'


def test_the_original_is_found_inside_every_wrapper():
    original = ValueError("3 rows are bad\nsecond line")
    task = RayTaskError("fn", TRACEBACK, original).as_instanceof_cause()
    group = WorkerGroupError("[Rank 1]\n" + TRACEBACK, {1: ValueError("rank 1"), 0: original})
    held = UserExceptionWithTraceback(original, TRACEBACK)
    for wrapped in (task, group, held, ControllerError(held), RayTaskError("fn", TRACEBACK, group)):
        assert original_error(wrapped) is original
        assert one_line(wrapped) == "ValueError: 3 rows are bad"
    assert str(held).startswith("Traceback")  # what a report would show without the unwrapping


def test_a_plain_exception_is_its_own_original():
    exc = KeyError("x")
    assert original_error(exc) is exc and one_line(exc) == "KeyError: 'x'"
