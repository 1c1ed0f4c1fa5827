"""From a text continuer to a chat model: special tokens, one template, the loss mask, SFT (chapter 08).

**The template** (:func:`render_conversation`, the only place that lays a conversation out)::

    <|endoftext|><|user|>Who says "To be"?<|end|><|assistant|>Hamlet<|end|><|user|>...

``<|endoftext|>`` opens it, as it opened every document in pretraining; each
message is its role token, its text, ``<|end|>``. To ask for a reply, the prompt
ends with ``<|assistant|>`` and generation stops at ``<|end|>``.

**Special tokens** are new ids after the trained tokenizer's own
(:class:`ChatTokenizer`). ``encode`` refuses text that contains them unless told
``allowed_special="all"``, and message text is always encoded with
:meth:`ChatTokenizer.encode_ordinary`, where ``"<|end|>"`` typed by a user is just
characters: nobody can close a turn or speak as the assistant by typing.
:func:`add_chat_tokens` grows the embedding matrix to match
(:func:`resize_token_embeddings`): the old rows are kept exactly, the new ones start
at the mean of the old rows (so the new tokens start as an "average" token, neither
dominating the softmax nor impossible), and the output head stays tied to it.

**Loss on the assistant's tokens only**: the mask marks the tokens the model must
learn to *produce* (each assistant text and its closing ``<|end|>``, so it learns to
stop); every other target is :data:`IGNORE` (-1, which our GPT's cross-entropy skips,
model/gpt.py; Hugging Face models use -100 for the same). The mask changes targets only,
so a step costs exactly one forward and one backward pass, as in pretraining.

**Batching**: one conversation per row, right-padded to ``block_size``. The model
has no attention-mask input, and causal attention never looks to the right, so
padding cannot change the real positions and no conversation can see another
(packing several per row would need a block-diagonal mask). Every batch has
pretraining's shape, so a step costs the same.

:func:`sft` trains with :func:`~minigpt_helpers.training.train`, the same loop as
pretraining (checkpoints, resume, live plot, Ctrl-C); ``lora=...`` trains LoRA
adapters instead of every weight, and ``callback=EarlyStopping(patience)`` stops it
once the validation loss stops improving. :class:`ChatSession` and :func:`chat_reply`
generate with ``generation.generate_ids`` and stop at the end of the turn.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.batching import encode_text
from ..model.generation import generate_ids, stream_text
from ..tokenizers.base import EOT, Tokenizer, check_special, load_tokenizer
from ..training.examples import IGNORE, ExampleSource

ROLES = ("system", "user", "assistant")
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
END = "<|end|>"
#: The chat tokens, in the order their ids follow the base tokenizer's.
CHAT_TOKENS = (*ROLE_TOKENS.values(), END)
FORMAT_HINT = 'a conversation is a list of {"role": "user" | "assistant" | "system", "content": "..."} messages'


# ------------------------------------------------------------------------------ the tokenizer
class ChatTokenizer(Tokenizer):
    """A trained tokenizer plus special tokens (``CHAT_TOKENS``), whose ids come after the base ones.

    Saved as a folder with the base tokenizer in ``base/``; ``load_tokenizer`` reads it back.
    """

    type_name = "chat"

    def __init__(self, base: Tokenizer, special_tokens: Sequence[str] = CHAT_TOKENS) -> None:
        if isinstance(base, ChatTokenizer):
            raise ValueError("this tokenizer has chat tokens already: use it as it is")
        special_tokens = list(special_tokens)
        if len(set(special_tokens)) != len(special_tokens) or EOT in special_tokens or not all(special_tokens):
            raise ValueError(f"special tokens must be distinct non-empty strings other than {EOT}, got {special_tokens}")
        self.base = base
        self.special_tokens = special_tokens
        self.special_ids = {t: base.vocab_size + i for i, t in enumerate(special_tokens)}
        self._id_to_special = {i: t for t, i in self.special_ids.items()}
        self.eot_id = base.eot_id
        self.vocab_size = base.vocab_size + len(special_tokens)
        self._all = {EOT: base.eot_id, **self.special_ids}
        self._split = re.compile("(" + "|".join(map(re.escape, sorted(self._all, key=len, reverse=True))) + ")")

    @property
    def stop_ids(self) -> list[int]:
        """The ids that end an assistant's turn: ``<|endoftext|>`` and every chat token (normally ``<|end|>``)."""
        return [self.eot_id, *self.special_ids.values()]

    def reply_text(self, ids: Sequence[int]) -> str:
        """The text of a generated reply's ``ids``, without the token that ended the turn (if one did)."""
        ids = list(ids)
        return self.decode(ids[:-1] if ids and ids[-1] in self.stop_ids else ids)

    def token_id(self, token: str) -> int:
        """The id of a special token (``"<|end|>"``...) or of ``<|endoftext|>``."""
        if token not in self._all:
            raise ValueError(f"{token!r} is not a special token of this tokenizer: {list(self._all)}")
        return self._all[token]

    def encode(self, text: str, allowed_special: str = "none") -> list[int]:
        """Ids of ``text``; special-token strings in it are refused unless ``allowed_special="all"``."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}")
        check_special("", allowed_special)  # validates allowed_special
        found = self._split.search(text)
        if found is None:
            return self.base.encode(text)
        if allowed_special == "none":
            raise ValueError(f"text contains the special token {found.group()}; pass allowed_special=\"all\" to "
                             "encode special tokens as their ids (for text you wrote, never for a user's), or "
                             "use encode_ordinary() to encode them as plain characters")
        ids: list[int] = []
        for part in self._split.split(text):  # the capturing group keeps the special tokens as parts
            if part in self._all:
                ids.append(self._all[part])
            elif part:
                ids += self.base.encode(part)
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text`` with every special-token string in it encoded as plain characters."""
        return encode_text(self.base, text)

    _encode_ordinary = encode_ordinary

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids out of range for vocab_size {self.vocab_size}: {bad[:5]}")
        out, run = [], []
        for i in ids:
            if i in self._id_to_special:
                out.append(self.base.decode(run) + self._id_to_special[i])
                run = []
            else:
                run.append(i)
        return "".join(out) + self.base.decode(run)

    _decode_ordinary = decode

    def _to_config(self, directory: Path) -> dict[str, Any]:
        self.base.save(directory / "base")
        return {"base": "base", "special_tokens": self.special_tokens}

    @classmethod
    def _from_config(cls, config: dict[str, Any], directory: Path) -> ChatTokenizer:
        return cls(load_tokenizer(directory / config.get("base", "base")), config["special_tokens"])

    @property
    def chat_template(self) -> str:
        """The Jinja template of :func:`chat_template`: ``interop.save.save_hf`` stores it with the tokenizer."""
        return chat_template()

    def __repr__(self) -> str:
        return f"ChatTokenizer({self.base!r} + {self.special_tokens})"


# ------------------------------------------------------------------------------ the embedding matrix
@torch.no_grad()
def resize_token_embeddings(model: nn.Module, vocab_size: int) -> nn.Module:
    """Grow a GPT's token embedding (and its tied output head) to ``vocab_size`` rows.

    Old rows are copied exactly; new rows are the mean of the old ones. The head
    stays tied (one matrix), and ``model.config.vocab_size`` follows.
    """
    wte = model.transformer.wte
    old = wte.weight
    n_old, width = old.shape
    if vocab_size < n_old:
        raise ValueError(f"the model has {n_old} token rows already; shrinking to {vocab_size} would drop tokens")
    tied = model.lm_head.weight is old
    if vocab_size == n_old:
        return model
    new = nn.Embedding(vocab_size, width, device=old.device, dtype=old.dtype)
    new.weight[:n_old] = old
    new.weight[n_old:] = old.mean(0)
    new.weight.requires_grad_(old.requires_grad)
    model.transformer.wte = new
    head = nn.Linear(width, vocab_size, bias=False, device=old.device, dtype=old.dtype)
    if tied:
        head.weight = new.weight
    else:
        head.weight[:n_old] = model.lm_head.weight
        head.weight[n_old:] = model.lm_head.weight.mean(0)
    model.lm_head = head
    model.config.vocab_size = vocab_size
    return model


def add_chat_tokens(model: nn.Module) -> nn.Module:
    """Give ``model`` (a GPT with its trained tokenizer attached) the chat tokens; returns it.

    Wraps ``model.tokenizer`` in a :class:`ChatTokenizer` and resizes the embedding
    (:func:`resize_token_embeddings`). A model that has them already is returned as is.
    """
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError("model.tokenizer is None: attach the tokenizer the model was trained with first")
    if isinstance(tok, ChatTokenizer):
        return model
    chat = ChatTokenizer(tok)
    if model.config.vocab_size >= chat.vocab_size:  # spare rows (a vocabulary rounded up): start them at the mean
        with torch.no_grad():
            w = model.transformer.wte.weight
            w[tok.vocab_size: chat.vocab_size] = w[: tok.vocab_size].mean(0)
    else:
        resize_token_embeddings(model, chat.vocab_size)
    model.tokenizer = chat
    return model


def _chat_tokenizer(tokenizer: Any) -> ChatTokenizer:
    if not isinstance(tokenizer, ChatTokenizer):
        raise ValueError("the tokenizer has no chat tokens: call add_chat_tokens(model) first "
                         "(then use model.tokenizer)")
    return tokenizer


# ------------------------------------------------------------------------------ the template
def check_messages(messages: Any, where: str = "the conversation") -> list[dict[str, str]]:
    """``messages`` (or a ``{"messages": [...]}`` row) as a clean list of {"role", "content"}; else a ValueError."""
    if isinstance(messages, dict):
        if "messages" not in messages:
            raise ValueError(f'{where}: a row needs a "messages" field; {FORMAT_HINT}')
        messages = messages["messages"]
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ValueError(f"{where}: expected a non-empty list of messages; {FORMAT_HINT}")
    out = []
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}, message {k}: {str(m)[:80]!r} is not a message; {FORMAT_HINT}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def chat_text(messages: Any, add_generation_prompt: bool = False) -> str:
    """The template as a string (what ``tokenizer.decode`` of :func:`render_conversation`'s ids gives)."""
    text = EOT + "".join(ROLE_TOKENS[m["role"]] + m["content"] + END for m in check_messages(messages))
    return text + (ROLE_TOKENS["assistant"] if add_generation_prompt else "")


def chat_template() -> str:
    """:func:`chat_text` as a Hugging Face chat template (Jinja), for ``tokenizer.apply_chat_template``.

    ``apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`` gives the same string
    as ``chat_text``, and a message with another role, or content that is not a string, raises.
    Tokenizing that string gives :func:`render_conversation`'s ids as long as no message contains a
    special-token string: Hugging Face then reads it as the special token, whereas the course
    encodes message text with ``encode_ordinary``, where it is plain characters.
    """
    roles = json.dumps(ROLE_TOKENS)
    return ("{%- set roles = " + roles + " -%}{{- " + json.dumps(EOT) + " -}}"
            "{%- for message in messages -%}"
            "{%- if message['role'] not in roles or message['content'] is not string -%}"
            "{{- raise_exception(" + json.dumps(FORMAT_HINT) + ") -}}{%- endif -%}"
            "{{- roles[message['role']] + message['content'] + " + json.dumps(END) + " -}}"
            "{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{- " + json.dumps(ROLE_TOKENS["assistant"]) + " -}}{%- endif -%}")


def render_conversation(tokenizer: Any, messages: Any,
                        add_generation_prompt: bool = False) -> tuple[list[int], list[bool]]:
    """(ids, mask) of a conversation; ``mask[i]`` is True for the tokens the assistant produces.

    Those are each assistant message's text and its ``<|end|>``; the role tokens,
    the user's and system's text and ``<|endoftext|>`` are given, never learned.
    Message text is encoded with ``encode_ordinary``: a special-token string in it
    stays plain text. ``add_generation_prompt`` appends ``<|assistant|>`` (a prompt).
    """
    tok = _chat_tokenizer(tokenizer)
    ids, mask = [tok.eot_id], [False]
    end = tok.token_id(END)
    for m in check_messages(messages):
        content = tok.encode_ordinary(m["content"])
        mine = m["role"] == "assistant"
        ids += [tok.token_id(ROLE_TOKENS[m["role"]]), *content, end]
        mask += [False] + [mine] * (len(content) + 1)
    if add_generation_prompt:
        ids.append(tok.token_id(ROLE_TOKENS["assistant"]))
        mask.append(False)
    return ids, mask


def parse_conversation(tokenizer: Any, ids: Sequence[int]) -> list[dict[str, str]]:
    """The messages of ids rendered by :func:`render_conversation` (the inverse; a last open message is kept)."""
    tok = _chat_tokenizer(tokenizer)
    roles = {tok.token_id(t): r for r, t in ROLE_TOKENS.items()}
    end = tok.token_id(END)
    ids = [int(i) for i in ids]
    i = 1 if ids[:1] == [tok.eot_id] else 0
    messages = []
    while i < len(ids):
        if ids[i] not in roles:
            raise ValueError(f"token {i} ({tok.decode([ids[i]])!r}) should open a message with a role token "
                             f"{list(ROLE_TOKENS.values())}: these ids are not a rendered conversation")
        j = ids.index(end, i + 1) if end in ids[i + 1:] else len(ids)
        messages.append({"role": roles[ids[i]], "content": tok.decode(ids[i + 1: j])})
        i = j + 1
    return messages


def mask_spans(tokenizer: Any, ids: Sequence[int], mask: Sequence[bool]) -> list[tuple[str, bool]]:
    """``[(text, trained), ...]``: consecutive tokens with the same mask value, decoded (to show the mask)."""
    spans: list[tuple[list[int], bool]] = []
    for i, m in zip(ids, mask):
        if spans and spans[-1][1] == bool(m):
            spans[-1][0].append(int(i))
        else:
            spans.append(([int(i)], bool(m)))
    return [(tokenizer.decode(s), m) for s, m in spans]


# ------------------------------------------------------------------------------ SFT data
def sft_example(tokenizer: Any, messages: Any, block_size: int) -> tuple[list[int], list[int]] | None:
    """(x, y) of one conversation, cut to ``block_size``: y[t] = ids[t+1] where it is the assistant's, else IGNORE.

    None when no assistant token is left in the first ``block_size + 1`` tokens.
    """
    ids, mask = render_conversation(tokenizer, messages)
    ids, mask = ids[: block_size + 1], mask[: block_size + 1]
    y = [t if m else IGNORE for t, m in zip(ids[1:], mask[1:])]
    return (ids[:-1], y) if any(t != IGNORE for t in y) else None


class SFTCollate:
    """Rows ``(x, y)`` -> tensors (B, block_size): x padded with ``pad_id``, y with IGNORE (one conversation a row)."""

    def __init__(self, block_size: int, pad_id: int) -> None:
        self.block_size, self.pad_id = block_size, pad_id

    def __call__(self, rows: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.full((len(rows), self.block_size), self.pad_id, dtype=torch.long)
        y = torch.full((len(rows), self.block_size), IGNORE, dtype=torch.long)
        for i, (xi, yi) in enumerate(rows):
            x[i, : len(xi)] = torch.tensor(xi, dtype=torch.long)
            y[i, : len(yi)] = torch.tensor(yi, dtype=torch.long)
        return x, y


def sft_source(tokenizer: Any, train: Iterable[Any], validation: Iterable[Any], block_size: int,
               eval_examples: int | None = None) -> ExampleSource:
    """A batch source of conversations for ``train()``; ``.skipped`` counts those with nothing to learn in the window."""
    tok = _chat_tokenizer(tokenizer)
    splits, skipped = [], 0
    for rows in (train, validation):
        examples = []
        for k, row in enumerate(rows):
            ex = sft_example(tok, check_messages(row, f"conversation {k}"), block_size)
            skipped += ex is None
            if ex is not None:
                examples.append(ex)
        splits.append(examples)
    source = ExampleSource(splits[0], splits[1], SFTCollate(block_size, tok.eot_id), eval_examples)
    source.skipped = skipped
    return source


def sft(model: nn.Module, train_conversations: Iterable[Any], val_conversations: Iterable[Any] = (),
        cfg: Any = None, *, out_dir: str | Path | None = None, resume: bool = False,
        lora: dict[str, Any] | bool | None = None, live: str = "auto", callback: Any = None,
        eval_examples: int | None = None):
    """Supervised finetuning of a GPT on conversations, with :func:`train`; returns its TrainResult.

    Adds the chat tokens if the model lacks them. ``lora=True`` (or a dict of
    ``LoRAModel`` settings: r, alpha, targets) trains LoRA adapters, and also the
    new tokens' embedding rows (only those: the other rows get no gradient), since
    frozen, identical rows could not tell ``<|user|>`` from ``<|end|>``. (The
    optimizer then holds the whole embedding matrix, and ``count_parameters``
    counts it, though only those rows move.) The result's ``model`` is then a
    ``LoRAModel``. Conversations whose window holds no assistant token are
    skipped, and the number is printed. ``model`` gets the chat tokens in place.
    """
    from ..training.loop import train
    from .lora import LoRAModel

    add_chat_tokens(model)
    source = sft_source(model.tokenizer, train_conversations, val_conversations, model.config.block_size,
                        eval_examples)
    if source.skipped:
        print(f"[minigpt] sft: {source.skipped} conversation(s) skipped: no assistant token within "
              f"block_size={model.config.block_size} tokens")
    if lora:
        model = LoRAModel(model, **(lora if isinstance(lora, dict) else {}))
        train_rows(model.transformer.wte.weight, range(model.tokenizer.base.vocab_size, model.tokenizer.vocab_size))
    return train(model, source, cfg, out_dir=out_dir, resume=resume, live=live, callback=callback)


def train_rows(weight: nn.Parameter, rows: Iterable[int]) -> None:
    """Let only ``rows`` of a frozen matrix learn: it becomes trainable, other rows' gradients are zeroed.

    With zero gradients AdamW's moments stay zero, so those rows do not move at all
    (embeddings get no weight decay).
    """
    keep = torch.zeros(weight.shape[0], 1, dtype=torch.bool)
    keep[list(rows)] = True
    weight.requires_grad_(True)
    weight.register_hook(lambda grad: grad * keep.to(grad.device))  # the model may move after this


class EarlyStopping:
    """A ``train()`` / ``sft()`` callback: stop when the validation loss has not improved for ``patience`` evaluations.

    An evaluation improves when its loss is below the best so far by more than
    ``min_delta``. Training then ends as after Ctrl-C (``stop_reason == "callback"``,
    a checkpoint of the last step): the model returned is the last one, ``patience``
    evaluations after the best, whose step and loss are :attr:`best_step` and
    :attr:`best_loss`. It reads the history ``train()`` passes, so a resumed run
    counts its earlier evaluations too.
    """

    def __init__(self, patience: int = 3, min_delta: float = 0.0) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1 (evaluations), got {patience!r}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be a number >= 0 (nats), got {min_delta!r}")
        self.patience, self.min_delta = patience, float(min_delta)
        self.best_loss: float | None = None
        self.best_step: int | None = None
        self.since_best = 0  # evaluations since the best one

    def __call__(self, info: dict[str, Any]) -> bool:
        """True (stop) when the last ``patience`` evaluations of ``info["history"]`` all failed to improve."""
        history = info["history"]
        best = None
        for k, loss in enumerate(history.val_losses):
            if best is None or loss < history.val_losses[best] - self.min_delta:
                best = k
        if best is None:  # no evaluation yet
            return False
        self.best_loss, self.best_step = history.val_losses[best], history.val_steps[best]
        self.since_best = len(history.val_losses) - 1 - best
        return self.since_best >= self.patience


# ------------------------------------------------------------------------------ chatting
def _prompt_ids(tok: ChatTokenizer, messages: list[dict[str, str]], block_size: int) -> list[int]:
    """The prompt for the next reply, dropping the oldest messages (a system message stays) until it fits."""
    msgs = list(messages)
    while True:
        ids, _ = render_conversation(tok, msgs, add_generation_prompt=True)
        first = 1 if msgs and msgs[0]["role"] == "system" else 0
        if len(ids) < block_size or len(msgs) <= first + 1:
            return ids[-(block_size - 1):] if len(ids) >= block_size else ids
        del msgs[first]


def chat_reply(model: nn.Module, messages: Any, *, max_new_tokens: int = 200, temperature: float = 0.0,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
               stream: bool = False) -> str | Iterator[str]:
    """The assistant's next message after ``messages`` (greedy by default); stops at the end of its turn.

    Any special token ends the turn (normally ``<|end|>``) and is not part of the
    reply. ``stream=True`` gives the text in pieces as they form.
    """
    tok = _chat_tokenizer(getattr(model, "tokenizer", None))
    ids = _prompt_ids(tok, check_messages(messages), model.config.block_size)
    stop = tok.stop_ids
    new = generate_ids(model, ids, max_new_tokens, temperature, top_k, top_p, seed, True, stop)
    ends = set(stop)
    pieces = stream_text(tok, itertools.takewhile(lambda i: i not in ends, new), prompt_ids=ids)  # the end: not text
    return pieces if stream else "".join(pieces)


class ChatSession:
    """A multi-turn conversation with a chat model: :meth:`send` a message, get the reply; :meth:`reset`."""

    def __init__(self, model: nn.Module, system: str | None = None, **sampling: Any) -> None:
        _chat_tokenizer(getattr(model, "tokenizer", None))
        self.model, self.system, self.sampling = model, system, sampling
        self.messages: list[dict[str, str]] = []
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (the system message, if any, stays)."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def send(self, text: str, stream: bool = False) -> str | Iterator[str]:
        """Add the user's ``text`` and return the reply (pieces if ``stream``); the reply joins the history."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("empty message: type some text")
        self.messages.append({"role": "user", "content": text})
        pieces = chat_reply(self.model, self.messages, stream=True, **self.sampling)
        return self._record(pieces) if stream else "".join(self._record(pieces))

    def _record(self, pieces: Iterator[str]) -> Iterator[str]:
        said = []
        try:
            for p in pieces:
                said.append(p)
                yield p
        finally:  # also when the caller stops early (Ctrl-C): the history keeps what was said
            self.messages.append({"role": "assistant", "content": "".join(said)})


def load_chat_model(path: str | Path, device: str | torch.device | None = None) -> nn.Module:
    """A chat model from a checkpoint (or training folder) written by :func:`sft`; LoRA adapters merged in.

    Raises a ValueError naming the fix for a checkpoint without chat tokens.
    """
    from ..training.checkpoint import find_checkpoint, load_checkpoint
    from .lora import LoRAModel, read_adapter_config

    if Path(path).is_file():
        raise NotADirectoryError(f"{path} is a file: pass the checkpoint folder that holds it")
    ckpt = find_checkpoint(path)
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {path}: expected model.safetensors + config.json there, "
                                "or a folder written by sft(..., out_dir=...)")
    if read_adapter_config(ckpt) is not None:
        model = LoRAModel.load(ckpt, device=device).merge_and_unload()
    else:
        model = load_checkpoint(ckpt, device=device)
    if not isinstance(model.tokenizer, ChatTokenizer):
        raise ValueError(f"{ckpt} has no chat tokens ({', '.join(CHAT_TOKENS)}): it continues text but was never "
                         "finetuned to chat; finetune it first with minigpt_helpers.sft(model, conversations, "
                         "out_dir=...) (chapter 08)")
    return model.eval()
