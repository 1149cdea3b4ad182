"""XGLUE (Liang et al., 2020): its understanding tasks on the evaluation core.

`tasks` holds the benchmark (task table, file layouts, averaging), `readers`
its file formats, `metrics` its scorer's numbers and prediction files.
`python -m polyglot.eval --benchmark=xglue`.
"""
