"""The model wing (chapters 03, 04, 06, 07): the GPT and how it generates.

    attention.py   causal self-attention, the KV cache, and the attention kernels
    layers.py      RMSNorm, rotary embeddings, the MLP and SwiGLU (chapter 07's options)
    gpt.py         GPTConfig, Block, GPT; save and load (safetensors)
    generation.py  sampling (temperature, top-k, top-p) and generate with a KV cache
    quantize.py    int8 weight-only quantization, one scale per output channel (chapter 11)

It imports the tokenizers wing (a saved model carries its tokenizer) and nothing above.
"""
