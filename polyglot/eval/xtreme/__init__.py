"""XTREME zero-shot cross-lingual evaluation (Hu et al., 2020).

Fine-tune on English, predict every other language; retrieval tasks use the
encoder without fine-tuning. Modules, each importable on its own:

- `tasks`: the task registry and discovery of data files (both layouts);
- `readers`: file and TFDS readers into frozen example dataclasses;
- `features`: examples to model inputs (XLM-R ids) and predictions back;
- `metrics`: the scores XTREME reports (seqeval F1, SQuAD/MLQA, BUCC F1);
- `retrieval`: cosine nearest neighbours (Tatoeba), margin mining (BUCC);
- `hparams`: per-task settings (XTREME's published values), fitted to a model;
- `report`: results.json, results.md, the plot, and a progress helper;
- `tokenizer`: the checkpoint's SentencePiece model with XLM-R ids and offsets;
- `finetune`: task models on a mesh, the fine-tuning loop, prediction, scoring;
- `embed`: sentence embeddings from the frozen encoder (retrieval);
- `run`: a whole evaluation, resumable (`python -m polyglot.eval.xtreme`).

This package imports nothing heavy at import time; TensorFlow is imported
only by the TFDS readers and by `polyglot.load` (the vocabulary).
"""
