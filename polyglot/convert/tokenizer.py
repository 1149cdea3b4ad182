"""Hugging Face tokenizer files for a polyglot vocabulary, and their checks on import.

polyglot's ids are XLM-R's (polyglot/data/vocab.py), so the HF tokenizer is
XLM-R's own class built from our SentencePiece model by transformers' own
converter: `XLMRobertaTokenizer.from_pretrained(<folder with
sentencepiece.bpe.model>)`. (transformers 5 builds every XLM-R tokenizer
with the `tokenizers` library; `XLMRobertaTokenizer(vocab_file=...)` ignores
the file, and there is no SentencePiece-backed XLM-R class any more.)
"""
from __future__ import annotations

import pathlib
from typing import Any

from polyglot.convert import files
from polyglot.data.vocab import HF_MODEL_FILENAME, MASK_PIECE, Vocabulary
from polyglot.errors import ConversionError

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
FILES = (HF_MODEL_FILENAME, TOKENIZER_JSON, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP)
# Keys that `from_pretrained` records about where it loaded from, not what the tokenizer is.
_LOADING_KWARGS = ("is_local", "local_files_only")


def save(vocab: Vocabulary, directory: pathlib.Path, max_len: int) -> None:
  """Writes `sentencepiece.bpe.model`, `tokenizer.json`, `tokenizer_config.json` and
  `special_tokens_map.json` for `vocab` (inputs of at most `max_len` tokens)."""
  from transformers import XLMRobertaTokenizer  # pylint: disable=g-import-not-at-top
  vocab.save(directory)
  tok = XLMRobertaTokenizer.from_pretrained(str(directory))
  if len(tok) != vocab.vocab_size or tok.mask_token_id != vocab.mask_id:
    raise ConversionError(f"transformers built a tokenizer of {len(tok)} ids with <mask> at "
                          f"{tok.mask_token_id} from {vocab.name}; polyglot's has "
                          f"{vocab.vocab_size} with <mask> at {vocab.mask_id}: this "
                          "transformers version converts XLM-R vocabularies differently")
  tok.model_max_length = max_len
  for key in _LOADING_KWARGS:
    tok.init_kwargs.pop(key, None)
  tok.save_pretrained(str(directory))
  files.write_json(directory / SPECIAL_TOKENS_MAP, tok.special_tokens_map)


def check(directory: pathlib.Path, vocab: Vocabulary) -> None:
  """ConversionError unless the HF tokenizer files present in `directory` agree with
  `vocab` (its `sentencepiece.bpe.model`) on XLM-R's layout: `<mask>` is the last id."""
  config = files.read_json(directory / TOKENIZER_CONFIG)
  mask = _content(config.get("mask_token", MASK_PIECE))
  if mask != MASK_PIECE:
    raise ConversionError(f"{directory / TOKENIZER_CONFIG} has mask_token {mask!r}, XLM-R's "
                          f"is {MASK_PIECE!r}: only XLM-R tokenizers convert")
  added = _added_tokens(directory / TOKENIZER_JSON)
  if added and added.get(MASK_PIECE) != vocab.mask_id:
    raise ConversionError(f"{directory / TOKENIZER_JSON} puts {MASK_PIECE} at id "
                          f"{added.get(MASK_PIECE)}, but XLM-R's layout over "
                          f"{HF_MODEL_FILENAME} puts it last, at {vocab.mask_id}: only XLM-R "
                          "tokenizers convert")


def _added_tokens(path: pathlib.Path) -> dict[Any, Any]:
  """Content -> id of the `added_tokens` of a `tokenizer.json` ({} when the file is absent)."""
  tokens = files.read_json(path).get("added_tokens", [])
  if not isinstance(tokens, list) or not all(isinstance(t, dict) for t in tokens):
    raise ConversionError(f"{path} has added_tokens that are not a list of token objects: "
                          "restore the file from the model's source")
  return {t.get("content"): t.get("id") for t in tokens}


def _content(token: Any) -> Any:
  """An added token's text: `tokenizer_config.json` holds a string or an AddedToken dict."""
  return token.get("content") if isinstance(token, dict) else token

