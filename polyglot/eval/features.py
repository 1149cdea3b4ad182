"""Examples to model inputs, and model outputs back to task predictions.

Shape legend: b=batch, l=length, c=classes.

Ids follow XLM-R (DESIGN.md): `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, text
pieces are SentencePiece ids + 1, `<mask>` is last. A tokenizer is anything
with the `Tokenizer` protocol; extractive QA also needs character offsets
(`OffsetTokenizer`). Sequences are laid out as fairseq/Hugging Face XLM-R:
one sentence `<s> a </s>`, a pair `<s> a </s></s> b </s>`.

What follows XTREME (google-research/xtreme, `third_party/`):
- tagging (`utils_tag.py`, `utils_preprocess.py` *_tokenize_preprocess):
  each word is tokenized on its own; a word with no piece, or more pieces
  than fit, becomes `<unk>`; the label sits on the word's first piece and the
  other pieces get `IGNORE_LABEL`; a sentence longer than the window is split
  between words into several windows instead of being truncated.
- classification (`processors/utils.py`): pairs truncated longest-first.
- QA (`run_squad.py`, HF `squad_convert_examples_to_features`): question
  first, cut to 64 pieces; the context in windows of the remaining length
  every 128 pieces; a position is scored only in the window where it has the
  most context (BERT's `_check_is_max_context`); n-best search over the top
  20 starts and ends, answers at most 30 pieces.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from polyglot.errors import DataError
from polyglot.eval.readers import ChoiceExample, PairExample, QAExample, TagExample

IGNORE_LABEL = -100  # torch CrossEntropyLoss ignore_index, XTREME's pad_token_label_id
# XTREME scripts/train_qa.sh and run_squad.py defaults.
QA_MAX_SEQ_LENGTH = 384
QA_DOC_STRIDE = 128
QA_MAX_QUERY_LENGTH = 64
QA_N_BEST_SIZE = 20
QA_MAX_ANSWER_LENGTH = 30
_NO_SPAN = (-1, -1)


class Tokenizer(Protocol):
  """Text to XLM-R piece ids (no special tokens added)."""
  bos_id: int
  eos_id: int
  pad_id: int
  unk_id: int

  def encode_pieces(self, text: str) -> list[int]:
    ...


class OffsetTokenizer(Tokenizer, Protocol):
  """A tokenizer that also says which characters of `text` each piece covers."""

  def encode_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Piece ids and, per piece, its [start, end) character span in `text`."""
    ...


# ---- sentence classification ----

@dataclasses.dataclass(frozen=True)
class ClassificationFeature:
  input_ids: tuple[int, ...]
  label: int  # index into the task's labels


def truncate_pair(a: Sequence[int], b: Sequence[int], max_pieces: int
                  ) -> tuple[list[int], list[int]]:
  """Longest-first truncation (HF `truncation="longest_first"`; ties cut `b`)."""
  la, lb = len(a), len(b)
  while la + lb > max_pieces:
    if la > lb:
      la -= 1
    else:
      lb -= 1
  return list(a[:la]), list(b[:lb])


def encode_single(tok: Tokenizer, text: str, max_length: int) -> list[int]:
  """`<s> text </s>`, text cut to `max_length - 2` pieces (XTREME's retrieval
  `prepare_batch`)."""
  return [tok.bos_id, *tok.encode_pieces(text)[:max_length - 2], tok.eos_id]


def encode_pair(tok: Tokenizer, a: str, b: str, max_length: int) -> list[int]:
  """`<s> a </s></s> b </s>` in at most `max_length` ids."""
  pa, pb = truncate_pair(tok.encode_pieces(a), tok.encode_pieces(b), max_length - 4)
  return [tok.bos_id, *pa, tok.eos_id, tok.eos_id, *pb, tok.eos_id]


def classification_features(examples: Sequence[PairExample], tok: Tokenizer,
                            labels: Sequence[str], max_length: int
                            ) -> list[ClassificationFeature]:
  """One pair encoding per example; labels index `labels` (the task's label set)."""
  label_id = {label: i for i, label in enumerate(labels)}
  out = []
  for ex in examples:
    if ex.label not in label_id:
      raise DataError(f"{ex.guid}: label {ex.label!r} is not one of {tuple(labels)}")
    out.append(ClassificationFeature(tuple(encode_pair(tok, ex.text_a, ex.text_b, max_length)),
                                     label_id[ex.label]))
  return out


# ---- multiple choice ----

@dataclasses.dataclass(frozen=True)
class ChoiceFeature:
  input_ids: tuple[tuple[int, ...], ...]  # one (context, choice) pair encoding per choice
  label: int  # the right choice's index


def choice_features(examples: Sequence[ChoiceExample], tok: Tokenizer, max_length: int
                    ) -> list[ChoiceFeature]:
  """Each example's (context, choice) pairs (XTREME's `run_xcopa.py`: `tokenizer(first,
  second, truncation=True)`); every example needs as many choices as the first."""
  out = []
  for ex in examples:
    if len(ex.choices) != len(examples[0].choices):
      raise DataError(f"{ex.guid}: {len(ex.choices)} choices, but {examples[0].guid} has "
                      f"{len(examples[0].choices)}; a task's examples need as many choices")
    if ex.label is None or not 0 <= ex.label < len(ex.choices):
      raise DataError(f"{ex.guid}: label {ex.label!r} is not a choice index "
                      f"(0..{len(ex.choices) - 1})")
    out.append(ChoiceFeature(tuple(tuple(encode_pair(tok, ex.context, c, max_length))
                                   for c in ex.choices), ex.label))
  return out


# ---- token classification ----

@dataclasses.dataclass(frozen=True)
class TaggingFeature:
  """One window of a sentence: `<s> pieces </s>`."""
  input_ids: tuple[int, ...]
  label_ids: tuple[int, ...]  # the word's tag id on its first piece, IGNORE_LABEL elsewhere
  word_index: tuple[int, ...]  # the word whose first piece is here, -1 elsewhere
  example_index: int


def word_pieces(tok: Tokenizer, word: str, max_pieces: int) -> list[int]:
  """A word's pieces, or `<unk>` when it has none or more than `max_pieces`."""
  pieces = tok.encode_pieces(word)
  return pieces if 0 < len(pieces) <= max_pieces else [tok.unk_id]


def _windows(pieces: list[list[int]], max_pieces: int) -> list[range]:
  """Word ranges whose pieces fit in `max_pieces` (XTREME splits, never truncates)."""
  out, start, used = [], 0, 0
  for i, p in enumerate(pieces):
    if used + len(p) > max_pieces:
      out.append(range(start, i))
      start, used = i, 0
    used += len(p)
  out.append(range(start, len(pieces)))
  return out


def tagging_features(examples: Sequence[TagExample], tok: Tokenizer, max_length: int,
                     labels: Sequence[str] | None = None) -> list[TaggingFeature]:
  """Windows of `max_length` ids; `labels=None` leaves every label ignored
  (prediction on languages whose tags may lie outside the training set)."""
  max_pieces = max_length - 2
  label_id = {label: i for i, label in enumerate(labels or ())}
  out = []
  for index, ex in enumerate(examples):
    pieces = [word_pieces(tok, w, max_pieces) for w in ex.words]
    for window in _windows(pieces, max_pieces):
      ids, label_ids, word_index = [tok.bos_id], [IGNORE_LABEL], [-1]
      for w in window:
        if labels is not None and ex.tags[w] not in label_id:
          raise DataError(f"{ex.guid}: tag {ex.tags[w]!r} of word {w} is not one of "
                          f"{tuple(labels)}")
        first = label_id[ex.tags[w]] if labels is not None else IGNORE_LABEL
        ids += pieces[w]
        label_ids += [first] + [IGNORE_LABEL] * (len(pieces[w]) - 1)
        word_index += [w] + [-1] * (len(pieces[w]) - 1)
      out.append(TaggingFeature(tuple(ids + [tok.eos_id]), tuple(label_ids + [IGNORE_LABEL]),
                                tuple(word_index + [-1]), index))
  return out


def word_predictions(examples: Sequence[TagExample], features: Sequence[TaggingFeature],
                     logits: Sequence[np.ndarray], labels: Sequence[str]
                     ) -> list[tuple[str, ...]]:
  """Per-word tags from per-piece logits [l, c] (one array per feature): the
  argmax at each word's first piece, as XTREME's `run_tag.py` evaluates."""
  preds = [np.full(len(ex.words), -1) for ex in examples]
  for f, lg in zip(features, logits, strict=True):
    positions = [p for p, w in enumerate(f.word_index) if w >= 0]
    words = [f.word_index[p] for p in positions]
    preds[f.example_index][words] = np.asarray(lg)[positions].argmax(-1)  # [l, c] -> [words]
  for ex, p in zip(examples, preds):
    if (p < 0).any():
      raise DataError(f"{ex.guid}: the features given do not cover every word; pass all "
                      "features of these examples")
  return [tuple(labels[i] for i in p) for p in preds]


# ---- extractive question answering ----

@dataclasses.dataclass(frozen=True)
class QAFeature:
  """One window `<s> question </s></s> context window </s>`."""
  input_ids: tuple[int, ...]
  example_index: int
  offsets: tuple[tuple[int, int], ...]  # context character span per position; (-1, -1) elsewhere
  max_context: tuple[bool, ...]  # this window gives the position its maximal context
  start_position: int  # training target; 0 (`<s>`) when the answer is outside the window
  end_position: int


def _answer_tokens(offsets: Sequence[tuple[int, int]], start: int, end: int
                   ) -> tuple[int, int] | None:
  """First and last piece overlapping characters [start, end)."""
  hits = [i for i, (s, e) in enumerate(offsets) if e > start and s < end]
  return (hits[0], hits[-1]) if hits else None


def _doc_windows(n: int, max_tokens: int, stride: int) -> list[tuple[int, int]]:
  """(start, length) of context windows (BERT run_squad `doc_spans`)."""
  spans, start = [], 0
  while True:
    length = min(n - start, max_tokens)
    spans.append((start, length))
    if start + length >= n:
      return spans
    start += min(length, stride)


def _is_max_context(spans: list[tuple[int, int]], index: int, pos: int) -> bool:
  """BERT's `_check_is_max_context`: min(left, right) context + 0.01 * length."""
  best, best_score = None, None
  for i, (start, length) in enumerate(spans):
    if start <= pos < start + length:
      score = min(pos - start, start + length - 1 - pos) + 0.01 * length
      if best_score is None or score > best_score:  # ties keep the earlier window
        best, best_score = i, score
  return best == index


def _training_target(ex: QAExample, offsets: list[tuple[int, int]]) -> tuple[int, int] | None:
  """Piece span of the first answer; None where the text is not at answer_start
  (HF's squad processor skips those training examples)."""
  ans = ex.answers[0]
  end = ans.start + len(ans.text)
  if ex.context[ans.start:end].strip() != ans.text.strip() or not ans.text.strip():
    return None
  return _answer_tokens(offsets, ans.start, end)


def qa_features(examples: Sequence[QAExample], tok: OffsetTokenizer, *,
                max_seq_length: int = QA_MAX_SEQ_LENGTH, doc_stride: int = QA_DOC_STRIDE,
                max_query_length: int = QA_MAX_QUERY_LENGTH, training: bool = False
                ) -> list[QAFeature]:
  """Sliding windows over each context; training targets from the first answer."""
  out = []
  for index, ex in enumerate(examples):
    query = tok.encode_pieces(ex.question)[:max_query_length]
    ctx_ids, ctx_offsets = tok.encode_offsets(ex.context)
    target = _training_target(ex, ctx_offsets) if training and ex.answers else None
    if training and target is None:
      continue
    head = [tok.bos_id, *query, tok.eos_id, tok.eos_id]
    max_tokens = max_seq_length - len(head) - 1
    if max_tokens < 1:
      raise DataError(f"{ex.guid}: max_seq_length={max_seq_length} leaves no room for context "
                      f"after a {len(query)}-piece question")
    spans = _doc_windows(len(ctx_ids), max_tokens, doc_stride)
    for w, (start, length) in enumerate(spans):
      window = range(start, start + length)
      offsets = [_NO_SPAN] * len(head) + [ctx_offsets[i] for i in window] + [_NO_SPAN]
      max_ctx = ([False] * len(head) + [_is_max_context(spans, w, i) for i in window] + [False])
      s = e = 0
      if target is not None and target[0] >= start and target[1] < start + length:
        s, e = target[0] - start + len(head), target[1] - start + len(head)
      out.append(QAFeature(tuple(head + [ctx_ids[i] for i in window] + [tok.eos_id]), index,
                           tuple(offsets), tuple(max_ctx), s, e))
  return out


@dataclasses.dataclass(frozen=True)
class Span:
  """One n-best answer: its context text, softmax probability and logits."""
  text: str
  probability: float
  start_logit: float
  end_logit: float


def _top(logits: np.ndarray, n: int) -> list[int]:
  return [int(i) for i in np.argsort(-logits, kind="stable")[:n]]


def _candidates(f: QAFeature, start_logits: np.ndarray, end_logits: np.ndarray,
                n_best_size: int, max_answer_length: int):
  n = len(f.input_ids)
  sl, el = np.asarray(start_logits)[:n], np.asarray(end_logits)[:n]  # [l]
  for s in _top(sl, n_best_size):
    for e in _top(el, n_best_size):
      if (f.offsets[s] == _NO_SPAN or f.offsets[e] == _NO_SPAN or not f.max_context[s]
          or e < s or e - s + 1 > max_answer_length):
        continue
      yield float(sl[s] + el[e]), float(sl[s]), float(el[e]), f.offsets[s][0], f.offsets[e][1]


def qa_nbest(examples: Sequence[QAExample], features: Sequence[QAFeature],
             start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray], *,
             n_best_size: int = QA_N_BEST_SIZE, max_answer_length: int = QA_MAX_ANSWER_LENGTH
             ) -> dict[str, tuple[Span, ...]]:
  """N-best answers per question id, best first (HF `compute_predictions_logits`,
  SQuAD v1.1: no null answer). Logits are per feature, one [l] array each."""
  by_example: dict[int, list] = {}
  for f, sl, el in zip(features, start_logits, end_logits, strict=True):
    by_example.setdefault(f.example_index, []).extend(
        _candidates(f, sl, el, n_best_size, max_answer_length))
  out = {}
  for index, ex in enumerate(examples):
    prelim = sorted(by_example.get(index, ()), key=lambda c: -c[0])
    best, seen = [], set()
    for score, s_logit, e_logit, c_start, c_end in prelim:
      text = ex.context[c_start:c_end].strip()
      if text in seen:
        continue
      seen.add(text)
      best.append((score, text, s_logit, e_logit))
      if len(best) == n_best_size:
        break
    if not best:
      best = [(0.0, "", 0.0, 0.0)]
    scores = np.array([b[0] for b in best])
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    out[ex.guid] = tuple(Span(t, float(p), s, e) for (_, t, s, e), p in zip(best, probs))
  return out


def best_answers(nbest: dict[str, tuple[Span, ...]]) -> dict[str, str]:
  """question id -> best answer text, the `predictions` of `metrics.qa_scores`."""
  return {qid: spans[0].text for qid, spans in nbest.items()}


# ---- batching ----

def pad_rows(rows: Sequence[Sequence[int]], length: int, value: int) -> np.ndarray:
  """[b, length] int32, each row right-padded with `value`."""
  out = np.full((len(rows), length), value, np.int32)
  for i, row in enumerate(rows):
    if len(row) > length:
      raise DataError(f"row {i} has {len(row)} ids, more than the batch length {length}")
    out[i, :len(row)] = row
  return out


def _inputs(rows: Sequence[Sequence[int]], length: int, pad_id: int) -> dict[str, np.ndarray]:
  ids = pad_rows(rows, length, pad_id)  # [b, l]
  return {"input_ids": ids, "input_mask": (ids != pad_id).astype(np.int32)}


def classification_batch(features: Sequence[ClassificationFeature], length: int, pad_id: int
                         ) -> dict[str, np.ndarray]:
  """input_ids, input_mask [b, l]; labels [b]."""
  batch = _inputs([f.input_ids for f in features], length, pad_id)
  batch["labels"] = np.array([f.label for f in features], np.int32)
  return batch


def choice_batch(features: Sequence[ChoiceFeature], length: int, pad_id: int
                 ) -> dict[str, np.ndarray]:
  """input_ids, input_mask [b, c, l]; labels [b]."""
  rows = [row for f in features for row in f.input_ids]
  batch = _inputs(rows, length, pad_id)  # [b * c, l]
  c = len(features[0].input_ids) if features else 0
  batch = {k: v.reshape(len(features), c, length) for k, v in batch.items()}
  batch["labels"] = np.array([f.label for f in features], np.int32)
  return batch


def tagging_batch(features: Sequence[TaggingFeature], length: int, pad_id: int
                  ) -> dict[str, np.ndarray]:
  """input_ids, input_mask, labels [b, l] (IGNORE_LABEL off first pieces and on padding)."""
  batch = _inputs([f.input_ids for f in features], length, pad_id)
  batch["labels"] = pad_rows([f.label_ids for f in features], length, IGNORE_LABEL)
  return batch


def qa_batch(features: Sequence[QAFeature], length: int, pad_id: int) -> dict[str, np.ndarray]:
  """input_ids, input_mask [b, l]; start_positions, end_positions [b]."""
  batch = _inputs([f.input_ids for f in features], length, pad_id)
  batch["start_positions"] = np.array([f.start_position for f in features], np.int32)
  batch["end_positions"] = np.array([f.end_position for f in features], np.int32)
  return batch
