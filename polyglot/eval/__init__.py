"""Downstream evaluation of pretrained encoders: one core, several benchmarks.

Fine-tune on English, predict every other language; retrieval tasks use the
encoder without fine-tuning. A benchmark (`benchmarks`) is a task table, its
settings file and its averaging; the rest is shared. Modules, each importable
on its own:

- `benchmarks`: the `Benchmark` and the registry of benchmarks by name;
- `tasks`: task specs and the discovery of data files (by name) or TFDS builders;
- `readers`: file and TFDS readers into frozen example dataclasses;
- `features`: examples to model inputs (XLM-R ids) and predictions back;
- `metrics`: the scores the benchmarks report (seqeval F1, SQuAD/MLQA, BUCC F1);
- `retrieval`: cosine nearest neighbours (Tatoeba), margin mining (BUCC);
- `hparams`: per-task settings (the benchmark's published values), fitted to a model;
- `report`: results.json, results.md, the plot, and a progress helper;
- `tokenizer`: the checkpoint's SentencePiece model with XLM-R ids and offsets;
- `finetune`: task models on a mesh, the fine-tuning loop, prediction, scoring;
- `embed`: sentence embeddings from the frozen encoder (retrieval);
- `run`: a whole evaluation, resumable (`python -m polyglot.eval`);
- `languages`: per-language held-out MLM of a pretraining run;
- `bitext`: retrieval on any aligned corpus (`python -m polyglot.eval.bitext`).

Benchmarks: `xtreme` (`polyglot.eval.xtreme`), `xtreme_r` (`polyglot.eval.xtreme_r`),
`xglue` (`polyglot.eval.xglue`). Nothing heavy is imported at
import time; TensorFlow only by the TFDS readers and by `polyglot.load`.
"""
