"""Sources: the embedded corpus, text directories (CC-100/Glot500 layouts), TFDS."""
import gzip
import lzma
import json
import pathlib

import numpy as np
import pytest

from polyglot import _env
from polyglot.data import mixtures, pipeline, sources
from polyglot.errors import ConfigError, DataError
import tasks

tf = _env.import_tensorflow()
import seqio  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

tfds.disable_progress_bar()

UDHR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpus"


def _lines(source, split):
  return [t.decode() for t in source.get_dataset(split).as_numpy_iterator()]


def test_embedded_corpus_has_hundreds_of_languages():
  corpus = sources.embedded_corpus()
  assert len(corpus.texts) > 600
  assert all(lines and all(l.strip() == l and l for l in lines) for lines in corpus.texts.values())
  assert corpus.texts["eng_Latn"][0].startswith("No one shall be held in slavery")
  assert "swh_Latn" in corpus.texts and "sw_Latn" not in corpus.texts  # canonical ids


def test_embedded_corpus_is_cached_as_parsed_and_reparsed_when_the_cache_is_bad(
    tmp_path, monkeypatch):
  monkeypatch.setenv("POLYGLOT_CACHE", str(tmp_path))
  parsed = sources._parse_embedded()
  fresh = sources.embedded_corpus.__wrapped__()
  assert fresh.texts == parsed
  cached = tmp_path / f"{sources.embedded_fingerprint()}.json"
  assert json.loads(cached.read_text(encoding="utf-8")).keys() == parsed.keys()
  real_parse = sources._parse_embedded
  monkeypatch.setattr(sources, "_parse_embedded", lambda: pytest.fail("parsed, not cached"))
  assert sources.embedded_corpus.__wrapped__().texts == parsed  # read back, tuples again
  monkeypatch.setattr(sources, "_parse_embedded", real_parse)
  for bad in ("{truncated", '{"eng_Latn": "not a list"}', "[]"):
    cached.write_text(bad, encoding="utf-8")
    assert sources.embedded_corpus.__wrapped__().texts == parsed
    assert json.loads(cached.read_text(encoding="utf-8")).keys() == parsed.keys()  # rewritten
  # A cache that cannot be made (a file where its folder would be) is skipped.
  blocked = tmp_path / "blocked"
  blocked.write_text("", encoding="utf-8")
  monkeypatch.setenv("POLYGLOT_CACHE", str(blocked / "sub"))
  assert sources.embedded_corpus.__wrapped__().texts == parsed


def test_embedded_source_holds_out_a_line_per_twenty():
  corpus = sources.embedded_corpus()
  source = corpus.sources()["eng_Latn"]                     # 8 lines: 1 held out
  assert _lines(source, "validation") == list(corpus.texts["eng_Latn"][:1])
  assert _lines(source, "train") == list(corpus.texts["eng_Latn"][1:])
  one_line = next(l for l, t in corpus.texts.items() if len(t) == 1)
  assert corpus.sources()[one_line].splits == ("train",)    # too short to hold one out


def _write(path: pathlib.Path, text: str) -> pathlib.Path:
  data = text.encode("utf-8")
  if path.name.endswith(".gz"):
    data = gzip.compress(data)
  elif path.name.endswith(".xz"):
    data = lzma.compress(data)
  path.write_bytes(data)
  return path


def _paragraphs(word: str, n: int) -> str:
  """CC-100 layout: documents of two lines separated by blank lines."""
  docs = [f"{word} {i} a.\n{word} {i} b.\n" for i in range(n)]
  return "\n".join(docs)


@pytest.fixture
def text_dir(tmp_path):
  _write(tmp_path / "sw.txt", _paragraphs("kiswahili", 20))           # CC-100 name
  _write(tmp_path / "yor_Latn.txt.gz", _paragraphs("yoruba", 5))      # Glot500 name, gzip
  _write(tmp_path / "zh-Hans.txt.xz", _paragraphs("zhongwen", 2))     # xz
  (tmp_path / "MANIFEST.tsv").write_text("ignored\n")
  return tmp_path


def test_text_directory_languages_sizes_and_splits(text_dir):
  langs, sizes = sources.text_directory_sources(text_dir)
  assert sorted(langs) == ["cmn_Hans", "swh_Latn", "yor_Latn"]
  assert sizes["swh_Latn"] == len(_paragraphs("kiswahili", 20).encode())
  assert sizes["cmn_Hans"] == len(_paragraphs("zhongwen", 2).encode())   # uncompressed bytes
  sw = langs["swh_Latn"]                                   # 40 lines: 2 held out
  assert _lines(sw, "validation") == ["kiswahili 0 a.", "kiswahili 0 b."]
  train = [l for l in _lines(sw, "train") if l]
  assert len(train) == 38 and train[0] == "kiswahili 1 a."
  yo = langs["yor_Latn"]                                   # 10 lines: 1 held out
  assert _lines(yo, "validation") == ["yoruba 0 a."]
  assert [l for l in _lines(yo, "train") if l][0] == "yoruba 0 b."
  assert _lines(langs["cmn_Hans"], "validation") == ["zhongwen 0 a."]


def test_text_statistics_are_cached_until_the_file_changes(text_dir, monkeypatch):
  sources.text_directory_sources(text_dir)

  def no_scan(path, validation_every):
    raise AssertionError(f"{path} was read again")

  real_scan = sources._scan
  monkeypatch.setattr(sources, "_scan", no_scan)
  sources.text_directory_sources(text_dir)                 # all from the cache
  _write(text_dir / "sw.txt", _paragraphs("kiswahili", 3))
  with pytest.raises(AssertionError, match="sw.txt was read again"):
    sources.text_directory_sources(text_dir)
  monkeypatch.setattr(sources, "_scan", real_scan)
  assert sources.text_directory_sources(text_dir)[1]["swh_Latn"] == len(
      _paragraphs("kiswahili", 3).encode())


def _one_line_error(excinfo, *words):
  message = str(excinfo.value)
  assert "\n" not in message
  for word in words:
    assert word in message, message


def test_missing_directory(tmp_path):
  with pytest.raises(DataError) as e:
    tasks.register_text_directory(tmp_path / "nope")
  _one_line_error(e, "nope does not exist", "<language>.txt")


def test_unknown_language_file(text_dir):
  _write(text_dir / "xx.txt", "text\n")
  with pytest.raises(DataError) as e:
    tasks.register_text_directory(text_dir, name="bad_lang")
  _one_line_error(e, "xx.txt", "unknown language code 'xx'", "rename")


def test_two_files_of_one_language(text_dir):
  _write(text_dir / "swh_Latn.txt", "text\n")
  with pytest.raises(DataError) as e:
    tasks.register_text_directory(text_dir, name="bad_dup")
  _one_line_error(e, "sw.txt and swh_Latn.txt", "both swh_Latn", "keep one")


def test_empty_file(text_dir):
  _write(text_dir / "fr.txt", "\n  \n")
  with pytest.raises(DataError) as e:
    tasks.register_text_directory(text_dir, name="bad_empty")
  _one_line_error(e, "fr.txt has no text", "fill it or remove it")


def test_undecodable_bytes(text_dir):
  (text_dir / "de.txt").write_bytes(b"gut\nschl\xfcssel\n")   # Latin-1, not UTF-8
  with pytest.raises(DataError) as e:
    tasks.register_text_directory(text_dir, name="bad_bytes")
  _one_line_error(e, "de.txt line 2", "not UTF-8", "re-encode")


def test_directory_without_text_files(tmp_path):
  (tmp_path / "notes.md").write_text("x")
  with pytest.raises(DataError) as e:
    tasks.register_text_directory(tmp_path, name="bad_none")
  _one_line_error(e, "has no <language>.txt")


def test_bad_alpha_and_holdout(text_dir):
  with pytest.raises(ConfigError) as e:
    tasks.register_text_directory(text_dir, name="bad_alpha", alpha=0)
  _one_line_error(e, "alpha=0 is invalid", "0.3 in XLM-R")
  with pytest.raises(ConfigError) as e:
    tasks.register_text_directory(text_dir, name="bad_holdout", validation_every=1)
  _one_line_error(e, "validation_every=1")


def test_text_directory_mixture_yields_batches(text_dir):
  mixture = tasks.register_text_directory(text_dir, name="test_text_dir")
  assert tasks.register_text_directory(text_dir, name="test_text_dir") is mixture
  assert sorted(t.name for t in mixture.tasks) == [
      "test_text_dir.cmn_Hans", "test_text_dir.swh_Latn", "test_text_dir.yor_Latn"]
  batch = next(pipeline.make_iterator("test_text_dir", length=16, batch_size=4))
  assert batch["input_ids"].shape == (4, 16)
  with pytest.raises(ConfigError, match="already registered with other data or settings"):
    tasks.register_text_directory(text_dir, name="test_text_dir", alpha=0.7)


@pytest.mark.skipif(not UDHR.is_dir(), reason=f"shared UDHR corpus not at {UDHR}")
def test_udhr_directory_builds_a_390_language_mixture():
  mixture = tasks.register_text_directory(UDHR, name="test_udhr")
  assert len(mixture.tasks) == 390
  assert "test_udhr.cmn_Hant" in {t.name for t in mixture.tasks}
  rates = np.array([mixture.get_rate(t) for t in mixture.tasks])
  np.testing.assert_allclose(rates.sum(), 1.0)
  it = pipeline.make_iterator("test_udhr", length=32, batch_size=8, shuffle_buffer=0)
  batch = next(it)
  assert batch["targets"].shape == (8, 32) and (batch["segment_ids"] == 1).all()


class PolyglotTinyMultilingual(tfds.core.GeneratorBasedBuilder):
  """mC4's layout in miniature: splits `<lang>` and `<lang>-validation`, feature `text`."""
  VERSION = tfds.core.Version("1.0.0")
  TEXTS = {"sw": "Kila mtu ana haki ya kuishi", "yo": "Gbogbo eniyan ni eto lati wa laaye"}

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {"text": tfds.features.Text(), "url": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    splits = {}
    for lang, n in (("sw", 40), ("yo", 10)):
      splits[lang] = self._generate_examples(lang, n)
      splits[f"{lang}-validation"] = self._generate_examples(lang, 2)
    return splits

  def _generate_examples(self, lang, n):
    for i in range(n):
      yield i, {"text": f"{self.TEXTS[lang]} {i}.", "url": f"https://example.org/{i}"}


def test_tfds_builder_read_through_seqio(tmp_path):
  builder = PolyglotTinyMultilingual(data_dir=str(tmp_path))
  builder.download_and_prepare()
  splits = {tag: ("polyglot_tiny_multilingual:1.0.0", tag, f"{tag}-validation")
            for tag in ("sw", "yo")}
  mixture = tasks.register_tfds("test_tfds", splits, data_dir=str(tmp_path))
  assert all(isinstance(t.source, seqio.TfdsDataSource) for t in mixture.tasks)
  rates = mixtures.sampling_rates({"sw": builder.info.splits["sw"].num_bytes,
                                   "yo": builder.info.splits["yo"].num_bytes})
  assert mixture.get_rate(seqio.get_mixture_or_task("test_tfds.swh_Latn")) == pytest.approx(
      rates["sw"])
  batch = next(pipeline.make_iterator("test_tfds", length=16, batch_size=4))
  assert batch["targets"].shape == (4, 16)
  batches = list(pipeline.make_iterator("test_tfds", length=64, batch_size=4, split="validation"))
  # Each language's 2 validation texts form one stream: one sequence each, 2 </s> + 1 closing.
  assert sum(b["segment_ids"].max(axis=1).sum() for b in batches) == 2
  assert sum((b["targets"] == 2).sum() for b in batches) == 6


def test_tfds_builder_missing_is_one_line(tmp_path):
  with pytest.raises(DataError) as e:
    tasks.register_tfds("test_tfds_missing", {"sw": ("c4/multilingual:3.1.0", "sw", None)},
                        data_dir=str(tmp_path))
  _one_line_error(e, "c4/multilingual", "prepare it")
