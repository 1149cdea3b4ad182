"""The checkpoint's own SentencePiece model as the evaluation tokenizer (XLM-R ids).

Implements `features.OffsetTokenizer`: `<s>`=0, `<pad>`=1, `</s>`=2,
`<unk>`=3, SentencePiece piece i has id i + 1 (fairseq's offset; DESIGN.md),
SentencePiece's own `<unk>` (its id 0) becomes 3. The model comes from a
checkpoint's stored bytes (`polyglot.load(...).vocab.model_bytes`), so
fine-tuning and prediction tokenize exactly as pretraining did.

SentencePiece reports each piece's span as BYTE offsets into the original
(unnormalised) UTF-8 text; `encode_offsets` turns them into character
offsets, which is what SQuAD's `answer_start` counts.

Encodings are memoised: QA contexts are shared by several questions and
tagging tokenizes every word of a treebank on its own.
"""
from __future__ import annotations

import functools

import sentencepiece as spm

from polyglot.errors import DataError

BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
_CACHE_SIZE = 1 << 16


class SentencePieceTokenizer:
  """A serialized SentencePiece model seen through XLM-R ids."""
  bos_id, pad_id, eos_id, unk_id = BOS_ID, PAD_ID, EOS_ID, UNK_ID

  def __init__(self, model_proto: bytes, name: str = "the checkpoint's vocabulary"):
    try:
      self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
    except RuntimeError as e:
      raise DataError(f"{name} is not a SentencePiece model ({str(e).splitlines()[0]}); "
                      "evaluate a checkpoint written by polyglot.train") from e
    if self.sp.unk_id() != 0:
      raise DataError(f"{name} has <unk> at SentencePiece id {self.sp.unk_id()}, the XLM-R id "
                      "mapping needs 0: retrain it with tools/train_vocab.py")
    self.vocab_size = self.sp.get_piece_size() + 2  # + <pad> + <mask>
    self._pieces = functools.lru_cache(_CACHE_SIZE)(self._encode_pieces)
    self._offsets = functools.lru_cache(_CACHE_SIZE)(self._encode_offsets)

  @staticmethod
  def _xlmr_ids(sp_ids) -> list[int]:
    return [UNK_ID if i == 0 else i + 1 for i in sp_ids]

  def _encode_pieces(self, text: str) -> tuple[int, ...]:
    return tuple(self._xlmr_ids(self.sp.encode(text)))

  def _encode_offsets(self, text: str) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    # begin/end are characters. A piece points into its proto (no reference): keep it alive.
    proto = self.sp.encode_as_immutable_proto(text)
    return (tuple(self._xlmr_ids(p.id for p in proto.pieces)),
            tuple((p.begin, p.end) for p in proto.pieces))

  def encode_pieces(self, text: str) -> list[int]:
    """XLM-R ids of `text`'s pieces, no special tokens."""
    return list(self._pieces(text))

  def encode_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Piece ids and each piece's [start, end) character span in `text`."""
    ids, spans = self._offsets(text)
    return list(ids), list(spans)
