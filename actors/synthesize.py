"""Row processor for EasyDistill's instruction synthesis operators (the `synthesize` stage).

- `expand_instruction`: n new instructions on the topic of each input instruction;
- `refine_instruction`: a clearer, self-contained version of each instruction;
- `extract_pairs`: instruction/response pairs read out of raw text.
The CoT operators (long-to-short, short-to-long) live in actors/rewrite.py. Replies are parsed by
`distill_ray.data.synthesize`; an unparseable reply is asked again, then the input row is rejected with the
reply in the reason. Output rows carry `parent_id` (the input row) and `operator`.
"""

from __future__ import annotations

from typing import Any

from actors.generate import request_seed
from actors.part_writer import Outcome
from actors.teacher_client import TeacherCaller
from distill_ray.config import SynthesizeConfig
from distill_ray.data import schemas
from distill_ray.data.synthesize import parse_instruction_list, parse_pairs, parse_single_instruction
from distill_ray.errors import RowRejected
from distill_ray.models.teachers import Teacher
from distill_ray.prompts import data_prompt, fill_template


class InstructionSynthesizer(TeacherCaller):
    output_schema = schemas.SYNTHESIZED

    def __init__(self, teacher: Teacher, synthesize: SynthesizeConfig, prompts: dict[str, str]):
        super().__init__(teacher)
        self.cfg = synthesize
        self.prompts = prompts

    def process(self, rows: list[dict[str, Any]]) -> list[Outcome]:
        results = self.map_rows(self._one, rows)
        return [Outcome(reason=str(r)) if isinstance(r, RowRejected) else r for r in results]

    def _one(self, row: dict[str, Any]) -> Outcome:
        if row.get("error"):
            return Outcome(reason=row["error"])  # a malformed source record
        op = self.cfg.operator
        prompt = fill_template(data_prompt(op, self.prompts), instruction=row["problem"], text=row["problem"],
                               n=self.cfg.num_variants)  # fmt: skip
        reply = ""
        for attempt in range(self.cfg.max_attempts):
            seed = request_seed(self.cfg.seed + attempt, row["id"], self.cfg.temperature)
            reply = self.complete([{"role": "user", "content": prompt}], temperature=self.cfg.temperature,
                                  max_tokens=self.cfg.max_new_tokens, seed=seed)  # fmt: skip
            items = self._parse(reply, row["problem"])
            if items:
                return Outcome(rows=[self._row(row, k, problem, response) for k, (problem, response) in enumerate(items)])
        snippet = " ".join(reply.split())[:120]
        return Outcome(reason=f"unparseable {op} reply: {self.cfg.max_attempts} attempt(s), last reply '{snippet}'")

    def _parse(self, reply: str, original: str) -> list[tuple[str, str | None]]:
        op, n = self.cfg.operator, self.cfg.num_variants
        if op == "expand_instruction":
            return [(text, None) for text in parse_instruction_list(reply, n, exclude=original)]
        if op == "refine_instruction":
            text = parse_single_instruction(reply)
            return [(text, None)] if text else []
        return parse_pairs(reply, n)

    def _row(self, parent: dict[str, Any], k: int, problem: str, response: str | None) -> dict[str, Any]:
        return {"id": f"{parent['id']}:{self.cfg.operator}:{k}", "problem": problem, "response": response,
                "parent_id": parent["id"], "operator": self.cfg.operator, "task": parent.get("task"),
                "source": parent.get("source")}  # fmt: skip
