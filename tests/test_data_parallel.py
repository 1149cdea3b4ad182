"""Parallel corpora: readers of aligned text, pair sources, pair tasks and mixtures."""
import collections
import pathlib

import pytest

from polyglot import _env
from polyglot.data import bitext, mixtures, parallel, pipeline
from polyglot.errors import ConfigError, DataError
import tasks

tf = _env.import_tensorflow()
import seqio  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

tfds.disable_progress_bar()

BIBLE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "parallel" / "bible"
# Two New Testaments and a partial translation (677 verses, no Revelation).
LANGS = ("acu_Latn", "agr_Latn", "gla_Latn")


@pytest.fixture(scope="module")
def bible():
  if not (BIBLE / "acu_Latn.tsv").exists():
    pytest.skip(f"the bible corpus is not at {BIBLE} (../shared/data/parallel/bible)")
  return BIBLE


@pytest.fixture(scope="module")
def texts(bible):
  """Language id -> {verse id: text}, read independently of the code under test."""
  out = {}
  for lang in LANGS:
    lines = (bible / f"{lang}.tsv").read_text(encoding="utf-8").splitlines()
    out[lang] = dict(line.split("\t") for line in lines)
  return out


@pytest.fixture(scope="module")
def mixture(bible):
  return tasks.register_bible(bible, name="test_bible", languages=LANGS)


def _pairs(source, split):
  return [(ex["source"].decode(), ex["target"].decode())
          for ex in source.get_dataset(split).as_numpy_iterator()]


def _expected(texts, l1, l2, validation, books=("REV",)):
  """(l1 text, l2 text) of the verses both have, in l1's file order."""
  return [(t1, texts[l2][v]) for v, t1 in texts[l1].items()
          if v in texts[l2] and (v.split(".")[1] in books) == validation]


def _one_line_error(excinfo, *words):
  message = str(excinfo.value)
  assert "\n" not in message
  for word in words:
    assert word in message, message


# Readers.
def test_id_tsv_holds_every_verse_of_the_manifest_in_file_order(bible, texts):
  manifest = dict(line.split("\t")[::3] for line in
                  (bible / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:])
  verses = bitext.read_id_tsv(bible / "acu_Latn.tsv")
  assert len(verses) == int(manifest["acu_Latn.tsv"])
  assert list(verses.items()) == list(texts["acu_Latn"].items())


def test_join_on_ids_keeps_the_first_sides_order_and_common_ids():
  a = {"b.MAT.1.2": "a2", "b.MAT.1.1": "a1", "b.MAT.1.3": "a3"}
  b = {"b.MAT.1.1": "b1", "b.MAT.1.2": "b2", "b.MAT.1.4": "b4"}
  assert bitext.join_on_ids(a, b) == [("b.MAT.1.2", "a2", "b2"), ("b.MAT.1.1", "a1", "b1")]


def test_verse_book():
  assert bitext.verse_book("b.MAT.1.1") == "MAT"
  assert bitext.verse_book("b.1CO.13.4") == "1CO"
  for bad in ("MAT.1.1", "b.MAT.1", "b.mat.1.1", "b.MAT.1.1x"):
    with pytest.raises(DataError, match="b.<BOOK>.<chapter>.<verse>"):
      bitext.verse_book(bad)


def test_readers_keep_spaces_and_strip_only_line_ends(tmp_path):
  (tmp_path / "a.tsv").write_bytes(b"b.MAT.1.1\t  two  spaces \r\nb.MAT.1.2\tx\n")
  assert bitext.read_id_tsv(tmp_path / "a.tsv") == {"b.MAT.1.1": "  two  spaces ",
                                                    "b.MAT.1.2": "x"}
  (tmp_path / "s.en").write_bytes(b"Hello  world\r\nBye\n")
  (tmp_path / "s.sw").write_bytes(b" Habari\nKwaheri")
  assert bitext.read_line_aligned(str(tmp_path / "s.en"), str(tmp_path / "s.sw")) == [
      ("Hello  world", " Habari"), ("Bye", "Kwaheri")]
  (tmp_path / "p.tsv").write_text("one\tmoja\ntwo \tmbili\n", encoding="utf-8")
  assert bitext.read_tsv_pairs(tmp_path / "p.tsv") == [("one", "moja"), ("two ", "mbili")]


@pytest.mark.parametrize("content, line, words", [
    (b"b.MAT.1.1\tx\nb.MAT.1.2 no tab\n", 2, ["expected 'id<TAB>text'", "0 tabs"]),
    (b"b.MAT.1.1\tx\n\tno id\n", 2, ["missing id"]),
    (b"b.MAT.1.1\tx\nb.MAT.1.2\t  \n", 2, ["empty text"]),
    (b"b.MAT.1.1\tx\nb.MAT.1.1\ty\n", 2, ["duplicate id 'b.MAT.1.1'", ":1)"]),
    (b"b.MAT.1.1\tx\nb.MAT.1.2\tcaf\xe9\n", 2, ["not UTF-8", "iconv"]),
    (b"b.MAT.1.1\tx\n\n", 2, ["0 tabs"]),
])
def test_id_tsv_errors_name_file_and_line(tmp_path, content, line, words):
  path = tmp_path / "swh_Latn.tsv"
  path.write_bytes(content)
  with pytest.raises(DataError) as e:
    bitext.read_id_tsv(path)
  _one_line_error(e, f"{path}:{line}:", *words)


def test_empty_files_are_errors(tmp_path):
  (tmp_path / "empty.tsv").write_bytes(b"")
  (tmp_path / "one.txt").write_text("a\n", encoding="utf-8")
  for call in (lambda: bitext.read_id_tsv(tmp_path / "empty.tsv"),
               lambda: bitext.read_tsv_pairs(tmp_path / "empty.tsv"),
               lambda: bitext.read_line_aligned(tmp_path / "one.txt", tmp_path / "empty.tsv")):
    with pytest.raises(DataError) as e:
      call()
    _one_line_error(e, f"{tmp_path / 'empty.tsv'}: the file is empty")


@pytest.mark.parametrize("a, b, words", [
    (b"1\n2\n3\n", b"1\n2\n", ["{a} has 3 lines", "{b} has 2"]),
    (b"1\n2\n", b"1\n2\n3\n4\n", ["{a} has 2 lines", "{b} has 4"]),
    (b"1\n2\n3\n", b"1\n \n3\n", ["{b}:2: empty side"]),
    (b"1\n\n3\n", b"1\n2\n3\n", ["{a}:2: empty side"]),
    (b"1\n2\n\xff\n", b"1\n2\n3\n", ["{a}:3: bytes are not UTF-8"]),
])
def test_line_aligned_errors_name_files_and_lines(tmp_path, a, b, words):
  path_a, path_b = tmp_path / "x.en-sw.en", tmp_path / "x.en-sw.sw"
  path_a.write_bytes(a)
  path_b.write_bytes(b)
  with pytest.raises(DataError) as e:
    bitext.read_line_aligned(path_a, path_b)
  _one_line_error(e, *(w.format(a=path_a, b=path_b) for w in words))


@pytest.mark.parametrize("content, words", [
    (b"one\tmoja\ntwo mbili\n", ["'source<TAB>target'", "0 tabs"]),
    (b"one\tmoja\ntwo\tmbili\tzwei\n", ["2 tabs"]),
    (b"one\tmoja\n\tmbili\n", ["empty source side"]),
    (b"one\tmoja\ntwo\t\n", ["empty target side"]),
    (b"one\tmoja\ntwo\tmb\xc3\n", ["not UTF-8"]),
])
def test_tsv_pair_errors_name_file_and_line(tmp_path, content, words):
  path = tmp_path / "en-sw.tsv"
  path.write_bytes(content)
  with pytest.raises(DataError) as e:
    bitext.read_tsv_pairs(path)
  _one_line_error(e, f"{path}:2:", *words)


# Bible tasks.
def test_bible_tasks_are_pairs_of_language_ids(mixture):
  assert sorted(t.name for t in mixture.tasks) == [
      "test_bible.acu_Latn.agr_Latn", "test_bible.acu_Latn.gla_Latn",
      "test_bible.agr_Latn.gla_Latn"]
  task = seqio.get_mixture_or_task("test_bible.acu_Latn.agr_Latn")
  assert task.splits == ("train", "validation")
  assert seqio.get_mixture_or_task("test_bible.acu_Latn.gla_Latn").splits == ("train",)
  assert not task.source.supports_arbitrary_sharding
  assert task.source.list_shards("train") == ["train"]


def test_bible_pairs_are_joined_on_verse_ids(mixture, texts):
  source = seqio.get_mixture_or_task("test_bible.acu_Latn.gla_Latn").source
  pairs = _pairs(source, "train")
  assert pairs == _expected(texts, "acu_Latn", "gla_Latn", validation=False)
  assert len(pairs) < len(texts["gla_Latn"]) < len(texts["acu_Latn"])  # missing ones skipped
  first = next(v for v in texts["acu_Latn"] if v in texts["gla_Latn"])
  assert pairs[0] == (texts["acu_Latn"][first], texts["gla_Latn"][first])


def test_held_out_books_are_exactly_the_validation_split(mixture, texts, bible):
  source = seqio.get_mixture_or_task("test_bible.acu_Latn.agr_Latn").source
  validation, train = _pairs(source, "validation"), _pairs(source, "train")
  assert validation == _expected(texts, "acu_Latn", "agr_Latn", validation=True)
  assert train == _expected(texts, "acu_Latn", "agr_Latn", validation=False)
  revelation = {t for v, t in texts["acu_Latn"].items() if v.startswith("b.REV.")}
  assert {a for a, _ in validation} <= revelation and not {a for a, _ in train} & revelation
  assert source.num_input_examples("validation") == len(validation)

  other = tasks.register_bible(bible, name="test_bible_gospels", pairs=[("agr_Latn", "acu_Latn")],
                               holdout_books=("MAT", "MAR"))
  pairs = _pairs(other.tasks[0].source, "validation")
  assert pairs == _expected(texts, "acu_Latn", "agr_Latn", True, books=("MAT", "MAR"))


def test_rates_follow_sampling_rates_over_pair_sizes(mixture, texts):
  sizes = {}
  for task in mixture.tasks:
    l1, l2 = task.name.split(".")[1:]
    sizes[task.name] = sum(len(a.encode()) + len(b.encode())
                           for a, b in _expected(texts, l1, l2, validation=False))
  rates = mixtures.sampling_rates(sizes, 0.3)
  for task in mixture.tasks:
    assert mixture.get_rate(task) == pytest.approx(rates[task.name])


def test_two_host_shards_partition_the_pairs(mixture):
  task = seqio.get_mixture_or_task("test_bible.acu_Latn.agr_Latn")
  cfg = pipeline.PipelineConfig(mixture="test_bible", length=64, batch_size=1, split="validation")

  def read(index, num_shards):
    ds = pipeline._read_task(task, cfg, seqio.ShardInfo(index=index, num_shards=num_shards))
    return [(tuple(ex["source"]), tuple(ex["target"])) for ex in ds.as_numpy_iterator()]

  whole, first, second = read(0, 1), read(0, 2), read(1, 2)
  assert len(whole) == task.source.num_input_examples("validation")
  assert collections.Counter(first) + collections.Counter(second) == collections.Counter(whole)
  assert abs(len(first) - len(second)) <= 1


def test_tokenized_pairs_are_vocabulary_ids_without_specials(mixture, vocab):
  task = seqio.get_mixture_or_task("test_bible.acu_Latn.agr_Latn")
  assert set(task.output_features) == {"source", "target"}
  assert task.output_features["source"].vocabulary == vocab
  strings = list(task.source.get_dataset("train").take(8).as_numpy_iterator())
  tokens = task.preprocess_postcache(task.source.get_dataset("train").take(8),
                                     sequence_length={"source": 16, "target": 16}, seed=0)
  for s, ids in zip(strings, tokens.as_numpy_iterator(), strict=True):
    for side in ("source", "target"):
      assert ids[side].dtype == "int32"
      assert ids[side].tolist() == vocab.encode(s[side].decode())
      assert not {vocab.bos_id, vocab.eos_id, vocab.pad_id} & set(ids[side].tolist())


def test_registering_again(mixture, bible):
  assert tasks.register_bible(bible, name="test_bible", languages=LANGS[::-1]) is mixture
  with pytest.raises(ConfigError, match="already registered"):
    tasks.register_bible(bible, name="test_bible", languages=LANGS, holdout_books=("JUD",))


def test_bible_choice_errors(bible):
  with pytest.raises(DataError) as e:
    tasks.register_bible(bible, name="test_bible_bad", languages=["acu", "deu"])
  _one_line_error(e, "'deu'", "has no file", "acu_Latn")
  with pytest.raises(ConfigError, match="not both"):
    tasks.register_bible(bible, name="test_bible_bad", languages=["acu"], pairs=[("acu", "agr")])
  with pytest.raises(ConfigError, match=r"\['rev'\] are not book codes"):
    tasks.register_bible(bible, name="test_bible_bad", languages=LANGS, holdout_books=("rev",))
  with pytest.raises(DataError) as e:  # disjoint partial translations
    tasks.register_bible(bible, name="test_bible_bad", pairs=[("gla_Latn", "pot_Latn")])
  _one_line_error(e, "gla_Latn.tsv", "pot_Latn.tsv", "share no verse")


def test_bible_file_errors_name_file_and_line(tmp_path):
  (tmp_path / "MANIFEST.tsv").write_text("file\tverses\n", encoding="utf-8")
  (tmp_path / "acu_Latn.tsv").write_text("b.MAT.1.1\tx\nb.REV.1.1\ty\n", encoding="utf-8")
  (tmp_path / "agr_Latn.tsv").write_text("b.MAT.1.1\tx\nMAT 1:2\ty\n", encoding="utf-8")
  with pytest.raises(DataError) as e:
    tasks.register_bible(tmp_path, name="test_bible_bad_ids")
  _one_line_error(e, f"{tmp_path / 'agr_Latn.tsv'}:2:", "b.<BOOK>.<chapter>.<verse>")
  (tmp_path / "agr_Latn.tsv").write_text("b.MAT.1.1\tx\nb.MAT.1.2\n", encoding="utf-8")
  with pytest.raises(DataError) as e:
    tasks.register_bible(tmp_path, name="test_bible_bad_ids")
  _one_line_error(e, f"{tmp_path / 'agr_Latn.tsv'}:2:", "0 tabs")
  (tmp_path / "bible.tsv").write_text("b.MAT.1.1\tx\n", encoding="utf-8")
  with pytest.raises(DataError) as e:
    tasks.register_bible(tmp_path, name="test_bible_bad_ids")
  _one_line_error(e, "bible.tsv", "cannot read language tag")


# Moses/OPUS and TSV directories.
def _write_moses(directory, prefix, tag_a, tag_b, lines):
  for tag in (tag_a, tag_b):
    text = "".join(f"{tag} {i}\n" for i in range(lines))
    (directory / f"{prefix}{tag_a}-{tag_b}.{tag}").write_text(text, encoding="utf-8")


def test_moses_directory(tmp_path):
  _write_moses(tmp_path, "", "en", "sw", 40)
  _write_moses(tmp_path, "Tatoeba.", "en", "sw", 3)
  _write_moses(tmp_path, "", "yo", "sw", 21)                # swh_Latn < yor_Latn: swapped
  (tmp_path / "Tatoeba.en-sw.xml").write_text("<xml/>\n", encoding="utf-8")
  (tmp_path / "README").write_text("OPUS\n", encoding="utf-8")
  mixture = tasks.register_moses(tmp_path, name="test_moses")
  assert sorted(t.name for t in mixture.tasks) == ["test_moses.eng_Latn.swh_Latn",
                                                   "test_moses.swh_Latn.yor_Latn"]
  en_sw = seqio.get_mixture_or_task("test_moses.eng_Latn.swh_Latn").source
  # Files in name order, each holding out its first ceil(n / 20) lines: Tatoeba.* 1 of 3,
  # en-sw.* 2 of 40.
  assert _pairs(en_sw, "validation") == [("en 0", "sw 0"), ("en 0", "sw 0"), ("en 1", "sw 1")]
  train = _pairs(en_sw, "train")
  assert train[:3] == [("en 1", "sw 1"), ("en 2", "sw 2"), ("en 2", "sw 2")]
  assert len(train) == 2 + 38
  sw_yo = seqio.get_mixture_or_task("test_moses.swh_Latn.yor_Latn").source
  assert _pairs(sw_yo, "train")[0] == ("sw 2", "yo 2")
  sizes = {"en_sw": sum(len(f"en {i}") + len(f"sw {i}") for i in [*range(2, 40), 1, 2]),
           "sw_yo": sum(len(f"sw {i}") + len(f"yo {i}") for i in range(2, 21))}
  rates = mixtures.sampling_rates(sizes)
  assert mixture.get_rate(seqio.get_mixture_or_task("test_moses.eng_Latn.swh_Latn")) == (
      pytest.approx(rates["en_sw"]))


@pytest.mark.parametrize("files, words", [
    ({"en-sw.en": b"a\nb\n"}, ["en-sw.en has no other side", "add en-sw.sw"]),
    ({"x.en-sw.sw": b"a\nb\n"}, ["x.en-sw.sw has no other side", "add x.en-sw.en"]),
    ({"en-sw.en": b"a\nb\nc\n", "en-sw.sw": b"a\nb\n"}, ["en-sw.en has 3 lines", "en-sw.sw has 2"]),
    ({"en-sw.en": b"a\nb\nc\n", "en-sw.sw": b"a\n\t\nc\n"}, ["en-sw.sw:2: empty side"]),
    ({"en-sw.en": b"a\nb\nc\xe9\n", "en-sw.sw": b"a\nb\nc\n"}, ["en-sw.en:3: bytes are not"]),
    ({"en-xx.en": b"a\n", "en-xx.xx": b"a\n"}, ["en-xx.en", "'en-xx' has no reading"]),
    ({"README": b"x\n"}, ["no [<prefix>.]<l1>-<l2>.<l1>"]),
])
def test_moses_errors_name_file_and_line(tmp_path, files, words):
  for name, content in files.items():
    (tmp_path / name).write_bytes(content)
  with pytest.raises(DataError) as e:
    tasks.register_moses(tmp_path, name="test_moses_bad")
  _one_line_error(e, *words)


def test_tsv_pair_directory(tmp_path):
  (tmp_path / "sw-en.tsv").write_text("".join(f"sw {i}\ten {i}\n" for i in range(20)),
                                      encoding="utf-8")
  (tmp_path / "MANIFEST.tsv").write_text("ignored\n", encoding="utf-8")
  mixture = tasks.register_tsv_pairs(tmp_path, name="test_tsv_pairs", validation_every=10)
  source = mixture.tasks[0].source
  assert mixture.tasks[0].name == "test_tsv_pairs.eng_Latn.swh_Latn"
  assert _pairs(source, "validation") == [("en 0", "sw 0"), ("en 1", "sw 1")]  # 20 / 10
  assert _pairs(source, "train") == [(f"en {i}", f"sw {i}") for i in range(2, 20)]


def test_tsv_pair_errors_at_registration(tmp_path):
  (tmp_path / "en-sw.tsv").write_bytes(b"one\tmoja\ntwo\tmbili\tzwei\n")
  with pytest.raises(DataError) as e:
    tasks.register_tsv_pairs(tmp_path, name="test_tsv_bad")
  _one_line_error(e, f"{tmp_path / 'en-sw.tsv'}:2:", "2 tabs")
  (tmp_path / "en-sw.tsv").write_bytes(b"one\tmoja\n")
  (tmp_path / "eng-swh.tsv").write_bytes(b"one\tmoja\n")
  with pytest.raises(DataError) as e:
    tasks.register_tsv_pairs(tmp_path, name="test_tsv_bad")
  _one_line_error(e, "en-sw.tsv", "eng-swh.tsv", "keep one file per pair")


def test_file_statistics_are_cached_until_a_file_changes(tmp_path, monkeypatch):
  _write_moses(tmp_path, "", "en", "sw", 10)
  streams = parallel.discover_moses_files(tmp_path)
  parallel.file_pair_sources(streams, 20)

  def no_scan(files, validation_every):
    raise AssertionError(f"{files} was read again")

  monkeypatch.setattr(parallel, "_scan_pairs", no_scan)
  parallel.file_pair_sources(streams, 20)                   # all from the cache
  _write_moses(tmp_path, "", "en", "sw", 11)
  with pytest.raises(AssertionError, match="en-sw.en .* was read again"):
    parallel.file_pair_sources(streams, 20)


# TFDS translation builders.
class PolyglotTinyTranslation(tfds.core.GeneratorBasedBuilder):
  """wmt_translate's layout in miniature: one text feature per language."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {lang: tfds.features.Text() for lang in ("de", "en", "fr")}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(12), "validation": self._generate_examples(3)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"de": f"Satz {i}", "en": f"sentence {i}", "fr": f"phrase {i}"}


def test_tfds_translation_builder_read_through_seqio(tmp_path, vocab):
  builder = PolyglotTinyTranslation(data_dir=str(tmp_path))
  builder.download_and_prepare()
  name = "polyglot_tiny_translation:1.0.0"
  mixture = tasks.register_tfds_translation(
      "test_tfds_translation", {"de-en": (name, "train", "validation"),
                                "fr-de": (name, "train", None)}, data_dir=str(tmp_path))
  de_en = seqio.get_mixture_or_task("test_tfds_translation.deu_Latn.eng_Latn")
  de_fr = seqio.get_mixture_or_task("test_tfds_translation.deu_Latn.fra_Latn")
  assert isinstance(de_en.source, seqio.TfdsDataSource)
  assert sorted(_pairs(de_en.source, "validation")) == [(f"Satz {i}", f"sentence {i}")
                                                        for i in range(3)]
  assert sorted(_pairs(de_fr.source, "train"))[0] == ("Satz 0", "phrase 0")  # sides swapped
  assert de_fr.splits == ("train",)
  sizes = parallel.tfds_translation_sources({"de-en": (name, "train", None)}, str(tmp_path))[1]
  assert sizes == {"deu_Latn.eng_Latn": builder.info.splits["train"].num_bytes}
  assert mixture.get_rate(de_en) == pytest.approx(0.5)
  with pytest.raises(DataError) as e:
    tasks.register_tfds_translation("test_tfds_translation_bad",
                                    {"de-sw": (name, "train", None)}, data_dir=str(tmp_path))
  _one_line_error(e, "['de', 'en', 'fr']", "not 'de' and 'sw'")
  pair = next(de_en.source.get_dataset("train", shuffle=False).as_numpy_iterator())
  ids = next(de_en.preprocess_postcache(de_en.source.get_dataset("train", shuffle=False),
                                        sequence_length=None, seed=0).as_numpy_iterator())
  assert ids["source"].tolist() == vocab.encode(pair["source"].decode())
  assert ids["target"].tolist() == vocab.encode(pair["target"].decode())


def test_bible_and_readers_in_a_bucket(tmp_path):
  """gs:// against the GCS emulator: the bible layout is read through polyglot.paths (its
  pairs are built in memory, so tf.data never opens the bucket)."""
  import gcs_emulator  # pylint: disable=g-import-not-at-top
  from polyglot import paths  # pylint: disable=g-import-not-at-top
  with gcs_emulator.emulator(tmp_path / "emulator.log") as url, gcs_emulator.pointed_at(url):
    bucket = f"gs://{gcs_emulator.BUCKET}/bible"
    paths.write_text(f"{bucket}/swh_Latn.tsv", "b.MAT.1.1\tKitabu\nb.REV.1.1\tUfunuo\n")
    paths.write_text(f"{bucket}/yor_Latn.tsv", "b.REV.1.1\tIfihan\nb.MAT.1.1\tIwe\n")
    mixture = tasks.register_bible(bucket, name="test_bible_gcs")
    source = mixture.tasks[0].source
    assert mixture.tasks[0].name == "test_bible_gcs.swh_Latn.yor_Latn"
    assert _pairs(source, "train") == [("Kitabu", "Iwe")]
    assert _pairs(source, "validation") == [("Ufunuo", "Ifihan")]
    paths.write_text(f"{bucket}/pairs/en-sw.tsv", "one\tmoja\ntwo\n")
    with pytest.raises(DataError) as e:
      bitext.read_tsv_pairs(f"{bucket}/pairs/en-sw.tsv")
    _one_line_error(e, f"{bucket}/pairs/en-sw.tsv:2:", "0 tabs")
