"""The opd job's per-step diagnostics on hand-made rollouts, and its shared-vocabulary check (issue 18 items 2
and 3), without Ray: every expected number below is worked out by hand from the tensors."""

from __future__ import annotations

import pytest
import torch

from distill_ray.config import JobConfig, TrainingConfig
from distill_ray.errors import ConfigError
from distill_ray.training.rollout import Rollouts, completion_mask

EOS = 2


def _objective():
    from jobs.train.opd import OPDObjective

    objective = OPDObjective("tiny:smollm2", "", "{problem}", TrainingConfig(opd={"top_k": 2}), "http://127.0.0.1:9/v1",
                             "teacher", None, 5.0, [])  # fmt: skip
    objective.eos_ids = {EOS}
    return objective


def test_diagnostics_by_hand():
    # Two rollouts of one 1-token prompt, T = 4: [5, 6, eos | pad] (3 tokens, ended) and [7, 8, 9, 10] (cut).
    completions = torch.tensor([[5, 6, EOS, EOS], [7, 8, 9, 10]])
    cmask = completion_mask(completions, {EOS})
    assert cmask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    ids = torch.cat([torch.tensor([[1], [1]]), completions], dim=1)
    rollouts = Rollouts(ids, torch.cat([torch.ones(2, 1, dtype=torch.long), cmask], 1), 1, cmask)
    # Teacher top-2 ids per position; the sampled token is inside at (0, 0), (0, 2), (1, 1), (1, 2), (1, 3).
    top_ids = torch.tensor([[[5, 3], [3, 4], [EOS, 3], [0, 0]],
                            [[3, 4], [8, 3], [3, 9], [10, 3]]])  # fmt: skip
    mass = torch.tensor([[0.9, 0.5, 1.0, 0.0], [0.6, 0.8, 0.4, 0.2]])
    top_logprobs = torch.stack([(mass / 2).log(), (mass / 2).log()], dim=-1)  # two equal halves of each mass
    teacher = {"logprobs": torch.zeros(2, 4), "top_ids": top_ids, "top_logprobs": top_logprobs}
    d = _objective().diagnostics(rollouts, teacher, 123.0)
    # Per rollout token means, then the mean over the 2 rollouts (the loss's averaging).
    assert d["topk_overlap"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert d["topk_mass"] == pytest.approx(((0.9 + 0.5 + 1.0) / 3 + (0.6 + 0.8 + 0.4 + 0.2) / 4) / 2)
    assert d["completion_tokens"] == pytest.approx(3.5) and d["cut_share"] == pytest.approx(0.5)
    assert d["scored_tokens_per_s"] == 123.0


def _job(tmp_path, teacher: str, **inference) -> JobConfig:
    return JobConfig(job_type="opd", output_dir=str(tmp_path), models={"student": "tiny:smollm2", "teacher": teacher},
                     inference=inference)  # fmt: skip


@pytest.mark.parametrize(
    ("inference", "teacher"),
    [
        ({"engine": "openai", "base_url": "http://127.0.0.1:9/v1"}, "gpt-teacher"),  # an external API's model id
        ({"engine": "vllm"}, "Qwen/Qwen3-8B"),  # a hub name only the vLLM replicas' nodes fetch
    ],
)
def test_a_teacher_without_a_local_tokenizer_must_name_one(tmp_path, inference, teacher):
    from distill_ray.models.loading import load_tokenizer, resolve_model
    from jobs.train.opd import _check_shared_vocabulary

    job = _job(tmp_path, teacher, **inference)
    student = load_tokenizer(resolve_model("tiny:smollm2"))
    with pytest.raises(ConfigError, match="inference.tokenizer"):
        _check_shared_vocabulary(job, student)
    # Naming a local tokenizer with the student's vocabulary passes; one with another vocabulary is refused.
    _check_shared_vocabulary(_job(tmp_path, teacher, **inference, tokenizer="tiny:smollm2"), student)
    other = tmp_path / "other-tokenizer"
    tok = load_tokenizer(resolve_model("tiny:smollm2"))
    tok.add_tokens(["<extra_piece>"])
    tok.save_pretrained(other)
    (other / "config.json").write_text("{}")  # resolve_model takes a folder with a config.json
    with pytest.raises(ConfigError, match="tokenizer differs from the teacher's"):
        _check_shared_vocabulary(_job(tmp_path, teacher, **inference, tokenizer=str(other)), student)
