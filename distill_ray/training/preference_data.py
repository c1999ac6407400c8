"""AdvDistill groups and preference pairs -> token batches for the advdistill, dpo and rm (pairwise) jobs.

Where it sits: the data stages write one row per problem with its group of scored responses
(`responses`, `advantages`, `correct`, ...) and preference pairs (`problem`, `chosen`, `rejected`,
`pair_type`, `beta`). The trainer drivers check rows here (`group_problem`, `pair_problem`: a reason
or None) and their Ray Train workers batch them with `GroupDataset` / `PairDataset` and the collate
functions below. Every response is tokenized exactly as sft tokenizes one (chat prompt + response +
end-of-turn, the response's tail cut at max_length), so all trainers see one token format.
Pure Python/torch, no Ray.
"""

from __future__ import annotations

from distill_ray.training.rows import missing, text_problem
from distill_ray.training.sft_data import PromptedDataset, collate, tokenize_sft_example


def group_problem(row: dict) -> str | None:
    """Why an AdvDistill group row cannot be trained on, else None."""
    reason = text_problem(row, ("problem",))
    if reason:
        return reason
    responses = row.get("responses")
    if missing(responses) or not isinstance(responses, (list, tuple)) or not responses:
        return "missing responses"
    if not all(isinstance(r, str) and r.strip() for r in responses):
        return "a response is empty or not a string"
    for field in ("advantages", "correct"):
        values = row.get(field)
        if missing(values) or not isinstance(values, (list, tuple)) or len(values) != len(responses):
            return f"{field} does not have one entry per response"
        if any(missing(v) for v in values):
            return f"{field} has a null entry"
    if not any(bool(c) for c in row["correct"]):
        return "no correct response in group"
    return None


def pair_problem(row: dict) -> str | None:
    """Why a preference pair cannot be trained on, else None."""
    reason = text_problem(row, ("problem", "chosen", "rejected"))
    if reason:
        return reason
    if row["chosen"] == row["rejected"]:
        return "chosen and rejected are identical"
    beta = row.get("beta")
    if not missing(beta) and (isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta <= 0):
        return "beta is not a positive number"
    return None


class GroupDataset(PromptedDataset):
    """One item per problem: its G responses tokenized (G examples sharing one prompt)."""

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        messages = self.messages(row)
        examples = [tokenize_sft_example(self.tokenizer, messages, r, self.max_length) for r in row["responses"]]
        return {"examples": examples, "advantages": [float(a) for a in row["advantages"]],
                "correct": [bool(c) for c in row["correct"]]}  # fmt: skip


def collate_group(group: dict, pad_id: int) -> dict:
    """One group -> input_ids / attention_mask / labels [G, L] plus advantages [G] and correct [G]."""
    import torch

    batch = collate(group["examples"], pad_id)
    batch["advantages"] = torch.tensor(group["advantages"], dtype=torch.float32)
    batch["correct"] = torch.tensor(group["correct"], dtype=torch.bool)
    return batch


class PairDataset(PromptedDataset):
    """One item per pair: chosen and rejected tokenized after the same prompt, and the pair's beta (or None)."""

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        messages = self.messages(row)
        beta = row.get("beta")
        return {"chosen": tokenize_sft_example(self.tokenizer, messages, row["chosen"], self.max_length),
                "rejected": tokenize_sft_example(self.tokenizer, messages, row["rejected"], self.max_length),
                "beta": None if missing(beta) else float(beta)}  # fmt: skip


def collate_pairs(pairs: list[dict], pad_id: int, default_beta: float) -> dict:
    """B pairs -> input_ids / attention_mask / labels [2B, L] (the B chosen first, then the B rejected)
    and betas [B] (a pair's own beta, else `default_beta`)."""
    import torch

    batch = collate([p["chosen"] for p in pairs] + [p["rejected"] for p in pairs], pad_id)
    batch["betas"] = torch.tensor([default_beta if p["beta"] is None else p["beta"] for p in pairs],
                                  dtype=torch.float32)  # fmt: skip
    return batch
