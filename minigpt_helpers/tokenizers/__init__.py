"""The tokenizers wing (chapter 02): text <-> token ids, trained on the course's data.

    base.py           the Tokenizer protocol, its registry of saved types, CharTokenizer, default_tokenizer
    bpe.py            byte-level BPE written from scratch (minbpe-style), checked against a reference
    sentencepiece.py  the same protocol over Google's SentencePiece
    hf.py             the same protocol over a Hugging Face tokenizer (GPT-2's, SmolLM2's)

It imports the data wing (to train on a stream) and nothing above.
"""
