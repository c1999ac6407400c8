"""Teacher scoring in-process (issue 18 item 1): `GenerationEngine.score` against a direct forward pass of the same
model on the same ids (no Ray).

The reference is computed here, independently of `distill_ray.models.scoring`: one unpadded forward pass per
sequence, `torch.log_softmax` of its logits and `torch.topk`. Most checks use the tiny random SmolLM2-tokenizer
Llama; one runs on the real 135M model, whose distribution is peaked (ranks and top-k are not near-ties there).
"""

from __future__ import annotations

import pytest
import torch

from distill_ray.models.engine import MAX_TOP_LOGPROBS, GenerationEngine
from distill_ray.models.scoring import forward_chunks, score_sequences

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "2+2=",
    "答案是5 🙂 café",
    "Once upon a time, in a land far away, there lived a dragon who counted stars every night.",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return GenerationEngine(tiny_model_dir, torch_threads=2)


@pytest.fixture(scope="module")
def sequences(tiny):
    return [tiny.text_prompt_ids(t) for t in TEXTS]


def reference(engine: GenerationEngine, ids: list[int]) -> torch.Tensor:
    """log_softmax of one unpadded forward pass: row t is the distribution of token t + 1 ((L-1) x vocab)."""
    with torch.inference_mode():
        logits = engine.model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    return torch.log_softmax(logits, dim=-1)


def assert_matches_reference(engine: GenerationEngine, ids: list[int], entries: list, k: int) -> None:
    logp = reference(engine, ids)
    assert len(entries) == len(ids) and entries[0] is None
    for t in range(1, len(ids)):
        entry, row = entries[t], logp[t - 1]
        assert entry.token_id == ids[t]
        assert entry.logprob == pytest.approx(row[ids[t]].item(), abs=1e-5)
        values, top_ids = torch.topk(row, k)
        assert [alt.token_id for alt in entry.top] == top_ids.tolist()
        assert [alt.logprob for alt in entry.top] == pytest.approx(values.tolist(), abs=1e-5)
        assert entry.rank == int((row >= row[ids[t]]).sum())


def test_scores_equal_log_softmax_and_topk_of_a_direct_forward(tiny, sequences):
    k = 5
    for ids, entries in zip(sequences, tiny.score(sequences, k)):
        assert_matches_reference(tiny, ids, entries, k)


def test_real_model_scores_and_ranks(smollm2_dir):
    engine = GenerationEngine(smollm2_dir, torch_threads=2)
    ids = engine.chat_prompt_ids([{"role": "user", "content": "What is 2 + 3?"}]) + engine.text_prompt_ids("2 + 3 = 5")
    (entries,) = engine.score([ids], MAX_TOP_LOGPROBS)
    assert_matches_reference(engine, ids, entries, MAX_TOP_LOGPROBS)
    in_top = 0
    for entry in entries[1:]:
        top_ids = [alt.token_id for alt in entry.top]
        if entry.rank <= MAX_TOP_LOGPROBS:  # among the top-k: at the place its rank says, with the same value
            in_top += 1
            assert top_ids[entry.rank - 1] == entry.token_id
            assert entry.top[entry.rank - 1].logprob == pytest.approx(entry.logprob, abs=1e-6)
        else:  # below the top-k: less likely than every alternative
            assert entry.token_id not in top_ids and entry.logprob <= entry.top[-1].logprob
    # A real model finds most tokens of a chat about arithmetic among its 20 most likely.
    assert in_top >= len(entries) // 2


def test_batch_of_different_lengths_equals_one_by_one(tiny, sequences):
    batched = tiny.score(sequences, 3)
    for ids, got in zip(sequences, batched):
        (alone,) = tiny.score([ids], 3)
        assert [e.token_id for e in got[1:]] == [e.token_id for e in alone[1:]]
        for a, b in zip(got[1:], alone[1:]):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-5)
            assert [t.token_id for t in a.top] == [t.token_id for t in b.top]
            assert [t.logprob for t in a.top] == pytest.approx([t.logprob for t in b.top], abs=1e-5)


def test_split_forward_passes_give_the_same_numbers(tiny, sequences):
    """A batch over the logits budget runs as several forward passes; no sequence's numbers change."""
    whole = tiny.score(sequences, 2)
    with torch.inference_mode():
        split = score_sequences(tiny.model, sequences, 2, pad_token_id=tiny.pad_token_id,
                                token_bytes=tiny.token_bytes, logits_budget=1)  # fmt: skip
    for a_row, b_row in zip(whole, split):
        assert [e.logprob for e in a_row[1:]] == pytest.approx([e.logprob for e in b_row[1:]], abs=1e-5)


def test_forward_chunks_stay_within_the_budget():
    assert forward_chunks([3, 5, 2], vocab=10, budget=100) == [range(0, 2), range(2, 3)]
    assert forward_chunks([3, 5, 2], vocab=10, budget=10**6) == [range(0, 3)]
    assert forward_chunks([50, 1], vocab=10, budget=100) == [range(0, 1), range(1, 2)]  # over budget alone
    assert forward_chunks([], vocab=10, budget=100) == []


def test_token_ids_are_scored_as_given_not_retokenised(tiny):
    """`hello` spelt as the tokens `h` + `ello`: the text round trip gives other ids, the given ids are scored."""
    tokenizer = tiny.tokenizer
    spelt = tokenizer.convert_tokens_to_ids(["The", "Ġh", "ello", "Ġworld"])
    assert tokenizer.unk_token_id not in spelt
    text = tiny.token_bytes.join(spelt).decode()
    assert text == "The hello world" and tiny.text_prompt_ids(text) != spelt  # a round trip would change them
    (entries,) = tiny.score([spelt], 2)
    assert [e.token_id for e in entries[1:]] == spelt[1:]
    assert [e.token for e in entries[1:]] == [" h", "ello", " world"]
    assert_matches_reference(tiny, spelt, entries, 2)


def test_text_sequences_are_tokenised_like_prompts(tiny):
    by_text, by_ids = tiny.score([TEXTS[0]], 1), tiny.score([tiny.text_prompt_ids(TEXTS[0])], 1)
    assert [e.logprob for e in by_text[0][1:]] == [e.logprob for e in by_ids[0][1:]]


def test_entries_carry_exact_token_bytes(tiny, sequences):
    ids = sequences[2]  # 答案是5 🙂 café: tokens holding parts of characters
    (entries,) = tiny.score([ids], 4)
    assert tiny.token_bytes.raw(ids[0]) + b"".join(e.bytes for e in entries[1:]) == TEXTS[2].encode()
    assert any(e.token.startswith("bytes:") for e in entries[1:])  # a partial character is named as OpenAI does
    for entry in entries[1:]:
        assert entry.token == tiny.token_bytes.name(entry.token_id)
        assert all(alt.bytes == tiny.token_bytes.raw(alt.token_id) for alt in entry.top)


def test_short_sequences_and_no_alternatives(tiny):
    one, two = tiny.score([[42], [42, 43]], 0)
    assert one == [None]
    assert two[0] is None and two[1].token_id == 43 and two[1].top == []
    assert tiny.score([], 3) == []


@pytest.mark.parametrize(
    "sequences, top_logprobs, message",
    [
        ([[1, 2], []], 0, "sequence 1: it is empty"),
        ([[1, 10**6]], 0, "sequence 0: it has token ids outside the vocabulary"),
        ([[1, -1]], 0, "outside the vocabulary"),
        ([[42] * 2049], 0, "sequence 0: it has 2049 tokens; the model's context is 2048 tokens"),
        ([[1, 2]], MAX_TOP_LOGPROBS + 1, "top_logprobs must be in 0..20"),
    ],
)
def test_rejects_bad_sequences(tiny, sequences, top_logprobs, message):
    with pytest.raises(ValueError, match=message):
        tiny.score(sequences, top_logprobs)
