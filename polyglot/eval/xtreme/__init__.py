"""XTREME zero-shot cross-lingual evaluation (Hu et al., 2020).

`tasks` holds the benchmark: its nine tasks, their data layouts, its
categories. The evaluation itself is `polyglot.eval`'s
(`python -m polyglot.eval --benchmark=xtreme`, or `python -m polyglot.eval.xtreme`).
"""
