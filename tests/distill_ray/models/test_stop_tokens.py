"""Completions end at the chat template's end-of-turn token, not only at eos (issue 14 item 14)."""

from __future__ import annotations

import copy

import pytest
import torch

from distill_ray.models.stop_tokens import end_of_turn_id, stop_token_ids
from distill_ray.training.rollout import left_pad, sample_completions

# Chat templates of three families, as their tokenizer configs ship them (reduced to the turn layout).
TEMPLATES = {
    "chatml": ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}", "<|im_end|>"),
    "llama3": ("{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
               "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
               "<|eot_id|>"),
    "gemma": ("{% for m in messages %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n"
              "{{ m.content }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n"
              "{% endif %}", "<end_of_turn>"),
}  # fmt: skip


@pytest.fixture(scope="module")
def base_tokenizer(tiny_model_dir):
    from distill_ray.models.loading import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def _with_template(tokenizer, family: str):
    """The tiny tokenizer with `family`'s template and end-of-turn token, and `<|endoftext|>` as its eos."""
    template, turn_end = TEMPLATES[family]
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"additional_special_tokens": [turn_end, "<|start_header_id|>", "<|end_header_id|>",
                                                          "<start_of_turn>"]})  # fmt: skip
    tok.chat_template = template
    tok.eos_token = "<|endoftext|>"
    return tok, tok.convert_tokens_to_ids(turn_end)


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_end_of_turn_is_found_from_the_template(base_tokenizer, family):
    tok, turn_end = _with_template(base_tokenizer, family)
    assert end_of_turn_id(tok) == turn_end != tok.eos_token_id
    assert stop_token_ids(tok) == {tok.eos_token_id, turn_end}


def test_no_template_or_plain_text_after_the_turn_names_nothing(base_tokenizer):
    tok = copy.deepcopy(base_tokenizer)
    tok.chat_template = None
    assert end_of_turn_id(tok) is None and stop_token_ids(tok) == {tok.eos_token_id}
    tok.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\nEND\n{% endfor %}"
    assert end_of_turn_id(tok) is None  # "END" is ordinary text, never a stop token
    generation = type("GenerationConfig", (), {"eos_token_id": [7, 9]})()
    assert stop_token_ids(tok, generation) == {tok.eos_token_id, 7, 9}


def test_rollouts_stop_at_the_end_of_turn(base_tokenizer, tiny_model_dir):
    from distill_ray.models.loading import load_causal_lm

    tok, turn_end = _with_template(base_tokenizer, "chatml")
    model = load_causal_lm(tiny_model_dir)
    model.resize_token_embeddings(len(tok))

    def ends_turn_after_two(module, inputs, logits):  # the model closes its turn at its third token
        if logits.shape[1] == 1 and ends_turn_after_two.step >= 2:
            logits[..., turn_end] = 1e4
        ends_turn_after_two.step += logits.shape[1] == 1
        return logits

    ends_turn_after_two.step = 0
    model.lm_head.register_forward_hook(ends_turn_after_two)
    prompt = tok(tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True,
                                         tokenize=False), add_special_tokens=False)["input_ids"]  # fmt: skip
    ids, mask = left_pad([prompt], tok.pad_token_id)
    out = sample_completions(model, ids, mask, 1, 16, 1.0, 1.0, tok.pad_token_id, stop_token_ids(tok), greedy=True)
    assert out.completions.shape[1] < 16  # stopped at <|im_end|>, not at the length limit
    assert out.completions[0, -1].item() == turn_end
    assert out.completion_mask[0].tolist() == [1] * out.completions.shape[1]
    ended_only_at_eos = sample_completions(model, ids, mask, 1, 16, 1.0, 1.0, tok.pad_token_id, {tok.eos_token_id},
                                           greedy=True)  # fmt: skip
    assert ended_only_at_eos.completions.shape[1] == 16  # what the old stop set did: run past the turn
