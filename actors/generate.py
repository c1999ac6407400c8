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
import logging
from pathlib import Path
from typing import Any

from actors.part_writer import Outcome
from actors.teacher_client import TeacherCaller, reply_text
from distill_ray.config import DistillationConfig, InferenceConfig
from distill_ray.data import schemas
from distill_ray.errors import RowRejected
from distill_ray.models.teachers import Teacher
from distill_ray.prompts import chat_messages
from distill_ray.rewards.scoring import score_problem_samples

log = logging.getLogger(__name__)


class CoTGenerator(TeacherCaller):
    """Calls one teacher for each (problem, temperature); one outcome per problem. At most `max_in_flight` requests
    of a batch are sent at once (the stage sizes it: `distill_ray.models.in_flight`)."""

    output_schema = schemas.SAMPLE

    def __init__(self, teacher: Teacher, distillation: DistillationConfig, max_in_flight: int = 16):
        super().__init__(teacher, max_in_flight)
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
        texts = [reply_text(choice["message"]) for choice in resp["choices"]]
        lengths = self._completion_tokens(resp["choices"], texts, usage)
        rows = []
        for choice, text, length in zip(resp["choices"], texts, lengths):
            k = choice["index"]
            rows.append(
                {
                    **base,
                    "sample_id": f"{self.teacher.name}:{problem['id']}:t{temperature}:s{k}",
                    "sample_index": k,
                    "response": text,
                    "finish_reason": choice.get("finish_reason"),
                    "prompt_tokens": usage.get("prompt_tokens"),
                    "completion_tokens": length,
                }
            )
        return rows

    def _completion_tokens(self, choices: list[dict], texts: list[str], usage: dict[str, Any]) -> list[int]:
        """Each sample's own completion length: the server's per-choice count (ours reports one); else the
        teacher's tokenizer on the text; else the request's total shared out by characters. Never the mean,
        which would give every sample of a group one length and flatten the AdvDistill length reward."""
        if all(c.get("completion_tokens") is not None for c in choices):
            return [int(c["completion_tokens"]) for c in choices]
        tokenizer = self._tokenizer()
        if tokenizer is not None:
            return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        return share_by_characters(int(usage.get("completion_tokens") or 0), texts)

    def _tokenizer(self):
        """The teacher's tokenizer (`inference.tokenizer`, else its model spec when local), loaded once; None
        when there is none to load, which is logged once."""
        if not hasattr(self, "_teacher_tokenizer"):
            self._teacher_tokenizer = teacher_tokenizer(self.teacher)
        return self._teacher_tokenizer


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


def teacher_tokenizer(teacher: Teacher):
    """The tokenizer that counts a teacher's samples, or None: `inference.tokenizer` when set (an error there
    is the user's, raised), else the teacher's model spec unless it names an external API's model."""
    from distill_ray.errors import ConfigError
    from distill_ray.models.loading import load_tokenizer, resolve_model

    spec = teacher.inference.tokenizer
    if spec:
        folder = Path(spec).expanduser()  # a folder of tokenizer files alone will do
        try:
            return load_tokenizer(folder if folder.is_dir() else resolve_model(spec, key="inference.tokenizer"))
        except (OSError, ValueError) as exc:
            raise ConfigError("inference.tokenizer", f"cannot load a tokenizer from '{spec}': {exc}") from None
    if teacher.engine != "openai":
        try:
            return load_tokenizer(resolve_model(teacher.spec))
        except (ConfigError, OSError, ValueError):
            pass
    log.warning("teacher '%s' reports only total usage and has no local tokenizer (set inference.tokenizer): "
                "sample lengths are the total shared out by characters", teacher.name)  # fmt: skip
    return None


def share_by_characters(total: int, texts: list[str]) -> list[int]:
    """`total` tokens shared out in proportion to each text's characters (largest remainders, so the parts sum
    to `total` and a longer text never gets fewer tokens than a shorter one)."""
    chars = [len(t) for t in texts]
    if not texts or sum(chars) == 0:
        return [total // max(len(texts), 1)] * len(texts)
    exact = [total * c / sum(chars) for c in chars]
    parts = [int(x) for x in exact]
    by_remainder = sorted(range(len(texts)), key=lambda i: (exact[i] - parts[i], chars[i]), reverse=True)
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts
