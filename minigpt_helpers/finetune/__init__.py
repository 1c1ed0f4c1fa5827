"""The finetuning wing (chapter 08): adapt a pretrained GPT.

    lora.py          low-rank adapters, checked against peft
    classify.py      a classification head on the GPT
    chat.py          chat tokens, conversations, the loss mask, SFT and a chat session
    instructions.py  the course's instruction tasks built from Shakespeare, and Hub conversations

It imports every wing below it: data, tokenizers, model, training.
"""
