"""Row processor: problems in, scored teacher samples out (one teacher; see jobs/data/generate.py for many).

For every problem and temperature it sends one chat request with `n=num_samples`, all of a batch's
requests in flight at once, then scores the problem's whole group together (`distill_ray.rewards.scoring`).
A problem's samples therefore always travel, and are committed, together: if the teacher rejects one
of its requests the whole problem is rejected with the reason, never half-kept. A teacher that stays
down raises `TeacherUnavailable`, which stops the stage (committed parts survive for the resume).
Runs inside `actors.part_writer.PartWriter`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from actors.part_writer import Outcome
from actors.teacher_client import TeacherCaller, reply_text
from distill_ray.config import DistillationConfig, InferenceConfig
from distill_ray.data import schemas
from distill_ray.errors import RowRejected
from distill_ray.models.teachers import Teacher
from distill_ray.prompts import chat_messages
from distill_ray.rewards.scoring import score_problem_samples


class CoTGenerator(TeacherCaller):
    """Calls one teacher for each (problem, temperature); one outcome per problem."""

    output_schema = schemas.SAMPLE

    def __init__(self, teacher: Teacher, distillation: DistillationConfig):
        super().__init__(teacher)
        self.inference, self.distillation = teacher.inference, distillation

    def process(self, problems: list[dict[str, Any]]) -> list[Outcome]:
        jobs = [(i, t) for i, p in enumerate(problems) if not p.get("error") for t in self.inference.temperatures]
        answers = self.map_rows(lambda job: self._ask(problems[job[0]], job[1]), jobs)
        outcomes = []
        for i, p in enumerate(problems):
            if p.get("error"):  # a malformed source record, quarantined with its reason
                outcomes.append(Outcome(reason=p["error"]))
                continue
            group = [a for (j, _), a in zip(jobs, answers) if j == i]
            failed = [a for a in group if isinstance(a, RowRejected)]
            if failed:
                outcomes.append(Outcome(reason=str(failed[0])))
                continue
            samples = [row for rows in group for row in rows]
            outcomes.append(Outcome(rows=score_problem_samples(samples, self.distillation)))
        return outcomes

    def _ask(self, problem: dict[str, Any], temperature: float) -> list[dict[str, Any]]:
        """The samples of one request. Raises TeacherRejected (the problem is rejected) or TeacherUnavailable."""
        resp = self.chat(request_body(problem, temperature, self.inference))
        base = {
            "id": problem["id"],
            "problem": problem["problem"],
            "reference": problem.get("reference"),
            "task": problem.get("task"),
            "source": problem.get("source"),
            "teacher": self.teacher.name,
            "temperature": float(temperature),
        }
        usage = resp.get("usage") or {}
        rows = []
        for choice in resp["choices"]:
            k = choice["index"]
            rows.append(
                {
                    **base,
                    "sample_id": f"{self.teacher.name}:{problem['id']}:t{temperature}:s{k}",
                    "sample_index": k,
                    "response": reply_text(choice["message"]),
                    "finish_reason": choice.get("finish_reason"),
                    "prompt_tokens": usage.get("prompt_tokens"),
                    "completion_tokens": _choice_tokens(choice, usage, len(resp["choices"])),
                }
            )
        return rows


def request_body(problem: dict[str, Any], temperature: float, inf: InferenceConfig) -> dict[str, Any]:
    """The chat body for one (problem, temperature): `num_samples` choices in one request."""
    body = {
        "messages": chat_messages(problem["problem"], inf.system_prompt, inf.user_template),
        "n": inf.num_samples,
        "temperature": temperature,
        "top_p": inf.top_p,
        "max_tokens": inf.max_new_tokens,
    }
    if inf.seed is not None:
        # Distinct but reproducible per (problem, temperature): resumed runs regenerate the same text.
        body["seed"] = request_seed(inf.seed, problem["id"], temperature)
    return body


def request_seed(base: int, problem_id: str, temperature: float) -> int:
    """A seed per (problem, temperature) that is stable across processes (unlike salted `hash()`)."""
    digest = hashlib.sha256(f"{base}|{problem_id}|{temperature}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _choice_tokens(choice: dict[str, Any], usage: dict[str, Any], n: int) -> int:
    """Per-choice completion length: our server reports it per choice; others only in total."""
    per_choice = choice.get("completion_tokens")
    if per_choice is not None:
        return int(per_choice)
    return int((usage.get("completion_tokens") or 0) / max(n, 1))
