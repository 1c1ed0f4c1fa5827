"""minigpt_helpers: the finished pieces of the MiniGPT course.

Each chapter derives a piece step by step, checks that its version matches the
one here, and from then on imports it from this package. One module per concept:

    config      quick mode, artifacts folder, seeding
    device      device / precision choice with explicit fallbacks
    data        streaming documents (RedPajama, offline Shakespeare, your files)
    tokenizer, bpe, sentencepiece_tokenizer   the three tokenizers
    model       GPTConfig, GPT, attention, KV cache, Hugging Face interop
    layers, muon, hf_llama, hf_tokenizer   chapter 07: RoPE, RMSNorm, SwiGLU, Muon, Llama/Qwen3, open weights
    batching, training, checkpoint, live, cli   training on the stream
    lora, classify, chat, instructions   chapter 08: LoRA, classification, chat and SFT, instruction data
    generation  generate(model, prompt)
"""

from .config import artifacts_dir, is_quick, machine, pick, run_summary, set_seed, shown_path
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
# --- the modern GPT (issue 13) ---
from .layers import RMSNorm, Rotary, apply_rotary, swiglu_hidden
from .muon import Muon, MuonAdamW, hidden_matrices, make_muon, zeropower_via_newtonschulz
from .hf_tokenizer import HFTokenizer
from .hf_llama import hf_architecture, load_open_weights
# --- bits per byte (issue 12); the concept diagrams: `from minigpt_helpers import diagrams` ---
from .metrics import bits_per_byte, bpb_to_loss, bytes_per_token, loss_to_bpb, perplexity, token_byte_lengths
# --- finetuning: LoRA, classification, chat and SFT, the offline instruction set (issue 14) ---
from .lora import (
    LoRALinear,
    LoRAModel,
    adamw_state_bytes,
    add_lora,
    count_parameters,
    merge_lora,
    optimizer_state_bytes,
    remove_lora,
    unmerge_lora,
)
from .classify import ExampleSource, GPTClassifier, accuracy, classification_source, majority_accuracy
from .chat import (
    CHAT_TOKENS,
    ChatSession,
    ChatTokenizer,
    add_chat_tokens,
    chat_reply,
    chat_text,
    load_chat_model,
    parse_conversation,
    render_conversation,
    resize_token_embeddings,
    sft,
    sft_source,
)
from .instructions import (
    GENRE_SOURCE,
    GENRES,
    PLAYS,
    answer_rows,
    check_reply,
    genre_examples,
    hub_conversations,
    instruction_set,
    majority_baseline,
    read_conversations,
    task_accuracy,
    write_conversations,
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
    "machine",
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
    "run_summary",
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
    # the modern GPT (issue 13)
    "apply_rotary",
    "hf_architecture",
    "HFTokenizer",
    "hidden_matrices",
    "load_open_weights",
    "make_muon",
    "Muon",
    "MuonAdamW",
    "RMSNorm",
    "Rotary",
    "swiglu_hidden",
    "zeropower_via_newtonschulz",
    # bits per byte (issue 12)
    "bits_per_byte",
    "bpb_to_loss",
    "bytes_per_token",
    "loss_to_bpb",
    "perplexity",
    "token_byte_lengths",
    # finetuning (issue 14)
    "LoRALinear",
    "LoRAModel",
    "adamw_state_bytes",
    "add_lora",
    "count_parameters",
    "merge_lora",
    "optimizer_state_bytes",
    "remove_lora",
    "unmerge_lora",
    "ExampleSource",
    "GPTClassifier",
    "accuracy",
    "classification_source",
    "majority_accuracy",
    "CHAT_TOKENS",
    "ChatSession",
    "ChatTokenizer",
    "add_chat_tokens",
    "chat_reply",
    "chat_text",
    "load_chat_model",
    "parse_conversation",
    "render_conversation",
    "resize_token_embeddings",
    "sft",
    "sft_source",
    "GENRE_SOURCE",
    "GENRES",
    "PLAYS",
    "answer_rows",
    "check_reply",
    "genre_examples",
    "hub_conversations",
    "instruction_set",
    "majority_baseline",
    "read_conversations",
    "task_accuracy",
    "write_conversations",
]

__version__ = "0.1.0"
