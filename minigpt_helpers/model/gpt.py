"""The GPT model: configuration, blocks, and the full network (chapter 04; modern options: chapter 07).

Written in the spirit of nanoGPT's model.py and laid out exactly like GPT-2
(``transformer.wte/wpe/h.N.ln_1/attn.c_attn/...``), so that converting to and from
Hugging Face's ``GPT2LMHeadModel`` is a renaming plus a transpose (see interop/gpt2.py).

    idx (B, T) --wte + wpe--> x (B, T, C) --n_layer x Block--> ln_f --lm_head--> logits (B, T, V)

Each Block is pre-LayerNorm: ``x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))``. The
residual stream x is never normalised in place, which keeps gradients flowing through
deep stacks. The language-model head shares its weight with the token embedding
("weight tying"): fewer parameters, and a better model at small sizes.

Chapter 07 adds the changes between GPT-2 (2019) and today's small open models, each a
``GPTConfig`` option that is off by default (so chapters 03-06 and their checkpoints are
unchanged): rotary positions, RMSNorm, SwiGLU / ReLU² MLPs, grouped-query attention,
QK-norm, untied embeddings, zero-initialised output projections and a logit soft-cap.
With ``rope_theta``, ``norm="rmsnorm"``, ``mlp="swiglu"`` and ``n_kv_head`` the model is a
Llama (and with ``qk_norm`` a Qwen3): interop/llama.py converts it both ways. The pieces
live in layers.py (norms, RoPE, MLPs) and attention.py (GQA, QK-norm).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import ATTN_IMPLS, CausalSelfAttention, KVCache, SlotKVCache
from .layers import MLP, RMSNorm, Rotary, check_modern_options, make_norm

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"


@dataclass
class GPTConfig:
    """Shape of a GPT. Validated on construction so mistakes fail here, not deep in a matmul.

    vocab_size  number of token ids the model reads and predicts
    block_size  longest context (number of positions) the model can attend over
    n_layer     number of transformer blocks
    n_head      attention heads per block; n_embd must be divisible by it (unless head_size is set)
    n_embd      width of the residual stream (C)
    dropout     dropout probability (0 for small data / fine-tuning is often best)
    bias        biases in Linear and LayerNorm layers (GPT-2: True; Llama, Qwen3: False)
    attn_impl   "sdpa" (fused kernel) or "manual" (explicit softmax(qk^T/sqrt(d))v)

    The modern options (chapter 07). Each is off by default, which is GPT-2:

    rope_theta      None: learned absolute positions (GPT-2's ``wpe``). A number: rotary
                    position embeddings with that base instead (Su et al. 2021, "RoFormer";
                    Llama uses 10000 or 500000, SmolLM2 100000). q and k are rotated by
                    angles proportional to their positions, so scores depend on offsets only.
    norm            "layernorm" (GPT-2) or "rmsnorm" (Zhang & Sennrich 2019: no mean, no bias)
    norm_eps        epsilon of every norm (GPT-2 1e-5; Llama/SmolLM2 1e-5, Qwen3 1e-6)
    mlp             "gelu" (GPT-2), "swiglu" (Shazeer 2020, "GLU Variants Improve Transformer";
                    Llama, Qwen) or "relu2" (ReLU squared: So et al. 2021, "Primer"; nanochat)
    mlp_hidden      the MLP's hidden width; None = 4 * n_embd for gelu/relu2, and for swiglu
                    2/3 * 4 * n_embd rounded up to a multiple of 8, so the parameters match the
                    GELU MLP as in Llama (layers.swiglu_hidden; 1536 for n_embd 576)
    n_kv_head       key/value heads (Ainslie et al. 2023, "GQA"): None = n_head (multi-head),
                    1 = multi-query attention (Shazeer 2019, "Fast Transformer Decoding");
                    must divide n_head. The KV cache shrinks by n_head / n_kv_head.
    qk_norm         RMS-normalise each head's queries and keys (Henry et al. 2020, "Query-Key
                    Normalization for Transformers"; Dehghani et al. 2023; Qwen3, OLMo 2):
                    bounded attention logits, which tolerate higher learning rates
    tie_embeddings  share the token embedding with the output head (GPT-2: True). False: a
                    separate lm_head (Llama 2+, large models, modded-nanogpt, nanochat)
    zero_init_proj  initialise the projections that write into the residual stream
                    (attn.c_proj, mlp.c_proj) and an untied lm_head to zero, so every block
                    starts as the identity (as modded-nanogpt and nanochat do; cf. Fixup,
                    Zhang et al. 2019, and ReZero, Bachlechner et al. 2020)
    logit_softcap   None: off. A number c: logits = c * tanh(logits / c), which bounds them
                    smoothly to (-c, c) (Gemma 2, 2024; modded-nanogpt uses 15-30)
    head_size       size of each attention head; None = n_embd // n_head (Qwen3 sets it apart)
    """

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True
    attn_impl: str = "sdpa"
    rope_theta: float | None = None
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    mlp: str = "gelu"
    mlp_hidden: int | None = None
    n_kv_head: int | None = None
    qk_norm: bool = False
    tie_embeddings: bool = True
    zero_init_proj: bool = False
    logit_softcap: float | None = None
    head_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "mlp_hidden", "n_kv_head",
                     "head_size"):
            value = getattr(self, name)
            if value is None and name in ("mlp_hidden", "n_kv_head", "head_size"):
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.head_size is None and self.n_embd % self.n_head != 0:
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
        check_modern_options(self)

    @property
    def head_dim(self) -> int:
        return self.head_size if self.head_size is not None else self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """Key/value heads per layer: n_kv_head, or n_head when it is None."""
        return self.n_kv_head or self.n_head

    def summary(self) -> str:
        """One readable line: the shape, then only the options that differ from GPT-2's defaults.

        For logs and printouts, where the full dataclass repr (19 fields) would bury the few that matter.
        """
        line = (f"{self.n_layer} layers x {self.n_embd} wide, {self.n_head} heads, context {self.block_size}, "
                f"vocabulary {self.vocab_size}")
        defaults = GPTConfig(vocab_size=1, block_size=1, n_layer=1, n_head=1, n_embd=1)
        shape = {"vocab_size", "block_size", "n_layer", "n_head", "n_embd"}
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                   if f.name not in shape and getattr(self, f.name) != getattr(defaults, f.name)]
        return line + (f" ({', '.join(changed)})" if changed else "")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        """Rebuild from :meth:`to_dict`; configs saved before an option existed get its default (off)."""
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


class Block(nn.Module):
    """One transformer block: pre-norm attention and MLP, each added to the residual stream."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, layer_idx: int = 0,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache=kv_cache, layer_idx=layer_idx, rope=rope)  # tokens talk
        x = x + self.mlp(self.ln_2(x))  # each token thinks on its own
        return x


class GPT(nn.Module):
    """A decoder-only transformer language model: GPT-2 by default, a Llama/Qwen3 with chapter 07's options."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT expects a GPTConfig, got {type(config).__name__}; use GPT(GPTConfig(...))")
        self.config = c = config
        parts: dict[str, nn.Module] = dict(wte=nn.Embedding(c.vocab_size, c.n_embd))  # token embeddings
        if c.rope_theta is None:
            parts["wpe"] = nn.Embedding(c.block_size, c.n_embd)  # learned position embeddings
        parts.update(drop=nn.Dropout(c.dropout), h=nn.ModuleList([Block(c) for _ in range(c.n_layer)]),
                     ln_f=make_norm(c))
        self.transformer = nn.ModuleDict(parts)
        # RoPE: positions enter as rotations of q and k in every layer (tables, no parameters)
        self.rotary = Rotary(c.head_dim, c.block_size, c.rope_theta) if c.rope_theta is not None else None
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight  # weight tying: one matrix, two uses
        self.tokenizer = None  # attached by checkpoint loading; a plain attribute, not saved in state_dict
        self.apply(self._init_weights)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2 * n_layer)
        # (two per block), so the stream's variance does not grow with depth at initialisation.
        # zero_init_proj: start them (and an untied head) at zero, so each block begins as the identity.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                if c.zero_init_proj:
                    nn.init.zeros_(p)
                else:
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))
        if c.zero_init_proj and not c.tie_embeddings:
            nn.init.zeros_(self.lm_head.weight)

    @classmethod
    def empty(cls, config: GPTConfig, device: str | torch.device = "cpu") -> GPT:
        """A GPT whose weights are allocated but not initialised, to load weights into.

        Skips the random initialisation (seconds for a 135M-parameter model); every
        weight must then be overwritten (a strict load). The tie and the RoPE tables,
        which ``to_empty`` does not keep, are restored here.
        """
        with torch.device("meta"):  # shapes only
            model = cls(config)
        model.to_empty(device=device)
        if config.tie_embeddings:
            model.lm_head.weight = model.transformer.wte.weight
        if model.rotary is not None:
            model.rotary = Rotary(config.head_dim, config.block_size, config.rope_theta).to(device)
        return model

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
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
        are appended to the cache and ``cache.pos`` advances by T. With a SlotKVCache
        (chapter 11's batches) each row feeds one token at its own position.
        """
        if idx.dim() != 2:
            raise ValueError(f"idx must be (batch, time) token ids, got shape {tuple(idx.shape)}; use idx[None] for one sequence")
        B, T = idx.shape
        if kv_cache is not None:
            kv_cache.check_room(B, T)
            pos = kv_cache.positions(T)  # (T,) after the cached ones; (B, 1) per row in a SlotKVCache
        elif T > self.config.block_size:
            raise ValueError(
                f"sequence length {T} exceeds block_size {self.config.block_size}: "
                f"crop the input to its last {self.config.block_size} tokens (idx[:, -block_size:])"
            )
        else:
            pos = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.rotary is None:
            x = x + self.transformer.wpe(pos)  # (B, T, C) + (T, C) or (B, 1, C)
        else:
            rope = self.rotary.at(pos)  # cos, sin: (T, head_dim), or (B, 1, 1, head_dim) per row
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, kv_cache=kv_cache, layer_idx=i, rope=rope)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B, T, vocab_size)
        if self.config.logit_softcap is not None:
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits / cap)  # smoothly into (-cap, cap)
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
        """An empty KV cache for ``batch_size`` sequences of up to block_size tokens, on the model's device/dtype.

        It holds ``n_kv_head`` heads per layer (all ``n_head`` without GQA).
        """
        c = self.config
        p = self.transformer.ln_f.weight  # the activations' dtype (an int8 model's norms stay float)
        return KVCache(c.n_layer, batch_size, c.kv_heads, c.head_dim, c.block_size, device=p.device, dtype=p.dtype)

    def new_slot_cache(self, slots: int) -> SlotKVCache:
        """An empty :class:`SlotKVCache` of ``slots`` rows, each up to block_size tokens (chapter 11's batching)."""
        c = self.config
        p = self.transformer.ln_f.weight  # the activations' dtype (an int8 model's norms stay float)
        return SlotKVCache(c.n_layer, slots, c.kv_heads, c.head_dim, c.block_size, device=p.device, dtype=p.dtype)

    def kv_cache_bytes_per_token(self) -> int:
        """Bytes of KV cache per token of one sequence: 2 (k, v) x n_layer x n_kv_head x head_dim x dtype size."""
        c = self.config
        return 2 * c.n_layer * c.kv_heads * c.head_dim * self.transformer.ln_f.weight.element_size()

    # ------------------------------------------------------------------ accounting

    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    def num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters (the tied wte/lm_head matrix counted once).

        ``non_embedding=True`` leaves out the position embeddings, as nanoGPT and the
        scaling-law papers do; the token embedding stays in when it is also the
        output layer (tied), and is left out when untied (then only lm_head computes).
        """
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a shared tensor once
        if non_embedding:
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_embeddings:  # untied: wte is a pure lookup, lm_head the output layer
                n -= self.transformer.wte.weight.numel()
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
        A quantized model (quantize.quantize_int8) stores its int8 weights and scales, and
        ``quantization.json`` says so, for :meth:`load` to rebuild it as int8.
        """
        from safetensors.torch import save_model

        from .quantize import QUANTIZATION_FILE, quantization_marker

        marker = quantization_marker(self)  # {"method": "int8", ...}, or None for a float model
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "library": "minigpt_helpers"})
        (directory / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n", encoding="utf-8")
        if marker is not None:
            (directory / QUANTIZATION_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        else:
            (directory / QUANTIZATION_FILE).unlink(missing_ok=True)  # a float model saved over a quantized one
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
        A folder with ``quantization.json`` is checked against the int8 model's tensors.
        """
        from safetensors import SafetensorError, safe_open

        from .quantize import quantize_int8, saved_quantization

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
        try:
            method = saved_quantization(directory)  # "int8", or None for a float model
        except ValueError as e:
            raise ValueError(f"{e}; {fix}") from None
        with torch.device("meta"):  # shapes only: no memory, no initialisation work
            model = cls(config) if method is None else quantize_int8(cls(config))
            tensors = model.state_dict(keep_vars=True)
        expected = {k: tuple(v.shape) for k, v in tensors.items()}
        names_of: dict[int, list[str]] = {}  # a tensor under several names (weight tying) is stored under one
        for k, v in tensors.items():
            names_of.setdefault(id(v), []).append(k)
        for names in names_of.values():
            stored = [k for k in names if k in shapes]
            shapes.update({k: shapes[stored[0]] for k in names if stored and k not in shapes})
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
        checkpoint raises a ValueError naming it and the fix. A model saved quantized
        (``quantization.json``) comes back quantized, its tied head and embedding sharing one int8 matrix.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_model

        from .quantize import quantize_int8, saved_quantization

        directory = Path(directory)
        config = cls.check_saved(directory)
        model = cls(config)
        if saved_quantization(directory) == "int8":
            model = quantize_int8(model)  # the int8 structure, filled by the strict load below
        device = torch.device(device) if device is not None else torch.device("cpu")
        model.to(device)
        try:
            load_model(model, str(directory / WEIGHTS_FILE), strict=True, device=str(device))
        except (SafetensorError, RuntimeError) as e:  # e.g. a file changed after the check
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{directory / WEIGHTS_FILE} could not be loaded ({first}); "
                             f"{damaged_checkpoint_fix(directory)}") from e
        if (directory / TOKENIZER_DIR).exists():
            from ..tokenizers.base import (
                load_tokenizer,  # another chapter's module; imported only when needed
            )

            model.tokenizer = load_tokenizer(directory / TOKENIZER_DIR)
        return model
