"""Conversations through a tokenizer's chat template: training tokens with assistant-only labels, prompts to answer.

The template is the tokenizer's own (`apply_chat_template`). A tokenizer without one gets a ChatML-like
template (`ensure_chat_template`), saved with it (`chat_template.jinja`), so that a converted model folder
chats through `transformers.pipeline("text-generation")` as it is.

Labels are -100 everywhere but on the assistant turns, their end-of-turn token included (what the model
must learn to say, and to stop). Where the template marks assistant text with `{% generation %}`,
transformers' `return_assistant_tokens_mask` finds it. Most shipped templates (SmolLM2's, Llama 3's) have
no such marks: each assistant turn is then located by rendering the conversation before it with the
generation prompt and through it, which must be prefixes of the whole rendering (they are for every
template that renders turn by turn; one that does not is refused, never guessed at). Both ways mark the
tokens that overlap the turn's characters, as transformers does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
"""Label of a token that carries no loss (the loss functions of transformers skip it)."""

TURN_START, TURN_END = "<|im_start|>", "<|im_end|>"
"""ChatML's turn markers: added as special tokens to a tokenizer trained from scratch."""

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""ChatML with the assistant turns marked for `return_assistant_tokens_mask`."""

_GENERATION_MARK = re.compile(r"\{%-?\s*generation\s*-?%\}")


class ChatTemplateError(ValueError):
    """A tokenizer whose chat template cannot locate the assistant turns (or that has none)."""


class ConversationError(ValueError):
    """A conversation that cannot be trained on as it is; the message never quotes its text."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        """`control_token` or `no_answer_tokens`: the report's drop reason."""


@dataclass(frozen=True)
class TokenizedConversation:
    input_ids: list[int]
    labels: list[int]
    """input_ids on assistant tokens, IGNORE_INDEX elsewhere."""
    turns: list[tuple[int, int]]
    """[start, end) token range of each assistant turn, in order."""


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase, add_tokens: bool) -> list[str]:
    """Give a tokenizer without a chat template the ChatML-like one; returns the special tokens it added.

    `add_tokens` adds `<|im_start|>` and `<|im_end|>` as special tokens: right for a tokenizer trained from
    scratch, before the model is built (its embedding is sized to `len(tokenizer)`). A base model's tokenizer
    must not grow past its embedding: without `add_tokens` it needs the two tokens already.
    """
    if tokenizer.chat_template:
        return []
    vocab = tokenizer.get_vocab()
    missing = [token for token in (TURN_START, TURN_END) if token not in vocab]
    if missing and not add_tokens:
        raise ChatTemplateError(
            f"the tokenizer has no chat template and lacks the tokens {missing} of the default one; "
            "give instruct.chat_template a Jinja template written with the tokenizer's own tokens"
        )
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    tokenizer.chat_template = CHATML_TEMPLATE
    return missing


def use_template_file(tokenizer: PreTrainedTokenizerBase, path: str | Path) -> None:
    """instruct.chat_template: the tokenizer's template replaced by a Jinja file's (saved with it)."""
    try:
        tokenizer.chat_template = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ChatTemplateError(f"instruct.chat_template = {str(path)!r}: cannot read it ({exc})") from None


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict], generation_prompt: bool = False) -> str:
    if not tokenizer.chat_template:
        raise ChatTemplateError("the tokenizer has no chat template; call ensure_chat_template first")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def control_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The special tokens' text: in a message it would be read as the token itself (a forged turn)."""
    added = [token.content for token in tokenizer.added_tokens_decoder.values() if token.special]
    return sorted(set(tokenizer.all_special_tokens) | set(added))


def check_messages(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> None:
    """ConversationError when a message holds a control token's text (`<|im_end|>` typed into an answer)."""
    tokens = control_tokens(tokenizer)
    for number, message in enumerate(messages, start=1):
        found = next((token for token in tokens if token in message["content"]), None)
        if found is not None:
            raise ConversationError(
                "control_token",
                f"message {number} ({message['role']}) holds the tokenizer's control token {found}, which would "
                "forge a turn boundary",
            )


def _first_token(encoding, start: int, end: int) -> int | None:
    """The token holding the first character in [start, end) that belongs to a token."""
    for char in range(start, end):
        token = encoding.char_to_token(char)
        if token is not None:
            return token
    return None


def _last_token(encoding, start: int, end: int) -> int | None:
    for char in range(end - 1, start - 1, -1):
        token = encoding.char_to_token(char)
        if token is not None:
            return token
    return None


def _assistant_char_spans(tokenizer: PreTrainedTokenizerBase, messages: list[dict], full: str) -> list[tuple[int, int]]:
    """Each assistant turn's characters in `full`: after the generation prompt, through its end-of-turn text."""
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:index], generation_prompt=True)
        through = _render(tokenizer, messages[: index + 1])
        if not (through.startswith(before) and full.startswith(through)):
            raise ChatTemplateError(
                "the tokenizer's chat template does not render a conversation turn by turn (the text before "
                f"assistant turn {index + 1} with the generation prompt is not a prefix of the whole), so the "
                "assistant tokens cannot be located; give instruct.chat_template a template with {% generation %} "
                "marks around the assistant text"
            )
        # The turn's own text ends with its end-of-turn token; the line break after it belongs to the layout.
        spans.append((len(before), len(before) + len(through[len(before) :].rstrip())))
    return spans


def marks_assistant_turns(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the template wraps assistant text in `{% generation %}` (else turns are located by prefixes)."""
    return _GENERATION_MARK.search(tokenizer.chat_template or "") is not None


def tokenize_conversation(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> TokenizedConversation:
    """Token ids of a whole conversation and labels that keep only the assistant turns."""
    check_messages(tokenizer, messages)
    if marks_assistant_turns(tokenizer):
        out = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
        turns = _runs(mask)
    else:
        full = _render(tokenizer, messages)
        encoding = tokenizer(full, add_special_tokens=False)
        ids, turns = list(encoding["input_ids"]), []
        for start, end in _assistant_char_spans(tokenizer, messages, full):
            first, last = _first_token(encoding, start, end), _last_token(encoding, start, end)
            if first is not None and last is not None:
                turns.append((first, last + 1))
        mask = [0] * len(ids)
        for first, stop in turns:
            mask[first:stop] = [1] * (stop - first)
    if not turns:
        raise ConversationError("no_answer_tokens", "no assistant tokens: the conversation has nothing to learn")
    labels = [token if keep else IGNORE_INDEX for token, keep in zip(ids, mask, strict=True)]
    return TokenizedConversation(ids, labels, turns)


def _runs(mask: list[int]) -> list[tuple[int, int]]:
    runs, start = [], None
    for position, flag in enumerate([*mask, 0]):
        if flag and start is None:
            start = position
        elif not flag and start is not None:
            runs.append((start, position))
            start = None
    return runs


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    """Token ids of a conversation so far with the generation prompt: what the model answers."""
    check_messages(tokenizer, messages)
    return list(tokenizer(_render(tokenizer, messages, generation_prompt=True), add_special_tokens=False)["input_ids"])


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token that closes an assistant turn (`<|im_end|>`, `<|eot_id|>`): where generation stops."""
    sample = [{"role": "user", "content": "?"}, {"role": "assistant", "content": "x"}]
    tokenized = tokenize_conversation(tokenizer, sample)
    first, stop = tokenized.turns[-1]
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    closing = [token for token in tokenized.input_ids[first:stop] if token in special]
    if not closing:
        raise ChatTemplateError(
            "the chat template ends an assistant turn with no special token, so generation cannot stop at it; "
            "give instruct.chat_template a template that closes assistant turns with one"
        )
    return closing[-1]


def chat_stop_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids that end a generated answer: the end-of-turn token, and the tokenizer's EOS when different.

    For the converted folder's `generation_config.eos_token_id`, so that `pipeline` stops at the turn's end.
    """
    ids = [end_of_turn_id(tokenizer)]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids
