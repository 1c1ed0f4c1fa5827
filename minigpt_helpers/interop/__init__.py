"""The interop wing (chapters 04 and 07): the course's GPT <-> Hugging Face transformers.

    gpt2.py   GPT2LMHeadModel <-> GPT, and the dispatch to llama.py by architecture
    llama.py  LlamaForCausalLM / Qwen3ForCausalLM <-> GPT; open weights such as SmolLM2
    save.py   save_hf: weights, tokenizer.json and chat template in a folder transformers loads as is

It imports the tokenizers and model wings, never training.
"""
