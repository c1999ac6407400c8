"""The exact bytes each token adds to a reply, and the text, names and offsets built from them.

Where it sits: `GenerationEngine` builds one `TokenBytes` per tokenizer; it fills every logprob entry's `bytes`
and `token` and builds the reply text from the same bytes, so the two cannot disagree. `openai_protocol` turns
the entries' bytes into legacy `text_offset`s with `char_offsets`. Pure Python: the tokenizer is duck-typed
(a transformers tokenizer), nothing here imports torch or transformers.

Why not `tokenizer.decode([id])`: a byte-level BPE piece (GPT-2, Llama 3, Qwen, SmolLM2) or a SentencePiece
byte-fallback piece (`<0xE7>`) may hold part of a UTF-8 character; decoded alone it becomes U+FFFD, whose bytes
are not the token's. SentencePiece pieces also lose their leading space when decoded alone. The token's bytes
are read from its piece instead (`convert_ids_to_tokens`), by the rule of the tokenizer's scheme:
- byte-level BPE (a fast tokenizer whose decoder is or contains `ByteLevel`, or a slow one with a
  `byte_decoder`): each character of the piece stands for one byte through GPT-2's `bytes_to_unicode` table;
- SentencePiece (decoder `Metaspace`, or one with `ByteFallback` or a `Replace` of U+2581, or a slow
  tokenizer with an `sp_model`): `<0xNN>` is the byte NN, otherwise the piece's UTF-8 with U+2581 as a space;
- anything else: the token decoded alone (the old, lossy rule; a warning says so when the engine starts).
Special tokens (eos, chat markers: those `decode(..., skip_special_tokens=True)` drops) add no bytes; other
added tokens add their content's UTF-8.

One deliberate difference from `tokenizer.decode`: SentencePiece decoders strip the first token's leading space
(`Strip`, `prepend_scheme`), which undoes the space the encoder prepended to a whole text. A reply continues a
prompt, so that space is real text and is kept (vLLM, which decodes a reply against its prompt, keeps it too).

Token names (`token_name`): the OpenAI wire format has a string `token` beside the exact `bytes`. A token whose
bytes are valid UTF-8 is named by that text; one that is not (part of a character) is named the way OpenAI's
API does, `bytes:` followed by its bytes with every byte outside printable ASCII, and the backslash, written as
`\\xNN` (`bytes:\\xe7\\x9a`). We follow OpenAI rather than vLLM (which writes U+FFFD, so distinct partial
tokens collide as keys of a legacy `top_logprobs` dict) or DeepSeek (escapes without a prefix, which cannot be
told from a literal backslash text): the prefix marks the name as bytes, and partial tokens with different
bytes get different names.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from collections.abc import Sequence

log = logging.getLogger(__name__)

BYTE_LEVEL, SENTENCEPIECE, DECODED = "byte_level", "sentencepiece", "decoded"
_SP_SPACE = "\u2581"  # SentencePiece's word-boundary mark, a space in text
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's `bytes_to_unicode` table inverted: printable character -> the byte (0..255) it stands for.

    Built here rather than imported: transformers has no public home for it (4.x exported it from
    `models.gpt2.tokenization_gpt2`, which 5.x no longer has; 5.x keeps a copy in its `convert_slow_tokenizer`
    helpers), while the table is fixed data shared by every byte-level BPE: the 188 bytes that are printable
    Latin-1 stand for themselves, the other 68 for U+0100 onwards, in byte order. A test checks it against
    transformers' copy.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + i): b for i, b in enumerate(others)})
    return table


_GPT2_BYTE_OF = gpt2_byte_decoder()


def tokenizer_scheme(tokenizer) -> str:
    """How `tokenizer`'s pieces spell bytes: BYTE_LEVEL, SENTENCEPIECE, or DECODED (unknown: decode each)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow (pure Python or sentencepiece) tokenizer
        if getattr(tokenizer, "byte_decoder", None):
            return BYTE_LEVEL
        return SENTENCEPIECE if getattr(tokenizer, "sp_model", None) is not None else DECODED
    if backend.decoder is None:
        return DECODED
    # The decoder's own JSON (not the whole tokenizer's, which carries the vocabulary).
    kinds = _decoder_kinds(json.loads(backend.decoder.__getstate__()))
    if "ByteLevel" in kinds:
        return BYTE_LEVEL
    if kinds & {"Metaspace", "ByteFallback", "Replace\u2581"}:
        return SENTENCEPIECE
    return DECODED


def _decoder_kinds(spec: dict) -> set[str]:
    """Types in a tokenizers decoder spec, nested `Sequence`s flattened; a Replace of U+2581 is `Replace▁`."""
    kind = spec.get("type", "")
    if kind == "Sequence":
        return set().union(*(_decoder_kinds(d) for d in spec.get("decoders", [])))
    if kind == "Replace" and spec.get("pattern", {}).get("String") == _SP_SPACE:
        return {"Replace\u2581"}
    return {kind}


class TokenBytes:
    """A tokenizer's token id -> the bytes that token adds to decoded text (`skip_special_tokens=True`).

    `raw(id)` is those bytes (b"" for a special token or an id the tokenizer does not know); `name(id)` is the
    token's string for a logprob entry (a special token keeps its content so an entry is never blank; others
    follow `token_name`). Both are cached per id: a token's bytes are looked up once per engine.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.scheme = tokenizer_scheme(tokenizer)
        added = dict(getattr(tokenizer, "added_tokens_decoder", None) or {})
        self._special = {int(i) for i, tok in added.items() if getattr(tok, "special", False)}
        self._special.update(int(i) for i in getattr(tokenizer, "all_special_ids", []) or [])
        self._added = {int(i): str(tok) for i, tok in added.items() if int(i) not in self._special}
        self._byte_of = getattr(tokenizer, "byte_decoder", None) or _GPT2_BYTE_OF
        self._raw: dict[int, bytes] = {}
        self._names: dict[int, str] = {}
        if self.scheme == DECODED:
            log.warning("tokenizer %s: unknown decoder; logprob bytes are each token decoded alone, so a token "
                        "holding part of a character reports U+FFFD", type(tokenizer).__name__)  # fmt: skip

    def raw(self, token_id: int) -> bytes:
        """The bytes token `token_id` adds to decoded text (b"" for special tokens and unknown ids)."""
        found = self._raw.get(token_id)
        if found is None:
            found = self._raw[token_id] = self._piece_bytes(int(token_id))
        return found

    def name(self, token_id: int) -> str:
        """The token's string in a logprob entry: a special token's content, else `token_name(raw(id))`."""
        found = self._names.get(token_id)
        if found is None:
            if token_id in self._special:
                found = self.tokenizer.convert_ids_to_tokens(int(token_id)) or ""
            else:
                found = token_name(self.raw(token_id))
            self._names[token_id] = found
        return found

    def join(self, token_ids: Sequence[int]) -> bytes:
        """The bytes `token_ids` decode to, before UTF-8 decoding: their `raw` bytes concatenated."""
        return b"".join(self.raw(t) for t in token_ids)

    def _piece_bytes(self, token_id: int) -> bytes:
        if token_id in self._special:
            return b""
        if token_id in self._added:
            return self._added[token_id].encode("utf-8")
        if self.scheme == DECODED:
            return self.tokenizer.decode([token_id], skip_special_tokens=True).encode("utf-8")
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if piece is None:  # an embedding row beyond the tokenizer's vocabulary
            return b""
        if self.scheme == BYTE_LEVEL:
            return _byte_level_bytes(piece, self._byte_of)
        byte_piece = _BYTE_PIECE.fullmatch(piece)
        return bytes([int(byte_piece[1], 16)]) if byte_piece else piece.replace(_SP_SPACE, " ").encode("utf-8")


def _byte_level_bytes(piece: str, byte_of: dict[str, int]) -> bytes:
    try:
        return bytes(byte_of[c] for c in piece)
    except KeyError:  # not a byte-level piece after all (a malformed vocabulary entry): its text as it is
        return piece.encode("utf-8")


def token_name(raw: bytes) -> str:
    """A token's string for the wire: its text when `raw` is valid UTF-8, else OpenAI's `bytes:\\xNN...` form.

    In the bytes form printable ASCII other than the backslash stays itself and every other byte is `\\xNN`
    (lower-case hex), so the name maps back to `raw`. Example: b"\\xe7\\x9a" -> `bytes:\\xe7\\x9a`.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in raw)


def complete_characters(raw: bytes) -> bytes:
    """`raw` without an unfinished UTF-8 character at its end (a reply cut inside a character by its length).

    Only a trailing sequence that could still become a character is dropped; invalid bytes elsewhere stay.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    decoder.decode(raw)
    pending, _ = decoder.getstate()
    return raw[: len(raw) - len(pending)]


def decode_reply(raw: bytes) -> str:
    """The reply text of reply bytes: UTF-8, with U+FFFD for invalid sequences (as `tokenizer.decode` does)."""
    return raw.decode("utf-8", errors="replace")


def clip_pieces(pieces: Sequence[bytes], limit: int) -> list[bytes]:
    """`pieces` cut so they concatenate to their first `limit` bytes: later pieces keep only what fits (b"")."""
    clipped, used = [], 0
    for piece in pieces:
        keep = piece[: max(0, limit - used)]
        used += len(keep)
        clipped.append(keep)
    return clipped


def char_offsets(pieces: Sequence[bytes]) -> list[int]:
    """For consecutive byte pieces of one text, the character offset in `decode_reply(b"".join(pieces))` where
    each piece starts; a piece that starts inside a character gets that character's offset.

    Offsets are counted by decoding incrementally: a character is counted once its last byte has arrived, so the
    characters before piece i are exactly those decoded before it. Where the bytes are invalid UTF-8 (U+FFFD in
    the text) an offset may point at that U+FFFD rather than the character after it.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    offsets, chars = [], 0
    for piece in pieces:
        offsets.append(chars)
        chars += len(decoder.decode(piece))
    return offsets
