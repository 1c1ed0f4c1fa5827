"""The training wing (chapter 05, and the optimizers of chapter 07).

    config.py       TrainConfig, its checks, the presets and the learning-rate schedule
    loop.py         train(): the loop itself, evaluate(), the optimizer
    distributed.py  several processes: the stop vote, signals, the replica check
    examples.py     batches of fixed, unpacked examples (classification, chat); IGNORE, the skipped target
    checkpoint.py   atomic checkpoints and exact resume
    device.py       CPU / MPS / CUDA: precision, compile, TF32, peak FLOP/s
    live.py         the progress bar and live plot in Jupyter, log lines on a terminal
    trackers.py     experiment trackers (TensorBoard, Trackio, wandb) through accelerate
    metrics.py      bits per byte, perplexity, bytes per token
    muon.py         the Muon optimizer (and Muon + AdamW for the rest)

It imports the data, tokenizers and model wings.
"""
