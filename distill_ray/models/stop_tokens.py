"""Which tokens end a completion: the tokenizer's eos, the model's generation-config eos list, and the chat
template's end-of-turn token.

Chat models often end an assistant turn with a token that is not the tokenizer's eos (`<|im_end|>` where eos is
`<|endoftext|>`, Llama 3's `<|eot_id|>`, Gemma's `<end_of_turn>`, Phi-3's `<|end|>`), and not every model
folder lists it in its generation config. A sampler that stops only at eos then runs past the end of the turn
into a made-up next turn, which GRPO rewards and trains on and the teacher service returns. transformers'
`generate` stops where the generation config says, and no library reads the end-of-turn token off the
template, so it is found here: render one finished assistant turn and take the control token right after it.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_MARK = "Qx7rEndOfTurnProbe"  # a reply no tokenizer merges with its neighbours or with a control token


def end_of_turn_id(tokenizer) -> int | None:
    """The control token the chat template writes right after an assistant message's content, or None (no
    template, nothing after the content, or what follows is ordinary text rather than a special / added token)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _MARK}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # noqa: BLE001 - a template may refuse this shape; then it names no end-of-turn token
        log.debug("the chat template could not render a finished assistant turn", exc_info=True)
        return None
    if _MARK not in text:
        return None
    after = text[text.rindex(_MARK) + len(_MARK) :].lstrip()
    if not after:
        return None
    first = tokenizer(after, add_special_tokens=False)["input_ids"][:1]
    if not first:
        return None
    control = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    return int(first[0]) if first[0] in control else None


def stop_token_ids(tokenizer, generation_config=None) -> set[int]:
    """Ids that end a completion: eos, the generation config's eos id(s), the template's end-of-turn token.
    Raises ValueError when there is none (a completion could then only end at its length limit)."""
    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    turn_end = end_of_turn_id(tokenizer)
    if turn_end is not None:
        ids.add(turn_end)
    if not ids:
        raise ValueError("the tokenizer has no eos_token_id and its chat template no end-of-turn token")
    return ids
