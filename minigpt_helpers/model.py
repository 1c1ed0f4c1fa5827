"""The GPT model: configuration, blocks, and the full network (chapter 04).

Written in the spirit of nanoGPT's model.py and laid out exactly like GPT-2
(``transformer.wte/wpe/h.N.ln_1/attn.c_attn/...``), so that converting to and from
Hugging Face's ``GPT2LMHeadModel`` is a renaming plus a transpose (see hf_interop.py).

    idx (B, T) --wte + wpe--> x (B, T, C) --n_layer x Block--> ln_f --lm_head--> logits (B, T, V)

Each Block is pre-LayerNorm: ``x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))``. The
residual stream x is never normalised in place, which keeps gradients flowing through
deep stacks. The language-model head shares its weight with the token embedding
("weight tying"): fewer parameters, and a better model at small sizes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import ATTN_IMPLS, CausalSelfAttention, KVCache

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"


@dataclass
class GPTConfig:
    """Shape of a GPT. Validated on construction so mistakes fail here, not deep in a matmul.

    vocab_size  number of token ids the model reads and predicts
    block_size  longest context (number of positions) the model can attend over
    n_layer     number of transformer blocks
    n_head      attention heads per block; n_embd must be divisible by it
    n_embd      width of the residual stream (C)
    dropout     dropout probability (0 for small data / fine-tuning is often best)
    bias        biases in Linear and LayerNorm layers (GPT-2: True)
    attn_impl   "sdpa" (fused kernel) or "manual" (explicit softmax(qk^T/sqrt(d))v)
    """

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True
    attn_impl: str = "sdpa"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                f"choose n_embd = n_head * head_dim, e.g. n_embd={self.n_head * max(1, self.n_embd // self.n_head)}"
            )
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {self.dropout!r}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias must be True or False, got {self.bias!r}")
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {self.attn_impl!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GPTConfig keys {sorted(unknown)}; known keys are {sorted(known)}")
        return cls(**d)


def damaged_checkpoint_fix(directory: str | Path) -> str:
    """What to do about a damaged checkpoint folder: the end of every such error message."""
    return (f"delete the folder {directory} and use the previous checkpoint (load_checkpoint and "
            "`train --resume` pick the newest complete one), or copy or save it again")


def _more(names: list[str]) -> str:
    return f" (and {len(names) - 1} more)" if len(names) > 1 else ""


class MLP(nn.Module):
    """Position-wise feed-forward: widen 4x, GELU, project back. Where most parameters live."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # GPT-2 uses the tanh approximation of GELU ("gelu_new" in transformers); matching
        # it is what lets our logits agree with Hugging Face's to fp32 precision.
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """One transformer block: pre-LayerNorm attention and MLP, each added to the residual stream."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, layer_idx: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache=kv_cache, layer_idx=layer_idx)  # tokens talk to each other
        x = x + self.mlp(self.ln_2(x))  # each token thinks on its own
        return x


class GPT(nn.Module):
    """A decoder-only transformer language model with GPT-2's architecture and initialisation."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT expects a GPTConfig, got {type(config).__name__}; use GPT(GPTConfig(...))")
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
                wpe=nn.Embedding(config.block_size, config.n_embd),  # position embeddings
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying: one matrix, two uses
        self.tokenizer = None  # attached by checkpoint loading; a plain attribute, not saved in state_dict
        self.apply(self._init_weights)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2 * n_layer)
        # (two per block), so the stream's variance does not grow with depth at initialisation.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> (logits (B, T, vocab_size), loss or None).

        With ``targets`` (B, T) the loss is the mean cross-entropy over all positions;
        positions whose target is -1 are ignored (padding). With ``kv_cache`` the tokens
        are taken to sit at positions ``cache.pos .. cache.pos+T-1``; their keys/values
        are appended to the cache and ``cache.pos`` advances by T.
        """
        if idx.dim() != 2:
            raise ValueError(f"idx must be (batch, time) token ids, got shape {tuple(idx.shape)}; use idx[None] for one sequence")
        B, T = idx.shape
        start = 0
        if kv_cache is not None:
            kv_cache.check_room(B, T)
            start = kv_cache.pos
        elif T > self.config.block_size:
            raise ValueError(
                f"sequence length {T} exceeds block_size {self.config.block_size}: "
                f"crop the input to its last {self.config.block_size} tokens (idx[:, -block_size:])"
            )
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, kv_cache=kv_cache, layer_idx=i)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B, T, vocab_size)
        if kv_cache is not None:
            kv_cache.advance(T)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def set_attn_impl(self, impl: str) -> None:
        """Switch every attention layer to "sdpa" or "manual" (same outputs, different kernels)."""
        for block in self.transformer.h:
            block.attn.set_attn_impl(impl)
        self.config.attn_impl = impl

    def new_kv_cache(self, batch_size: int = 1) -> KVCache:
        """An empty KV cache for ``batch_size`` sequences of up to block_size tokens, on the model's device/dtype."""
        c = self.config
        p = self.transformer.wte.weight
        return KVCache(c.n_layer, batch_size, c.n_head, c.head_dim, c.block_size, device=p.device, dtype=p.dtype)

    # ------------------------------------------------------------------ accounting

    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    def num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters (the tied wte/lm_head matrix counted once).

        ``non_embedding=True`` leaves out the position embeddings, as nanoGPT and the
        scaling-law papers do; the token embedding stays in because it is also the
        output layer.
        """
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a shared tensor once
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self) -> int:
        """Forward + backward FLOPs per token of a full block_size sequence: 6N + 12*L*H*Q*T.

        6N: each parameter does one multiply-add (2 FLOPs) forward and two backward.
        12*L*H*Q*T: the attention scores and the weighted sum of values, which grow with
        the context length T (PaLM paper, appendix B; nanoGPT's estimate_mfu).
        """
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * c.n_head * c.head_dim * c.block_size

    # ------------------------------------------------------------------ save / load

    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (and ``tokenizer/`` if one is attached).

        safetensors stores plain tensors, never pickled code, so a checkpoint from a
        stranger cannot run anything when loaded. The tied wte/lm_head matrix is stored once.
        """
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "library": "minigpt_helpers"})
        (directory / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n", encoding="utf-8")
        if self.tokenizer is not None:
            self.tokenizer.save(directory / TOKENIZER_DIR)
        return directory

    @classmethod
    def check_saved(cls, directory: str | Path) -> GPTConfig:
        """The GPTConfig of a folder written by :meth:`save`, checked against its weights file.

        Reads ``config.json`` and only the header of ``model.safetensors`` (names and
        shapes, no tensor data), so it is cheap. A damaged or mismatched checkpoint
        fails here with a ValueError that names the file and the fix, instead of a
        raw safetensors or ``load_state_dict`` error (or a shape error deep in a matmul).
        """
        from safetensors import SafetensorError, safe_open

        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} not found: expected a directory written by GPT.save()")
        fix = damaged_checkpoint_fix(directory)
        try:
            config = GPTConfig.from_dict(json.loads(cfg_path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_path} is not valid JSON ({e}): the checkpoint is damaged; {fix}") from None
        except (ValueError, TypeError) as e:  # UnicodeDecodeError included: it is a ValueError
            raise ValueError(f"{cfg_path} does not describe a GPTConfig ({e}); {fix}") from None
        try:
            with safe_open(str(w_path), framework="pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except SafetensorError as e:
            raise ValueError(f"{w_path} is damaged ({e}): the file was cut short, or is not a safetensors "
                             f"file; {fix}") from None
        with torch.device("meta"):  # shapes only: no memory, no initialisation work
            expected = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
        tied = ("lm_head.weight", "transformer.wte.weight")  # stored once (weight tying)
        for a, b in (tied, tied[::-1]):
            if a not in shapes and b in shapes:
                shapes[a] = shapes[b]
        wrong = [k for k in expected if k in shapes and shapes[k] != expected[k]]
        missing = [k for k in expected if k not in shapes]
        extra = [k for k in shapes if k not in expected]
        if wrong or missing or extra:
            if wrong:
                k = wrong[0]
                detail = f"{k} has shape {list(shapes[k])} in the weights but {list(expected[k])} by the config"
            elif missing:
                detail = f"the config needs {missing[0]}{_more(missing)}, which the weights lack"
            else:
                detail = f"the weights hold {extra[0]}{_more(extra)}, which the config has no place for"
            raise ValueError(f"{w_path} does not match {cfg_path} ({detail}): the two files come from different "
                             f"models; {fix}")
        return config

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device | None = None) -> GPT:
        """Rebuild a model saved with :meth:`save` (weights, config and tokenizer if present).

        The files are checked first (:meth:`check_saved`): a damaged or mismatched
        checkpoint raises a ValueError naming it and the fix.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_model

        directory = Path(directory)
        config = cls.check_saved(directory)
        model = cls(config)
        device = torch.device(device) if device is not None else torch.device("cpu")
        model.to(device)
        try:
            load_model(model, str(directory / WEIGHTS_FILE), strict=True, device=str(device))
        except (SafetensorError, RuntimeError) as e:  # e.g. a file changed after the check
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{directory / WEIGHTS_FILE} could not be loaded ({first}); "
                             f"{damaged_checkpoint_fix(directory)}") from e
        if (directory / TOKENIZER_DIR).exists():
            from .tokenizer import load_tokenizer  # another chapter's module; imported only when needed

            model.tokenizer = load_tokenizer(directory / TOKENIZER_DIR)
        return model

    # ------------------------------------------------------------------ Hugging Face

    def to_hf(self, **kwargs):
        """A ``transformers.GPT2LMHeadModel`` with the same weights (see hf_interop.to_hf)."""
        from .hf_interop import to_hf

        return to_hf(self, **kwargs)

    @classmethod
    def from_hf(cls, hf_model) -> GPT:
        """Build our GPT from a ``transformers.GPT2LMHeadModel`` (see hf_interop.from_hf)."""
        from .hf_interop import from_hf

        return from_hf(hf_model)
