"""Hugging Face interchange.

- `hf`: parameter and config mapping to and from `XLMRobertaFor*` state dicts.
- `export`: a checkpoint -> an HF model directory (tools/convert_to_hf.py).
- `importer`: an HF XLM-R directory -> a checkpoint (tools/convert_from_hf.py).
- `tokenizer`: HF tokenizer files of a polyglot vocabulary, and their checks.
- `vocab_extension`: new languages' pieces and embedding rows (tools/extend_vocab.py).
- `files`, `cli`: output directories and step-0 checkpoints; the tools' error handling.
"""
