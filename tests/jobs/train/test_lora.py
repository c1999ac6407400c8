"""training.lora: adapters through peft in the one place every trainer builds its model (jobs/train/loop.py).

Without Ray: a LoRA step changes only adapter weights (the student's own stay bit-identical), the export writes
the adapter and a merged HF folder whose logits equal the adapted model's, checkpoints round-trip, and bad
settings are one-line ConfigErrors naming the key. On the embedded cluster: sft with LoRA and TensorBoard
resumes from its checkpoint and exports a merged model the serving code loads.
"""

from __future__ import annotations

import json

import pytest
import torch
from trainer_fixtures import STUDENT, arithmetic, job, stage, write_parquet

from distill_ray.config import TrainingConfig

ROWS = [{"problem": f"What is {a}+{b}?", "response": f"<think>{a}+{b}={a + b}</think>" + "x" * a}
        for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]]  # fmt: skip
LORA = {"r": 4, "alpha": 8, "dropout": 0.1}


def _objective(kind: str, training: TrainingConfig):
    """An objective of `kind` on the tiny student, its tokenizer and one micro-batch of ROWS."""
    from jobs.train.rm import PointwiseRMObjective
    from jobs.train.sft import SFTObjective

    if kind == "sft":
        objective = SFTObjective("tiny:smollm2", "", "{problem}", training)
        rows = ROWS
    else:
        objective = PointwiseRMObjective("tiny:smollm2", "", "{problem}", training, pad_id=0)
        rows = [{**r, "rv": float(i * 3)} for i, r in enumerate(ROWS)]
    tokenizer = objective.load_tokenizer()
    if kind == "rm":
        objective.pad_id = tokenizer.pad_token_id
    data = objective.dataset(rows, tokenizer)
    return objective, tokenizer, objective.collate([data[i] for i in range(len(rows))], tokenizer)


def _lora_steps(kind: str, steps: int = 2):
    """The model the loop builds with training.lora, after `steps` AdamW steps as the loop takes them."""
    from jobs.train.loop import load_student

    t = TrainingConfig(max_length=64, lora=LORA, weight_decay=0.1)
    objective, tokenizer, batch = _objective(kind, t)
    model = load_student(objective, t, None)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    for _ in range(steps):
        loss, _ = objective.loss(model, batch, float(objective.units(batch)))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model, start, objective, tokenizer, batch


@pytest.mark.parametrize("kind", ["sft", "rm"])
def test_lora_step_changes_only_adapter_weights(kind):
    from distill_ray.training.lora import is_peft

    model, start, _, _, _ = _lora_steps(kind)
    assert is_peft(model)
    now = model.state_dict()
    changed = {k for k in start if not torch.equal(start[k], now[k])}
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trained, sorted(changed - trained)[:5]
    assert all("lora_" in n or "modules_to_save" in n for n in trained), sorted(trained)[:5]
    # Every adapter moved (B from zero on step 1, A once B is non-zero); the student's own weights did not.
    assert {n for n in trained if "lora_" in n} <= changed
    frozen = [k for k in start if k not in trained]
    assert frozen and all(torch.equal(start[k], now[k]) for k in frozen)
    if kind == "rm":  # the new score head trains in full, as a copy beside the frozen random one
        assert any("score.modules_to_save" in n for n in changed)


@pytest.mark.parametrize("kind", ["sft", "rm"])
def test_merged_export_matches_the_adapted_model(kind, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from distill_ray.training.checkpoints import save_final_model

    model, _, objective, tokenizer, batch = _lora_steps(kind)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    model.eval()
    with torch.no_grad():
        adapted = model(**inputs).logits
        with model.disable_adapter():
            base = model(**inputs).logits
    assert not torch.allclose(adapted, base, atol=1e-4)  # the adapter does something worth exporting
    save_final_model(tmp_path / "model", model, tokenizer, objective.annotate)

    adapter, merged_dir = tmp_path / "adapter", tmp_path / "model"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in adapter.iterdir()}
    names = {p.name for p in merged_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names and "adapter_config.json" not in names
    auto = AutoModelForCausalLM if kind == "sft" else AutoModelForSequenceClassification
    merged = auto.from_pretrained(merged_dir).eval()
    assert not any("lora" in k for k in merged.state_dict())
    with torch.no_grad():
        assert torch.allclose(merged(**inputs).logits, adapted, atol=1e-5)
        # The adapter folder on the unadapted student gives the same model again.
        again = PeftModel.from_pretrained(objective.load_model(objective.start_path()), adapter).eval()
        assert torch.allclose(again(**inputs).logits, adapted, atol=1e-5)
    if kind == "rm":
        assert (merged_dir / "distill_ray_reward.json").is_file()  # the reward service's description
    else:
        from distill_ray.models.loading import load_causal_lm

        assert load_causal_lm(merged_dir).config.num_hidden_layers == 2  # what the teacher service loads


def _rows_of(kind: str, tokenizer):
    if kind == "dpo":
        return [{"problem": r["problem"], "chosen": r["response"], "rejected": "no", "beta": 0.1} for r in ROWS]
    if kind == "advdistill":
        return [{"problem": "What is 1+1?", "responses": ["<answer>2</answer>", "<answer>3</answer>"],
                 "advantages": [1.0, -1.0], "correct": [True, False]}]  # fmt: skip
    import pyarrow as pa

    from distill_ray.data import schemas
    from distill_ray.training.kd_data import teacher_forced_ids

    gen, rows = torch.Generator().manual_seed(0), []
    for i, row in enumerate(ROWS):  # joined logits rows with a made-up teacher's top-8
        prompt, response = teacher_forced_ids(tokenizer, row["problem"], row["response"], "", "{problem}", 64)
        logprobs, ids = torch.log_softmax(torch.randn(len(response), 300, generator=gen), -1).topk(8)
        rows.append({"sample_id": str(i), "prompt_ids": prompt, "response_ids": response,
                     "topk_ids": ids.flatten().tolist(), "topk_logprobs": logprobs.flatten().tolist()})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schemas.logits("float32"))


@pytest.mark.parametrize("kind", ["kd", "dpo", "advdistill", "grpo"])
def test_every_objective_trains_the_adapters_alone(kind):
    """The other trainers' losses on the model the loop builds with training.lora: gradients reach the adapters
    and nothing else (dpo's frozen reference is the unadapted student, so its first loss is log 2)."""
    from distill_ray.models.loading import load_tokenizer
    from jobs.train.advdistill import AdvDistillObjective
    from jobs.train.dpo import DPOObjective
    from jobs.train.grpo import GRPOObjective
    from jobs.train.kd import KDObjective
    from jobs.train.loop import load_student

    t = TrainingConfig(max_length=64, lora=LORA, grpo={"group_size": 2, "max_new_tokens": 6})
    if kind == "grpo":  # the rollout and its log-probs; the loss itself needs the reward service
        from distill_ray.training.rollout import completion_logps

        objective = GRPOObjective("tiny:smollm2", "", "{problem}", t, "http://127.0.0.1:9", None, "vanilla", 1.0,
                                  [], [])  # fmt: skip
        objective.setup_worker("cpu")
        model = load_student(objective, t, None)
        batch = objective.collate(objective.dataset([{"problem": "What is 1+1?"}], objective.tokenizer),
                                  objective.tokenizer)  # fmt: skip
        rollouts = objective.rollout(model, batch["prompt_ids"], batch["prompt_mask"])
        loss = -(completion_logps(model, rollouts) * rollouts.completion_mask).sum()
        assert objective.tokens(batch) == int(rollouts.attention_mask.sum()) > 0
    else:
        cls = {"kd": KDObjective, "dpo": DPOObjective, "advdistill": AdvDistillObjective}[kind]
        objective = cls("tiny:smollm2", "", "{problem}", t)
        objective.setup_worker("cpu")
        tokenizer = load_tokenizer(objective.start_path())
        data = objective.dataset(_rows_of(kind, tokenizer), tokenizer)
        batch = objective.collate([data[i] for i in range(1 if kind == "advdistill" else len(data))], tokenizer)
        model = load_student(objective, t, None)
        loss, _ = objective.loss(model, batch, float(objective.units(batch)))
        assert objective.tokens(batch) == int(batch["attention_mask"].sum())
        if kind == "dpo":
            assert loss.item() == pytest.approx(0.6931, abs=1e-3)
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all("lora_B" in n or "lora_A" in n for n in with_grad), sorted(with_grad)[:5]


def test_lora_checkpoint_holds_the_adapter_and_resumes_it(tmp_path):
    from distill_ray.training.checkpoints import latest_checkpoint, save_checkpoint
    from jobs.train.loop import load_student

    model, _, objective, tokenizer, _ = _lora_steps("sft", steps=1)
    t = TrainingConfig(max_length=64, lora=LORA)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    state = {"step": 1, "lora": t.lora.model_dump(mode="json")}
    save_checkpoint(tmp_path, model, optimizer, scheduler, state, tokenizer)
    ckpt = latest_checkpoint(tmp_path)
    assert (ckpt / "adapter" / "adapter_model.safetensors").is_file() and not (ckpt / "model").exists()
    resumed = load_student(objective, t, ckpt)
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    again = dict(resumed.named_parameters())
    assert trained and all(torch.equal(p, again[n]) and again[n].requires_grad for n, p in trained.items())


def test_bad_lora_settings_name_the_key(tmp_path):
    from distill_ray.config import build_config
    from distill_ray.errors import ConfigError
    from distill_ray.training.lora import check_resume, check_target_modules
    from jobs.train.kd import KDObjective
    from jobs.train.sft import SFTObjective

    for raw, key in [({"r": 0}, "training.lora.r"), ({"alpha": 0}, "training.lora.alpha"),
                     ({"dropout": 1}, "training.lora.dropout"), ({"target_modules": []}, "training.lora.target_modules"),
                     ({"rank": 4}, "training.lora.rank")]:  # fmt: skip
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
            build_config({"job_type": "sft", "training": {"lora": raw}})
        assert "\n" not in str(err.value)
    objective = SFTObjective("tiny:smollm2", "", "{problem}", TrainingConfig())
    path = objective.start_path()
    lora = TrainingConfig(lora={"target_modules": ["q_proj", "nope"]}).lora
    with pytest.raises(ConfigError, match=r"training\.lora\.target_modules: 'nope' matches no layer.*q_proj"):
        check_target_modules(lora, path, "CAUSAL_LM")
    with pytest.raises(ConfigError, match=r"training\.lora\.target_modules: 'mlp' names no linear"):
        check_target_modules(TrainingConfig(lora={"target_modules": ["mlp"]}).lora, path, "CAUSAL_LM")
    for names in (["q_proj", "self_attn.v_proj", "embed_tokens"], "all-linear"):
        check_target_modules(TrainingConfig(lora={"target_modules": names}).lora, path, "CAUSAL_LM")
    kd = KDObjective("tiny:smollm2", "", "{problem}", TrainingConfig())
    with pytest.raises(ConfigError, match="output layer"):
        check_target_modules(TrainingConfig(lora={"target_modules": ["lm_head"]}).lora, path, "CAUSAL_LM",
                             kd.reads_output_weight)  # fmt: skip
    # A checkpoint resumes only with the settings it was trained with.
    ckpt = tmp_path / "step_4"
    saved = TrainingConfig(lora={"r": 8}).lora.model_dump(mode="json")
    check_resume(TrainingConfig(lora={"r": 8}).lora, saved, ckpt)
    check_resume(None, None, ckpt)
    for cfg, stored, key in [(TrainingConfig(lora={"r": 4}).lora, saved, "training.lora.r"),
                             (None, saved, "training.lora"), (TrainingConfig(lora={}).lora, None, "training.lora")]:  # fmt: skip
        with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ":.*step_4"):
            check_resume(cfg, stored, ckpt)


def test_unknown_target_module_stops_the_job_before_ray(tmp_path):
    """The sft job checks training.lora against the student on the driver, before any Ray call."""
    from cluster.embedded import RayContext
    from distill_ray.errors import ConfigError
    from jobs.train import sft

    rows = write_parquet(arithmetic(4), tmp_path / "rows.parquet")
    ctx = RayContext(embedded=True, storage_path=str(tmp_path / "storage"), address=None)
    cfg = job("sft", rows, tmp_path, lora={"target_modules": ["qproj"]})
    with pytest.raises(ConfigError, match=r"training\.lora\.target_modules: 'qproj' matches no layer"):
        sft.run(cfg, stage("sft", tmp_path, ctx))


# ----------------------------------------------------------------------------- on the embedded cluster


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory, ray_cluster):
    """sft with LoRA and TensorBoard: 4 steps with a checkpoint every 2, then the same command to 8 steps."""
    from jobs.train import sft

    root = tmp_path_factory.mktemp("lora")
    rows = write_parquet(arithmetic(16), root / "rows.parquet")
    settings = dict(lora={"r": 8, "alpha": 16, "dropout": 0.0}, report_to=["tensorboard"], learning_rate=2e-2)
    first = sft.run(job("sft", rows, root, max_steps=4, save_steps=2, **settings), stage("sft", root, ray_cluster))
    second = sft.run(job("sft", rows, root, max_steps=8, **settings), stage("sft", root, ray_cluster))
    return root, first, second


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_lora_sft_resumes_and_exports_a_servable_merged_model(lora_runs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from distill_ray.models.loading import load_causal_lm, load_tokenizer, resolve_model

    root, first, second = lora_runs
    out = root / "sft"
    m1, m2 = first.metrics, second.metrics
    assert m1["steps"] == 4 and m1["resumed_from_step"] is None
    assert 0 < m1["trainable_params"] < 0.1 * m1["total_params"], m1
    assert m2["resumed_from_step"] == 4 and m2["steps"] == 8 and m2["steps_run"] == 4
    assert m2["first_loss"] == m1["first_loss"] and m2["final_loss"] < m1["first_loss"], (m1, m2)
    for step in ("step_2", "step_4", "step_8"):  # checkpoints hold the adapter and its optimizer state only
        ckpt = out / "checkpoints" / step
        assert (ckpt / "adapter" / "adapter_model.safetensors").is_file() and not (ckpt / "model").exists()
        assert json.loads((ckpt / "trainer_state.json").read_text())["lora"]["r"] == 8
    state = json.loads((out / "checkpoints" / "step_8" / "trainer_state.json").read_text())
    assert state["losses"][:4] == json.loads((out / "checkpoints" / "step_4" / "trainer_state.json").read_text())["losses"]
    assert second.outputs["adapter"] == str(out / "adapter") and second.outputs["model"] == str(out / "model")

    # The merged model is a plain HF folder: the serving code loads it as it loads any trained student.
    tokenizer = load_tokenizer(out / "model")
    ids = tokenizer("What is 2+3?", return_tensors="pt")
    merged = load_causal_lm(out / "model").eval()
    base = AutoModelForCausalLM.from_pretrained(resolve_model(STUDENT))
    adapted = PeftModel.from_pretrained(base, out / "adapter").eval()
    with torch.no_grad():
        assert torch.allclose(merged(**ids).logits, adapted(**ids).logits, atol=1e-5)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(root / "tensorboard" / "sft")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s"} <= tags, tags
    steps = sorted({e.step for e in events.Scalars("train/loss")})
    assert steps == list(range(1, 9)), steps  # both runs, every step (logging_steps 1)
    assert all(e.value > 0 for e in events.Scalars("train/tokens_per_s"))


def test_lora_with_a_full_checkpoint_is_refused(tmp_path):
    """Resuming a folder trained without LoRA with training.lora set (or the other way round) is exit 2."""
    from cluster.embedded import RayContext
    from distill_ray.errors import ConfigError
    from jobs.train import sft

    rows = write_parquet(arithmetic(4), tmp_path / "rows.parquet")
    ckpt = tmp_path / "sft" / "checkpoints" / "step_2"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 2}))  # an older checkpoint: no "lora" key
    ctx = RayContext(embedded=True, storage_path=str(tmp_path / "storage"), address=None)
    with pytest.raises(ConfigError, match=r"training\.lora: checkpoint step_2 .* fully fine-tuned"):
        sft.run(job("sft", rows, tmp_path, lora={}), stage("sft", tmp_path, ctx))
