"""minigpt_helpers: the finished pieces of the MiniGPT course.

Each chapter derives a piece step by step, checks that its version matches the
one here, and from then on imports it from this package. The modules are grouped
in wings, one per stage of the course; a wing imports only the wings below it.

    config.py               quick mode, the artifacts folder, seeding, the run summary
    progress.py             progress in Jupyter and on a terminal (the BPE trainer and train() share it)
    data/                   ch01: documents from RedPajama, offline Shakespeare or your own files; batches
      rows.py                 the row protocol every source provides, the train/validation split; JSON Lines
      sources.py              stream_documents and the sources behind it; is the Hub reachable?
      textfiles.py            a .txt file of any size as seekable pieces
      mixing.py, mixed_rows.py  RedPajama's subsets mixed by byte share, resumably
      batching.py             documents -> tokens -> packed windows -> (x, y) batches
      pipeline.py             batches made in a background worker
    tokenizers/             ch02: text <-> ids
      base.py                 the Tokenizer protocol, its registry, CharTokenizer, load_tokenizer
      bpe.py                  byte-level BPE from scratch
      sentencepiece.py, hf.py SentencePiece and Hugging Face tokenizers behind the same protocol
      train.py                train_tokenizer and default_tokenizer: the tokenizer later chapters load
    model/                  ch03, ch04, ch06, ch07: the GPT
      attention.py            causal self-attention, the KV cache
      layers.py               RMSNorm, RoPE, the MLP and SwiGLU
      gpt.py                  GPTConfig, Block, GPT; save and load
      sampling.py             the sampling pipeline and context-window policy every decoding loop shares
      generation.py           generate(): one sequence with a KV cache
      speculative.py          ch11: speculative decoding, a draft model proposes and the target checks
      batch.py                ch11: many prompts at once, continuous batching over a ragged KV cache
      quantize.py             ch11: int8 weight-only quantization, per output channel
    training/               ch05, ch07: training it
      config.py               TrainConfig, presets, the learning-rate schedule
      loop.py                 train(), evaluate(), the optimizer
      examples.py             batches of fixed (not packed) examples: classification and chat finetuning
      distributed.py          several processes: stop vote, signals, replica check
      checkpoint.py           atomic checkpoints and exact resume
      device.py               precision, compile and TF32 on CPU / MPS / CUDA
      live.py                 the live plot and progress bar
      trackers.py             TensorBoard, Trackio or wandb through accelerate's trackers
      metrics.py              bits per byte, perplexity
      muon.py                 the Muon optimizer
    interop/                ch04, ch07: Hugging Face transformers
      common.py, gpt2.py, llama.py, hub.py   GPT-2 and Llama/Qwen3 both ways; open weights
      save.py                 save_hf: a folder transformers and lm_eval load with no custom code
    finetune/               ch08: LoRA, classification, chat and SFT, instruction data
      lora.py, classify.py, chat.py, instructions.py
    evaluation/             ch09: how good is it, and how good will it get
      choices.py              multiple-choice scoring (lm-evaluation-harness's convention), intervals
      tasks.py                the offline shakespeare-next-line task; HellaSwag online
      harness.py              lm_eval on a saved model, with the course's task folder (lm_eval_tasks/)
      report.py               the report card of `python -m minigpt_helpers eval`
      scaling.py              IsoFLOP sweeps, parabolas, power laws, Chinchilla's L(N, D)
    align/                  ch10: preference tuning and RL with verifiable rewards
      logprobs.py             the summed log-probability of a reply, prompt and padding masked
      dpo.py                  DPO: its loss, preference batches, dpo() through train(), metrics
      rewards.py, pairs.py    verifiable rewards and a fluency guard; preference pairs built offline
      grpo.py                 GRPO: groups of samples, group-relative advantages, clipped ratios, KL
    serve/                  ch11: a model behind OpenAI's API (needs fastapi and uvicorn: not imported here)
      server.py               create_app, the batching engine's thread, streaming; serve(), serve_in_background()
      chat.html               the chat page served at /
    diagrams/               the concept diagrams: ``from minigpt_helpers import diagrams``
    cli.py, __main__.py     python -m minigpt_helpers train | generate | chat | eval | serve
"""

from .config import artifacts_dir, is_quick, machine, pick, run_summary, set_seed, shown_path

# --- data (chapter 01) ---
from .data.sources import REDPAJAMA_FILES, REDPAJAMA_REPO, hub_reachable, resolve_source, shakespeare_dir, stream_documents
from .data.mixing import MixState, SubsetExhaustedWarning, mix_by_share
from .data.batching import PackedStream, StreamPosition, pack_windows, train_batches, val_windows
from .training.examples import ExampleSource
# --- tokenizers (chapter 02) ---
from .tokenizers.base import EOT, CharTokenizer, Tokenizer, load_tokenizer
from .tokenizers.bpe import GPT4_SPLIT_PATTERN, BPETokenizer
from .tokenizers.sentencepiece import SentencePieceTokenizer
from .tokenizers.hf import HFTokenizer
from .tokenizers.train import default_tokenizer, train_tokenizer, training_texts
# --- model (chapters 03, 04, 06, 07, 11) ---
from .model.attention import CausalSelfAttention, KVCache, SlotKVCache, attention, causal_mask
from .model.layers import RMSNorm, Rotary, apply_rotary, swiglu_hidden
from .model.gpt import GPT, Block, GPTConfig
from .model.quantize import Int8Embedding, Int8Linear, dequantize_weight, quantize_int8, quantize_weight, weight_bytes
from .model.sampling import sampling_probs
from .model.speculative import SpeculativeStats, accept_draft, check_draft, speculative_ids
from .model.batch import BatchEngine, BatchRequest, generate_batch, generate_batch_ids
from .model.generation import (
    StreamDecoder,
    generate,
    generate_ids,
    sample_group_ids,
    sample_next,
    time_generation,
    top_k_filter,
    top_p_filter,
    window_start,
)
# --- training (chapters 05, 07) ---
from .training.device import autocast, choose_compile, choose_precision, default_device, default_precision, enable_tf32, peak_flops
from .training.config import PRESETS, TrainConfig, lr_at, preset, recommended_preset
from .training.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from .training.trackers import Trackers, hyperparameters, require_trackers
from .training.live import plot_history
from .training.loop import History, TrainResult, evaluate, get_trained_model, make_optimizer, param_groups, train
from .training.muon import Muon, MuonAdamW, hidden_matrices, make_muon, zeropower_via_newtonschulz
from .training.metrics import bits_per_byte, bpb_to_loss, bytes_per_token, loss_to_bpb, perplexity, token_byte_lengths
# --- Hugging Face interop (chapters 04, 07) ---
from .interop.llama import hf_architecture
from .interop.hub import from_hf, load_open_weights, to_hf
from .interop.save import hf_tokenizer, save_hf
# --- finetuning (chapter 08) ---
from .finetune.lora import (
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
from .finetune.classify import GPTClassifier, accuracy, classification_source, majority_accuracy
from .finetune.chat import (
    add_chat_tokens,
    chat_reply,
    chat_template,
    chat_text,
    CHAT_TOKENS,
    ChatSession,
    ChatTokenizer,
    load_chat_model,
    parse_conversation,
    render_conversation,
    resize_token_embeddings,
    sft,
    sft_source,
)
from .finetune.instructions import (
    get_chat_model,
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

# --- evaluation and scaling laws (chapter 09) ---
from .evaluation.choices import ChoiceScore, evaluate_choices, items_within_window, score_choices, wilson_interval
from .evaluation.tasks import NEXT_LINE_TASK, hellaswag_items, shakespeare_next_line, write_jsonl_task
from .evaluation.harness import LM_EVAL_TASKS, run_lm_eval
from .evaluation.report import format_report, report_card
from .evaluation.scaling import (
    PUBLISHED,
    bootstrap,
    chinchilla_loss,
    chinchilla_optimum,
    fit_chinchilla,
    fit_parabola,
    fit_power_law,
    flops_per_token,
    isoflop_optima,
    isoflop_plan,
    model_family,
    non_embedding_params,
    run_isoflop,
)
# --- preference tuning and RL (chapter 10) ---
from .align.logprobs import sequence_logprobs, token_logprobs
from .align.dpo import DPOModel, dpo, dpo_loss, preference_metrics, preference_source
from .align.rewards import (
    REWARDS,
    GuardedReward,
    arithmetic_reward,
    fluency_bpb,
    fluency_bpb_batch,
    fluency_threshold,
    genre_reward,
    guarded_reward,
    play_reward,
    prompt_messages,
    speaker_reward,
    task_reward,
    use_word_reward,
)
from .align.pairs import PreferencePairs, preference_pairs, reply_room
from .align.evaluate import sampled_replies, success_rates
from .align.arithmetic import arithmetic_rows, hub_arithmetic
from .align.live import plot_grpo_stats
from .align.grpo import (
    GRPOResult,
    default_grpo_config,
    group_advantages,
    grpo,
    grpo_loss,
    grpo_token_loss,
    kl_k3,
    zero_variance_groups,
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
    "train_tokenizer",
    "training_texts",
    "enable_tf32",
    "EOT",
    "evaluate",
    "find_checkpoint",
    "generate",
    "generate_ids",
    "get_chat_model",
    "get_trained_model",
    "GPT",
    "GPT4_SPLIT_PATTERN",
    "GPTConfig",
    "Int8Embedding",
    "Int8Linear",
    "dequantize_weight",
    "quantize_int8",
    "quantize_weight",
    "weight_bytes",
    "History",
    "hub_reachable",
    "is_quick",
    "KVCache",
    "sampling_probs",
    "SpeculativeStats",
    "accept_draft",
    "check_draft",
    "speculative_ids",
    "BatchEngine",
    "BatchRequest",
    "generate_batch",
    "generate_batch_ids",
    "SlotKVCache",
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
    "apply_rotary",
    "from_hf",
    "hf_architecture",
    "HFTokenizer",
    "hidden_matrices",
    "load_open_weights",
    "to_hf",
    "make_muon",
    "Muon",
    "MuonAdamW",
    "RMSNorm",
    "Rotary",
    "swiglu_hidden",
    "zeropower_via_newtonschulz",
    "bits_per_byte",
    "bpb_to_loss",
    "bytes_per_token",
    "loss_to_bpb",
    "perplexity",
    "token_byte_lengths",
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
    "ChoiceScore",
    "evaluate_choices",
    "items_within_window",
    "score_choices",
    "wilson_interval",
    "NEXT_LINE_TASK",
    "hellaswag_items",
    "shakespeare_next_line",
    "write_jsonl_task",
    "LM_EVAL_TASKS",
    "run_lm_eval",
    "format_report",
    "report_card",
    "PUBLISHED",
    "bootstrap",
    "chinchilla_loss",
    "chinchilla_optimum",
    "fit_chinchilla",
    "fit_parabola",
    "fit_power_law",
    "flops_per_token",
    "isoflop_optima",
    "isoflop_plan",
    "model_family",
    "non_embedding_params",
    "run_isoflop",
    "Trackers",
    "save_hf",
    "hf_tokenizer",
    "chat_template",
    "hyperparameters",
    "require_trackers",
    "sample_group_ids",
    "sequence_logprobs",
    "token_logprobs",
    "DPOModel",
    "dpo",
    "dpo_loss",
    "preference_metrics",
    "preference_source",
    "REWARDS",
    "GuardedReward",
    "fluency_bpb",
    "fluency_bpb_batch",
    "fluency_threshold",
    "genre_reward",
    "guarded_reward",
    "play_reward",
    "speaker_reward",
    "task_reward",
    "use_word_reward",
    "PreferencePairs",
    "preference_pairs",
    "GRPOResult",
    "default_grpo_config",
    "group_advantages",
    "grpo",
    "grpo_loss",
    "grpo_token_loss",
    "arithmetic_reward",
    "arithmetic_rows",
    "hub_arithmetic",
    "plot_grpo_stats",
    "prompt_messages",
    "reply_room",
    "sampled_replies",
    "success_rates",
    "kl_k3",
    "zero_variance_groups",
]

__version__ = "0.1.0"
