"""Teacher logprob `bytes` for non-ASCII replies (issue 14, item 9), through the real engine and wire format.

The engine runs a real tiny model whose next-token logits are replaced by a script (`ScriptedLM`), so it writes
a chosen reply (an emoji, `答案是5`, accented Latin, mixed text) token by token, and its top alternatives are
known tokens, among them pieces that hold part of a character. The checks use their own reference for a
token's bytes (literal tables, and transformers' copy of GPT-2's byte table), not the code under test:
- concatenating every entry's `bytes` gives exactly the reply's UTF-8, in the chat and the legacy body alike,
  whether the row ends on eos, on its length (also inside a character) or on a stop string (also inside a
  token);
- every top alternative's `bytes` are that token's exact bytes, and its name is OpenAI's;
- legacy `text_offset[i]` is the character where token i's bytes start, or the one they continue.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import sentencepiece_tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from distill_ray.models.engine import GenerationEngine, GenRequest
from distill_ray.models.loading import build_tiny_model, resolve_model
from distill_ray.models.openai_completions import completion_response
from distill_ray.models.openai_protocol import chat_response

TEXTS = ["🙂", "答案是5", "café naïve", "Hi there é! 答案是5 🙂 ok"]
# Alternatives offered at every step after the scripted token, most likely first: piece -> (name, bytes).
SMOLLM2_ALTERNATIVES = {
    "çŃ": ("bytes:\\xe7\\xad", b"\xe7\xad"),  # the first two bytes of 答
    "Ķ": ("bytes:\\x94", b"\x94"),  # its last byte
    "ðŁ": ("bytes:\\xf0\\x9f", b"\xf0\x9f"),  # the start of an emoji
    "ĠÃ©": (" é", b" \xc3\xa9"),
    "<|im_end|>": ("<|im_end|>", b""),  # named, but adds no text
    "Ġyes": (" yes", b" yes"),
}
SP_ALTERNATIVES = {
    "<0xE6>": ("bytes:\\xe6", b"\xe6"),
    "<0xA1>": ("bytes:\\xa1", b"\xa1"),
    "▁": (" ", b" "),
    "▁ab": (" ab", b" ab"),
    "</s>": ("</s>", b""),
}


class ScriptedLM(torch.nn.Module):
    """A real causal LM (its cache, positions and masks) whose next-token logits follow a script: at step s,
    row r's token is `scripts[r][s]` (logit 10; the eos id once the script is done), then `alternatives` in
    order (9, 8, ...), every other token 0."""

    def __init__(self, inner, eos_id: int, alternatives: list[int]):
        super().__init__()
        self.inner, self.eos_id, self.alternatives = inner, eos_id, alternatives
        self.scripts: list[list[int]] = []
        self.step = 0

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        self.step = 0 if kwargs.get("past_key_values") is None else self.step + 1
        logits = torch.zeros_like(out.logits[:, -1:, :])
        for rank, token_id in enumerate(self.alternatives):
            logits[:, -1, token_id] = 9.0 - rank
        for row, script in enumerate(self.scripts):
            logits[row, -1, script[self.step] if self.step < len(script) else self.eos_id] = 10.0
        return SimpleNamespace(logits=logits, past_key_values=out.past_key_values)


def scripted_engine(model_dir, alternatives: dict) -> GenerationEngine:
    engine = GenerationEngine(model_dir, torch_threads=2)
    alternative_ids = engine.tokenizer.convert_tokens_to_ids(list(alternatives))
    engine.model = ScriptedLM(engine.model, engine.tokenizer.eos_token_id, alternative_ids)
    return engine


def generate(engine: GenerationEngine, replies: list[str], **request) -> list:
    """One greedy batch whose rows write `replies` (then eos), with logprobs and every scripted alternative."""
    engine.model.scripts = [engine.tokenizer(r, add_special_tokens=False)["input_ids"] for r in replies]
    prompt = engine.text_prompt_ids("Answer:")
    top = len(engine.model.alternatives) + 1
    request = {"max_new_tokens": 64, **request}
    return engine.generate([GenRequest(prompt, temperature=0, logprobs=True, top_logprobs=top, **request)
                            for _ in replies])  # fmt: skip


def gpt2_bytes(tokenizer, token_id: int) -> bytes:
    """A byte-level token's bytes by transformers' copy of GPT-2's table (special tokens: none)."""
    if token_id in tokenizer.all_special_ids:
        return b""
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    return bytes(byte_of[c] for c in tokenizer.convert_ids_to_tokens(token_id))


def character_at(text: str, byte_index: int) -> int:
    """Index of the character of `text` whose UTF-8 holds byte `byte_index` (len(text) past the end)."""
    end = 0
    for index, char in enumerate(text):
        end += len(char.encode())
        if byte_index < end:
            return index
    return len(text)


def check_wire(result, alternatives: dict) -> None:
    """The issue's rule on both OpenAI bodies built from one engine result."""
    text, reply = result.text, result.text.encode()
    chat = chat_response([result], "teacher", prompt_tokens=3)["choices"][0]
    legacy = completion_response([[result]], "teacher", prompt_tokens=[3])["choices"][0]
    assert chat["message"]["content"] == legacy["text"] == text
    content = chat["logprobs"]["content"]
    assert b"".join(bytes(entry["bytes"]) for entry in content) == reply
    assert len(content) == len(legacy["logprobs"]["tokens"]) == result.completion_tokens
    expected_tops = dict(alternatives.values())
    for entry, top_dict in zip(content, legacy["logprobs"]["top_logprobs"]):
        tops = {top["token"]: bytes(top["bytes"]) for top in entry["top_logprobs"]}
        assert tops.items() >= expected_tops.items()
        assert set(top_dict) == set(tops)  # distinct names: no alternative is lost as a key of the legacy dict
    starts = [0]
    for entry in content[:-1]:
        starts.append(starts[-1] + len(entry["bytes"]))
    offsets = legacy["logprobs"]["text_offset"]
    assert offsets == [character_at(text, start) for start in starts]
    for offset, start in zip(offsets, starts):
        # text[offset:] begins with the character in which this token's bytes start (or is empty past the end).
        rest, first = text[offset:].encode(), text[offset:][:1].encode()
        assert rest.endswith(reply[start:]) and len(rest) - len(reply[start:]) < max(1, len(first))


@pytest.fixture(scope="module")
def smollm2():
    return scripted_engine(resolve_model("tiny:smollm2"), SMOLLM2_ALTERNATIVES)


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    """A tiny random Llama with the SentencePiece-style tokenizer (byte fallback) of `conftest`."""
    folder = tmp_path_factory.mktemp("sp-tokenizer")
    sentencepiece_tokenizer().save_pretrained(folder)
    return scripted_engine(build_tiny_model(folder, tmp_path_factory.mktemp("sp-model")), SP_ALTERNATIVES)


def test_eos_replies_concatenate_to_their_utf8(smollm2):
    results = generate(smollm2, TEXTS)  # one batch: its rows end at different steps
    for text, result in zip(TEXTS, results):
        assert (result.text, result.finish_reason) == (text, "stop")
        assert b"".join(entry.bytes for entry in result.logprobs) == text.encode()
        assert (result.logprobs[-1].token, result.logprobs[-1].bytes) == ("<|im_end|>", b"")
        check_wire(result, SMOLLM2_ALTERNATIVES)


def test_top_alternatives_are_exact_token_bytes(smollm2):
    tokenizer = smollm2.tokenizer
    result = generate(smollm2, ["答案是5"])[0]
    for entry, chosen in zip(result.logprobs, result.token_ids):
        assert (entry.top[0].token, entry.top[0].bytes) == (entry.token, gpt2_bytes(tokenizer, chosen))
        others = [(piece, raw) for piece, (_, raw) in SMOLLM2_ALTERNATIVES.items()
                  if tokenizer.convert_tokens_to_ids(piece) != chosen]  # fmt: skip
        assert [alt.bytes for alt in entry.top[1 : 1 + len(others)]] == [raw for _, raw in others]
        for piece, raw in others:  # the literal table agrees with GPT-2's
            assert gpt2_bytes(tokenizer, tokenizer.convert_tokens_to_ids(piece)) == raw


def test_length_replies_concatenate_to_their_utf8(smollm2):
    for text in TEXTS:
        n = len(smollm2.tokenizer(text, add_special_tokens=False)["input_ids"])
        result = generate(smollm2, [text], max_new_tokens=n)[0]
        assert (result.text, result.finish_reason, result.completion_tokens) == (text, "length", n)
        check_wire(result, SMOLLM2_ALTERNATIVES)


def test_length_cut_inside_a_character(smollm2):
    # 答案是5 is çŃ Ķ | æ ¡ Ī | æĺ¯ | 5: four tokens end inside 案, which is therefore not in the reply.
    result = generate(smollm2, ["答案是5"], max_new_tokens=4)[0]
    assert (result.text, result.finish_reason) == ("答", "length")
    assert [entry.bytes for entry in result.logprobs] == [b"\xe7\xad", b"\x94", b"", b""]
    names = ["bytes:\\xe7\\xad", "bytes:\\x94", "bytes:\\xe6", "bytes:\\xa1"]  # every token still named
    assert [entry.token for entry in result.logprobs] == names
    check_wire(result, SMOLLM2_ALTERNATIVES)


@pytest.mark.parametrize(
    "reply, stop, text",
    [
        ("café naïve", "ve", "café naï"),  # the stop string starts inside the token `ïve`
        ("café naïve", "ï", "café na"),
        ("答案是5", "案是", "答"),  # ... at a token that holds part of 案
        ("Hi there é! 答案是5 🙂 ok", "🙂", "Hi there é! 答案是5 "),
    ],
)
def test_stop_string_replies_concatenate_to_their_utf8(smollm2, reply, stop, text):
    result = generate(smollm2, [reply], stop=["@@", stop])[0]
    assert (result.text, result.finish_reason) == (text, "stop")
    check_wire(result, SMOLLM2_ALTERNATIVES)


@pytest.mark.parametrize("reply", ["答案是5", "ab 🙂 é"])
def test_sentencepiece_byte_fallback_replies(sentencepiece, reply):
    result = generate(sentencepiece, [reply])[0]
    # The encoder's ▁ before the first word is a real space in a reply that continues a prompt (as in vLLM).
    assert (result.text, result.finish_reason) == (" " + reply, "stop")
    assert b"".join(entry.bytes for entry in result.logprobs) == result.text.encode()
    check_wire(result, SP_ALTERNATIVES)
