"""The evaluation wing (chapter 09): how good a model is on a task, and how good it will get.

    choices.py      multiple-choice scoring: score_choices, evaluate_choices, intervals
    tasks.py        the offline shakespeare-next-line task (held-out scenes only); HellaSwag online
    harness.py      lm-evaluation-harness on a save_hf folder; lm_eval_tasks/ holds the course's task
    report.py       the report card that `python -m minigpt_helpers eval` prints and saves as eval.json
    scaling.py      IsoFLOP sweeps and scaling-law fits (parabolas, power laws, Chinchilla's L(N, D))

It imports the data, tokenizers, model, training, interop and finetune wings (tasks.py reads the plays
through finetune.instructions).
"""
