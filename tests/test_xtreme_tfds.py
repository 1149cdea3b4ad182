"""TFDS readers on `tfds.testing.mock_data` (offline), and the builder names used."""
import pytest

from polyglot import _env
from polyglot.errors import DataError
from polyglot.eval import readers, tasks
from polyglot.eval.xtreme.tasks import BENCHMARK as XTREME

_env.import_tensorflow()
tfds = pytest.importorskip("tensorflow_datasets")


def _source(task, lang, split, data_dir):
  return tasks.discover(XTREME.task(task), tfds_data_dir=data_dir).source(lang, split)


def test_every_builder_and_config_exists():
  for spec in XTREME.tasks.values():
    data = tasks.discover(spec, tfds_data_dir="/nonexistent")
    for src in data.sources.values():
      name, _, config = src.builder.partition("/")
      cls = tfds.builder_cls(name)
      if config:
        assert config in cls.builder_configs, (spec.name, src.builder)


def test_xnli_pairs_and_label_names(tmp_path):
  langs = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi",
           "zh")

  def as_dataset(self, split, **kwargs):  # xnli's Translation features, two examples
    del self, split, kwargs
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.data.Dataset.from_tensor_slices({
        "premise": {lg: [f"p0-{lg}", f"p1-{lg}"] for lg in langs},
        "hypothesis": {"language": [list(langs)] * 2,
                       "translation": [[f"h0-{lg}" for lg in langs],
                                       [f"h1-{lg}" for lg in langs]]},
        "label": [0, 2]})
  with tfds.testing.mock_data(as_dataset_fn=as_dataset, data_dir=str(tmp_path)):
    ex = readers.load(tasks.discover(XTREME.task("xnli"), tfds_data_dir=tmp_path), "de",
                      "dev")
  assert [(e.text_a, e.text_b, e.label) for e in ex] == [
      ("p0-de", "h0-de", "entailment"), ("p1-de", "h1-de", "contradiction")]


def test_xquad_questions_from_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=4, data_dir=str(tmp_path)):
    ex = readers.load_tfds(_source("xquad", "de", "test", tmp_path))
  assert len(ex) == 4 and all(isinstance(e, readers.QAExample) for e in ex)
  assert all(isinstance(a.start, int) and isinstance(a.text, str) for e in ex for a in e.answers)


def test_tydiqa_train_keeps_english_ids(tmp_path):
  def as_dataset(self, split, **kwargs):  # ids of TyDi QA's multilingual train split
    del self, split, kwargs
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    ids = ["english-1-0", "finnish-2-0", "english-3-1"]
    return tf.data.Dataset.from_tensor_slices({
        "id": ids, "title": ["t"] * 3, "context": ["Ada wrote."] * 3,
        "question": ["Who?"] * 3,
        "answers": {"text": [["Ada"]] * 3, "answer_start": [[0]] * 3}})
  with tfds.testing.mock_data(as_dataset_fn=as_dataset, data_dir=str(tmp_path)):
    ex = readers.load_tfds(_source("tydiqa", "en", "train", tmp_path))
  assert [e.guid for e in ex] == ["english-1-0", "english-3-1"]
  assert ex[0].answers == (readers.Answer("Ada", 0),)


def test_wikiann_tags_decoded_to_names(tmp_path):
  def as_dataset(self, split, **kwargs):
    del self, split, kwargs
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.data.Dataset.from_tensor_slices({
        "tokens": [["Angela", "Merkel", "spricht"]], "tags": [[1, 2, 0]],
        "langs": [["de", "de", "de"]], "spans": [["PER: Angela Merkel", "", ""]]})
  with tfds.testing.mock_data(as_dataset_fn=as_dataset, data_dir=str(tmp_path)):
    (ex,) = readers.load_tfds(_source("panx", "de", "test", tmp_path))
  assert ex.words == ("Angela", "Merkel", "spricht") and ex.tags == ("B-PER", "I-PER", "O")


def test_retrieval_sets_from_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=5, data_dir=str(tmp_path)):
    tatoeba = readers.load_tfds(_source("tatoeba", "de", "test", tmp_path))
    bucc = readers.load_tfds(_source("bucc2018", "zh", "dev", tmp_path))
  assert len(tatoeba.source) == len(tatoeba.english) == 5
  assert bucc.gold and {s for s, _ in bucc.gold} <= set(bucc.source_ids)
  assert {e for _, e in bucc.gold} <= set(bucc.english_ids)


def test_unprepared_builder_names_the_fix(tmp_path):
  with pytest.raises(DataError, match=r"no prepared data in .*tfds build tatoeba/tatoeba_de"):
    readers.load_tfds(_source("tatoeba", "de", "test", tmp_path))
