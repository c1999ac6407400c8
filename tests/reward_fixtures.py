"""The reward models' outputs computed in the test process, to compare with the service's."""

from __future__ import annotations

from pathlib import Path


def direct_scores(model_dir: Path, pairs: list[tuple[str, str]]) -> list[float]:
    """The reward model's outputs in [0, 1] computed here, one item at a time (no batching, no padding)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from distill_ray.models.loading import load_tokenizer
    from distill_ray.training.reward_data import read_reward_meta, reward_in_unit_range, reward_input_ids

    meta = read_reward_meta(model_dir)["input"]
    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1).eval()
    out = []
    for prompt, response in pairs:
        ids = reward_input_ids(tokenizer, prompt, response, meta["system_prompt"], meta["user_template"],
                               meta["max_length"])  # fmt: skip
        with torch.no_grad():
            raw = model(input_ids=torch.tensor([ids])).logits[:, 0]
        out.append(float(reward_in_unit_range(raw)[0]))
    return out
