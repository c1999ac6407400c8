"""The `opd` job: on-policy distillation on Ray Train, the teacher scoring every token the student samples.

Where it sits: after (or instead of) SFT, the student learns from its own rollouts rather than the teacher's
text (issue 18; GKD, Agarwal et al. 2024, and the 2025 on-policy distillation reports). The driver reads the
prompts (`dataset.instruction_path`), checks that student and teacher share one vocabulary (the teacher scores
the student's exact token ids), deploys the teacher (`models.teacher`, served like every teacher: an
autoscaled Serve deployment, or an external / vLLM endpoint) and runs `jobs.train.loop.fit` with `OPDObjective`;
every worker then, per micro-batch of prompts:

  1. samples G = `training.opd.group_size` rollouts per prompt from the current student (as `grpo` does),
  2. sends prompt + rollout token ids to the teacher's `/completions` with `prompt_logprobs: k`
     (`actors.teacher_scoring`) and gets its log-prob of every sampled token and its top-k there,
  3. minimises `training.opd.loss`: `reverse_kl` (log p_teacher - log p_student as each token's advantage,
     clipped policy gradient) or `forward_kl` / `jsd` over the teacher's top-k with the tail bucket
     (`distill_ray.losses.opd`), optionally plus `reward_weight` x the group-normalised task-reward advantage
     from the reward service.

Per step it reports the per-token reverse KL (sampled estimate), the teacher's top-k mass, the share of
sampled tokens inside the teacher's top-k, scored tokens per second, rollout length and the share of rollouts
cut at max_new_tokens. The per-token ones are means over the step's rollouts of each rollout's token mean, the
averaging the loss uses: the loop averages metrics over micro-batches and workers by rollout count, so a step
reports the same values however it is split (tests/jobs/train/test_opd_workers.py). With `eval_steps`, rank 0
measures the reverse KL on held-out prompts (group_size sampled rollouts each, fixed seed; a mean over all their
tokens) before training, every eval_steps steps and at the end. The student's log-probs are at temperature 1,
the distribution the teacher's are compared with; `temperature` only shapes sampling.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from distill_ray.config import JobConfig
from distill_ray.errors import ConfigError
from distill_ray.models.teachers import model_teacher
from distill_ray.rewards.advdistill import group_advantages
from distill_ray.summary import StageResult
from jobs.stage import StageEnv
from jobs.train.driver import TRAIN_ROWS, single_phase, student_tokenizer, train, write_rows
from jobs.train.rollouts import RolloutObjective, eval_prompts, read_prompts, reward_endpoint

log = logging.getLogger(__name__)

EVAL_SEED = 1234  # eval rollouts are sampled with this seed, so every eval sees the same prompts the same way


class OPDObjective(RolloutObjective):
    """Student rollouts, teacher token scores over HTTP, and an on-policy distillation loss."""

    job_type = "opd"
    DIAGNOSTICS = ("reverse_kl", "topk_mass", "topk_overlap", "scored_tokens_per_s", "completion_tokens", "cut_share")

    def __init__(self, model_spec, system_prompt, user_template, training, teacher_url: str, teacher_model: str,
                 api_key: str | None, timeout_s: float, eval_rows: list[dict], reward: dict | None = None):  # fmt: skip
        super().__init__(model_spec, system_prompt, user_template, training, training.opd, eval_rows)
        self.teacher = {"base_url": teacher_url, "model": teacher_model, "api_key": api_key, "timeout_s": timeout_s}
        self.reward = reward  # {"url", "api_key", "setting", "timeout_s"} when reward_weight > 0
        extra = (("clip_fraction",) if training.opd.loss == "reverse_kl" else ()) + (("reward",) if reward else ())
        self.metric_names = (*self.DIAGNOSTICS, *extra)
        self.scorer = self.reward_client = None

    def setup_worker(self, device) -> None:
        from actors.teacher_scoring import TeacherScorer

        super().setup_worker(device)
        self.scorer = TeacherScorer(**self.teacher)
        if self.reward:
            from actors.reward_client import RewardClient

            self.reward_client = RewardClient(self.reward["url"], self.reward["api_key"], self.reward["timeout_s"])

    def loss(self, model, batch, denom):
        import torch

        from distill_ray.losses import get_loss
        from distill_ray.training.rollout import completion_logits, completion_logps

        o, policy = self.options, getattr(model, "module", model)
        rollouts = self.rollout(policy, batch["prompt_ids"], batch["prompt_mask"])
        teacher, scoring = self.teacher_scores(rollouts)
        mask = rollouts.completion_mask
        if o.loss == "reverse_kl":
            logp = completion_logps(model, rollouts)
            seq_adv, reward = self._task_advantages(batch, rollouts) if self.reward else (None, None)
            loss, parts = get_loss("opd_reverse_kl")(logp, logp.detach(), teacher["logprobs"], mask, o.clip_epsilon,
                                                     seq_adv, o.reward_weight)  # fmt: skip
            if reward is not None:
                parts["reward"] = reward
        else:
            logits = completion_logits(model, rollouts)
            loss, parts = get_loss(f"opd_{o.loss}")(logits, teacher["top_ids"], teacher["top_logprobs"], mask,
                                                    beta=o.jsd_beta)  # fmt: skip
            with torch.no_grad():
                logp = torch.log_softmax(logits.float(), -1).gather(-1, rollouts.completions[..., None]).squeeze(-1)
                parts["reverse_kl"] = _rollout_mean(logp - teacher["logprobs"], mask)
        return loss / denom, {**self.diagnostics(rollouts, teacher, scoring), **parts}

    def teacher_scores(self, rollouts) -> tuple[dict, float]:
        """({"logprobs": [N, T], "top_ids": [N, T, k], "top_logprobs": [N, T, k]} aligned with the completion
        tokens, zeros past each completion's end; scored tokens per second)."""
        import torch

        prompt_mask = rollouts.attention_mask[:, : rollouts.prompt_width].bool()
        completions, mask = rollouts.completions, rollouts.completion_mask.bool()
        sequences, starts = [], []
        for i in range(completions.shape[0]):
            prompt = rollouts.input_ids[i, : rollouts.prompt_width][prompt_mask[i]].tolist()
            sequences.append(prompt + completions[i][mask[i]].tolist())
            starts.append(len(prompt))
        started = time.perf_counter()
        scored = self.scorer.score(sequences, starts, self.options.top_k)
        rate = float(mask.sum()) / max(time.perf_counter() - started, 1e-9)
        n, t, k = completions.shape[0], completions.shape[1], self.options.top_k
        out = {"logprobs": torch.zeros(n, t), "top_ids": torch.zeros(n, t, k, dtype=torch.long),
               "top_logprobs": torch.full((n, t, k), -100.0)}  # fmt: skip
        for i, s in enumerate(scored):
            length = len(s.logprobs)
            out["logprobs"][i, :length] = torch.tensor(s.logprobs)
            for j, (ids, lps) in enumerate(zip(s.top_ids, s.top_logprobs)):
                out["top_ids"][i, j, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                out["top_logprobs"][i, j, : len(lps)] = torch.tensor(lps)
        return {key: value.to(completions.device) for key, value in out.items()}, rate

    def diagnostics(self, rollouts, teacher: dict, scoring_rate: float) -> dict[str, float]:
        """Teacher top-k mass and overlap with the student's samples (means over rollouts of per-rollout token
        means), scored tokens per second, mean rollout length (tokens) and the share of rollouts cut at the cap."""
        import torch

        mask = rollouts.completion_mask
        mass = teacher["top_logprobs"].exp().sum(-1)
        lengths = mask.sum(dim=1)
        ended = (mask * torch.isin(rollouts.completions, torch.tensor(sorted(self.eos_ids), device=mask.device))).sum(1)
        overlap = _rollout_mean(_inside_topk(rollouts, teacher), mask)
        return {"topk_mass": _rollout_mean(mass, mask), "topk_overlap": overlap,
                "scored_tokens_per_s": scoring_rate, "completion_tokens": float(lengths.float().mean()),
                "cut_share": float((ended == 0).float().mean())}  # fmt: skip

    def _task_advantages(self, batch, rollouts):
        """(group-normalised task-reward advantages [N] from the reward service, as grpo computes them; the
        mean reward)."""
        import torch

        rows = self.batch_rows(batch)
        texts = self.tokenizer.batch_decode(rollouts.completions * rollouts.completion_mask
                                            + self.tokenizer.pad_token_id * (1 - rollouts.completion_mask),
                                            skip_special_tokens=True)  # fmt: skip
        items = [{"prompt": r["problem"], "response": t, "reference": r.get("reference")} for r, t in zip(rows, texts)]
        rewards = [s["reward"] for s in self.reward_client.rewards(items, self.reward["setting"])]
        g = self.options.group_size
        adv = [a for i in range(0, len(rewards), g) for a in group_advantages(rewards[i : i + g])]
        return torch.tensor(adv, dtype=torch.float32, device=rollouts.completions.device), sum(rewards) / len(rewards)

    def evaluate(self, model) -> dict[str, float]:
        """Mean per-token reverse KL to the teacher (sampled estimate) over group_size rollouts per held-out prompt,
        drawn with a fixed seed, plus the teacher's top-k overlap, lengths and the cut share."""
        import torch

        from distill_ray.training.rollout import completion_logps

        if self.scorer is None:
            return {}
        totals, tokens = {"reverse_kl": 0.0, "topk_overlap": 0.0}, 0.0
        lengths, cut, n = 0.0, 0.0, 0
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(EVAL_SEED)
            for _rows, ids, mask in self.eval_batches():
                rollouts = self.rollout(model, ids, mask)  # group_size samples per prompt
                teacher, rate = self.teacher_scores(rollouts)
                cmask = rollouts.completion_mask
                logp = completion_logps(model, rollouts)
                count = float(cmask.sum())
                totals["reverse_kl"] += _masked_mean(logp - teacher["logprobs"], cmask) * count
                diag = self.diagnostics(rollouts, teacher, rate)
                totals["topk_overlap"] += _masked_mean(_inside_topk(rollouts, teacher), cmask) * count
                tokens += count
                rows_here = cmask.shape[0]
                lengths += diag["completion_tokens"] * rows_here
                cut += diag["cut_share"] * rows_here
                n += rows_here
        out = {k: v / max(tokens, 1.0) for k, v in totals.items()}
        return {**out, "completion_tokens": lengths / max(n, 1), "cut_share": cut / max(n, 1)}


def _inside_topk(rollouts, teacher: dict):
    """[N, T] 1.0 where the sampled token is among the teacher's top-k there."""
    return (teacher["top_ids"] == rollouts.completions[..., None]).any(-1).float()


def _rollout_mean(values, mask) -> float:
    """Mean over rollouts of each rollout's mean of values [N, T] over its tokens (mask [N, T])."""
    mask = mask.to(values.dtype)
    return float(((values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).mean())


def _masked_mean(values, mask) -> float:
    mask = mask.to(values.dtype)
    return float((values * mask).sum() / mask.sum().clamp(min=1.0))


def run(job: JobConfig, stage: StageEnv) -> StageResult:
    """Check the prompts and the shared vocabulary, reach the teacher, then train the student on-policy."""
    from jobs.teachers import reach_teachers

    o, inf = job.training.opd, job.inference
    if not job.models.teacher:
        raise ConfigError("models.teacher", "the opd job needs a teacher to score the student's tokens")
    tokenizer = student_tokenizer(job, "opd")
    _check_shared_vocabulary(job, tokenizer)
    result = StageResult(name=stage.name, job_type="opd")
    rows = read_prompts(job, stage, result, tokenizer, o.max_new_tokens)
    rows_path = write_rows(rows, stage.output_dir / TRAIN_ROWS, ["problem", "reference"])
    eval_rows = eval_prompts(job, rows, o)
    teacher = model_teacher(job.models.teacher, inf)
    reward, deployed = None, None
    if o.reward_weight > 0:
        url, deployed = reward_endpoint(job, stage)
        reward = {"url": url, "api_key": job.reward.serve.api_key, "setting": job.reward.setting,
                  "timeout_s": job.reward.request_timeout_s}  # fmt: skip
    try:
        with reach_teachers([teacher], f"teacher-{stage.name}", inf.serve) as [reached]:
            base_url = reached.endpoint.base_url
            objective = OPDObjective(job.models.student, inf.system_prompt, inf.user_template, job.training,
                                     base_url, reached.served_name, reached.endpoint.api_key,
                                     inf.request_timeout_s, eval_rows, reward)  # fmt: skip
            return train(job, stage, result, objective, single_phase(job, "opd", rows_path, len(rows)),
                         {"loss": o.loss, "group_size": o.group_size, "teacher": job.models.teacher})  # fmt: skip
    finally:
        if deployed:
            from serve.reward import undeploy_reward

            undeploy_reward(deployed)


def _check_shared_vocabulary(job: JobConfig, student_tok) -> None:
    """The teacher scores the student's token ids, so both must map the same pieces to the same ids: compare
    the vocabulary fingerprints (the teacher's tokenizer: inference.tokenizer, else its local model folder)."""
    from distill_ray.models.loading import load_tokenizer, resolve_model
    from distill_ray.training.kd_data import tokenizer_fingerprint

    spec = job.inference.tokenizer or (job.models.teacher if job.inference.engine != "openai" else None)
    if spec is None:
        why = "an external teacher scores the student's token ids: name its tokenizer (a local folder)"
        raise ConfigError("inference.tokenizer", f"{why} so the job can check that both share one vocabulary")
    kind, _, rest = spec.partition(":")
    local = (kind in ("builtin", "tiny") and rest) or Path(spec).exists()
    if job.inference.engine == "vllm" and not job.inference.tokenizer and not local:
        # a vllm teacher may be a hub name or bucket URI that only its replicas' nodes fetch
        raise ConfigError("inference.tokenizer", f"the teacher '{spec}' is not a folder on this node: name its "
                          "tokenizer (a local folder) so the job can check that both share one vocabulary")  # fmt: skip
    teacher_tok = load_tokenizer(resolve_model(spec, "inference.tokenizer" if job.inference.tokenizer else
                                               "models.teacher"))  # fmt: skip
    ours, theirs = tokenizer_fingerprint(student_tok), tokenizer_fingerprint(teacher_tok)
    if ours != theirs:
        fingerprints = f"vocabulary fingerprint {ours} vs {theirs}"
        raise ConfigError("models.student", f"tokenizer differs from the teacher's ({fingerprints}); on-policy "
                          "distillation scores the student's token ids with the teacher")  # fmt: skip
