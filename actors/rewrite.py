"""Row processors that rewrite CoTs with the teacher and verify the result.

- `CoTRewriter` (the `rewrite` stage, DistilQwen's slow-thinking processor): CoTs judged easy or hard
  are rewritten once (easy: every step made explicit; hard: the shortest clear chain), medium ones
  pass as they are; then every CoT is verified against the reference and a CoT whose answer does
  not verify is rejected with both answers in the reason.
- `CoTLengthRewriter` (EasyDistill's CoT long-to-short / short-to-long operators in `synthesize`):
  every CoT is rewritten with the operator's prompt, verified when a reference exists.
Both run inside `actors.part_writer.PartWriter`.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from actors.generate import request_seed
from actors.part_writer import Outcome
from actors.teacher_client import TeacherCaller
from distill_ray.errors import RowRejected
from distill_ray.grading.grader import grade
from distill_ray.grading.parsing import parse_response
from distill_ray.models.teachers import Teacher
from distill_ray.prompts import data_prompt, fill_template


class _RewriterBase(TeacherCaller):
    def __init__(self, teacher: Teacher, prompts: dict[str, str], output_schema: pa.Schema, temperature: float,
                 max_new_tokens: int, seed: int, verify_timeout_s: float = 5.0):  # fmt: skip
        super().__init__(teacher)
        self.prompts, self.output_schema = prompts, output_schema
        self.temperature, self.max_new_tokens, self.seed = temperature, max_new_tokens, seed
        self.verify_timeout_s = verify_timeout_s

    def _rewrite(self, row: dict[str, Any], prompt_name: str) -> str:
        """The teacher's rewrite of the row's CoT. Raises TeacherRejected or TeacherUnavailable."""
        prompt = fill_template(data_prompt(prompt_name, self.prompts), problem=row["problem"], response=row["response"])
        return self.complete([{"role": "user", "content": prompt}], temperature=self.temperature,
                             max_tokens=self.max_new_tokens,
                             seed=request_seed(self.seed, row["sample_id"], self.temperature))  # fmt: skip

    def _verified(self, row: dict[str, Any], text: str, rewritten: bool, what: str) -> Outcome:
        """Verify `text` as the row's response; reject with both answers when it is wrong."""
        reference = row.get("reference")
        if reference is None:
            if self.requires_reference:
                return Outcome(reason="no reference: a CoT without a reference answer cannot be verified")
            return Outcome(rows=[{**row, "response": text, "original_response": row["response"] if rewritten else None,
                                  "rewritten": rewritten}])  # fmt: skip
        verdict = grade(text, reference, timeout_s=self.verify_timeout_s)
        if not verdict.correct:
            answer = verdict.final_answer if verdict.final_answer is not None else f"none: {verdict.reason}"
            return Outcome(reason=f"{what} does not verify: answer '{answer}' vs reference '{reference}'")
        return Outcome(rows=[{**row, "response": text, "think": parse_response(text).think,
                              "final_answer": verdict.final_answer,
                              "correct": True, "rewritten": rewritten,
                              "original_response": row["response"] if rewritten else None}])  # fmt: skip

    requires_reference = True


class CoTRewriter(_RewriterBase):
    def __init__(self, levels: list[str], **kwargs):
        super().__init__(**kwargs)
        self.levels = set(levels)

    def process(self, rows: list[dict[str, Any]]) -> list[Outcome]:
        todo = [i for i, r in enumerate(rows) if _usable(r) and r.get("difficulty") in self.levels]
        texts = dict(zip(todo, self.map_rows(lambda i: self._rewrite(rows[i], f"rewrite_{rows[i]['difficulty']}"),
                                             todo)))  # fmt: skip
        outcomes = []
        for i, row in enumerate(rows):
            if not _usable(row):
                outcomes.append(Outcome(reason="missing field: a CoT row needs non-empty 'problem' and 'response'"))
            elif row.get("difficulty") is None:
                outcomes.append(Outcome(reason="missing difficulty: run a judge stage with criterion 'difficulty' first"))
            elif i not in texts:
                outcomes.append(self._verified(row, row["response"], rewritten=False, what="CoT"))
            elif isinstance(texts[i], RowRejected):
                outcomes.append(Outcome(reason=str(texts[i])))
            else:
                outcomes.append(self._verified(row, texts[i], rewritten=True, what="rewritten CoT"))
        return outcomes


class CoTLengthRewriter(_RewriterBase):
    """`cot_long_to_short` / `cot_short_to_long`: rewrite every CoT; verify only when a reference exists."""

    requires_reference = False

    def __init__(self, operator: str, **kwargs):
        super().__init__(**kwargs)
        self.operator = operator

    def process(self, rows: list[dict[str, Any]]) -> list[Outcome]:
        usable = [i for i, r in enumerate(rows) if _usable(r)]
        texts = dict(zip(usable, self.map_rows(lambda i: self._rewrite(rows[i], self.operator), usable)))
        outcomes = []
        for i, row in enumerate(rows):
            if i not in texts:
                outcomes.append(Outcome(reason="missing field: a CoT row needs non-empty 'problem' and 'response'"))
            elif isinstance(texts[i], RowRejected):
                outcomes.append(Outcome(reason=str(texts[i])))
            else:
                outcomes.append(self._verified(row, texts[i], rewritten=True, what=f"{self.operator} CoT"))
        return outcomes


def _usable(row: dict[str, Any]) -> bool:
    return bool(row.get("problem")) and bool(row.get("response"))
