"""The teacher as a scorer: its log-probabilities over token sequences someone else wrote (on-policy distillation).

One request per micro-batch of rollouts: `POST {base_url}/completions` with the sequences as token-id prompts
(no re-tokenisation drift: the teacher scores the student's exact tokens, which needs one shared vocabulary),
`max_tokens: 1` and vLLM's `prompt_logprobs: k`. Ours (serve/teacher.py) and vLLM servers answer it the same
way: per choice a `prompt_logprobs` list with None at position 0 and, at every later position, a mapping
token id -> {"logprob", "rank", "decoded_token"} that holds the k most likely ids and the id actually there.
Retries follow the one policy (`distill_ray.retry`): a refused request raises TeacherRejected, an outage that
outlasts the retries TeacherUnavailable (the training run stops and resumes from its checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.teacher_client import TeacherRejected, TeacherUnavailable
from distill_ray.errors import one_line
from distill_ray.retry import call_with_retries, is_transient


@dataclass
class ScoredTokens:
    """The teacher's view of positions `start..` of one sequence: for each, the log-prob of the token there and
    the k most likely ids with their log-probs (descending). Lengths: len(sequence) - start."""

    logprobs: list[float]
    top_ids: list[list[int]]
    top_logprobs: list[list[float]]


class TeacherScorer:
    """Scores token sequences with a teacher served behind an OpenAI-compatible `/completions` route."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 120,
                 max_retries: int = 3):  # fmt: skip
        import openai

        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", timeout=timeout_s, max_retries=0)
        self.model, self.max_retries = model, max_retries

    def score(self, sequences: list[list[int]], starts: list[int], top_k: int) -> list[ScoredTokens]:
        """Teacher log-probs of sequences[i][starts[i]:] (each start >= 1: the first token has no context).
        Raises TeacherRejected / TeacherUnavailable, or ValueError when the answer misses a scored position."""
        if any(s < 1 for s in starts):
            raise ValueError("scoring starts at position 1 or later: the first token has no log-prob")
        answer = self._request(sequences, top_k)
        choices = sorted(answer["choices"], key=lambda c: c["index"])
        if len(choices) != len(sequences):
            raise ValueError(f"the teacher answered {len(choices)} of {len(sequences)} sequences")
        return [read_prompt_logprobs(c.get("prompt_logprobs"), seq, start, top_k)
                for c, seq, start in zip(choices, sequences, starts)]  # fmt: skip

    def _request(self, sequences: list[list[int]], top_k: int) -> dict[str, Any]:
        def once():
            return self.client.completions.create(model=self.model, prompt=sequences, max_tokens=1, temperature=1.0,
                                                  extra_body={"prompt_logprobs": top_k}).model_dump()  # fmt: skip

        try:
            return call_with_retries(once, attempts=self.max_retries + 1)
        except Exception as exc:  # noqa: BLE001 - classified as one of the two outcomes, as for chat requests
            if is_transient(exc):
                raise TeacherUnavailable(f"teacher unreachable after {self.max_retries + 1} attempt(s): "
                                         f"{one_line(exc)}") from exc  # fmt: skip
            raise TeacherRejected(f"teacher rejected the scoring request: {one_line(exc)}") from exc


def read_prompt_logprobs(entries: list | None, sequence: list[int], start: int, top_k: int) -> ScoredTokens:
    """One choice's vLLM-style `prompt_logprobs` -> ScoredTokens for positions start.. of `sequence`. The k most
    likely are the entries ranked 1..k (the token actually there is listed too, at its own rank). Raises
    ValueError for a missing list or position."""
    if entries is None or len(entries) < len(sequence):
        raise ValueError("the teacher's answer has no prompt_logprobs for every token (is prompt_logprobs supported?)")
    logprobs, top_ids, top_logprobs = [], [], []
    for pos in range(start, len(sequence)):
        by_id = {int(k): v for k, v in (entries[pos] or {}).items()}
        if sequence[pos] not in by_id:
            raise ValueError(f"position {pos}: the teacher did not score token {sequence[pos]}")
        logprobs.append(float(by_id[sequence[pos]]["logprob"]))
        ranked = sorted(by_id.items(), key=lambda kv: (-kv[1]["logprob"], kv[0]))[:top_k]
        top_ids.append([i for i, _ in ranked])
        top_logprobs.append([float(v["logprob"]) for _, v in ranked])
    return ScoredTokens(logprobs, top_ids, top_logprobs)
