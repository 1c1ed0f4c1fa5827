"""The evaluation wing (chapter 09): how good a model is on a task, and how good it will get.

    choices.py      multiple-choice scoring: score_choices, evaluate_choices, intervals
    tasks.py        the offline shakespeare-next-line task (held-out scenes only); HellaSwag online
    scaling.py      IsoFLOP sweeps and scaling-law fits (parabolas, power laws, Chinchilla's L(N, D))

It imports the data, tokenizers, model, training, interop and finetune wings (tasks.py reads the plays
through finetune.instructions).
"""
