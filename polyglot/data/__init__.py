"""Multilingual MLM data: seqio sources, tasks and mixtures, masking, batches.

- `languages`: corpus tags (`sw`, `zh-Hans`, `swh_Latn`) -> language ids.
- `sources`: raw text per language (embedded, text directories, TFDS).
- `vocab`: the SentencePiece vocabulary with XLM-R ids (a seqio Vocabulary).
- `preprocessors`: text streams -> sequences; packing and 80/10/10 masking.
- `mixtures`: temperature-sampled mixtures, task and mixture registration.
- `pipeline`: `make_iterator` (host batches, state) and `DeviceIterator`.
- `cache`: the on-disk cache (`$POLYGLOT_CACHE`).

Registrations of concrete corpora live in the top-level `tasks` package.
"""
