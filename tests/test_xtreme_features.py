"""Features: XLM-R layouts, tagging windows and their inverse, QA windows and n-best.

A tiny SentencePiece model is trained here from the text below and wrapped
the XLM-R way (piece id + 1, `<unk>` = 3), as the project vocabulary does.
"""
import io

import numpy as np
import pytest

from polyglot.errors import DataError
from polyglot.eval import features as F
from polyglot.eval.readers import Answer, PairExample, QAExample, TagExample
from polyglot.eval.xtreme import tasks as xtreme

spm = pytest.importorskip("sentencepiece")

_CORPUS = [
    "Ada Lovelace wrote the first computer program in 1843.",
    "Charles Babbage designed the Analytical Engine in London.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "敏捷的棕色狐狸跳过了懒狗。北京是中国的首都。",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Paris is the capital of France and Berlin is the capital of Germany.",
]


class XlmrSentencePiece:
  """SentencePiece with XLM-R ids: `<s>`=0 `<pad>`=1 `</s>`=2 `<unk>`=3, pieces +1."""
  bos_id, pad_id, eos_id, unk_id = 0, 1, 2, 3

  def __init__(self, model_proto: bytes):
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

  def _ids(self, sp_ids):
    return [self.unk_id if i == self.sp.unk_id() else i + 1 for i in sp_ids]

  def encode_pieces(self, text):
    return self._ids(self.sp.encode(text))

  def encode_offsets(self, text):
    proto = self.sp.encode_as_immutable_proto(text)  # pieces point into it: keep it alive
    return self._ids(p.id for p in proto.pieces), [(p.begin, p.end) for p in proto.pieces]


@pytest.fixture(scope="module")
def tok():
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(_CORPUS * 20), model_writer=model,
                                 vocab_size=150, hard_vocab_limit=False, character_coverage=1.0,
                                 minloglevel=2)
  return XlmrSentencePiece(model.getvalue())


def test_xlmr_id_convention(tok):
  assert tok.encode_pieces("Ada wrote") == [i + 1 for i in tok.sp.encode("Ada wrote")]
  ids = tok.encode_pieces("Ada ∑")  # "∑" is not in the corpus: <unk>
  assert ids[-1] == tok.unk_id and min(ids[:-1]) >= 4


def test_pair_layout_and_longest_first_truncation(tok):
  a, b = tok.encode_pieces("Ada Lovelace wrote"), tok.encode_pieces("the first program")
  assert F.encode_pair(tok, "Ada Lovelace wrote", "the first program", 64) == (
      [0, *a, 2, 2, *b, 2])
  assert F.truncate_pair([1] * 7, [2] * 3, 6) == ([1] * 3, [2] * 3)  # cut the longer first
  assert F.truncate_pair([1] * 4, [2] * 4, 5) == ([1] * 3, [2] * 2)  # ties cut b
  assert len(F.encode_pair(tok, " ".join(_CORPUS), "short", 16)) == 16
  assert F.encode_single(tok, " ".join(_CORPUS), 10)[-1] == tok.eos_id


def test_classification_features_and_batch(tok):
  ex = [PairExample("g1", "Ada wrote.", "Babbage designed.", "neutral"),
        PairExample("g2", "Fuchs.", "Hund.", "entailment")]
  feats = F.classification_features(ex, tok, xtreme.XNLI_LABELS, 32)
  assert [f.label for f in feats] == [2, 1]
  batch = F.classification_batch(feats, 32, tok.pad_id)
  assert batch["input_ids"].shape == (2, 32) and batch["input_ids"].dtype == np.int32
  assert batch["input_mask"].sum() == sum(len(f.input_ids) for f in feats)
  with pytest.raises(DataError, match="g3: label 'maybe'"):
    F.classification_features([PairExample("g3", "a", "b", "maybe")], tok, xtreme.XNLI_LABELS, 8)


def test_tagging_labels_on_first_piece(tok):
  ex = TagExample("s", ("Lovelace", "wrote", "∑"), ("B-PER", "O", "O"))
  (f,) = F.tagging_features([ex], tok, 64, xtreme.PANX_LABELS)
  pieces = [F.word_pieces(tok, w, 62) for w in ex.words]
  assert len(pieces[0]) > 1  # a multi-piece word, so the ignore rule is exercised
  assert f.input_ids == (0, *pieces[0], *pieces[1], *pieces[2], 2)
  b_per = xtreme.PANX_LABELS.index("B-PER")
  o = xtreme.PANX_LABELS.index("O")
  expected = [F.IGNORE_LABEL, b_per] + [F.IGNORE_LABEL] * (len(pieces[0]) - 1) + [o] + (
      [F.IGNORE_LABEL] * (len(pieces[1]) - 1)) + [o] + [F.IGNORE_LABEL] * (len(pieces[2]) - 1) + [
      F.IGNORE_LABEL]
  assert list(f.label_ids) == expected
  batch = F.tagging_batch([f], 64, tok.pad_id)
  assert (batch["labels"][0, len(f.input_ids):] == F.IGNORE_LABEL).all()
  with pytest.raises(DataError, match="tag 'B-DATE'"):
    F.tagging_features([TagExample("t", ("x",), ("B-DATE",))], tok, 16, xtreme.PANX_LABELS)


def test_long_sentences_split_into_windows_and_round_trip(tok):
  words = tuple(" ".join(_CORPUS).split())
  tags = tuple(xtreme.UPOS_LABELS[i % len(xtreme.UPOS_LABELS)] for i in range(len(words)))
  examples = [TagExample("long", words, tags), TagExample("short", ("Ada",), ("PROPN",))]
  feats = F.tagging_features(examples, tok, 16, xtreme.UPOS_LABELS)
  assert len([f for f in feats if f.example_index == 0]) > 2
  assert all(len(f.input_ids) <= 16 for f in feats)
  # Every word's first piece appears exactly once over the windows, in order.
  seen = [w for f in feats if f.example_index == 0 for w in f.word_index if w >= 0]
  assert seen == list(range(len(words)))
  # Logits that put all mass on the gold label give the gold tags back.
  logits = []
  for f in feats:
    lg = np.zeros((len(f.input_ids), len(xtreme.UPOS_LABELS)))
    for p, label in enumerate(f.label_ids):
      if label != F.IGNORE_LABEL:
        lg[p, label] = 1.0
    logits.append(lg)
  assert F.word_predictions(examples, feats, logits, xtreme.UPOS_LABELS) == [tags, ("PROPN",)]
  with pytest.raises(DataError, match="do not cover every word"):
    F.word_predictions(examples, feats[:1], logits[:1], xtreme.UPOS_LABELS)


def test_overlong_and_empty_words_become_unk(tok):
  assert F.word_pieces(tok, "Lovelace", 1) == [tok.unk_id]
  assert F.word_pieces(tok, "\u200b", 8) == [tok.unk_id]  # normalised away: no piece


def _qa_example(tok_text="Charles Babbage designed the Analytical Engine in London.",
                answer="Analytical Engine"):
  context = " ".join([_CORPUS[0], _CORPUS[4], tok_text, _CORPUS[5]])
  start = context.index(answer)
  return QAExample("q1", "What did Babbage design?", context, (Answer(answer, start),))


def test_qa_windows_cover_the_answer(tok):
  ex = _qa_example()
  feats = F.qa_features([ex], tok, max_seq_length=48, doc_stride=8, max_query_length=64,
                        training=True)
  assert len(feats) > 2 and all(len(f.input_ids) <= 48 for f in feats)
  query = tok.encode_pieces(ex.question)
  for f in feats:
    assert f.input_ids[:len(query) + 3] == (0, *query, 2, 2) and f.input_ids[-1] == 2
  inside = [f for f in feats if f.start_position > 0]
  assert inside
  for f in inside:
    text = ex.context[f.offsets[f.start_position][0]:f.offsets[f.end_position][1]].strip()
    assert text == "Analytical Engine"
  # Every context position has its maximal context in exactly one window.
  n_ctx = len(tok.encode_offsets(ex.context)[0])
  assert sum(sum(f.max_context) for f in feats) == n_ctx
  batch = F.qa_batch(feats, 48, tok.pad_id)
  assert batch["start_positions"].tolist() == [f.start_position for f in feats]


def test_qa_training_skips_misaligned_answers(tok):
  ex = _qa_example()
  wrong = QAExample("q2", ex.question, ex.context, (Answer("Analytical Engine", 0),))
  assert F.qa_features([wrong], tok, max_seq_length=64, training=True) == []
  assert F.qa_features([wrong], tok, max_seq_length=64)  # prediction keeps every question


def test_qa_nbest_maps_back_to_context_text(tok):
  ex = _qa_example()
  feats = F.qa_features([ex], tok, max_seq_length=64, doc_stride=8, training=True)
  # The answer must lie in the window where its first piece has maximal context.
  assert any(f.start_position > 0 and f.max_context[f.start_position] for f in feats)
  starts, ends = [], []
  for f in feats:
    s, e = np.zeros(len(f.input_ids)), np.zeros(len(f.input_ids))
    if f.start_position > 0:
      s[f.start_position], e[f.end_position] = 5.0, 5.0
    # A strong span in the question must never win: it is not context.
    s[1], e[2] = 9.0, 9.0
    starts.append(s)
    ends.append(e)
  nbest = F.qa_nbest([ex], feats, starts, ends)
  assert F.best_answers(nbest) == {"q1": "Analytical Engine"}
  spans = nbest["q1"]
  assert len(spans) <= F.QA_N_BEST_SIZE and len({s.text for s in spans}) == len(spans)
  assert sum(s.probability for s in spans) == pytest.approx(1.0)
  assert spans[0].start_logit == 5.0


def test_qa_nbest_respects_max_answer_length(tok):
  ex = _qa_example()
  (f,) = F.qa_features([ex], tok, max_seq_length=256)
  first = f.offsets.index(next(o for o in f.offsets if o != (-1, -1)))
  s, e = np.zeros(len(f.input_ids)), np.zeros(len(f.input_ids))
  s[first], e[first + 40] = 10.0, 10.0  # 41 pieces: longer than 30
  e[first + 2] = 5.0
  best = F.qa_nbest([ex], [f], [s], [e])["q1"][0]
  assert best.text == ex.context[f.offsets[first][0]:f.offsets[first + 2][1]].strip()


def test_chinese_context_offsets_are_character_exact(tok):
  context = "敏捷的棕色狐狸跳过了懒狗。北京是中国的首都。"
  ex = QAExample("zh", "首都?", context, (Answer("北京", context.index("北京")),))
  (f,) = F.qa_features([ex], tok, max_seq_length=64, training=True)
  assert context[f.offsets[f.start_position][0]:f.offsets[f.end_position][1]] == "北京"
