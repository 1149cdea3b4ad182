"""The vocabulary: XLM-R ids, identical to Hugging Face's XLMRobertaTokenizer."""
import io

import numpy as np
import pytest
import sentencepiece as spm

from polyglot import _env
from polyglot.data import sources
from polyglot.data import vocab as vocab_lib
from polyglot.errors import ConfigError, DataError

tf = _env.import_tensorflow()

# Lines in several scripts and languages, from the embedded corpus.
LANGS = ("eng_Latn", "swh_Latn", "cmn_Hans", "rus_Cyrl", "arb_Arab", "hin_Deva", "tha_Thai",
         "kor_Kore", "amh_Ethi", "yor_Latn", "vie_Latn", "heb_Hebr")


@pytest.fixture(scope="module")
def texts():
  corpus = sources.embedded_corpus()
  return [line for lang in LANGS for line in corpus.texts[lang][:3]]


def test_default_vocabulary_has_xlmr_layout(vocab):
  assert vocab.vocab_size == vocab_lib.DEFAULT_CONFIG.vocab_size == 8000
  assert (vocab.bos_id, vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
  assert vocab.mask_id == vocab.vocab_size - 1
  sp = spm.SentencePieceProcessor(model_proto=vocab.model_bytes)
  assert sp.get_piece_size() + 2 == vocab.vocab_size     # + <pad> + <mask>
  ids = vocab.encode("Everyone has the right to education.")
  assert ids == [i + 1 for i in sp.encode("Everyone has the right to education.")]


def test_unknown_characters_map_to_unk(vocab):
  assert vocab.encode("\U0001F600") in ([vocab_lib.UNK_ID], [4, vocab_lib.UNK_ID])


def test_encode_decode_and_tf_agree(vocab, texts):
  sp = spm.SentencePieceProcessor(model_proto=vocab.model_bytes)
  for text in texts:
    ids = vocab.encode(text)
    assert all(vocab_lib.FIRST_PIECE_ID <= i < vocab.mask_id or i == vocab.unk_id for i in ids)
    assert vocab.encode_tf(tf.constant(text)).numpy().tolist() == ids
    if vocab.unk_id not in ids:  # the text as SentencePiece normalized it
      assert vocab.decode(ids) == sp.decode(sp.encode(text))
  ids = [vocab.bos_id] + vocab.encode("Everyone has rights") + [vocab.mask_id, vocab.eos_id,
                                                                vocab.pad_id]
  assert vocab.decode(ids) == "Everyone has rights<mask>"
  assert vocab.decode_tf(tf.constant(ids)).numpy().decode() == vocab.decode(ids)


def test_word_start_marks_pieces_beginning_with_the_word_boundary(vocab):
  starts = vocab.word_start
  assert starts.shape == (vocab.vocab_size,) and not starts[:4].any() and not starts[-1]
  ids = vocab.encode("internationalization")
  assert starts[ids[0]] and not starts[ids[1:]].any()


def test_hugging_face_tokenizer_gives_identical_ids(vocab, texts, tmp_path):
  transformers = pytest.importorskip("transformers")
  vocab.save(tmp_path)
  hf = transformers.XLMRobertaTokenizer.from_pretrained(str(tmp_path))
  assert len(hf) == vocab.vocab_size
  assert (hf.bos_token_id, hf.pad_token_id, hf.eos_token_id, hf.unk_token_id,
          hf.mask_token_id) == (0, 1, 2, 3, vocab.mask_id)
  for text in texts + ["Everyone has the right to life, liberty and security of person."]:
    assert hf(text)["input_ids"] == [vocab.bos_id] + vocab.encode(text) + [vocab.eos_id], text


def test_equality_is_by_model(vocab):
  assert vocab_lib.Vocabulary(vocab.model_bytes) == vocab
  assert hash(vocab_lib.Vocabulary(vocab.model_bytes)) == hash(vocab)


def _tiny_spm(**kwargs) -> bytes:
  out = io.BytesIO()
  lines = [f"word{i} text{i % 7} sample{i % 3}" for i in range(200)]
  spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=out,
                                 vocab_size=30, hard_vocab_limit=False, minloglevel=2, **kwargs)
  return out.getvalue()


def test_vocabulary_with_mask_not_last_is_refused():
  v = vocab_lib.Vocabulary(_tiny_spm(user_defined_symbols=["<mask>"]), name="tiny.model")
  with pytest.raises(DataError) as e:
    v.vocab_size
  assert "\n" not in str(e.value)
  assert "tiny.model has <mask> at id 4" in str(e.value) and "puts <mask> last" in str(e.value)


def test_vocabulary_with_other_special_ids_is_refused():
  v = vocab_lib.Vocabulary(_tiny_spm(pad_id=0, eos_id=1, unk_id=2, bos_id=-1), name="t5.model")
  with pytest.raises(DataError, match="t5.model has special ids .* retrain it"):
    v.vocab_size


def test_missing_or_garbage_vocabulary_is_refused(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    vocab_lib.Vocabulary(tmp_path / "none.model").vocab_size
  (tmp_path / "bad.model").write_bytes(b"not a model")
  with pytest.raises(DataError, match="is not a SentencePiece model"):
    vocab_lib.Vocabulary(tmp_path / "bad.model").vocab_size


def test_train_on_a_temperature_sample():
  corpus = sources.embedded_corpus()
  langs = ["eng_Latn", "swh_Latn", "yor_Latn"]
  datasets = [tf.data.Dataset.from_tensor_slices(list(corpus.texts[l])) for l in langs]
  texts = vocab_lib.sample_texts(datasets, [0.6, 0.3, 0.1], 2000, seed=0)
  assert len(texts) == 2000
  counts = [sum(t in corpus.texts[l] for t in texts) for l in langs]
  np.testing.assert_allclose(np.array(counts) / 2000, [0.6, 0.3, 0.1], atol=0.04)
  v = vocab_lib.train(texts, vocab_lib.VocabConfig(vocab_size=300, sample_size=2000))
  assert v.vocab_size <= 300 and v.mask_id == v.vocab_size - 1
  assert v.decode(v.encode("Kila mtu ana haki")) == "Kila mtu ana haki"


def test_vocab_config_is_validated():
  with pytest.raises(ConfigError, match="VocabConfig.vocab_size=10 is invalid"):
    vocab_lib.VocabConfig(vocab_size=10)
  with pytest.raises(ConfigError, match="character_coverage"):
    vocab_lib.VocabConfig(character_coverage=0.5)
