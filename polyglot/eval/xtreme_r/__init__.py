"""XTREME-R (Ruder et al., 2021) on the evaluation core.

`tasks` holds the benchmark (task table, layouts, averaging), `readers` the
formats of its new tasks (XCOPA, LAReQA, Mewsli-X), `metrics` their scores.
`python -m polyglot.eval --benchmark=xtreme_r`.
"""
