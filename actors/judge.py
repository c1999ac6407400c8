"""Row processor: the teacher judges each CoT's difficulty (easy/medium/hard), RV and CD (0-9).

Where it sits: the `judge` stage, after `generate`, before `rewrite` / `select`. Each (CoT, criterion)
is one request; a batch's requests are in flight together. A reply the parser in
`distill_ray.grading.judge` cannot read is asked again (`max_attempts`, later asks at
`retry_temperature` with a new seed); a CoT whose judgement never parses is rejected with the last
reply in the reason. Runs inside `actors.part_writer.PartWriter`.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from actors.generate import request_seed
from actors.part_writer import Outcome
from actors.teacher_client import TeacherCaller
from distill_ray.config import JudgeConfig
from distill_ray.errors import RowRejected
from distill_ray.grading.judge import parse_judgement
from distill_ray.models.teachers import Teacher
from distill_ray.prompts import data_prompt, fill_template


class CoTJudge(TeacherCaller):
    def __init__(self, teacher: Teacher, judge: JudgeConfig, prompts: dict[str, str], output_schema: pa.Schema):
        super().__init__(teacher)
        self.cfg = judge
        self.prompts = prompts
        self.output_schema = output_schema

    def process(self, rows: list[dict[str, Any]]) -> list[Outcome]:
        jobs = [(i, c) for i, row in enumerate(rows) if _usable(row) for c in self.cfg.criteria]
        verdicts = self.map_rows(lambda job: self._judge(rows[job[0]], job[1]), jobs)
        outcomes = []
        for i, row in enumerate(rows):
            if not _usable(row):
                outcomes.append(Outcome(reason="missing field: a CoT row needs non-empty 'problem' and 'response'"))
                continue
            mine = {c: v for (j, c), v in zip(jobs, verdicts) if j == i}
            failed = [v for v in mine.values() if isinstance(v, RowRejected)]
            if failed:
                outcomes.append(Outcome(reason=str(failed[0])))
            else:
                outcomes.append(Outcome(rows=[{**row, **mine}]))
        return outcomes

    def _judge(self, row: dict[str, Any], criterion: str) -> str | int:
        """The parsed verdict. Raises RowRejected (refused, or never parseable) or TeacherUnavailable."""
        prompt = fill_template(data_prompt(criterion, self.prompts), problem=row["problem"], response=row["response"])
        reply = ""
        for attempt in range(self.cfg.max_attempts):
            temperature = self.cfg.temperature if attempt == 0 else self.cfg.retry_temperature
            seed = request_seed(self.cfg.seed + attempt, f"{row['sample_id']}|{criterion}", temperature)
            reply = self.complete([{"role": "user", "content": prompt}], temperature=temperature,
                                  max_tokens=self.cfg.max_new_tokens, seed=seed)  # fmt: skip
            value = parse_judgement(criterion, reply)
            if value is not None:
                return value
        snippet = " ".join(reply.split())[:120]
        raise RowRejected(f"unparseable {criterion} judgement: {self.cfg.max_attempts} attempt(s), last reply '{snippet}'")


def _usable(row: dict[str, Any]) -> bool:
    return bool(row.get("problem")) and bool(row.get("response"))
