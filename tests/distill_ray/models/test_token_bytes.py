"""Tests for distill_ray.models.token_bytes: each token's exact bytes, names, and the offsets built from them.

Real tokenizers only: the packaged SmolLM2 tokenizer (byte-level BPE, GPT-2 style) and the SentencePiece-style
BPE with byte fallback that `conftest.sentencepiece_tokenizer` builds with the `tokenizers` library.
"""

from __future__ import annotations

import random

import pytest
from conftest import sentencepiece_tokenizer
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from distill_ray.models.loading import load_tokenizer, resolve_model
from distill_ray.models.token_bytes import (
    BYTE_LEVEL,
    DECODED,
    SENTENCEPIECE,
    TokenBytes,
    char_offsets,
    clip_pieces,
    complete_characters,
    decode_reply,
    gpt2_byte_decoder,
    token_name,
    tokenizer_scheme,
)

TEXTS = ["🙂", "答案是5", "café naïve", "Hi there é! 答案是5 🙂 ok"]


@pytest.fixture(scope="module")
def smollm2():
    return load_tokenizer(resolve_model("tiny:smollm2"))


def test_gpt2_table_equals_transformers_copy():
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    assert gpt2_byte_decoder() == {char: byte for byte, char in bytes_to_unicode().items()}
    assert sorted(gpt2_byte_decoder().values()) == list(range(256))


def test_schemes(smollm2):
    assert tokenizer_scheme(smollm2) == BYTE_LEVEL
    assert tokenizer_scheme(sentencepiece_tokenizer()) == SENTENCEPIECE
    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]"))
    wordpiece.decoder = decoders.WordPiece()
    assert tokenizer_scheme(PreTrainedTokenizerFast(tokenizer_object=wordpiece)) == DECODED


@pytest.mark.parametrize("text", TEXTS)
def test_byte_level_pieces_join_to_the_text(smollm2, text):
    table = TokenBytes(smollm2)
    ids = smollm2(text, add_special_tokens=False)["input_ids"]
    assert table.join(ids) == text.encode("utf-8")
    # All but the accented text have pieces holding part of a character, whose bytes a token decoded alone loses.
    lossy = [i for i in ids if smollm2.decode([i]).encode("utf-8") != table.raw(i)]
    assert bool(lossy) == (text != "café naïve")


def test_byte_level_names_and_special_tokens(smollm2):
    table = TokenBytes(smollm2)
    pieces = {"çŃ": b"\xe7\xad", "Ķ": b"\x94", "ðŁ": b"\xf0\x9f", "ĠÃ©": b" \xc3\xa9", "æĺ¯": "是".encode()}
    for piece, raw in pieces.items():
        token_id = smollm2.convert_tokens_to_ids(piece)
        assert table.raw(token_id) == raw
        assert table.name(token_id) == token_name(raw)
    assert table.name(smollm2.convert_tokens_to_ids("çŃ")) == "bytes:\\xe7\\xad"
    eos = smollm2.convert_tokens_to_ids("<|im_end|>")
    assert (table.raw(eos), table.name(eos)) == (b"", "<|im_end|>")  # no text, but never a blank name
    assert table.raw(10**6) == b""  # an embedding row past the vocabulary


def test_byte_level_agrees_with_decode_on_random_ids(smollm2):
    """Whatever the ids (partial characters, invalid sequences, special tokens), the bytes decode like the
    tokenizer does; the only difference allowed is none."""
    table, rng = TokenBytes(smollm2), random.Random(0)
    for _ in range(500):
        ids = [rng.randrange(len(smollm2)) for _ in range(rng.randint(1, 6))] + [rng.randrange(17)]
        assert decode_reply(table.join(ids)) == smollm2.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("text", ["答案是5", "ab 🙂 é", "a b ab"])
def test_sentencepiece_pieces_join_to_the_text(text):
    tokenizer = sentencepiece_tokenizer()
    table = TokenBytes(tokenizer)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    # The encoder prepends ▁ to the whole text; `decode` strips that space again, the pieces keep it.
    assert table.join(ids) == (" " + text).encode("utf-8")
    assert tokenizer.decode(ids) == text


def test_sentencepiece_byte_fallback_and_space_pieces():
    tokenizer = sentencepiece_tokenizer()
    table = TokenBytes(tokenizer)
    for piece, raw, name in [("<0xE6>", b"\xe6", "bytes:\\xe6"), ("▁", b" ", " "), ("▁ab", b" ab", " ab"),
                             ("答", "答".encode(), "答"), ("</s>", b"", "</s>")]:  # fmt: skip
        token_id = tokenizer.convert_tokens_to_ids(piece)
        assert (table.raw(token_id), table.name(token_id)) == (raw, name)


def test_token_name_convention():
    assert token_name(" café".encode()) == " café"
    assert token_name(b"\xe7\xad") == "bytes:\\xe7\\xad"
    assert token_name(b" a\\\xf0") == "bytes: a\\x5c\\xf0"  # printable ASCII kept, backslash escaped
    assert token_name(b"\n\xc3") == "bytes:\\x0a\\xc3"
    assert token_name(b"") == ""


def test_complete_characters_drops_only_an_unfinished_end():
    assert complete_characters("答案".encode()) == "答案".encode()
    assert complete_characters("答".encode() + b"\xe6\xa1") == "答".encode()
    assert complete_characters(b"\xe6x") == b"\xe6x"  # invalid, not unfinished: stays (U+FFFD in text)
    assert decode_reply(b"\xe6x") == "\ufffdx"


def test_clip_pieces():
    assert clip_pieces([b"ab", b"cd", b"e"], 3) == [b"ab", b"c", b""]
    assert clip_pieces([b"ab", b"", b"cd"], 10) == [b"ab", b"", b"cd"]
    assert clip_pieces([b"ab"], 0) == [b""]


def test_char_offsets_point_at_the_character_a_piece_starts_or_continues():
    pieces = [b"\xe7\xad", b"\x94", b"\xe6", b"\xa1", b"\x88", "是".encode(), b"5", b" \xf0\x9f", b"\x99\x82", b""]
    text = decode_reply(b"".join(pieces))
    assert text == "答案是5 🙂"
    assert char_offsets(pieces) == [0, 0, 1, 1, 1, 2, 3, 4, 5, 6]
    assert char_offsets([]) == []
