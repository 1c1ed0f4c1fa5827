"""The model wing (chapters 03, 04, 06, 07, 11): the GPT and how it generates.

    attention.py   causal self-attention, the KV cache (and the ragged SlotKVCache), the attention kernels
    layers.py      RMSNorm, rotary embeddings, the MLP and SwiGLU (chapter 07's options)
    gpt.py         GPTConfig, Block, GPT; save and load (safetensors)
    sampling.py    temperature, top-k, top-p, the context-window policy: what every decoding loop shares
    generation.py  generate() with a KV cache, streaming text
    speculative.py speculative decoding: a draft proposes, the target checks (chapter 11)
    batch.py       many prompts at once, continuous batching (chapter 11)
    quantize.py    int8 weight-only quantization, one scale per output channel (chapter 11)

It imports the tokenizers wing (a saved model carries its tokenizer) and nothing above.
"""
