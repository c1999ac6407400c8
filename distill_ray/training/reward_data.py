"""Reward-model inputs and outputs: how a (problem, response) becomes token ids, and what the head's output means.

Where it sits: the `rm` job (`jobs/train/rm.py`) trains a sequence-classification model (one scalar head) on
judged CoTs (pointwise: the judge's RV or CD score 0-9) or preference pairs (pairwise: Bradley-Terry).
It writes `distill_ray_reward.json` (`reward_meta`) into every saved model folder, so the reward
service that loads the model later formats inputs with `reward_input_ids` and turns raw outputs into
[0, 1] rewards with `reward_in_unit_range`, exactly as training did. Pure Python/torch, no Ray.

Input: the student's chat template over (system prompt, user turn with the problem) followed by the
response as the assistant turn and its end-of-turn token, the response's tail cut at max_length
(sft's tokenization). The head reads the last token that is not padding.
"""

from __future__ import annotations

import json
from pathlib import Path

from distill_ray.training.sft_data import build_chat_messages, tokenize_sft_example

REWARD_META_FILE = "distill_ray_reward.json"


def reward_input_ids(tokenizer, problem: str, response: str, system_prompt: str | None, user_template: str,
                     max_length: int) -> list[int]:  # fmt: skip
    """Token ids the reward model scores for one (problem, response)."""
    messages = build_chat_messages(problem, system_prompt, user_template)
    return tokenize_sft_example(tokenizer, messages, response, max_length)["input_ids"]


def reward_meta(objective: str, target: str | None, low: float, high: float, system_prompt: str | None,
                user_template: str, max_length: int, base_model: str) -> dict:  # fmt: skip
    """What a server needs to use the saved model: how to build inputs and how to read the output."""
    if objective == "pointwise":
        output = (f"sigmoid(logits[0]) is the predicted {target} score normalised to [0, 1]; "
                  f"the judge's scale is {low} + ({high} - {low}) * that")  # fmt: skip
    else:
        output = "logits[0] is a Bradley-Terry reward (higher = preferred); sigmoid of it maps it to [0, 1]"
    return {
        "objective": objective,
        "target": target if objective == "pointwise" else None,
        "score_low": low,
        "score_high": high,
        "to_unit_range": "sigmoid",
        "output": output,
        "input": {"format": "chat template: system + user(problem) + assistant(response) + end-of-turn",
                  "system_prompt": system_prompt, "user_template": user_template, "max_length": max_length},
        "base_model": base_model,
    }  # fmt: skip


def write_reward_meta(model_dir: Path, meta: dict) -> None:
    (Path(model_dir) / REWARD_META_FILE).write_text(json.dumps(meta, indent=2))


def read_reward_meta(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / REWARD_META_FILE).read_text())


def reward_in_unit_range(raw_outputs):
    """Raw head outputs [B] -> rewards in [0, 1] (both objectives use the sigmoid, as trained)."""
    from distill_ray.losses.reward_model import reward_from_prediction

    return reward_from_prediction(raw_outputs)


class RewardRowsDataset:
    """Judged rows (pointwise) as one tokenized sequence plus its target score each."""

    def __init__(self, rows: list[dict], tokenizer, target: str, system_prompt: str | None, user_template: str,
                 max_length: int):  # fmt: skip
        self.rows, self.tokenizer, self.target, self.max_length = rows, tokenizer, target, max_length
        self.system_prompt, self.user_template = system_prompt, user_template

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        ids = reward_input_ids(self.tokenizer, row["problem"], row["response"], self.system_prompt,
                               self.user_template, self.max_length)  # fmt: skip
        return {"input_ids": ids, "target": float(row[self.target])}


def collate_scored(examples: list[dict], pad_id: int) -> dict:
    """Right-padded input_ids / attention_mask [B, L] and targets [B]."""
    import torch

    width = max(len(ex["input_ids"]) for ex in examples)
    ids = [list(ex["input_ids"]) + [pad_id] * (width - len(ex["input_ids"])) for ex in examples]
    mask = [[1] * len(ex["input_ids"]) + [0] * (width - len(ex["input_ids"])) for ex in examples]
    return {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask, dtype=torch.long),
            "targets": torch.tensor([ex["target"] for ex in examples], dtype=torch.float32)}  # fmt: skip
