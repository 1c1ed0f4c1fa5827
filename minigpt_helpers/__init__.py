"""minigpt_helpers: the finished pieces of the MiniGPT course.

Each chapter derives a piece step by step, checks that its version matches the
one here, and from then on imports it from this package. One module per concept:

    config      quick mode, artifacts folder, seeding
    device      device / precision choice with explicit fallbacks
    data        streaming documents (RedPajama, offline Shakespeare, your files)
    tokenizer, bpe, sentencepiece_tokenizer   the three tokenizers
    model       GPTConfig, GPT, attention, KV cache, Hugging Face interop
    batching, training, checkpoint, live, cli   training on the stream
    generation  generate(model, prompt)
"""

from .config import artifacts_dir, is_quick, pick, set_seed, shown_path
from .device import autocast, choose_compile, choose_precision, default_device, default_precision, enable_tf32, peak_flops

# --- data (issue 2) ---
from .data import REDPAJAMA_FILES, REDPAJAMA_REPO, hub_reachable, resolve_source, shakespeare_dir, stream_documents
from .mixing import MixState, SubsetExhaustedWarning, mix_by_share
# --- tokenizers (issue 3) ---
from .bpe import GPT4_SPLIT_PATTERN, BPETokenizer
from .sentencepiece_tokenizer import SentencePieceTokenizer
from .tokenizer import EOT, CharTokenizer, Tokenizer, default_tokenizer, load_tokenizer
# --- model (issue 4) ---
from .attention import CausalSelfAttention, KVCache, attention, causal_mask
from .model import GPT, Block, GPTConfig
# --- training (issue 5) ---
from .batching import PackedStream, StreamPosition, pack_windows, train_batches, val_windows
from .checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from .live import plot_history
from .training import (
    PRESETS,
    History,
    TrainConfig,
    TrainResult,
    evaluate,
    get_trained_model,
    lr_at,
    make_optimizer,
    param_groups,
    preset,
    recommended_preset,
    train,
)
# --- generation (issue 6) ---
from .generation import (
    StreamDecoder,
    generate,
    generate_ids,
    sample_next,
    time_generation,
    top_k_filter,
    top_p_filter,
    window_start,
)

__all__ = [
    "artifacts_dir",
    "attention",
    "autocast",
    "Block",
    "BPETokenizer",
    "causal_mask",
    "CausalSelfAttention",
    "CharTokenizer",
    "choose_compile",
    "choose_precision",
    "default_device",
    "default_precision",
    "default_tokenizer",
    "enable_tf32",
    "EOT",
    "evaluate",
    "find_checkpoint",
    "generate",
    "generate_ids",
    "get_trained_model",
    "GPT",
    "GPT4_SPLIT_PATTERN",
    "GPTConfig",
    "History",
    "hub_reachable",
    "is_quick",
    "KVCache",
    "load_checkpoint",
    "load_tokenizer",
    "lr_at",
    "make_optimizer",
    "mix_by_share",
    "MixState",
    "pack_windows",
    "PackedStream",
    "param_groups",
    "peak_flops",
    "pick",
    "plot_history",
    "preset",
    "PRESETS",
    "recommended_preset",
    "REDPAJAMA_FILES",
    "REDPAJAMA_REPO",
    "resolve_source",
    "sample_next",
    "save_checkpoint",
    "SentencePieceTokenizer",
    "set_seed",
    "shown_path",
    "shakespeare_dir",
    "stream_documents",
    "StreamDecoder",
    "StreamPosition",
    "SubsetExhaustedWarning",
    "time_generation",
    "Tokenizer",
    "top_k_filter",
    "top_p_filter",
    "train",
    "train_batches",
    "TrainConfig",
    "TrainResult",
    "val_windows",
    "window_start",
]

__version__ = "0.1.0"
