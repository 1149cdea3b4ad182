"""The input pipeline: batch contract, mixing rates, masking, packing, determinism, resume."""
import jax
import numpy as np
import pytest
import seqio

from polyglot.data import mixtures, pipeline, sources
from polyglot.data import vocab as vocab_lib
from polyglot.data.preprocessors import MlmConfig
from polyglot.errors import ConfigError, DataError
import tasks

# One language per script, so a row's language can be read off its pieces.
SCRIPTS = ("eng_Latn", "rus_Cyrl", "arb_Arab", "hin_Deva", "cmn_Hans", "tha_Thai", "kor_Kore")
MIXTURE = "test_pipeline_scripts"


@pytest.fixture(scope="module")
def mixture():
  return tasks.register_embedded(MIXTURE, languages=SCRIPTS)


@pytest.fixture(scope="module")
def vocab(mixture):
  return mixture.output_features["targets"].vocabulary


def _iterator(**kwargs):
  """Training from text: `streams.StreamIterator` (the text is tokenized into a token file)."""
  args = dict(length=32, batch_size=16, seed=0, shard_index=0, num_shards=1)
  args.update(kwargs)
  return pipeline.make_iterator(MIXTURE, **args)


def _tf_iterator(**kwargs):
  """The tf.data pipeline (`HostIterator`) over the same text, as corpora that are not text
  (TFDS) are read for training."""
  args = dict(length=32, batch_size=16, seed=0)
  args.update(kwargs)
  return pipeline.HostIterator(pipeline.PipelineConfig(MIXTURE, **args), 0, 1)


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_batches_have_the_design_fields(mixture):
  batch = next(_iterator())
  assert sorted(batch) == sorted(pipeline.FIELDS)
  for value in batch.values():
    assert value.dtype == np.int32 and value.shape == (16, 32)
  # Training streams never end: every row is one full `<s> ... </s>` sequence.
  assert (batch["segment_ids"] == 1).all()
  np.testing.assert_array_equal(batch["positions"], np.tile(np.arange(32), (16, 1)))
  assert (batch["targets"][:, 0] == vocab_lib.BOS_ID).all()
  assert (batch["targets"][:, -1] == vocab_lib.EOS_ID).all()


def test_language_token_shares_match_the_rates(mixture, vocab):
  corpus = sources.embedded_corpus()
  ids = {lang: set(i for line in corpus.texts[lang] for i in vocab.encode(line))
         for lang in SCRIPTS}
  own = {lang: ids[lang] - set().union(*(ids[o] for o in SCRIPTS if o != lang))
         for lang in SCRIPTS}
  tokens = dict.fromkeys(SCRIPTS, 0)
  for batch in _take(_iterator(batch_size=50), 60):          # 3000 rows
    for row in batch["targets"]:
      lang = max(SCRIPTS, key=lambda l: sum(int(t) in own[l] for t in row))
      tokens[lang] += int((row != vocab.pad_id).sum())
  total = sum(tokens.values())
  # q_i = n_i^0.3 / sum_j n_j^0.3, n_i the language's UTF-8 bytes (XLM-R section 3.1).
  sizes = {l: sum(len(line.encode("utf-8")) for line in corpus.texts[l]) for l in SCRIPTS}
  rates = {l: n ** 0.3 / sum(m ** 0.3 for m in sizes.values()) for l, n in sizes.items()}
  for lang in SCRIPTS:
    assert mixture.get_rate(mixtures.get_provider(f"{MIXTURE}.{lang}")) == pytest.approx(
        rates[lang])
    # 3000 rows: standard error of a share near 1/7 is 0.0064; 0.025 is about 4 of them.
    assert tokens[lang] / total == pytest.approx(rates[lang], abs=0.025), lang


def _masking_counts(batches, vocab):
  stats = dict(candidates=0, selected=0, masked=0, random=0, kept=0)
  for b in batches:
    candidate = (b["targets"] >= vocab_lib.FIRST_PIECE_ID) & (b["segment_ids"] > 0)
    selected = b["loss_weights"] == 1
    assert not (selected & ~candidate).any()                 # specials and padding never
    special = ~candidate
    np.testing.assert_array_equal(b["input_ids"][special], b["targets"][special])
    stats["candidates"] += candidate.sum()
    stats["selected"] += selected.sum()
    stats["masked"] += (selected & (b["input_ids"] == vocab.mask_id)).sum()
    replaced = selected & (b["input_ids"] != vocab.mask_id) & (b["input_ids"] != b["targets"])
    assert ((b["input_ids"][replaced] >= vocab_lib.FIRST_PIECE_ID)
            & (b["input_ids"][replaced] < vocab.mask_id)).all()
    stats["random"] += replaced.sum()
    stats["kept"] += (selected & (b["input_ids"] == b["targets"])).sum()
    assert not (~selected & (b["input_ids"] != b["targets"])).any()
  return stats


def test_masking_is_15_percent_and_80_10_10(mixture, vocab):
  stats = _masking_counts(_take(_iterator(length=64, batch_size=32), 60), vocab)
  # ~115k candidates, ~17k selected: standard errors 0.001 (rate), 0.003 (80%), 0.0023 (10%).
  assert stats["selected"] / stats["candidates"] == pytest.approx(0.15, abs=0.006)
  assert stats["masked"] / stats["selected"] == pytest.approx(0.8, abs=0.015)
  assert stats["random"] / stats["selected"] == pytest.approx(0.1, abs=0.012)
  assert stats["kept"] / stats["selected"] == pytest.approx(0.1, abs=0.012)


def test_masking_rates_follow_the_config(mixture, vocab):
  mlm = MlmConfig(mask_rate=0.3, mask_token_rate=0.5, random_token_rate=0.5)
  stats = _masking_counts(_take(_iterator(length=64, batch_size=32, mlm=mlm), 20), vocab)
  assert stats["selected"] / stats["candidates"] == pytest.approx(0.3, abs=0.015)
  assert stats["masked"] / stats["selected"] == pytest.approx(0.5, abs=0.025)
  assert stats["kept"] / stats["selected"] < 0.01           # only random ids equal to the target


def test_whole_word_masking_selects_whole_words(mixture, vocab):
  batches = _take(_iterator(length=64, mlm=MlmConfig(whole_word=True)), 20)
  rate = []
  for b in batches:
    for targets, weights in zip(b["targets"], b["loss_weights"]):
      special = targets < vocab_lib.FIRST_PIECE_ID
      word = np.cumsum(vocab.word_start[targets] | special)
      for w in np.unique(word[~special]):
        in_word = (word == w) & ~special
        assert len(set(weights[in_word])) == 1             # all pieces of a word, or none
      rate.append(weights[~special].mean())
  assert np.mean(rate) == pytest.approx(0.15, abs=0.04)     # per word, so tokens vary more


def test_validation_split_is_packed_and_read_once(mixture, vocab):
  batches = list(_iterator(length=256, batch_size=4, split="validation"))
  corpus = sources.embedded_corpus()
  held_out = {lang: corpus.texts[lang][:corpus.holdout(lang)] for lang in SCRIPTS}
  stream = {lang: sum(len(vocab.encode(line)) + 1 for line in lines)  # + </s> per line
            for lang, lines in held_out.items()}
  segments = 0
  for b in batches:
    for row in range(4):
      seg, pos, tgt = b["segment_ids"][row], b["positions"][row], b["targets"][row]
      used = seg[seg > 0]                                     # 1, 1, .., 2, 2, .., then 0s
      assert (seg[:len(used)] == used).all() and (np.diff(used) >= 0).all()
      assert set(used) == set(range(1, seg.max() + 1))
      for s in np.unique(seg[seg > 0]):                      # ids never shared, positions restart
        where = np.flatnonzero(seg == s)
        assert (np.diff(where) == 1).all()
        np.testing.assert_array_equal(pos[where], np.arange(len(where)))
        assert tgt[where[0]] == vocab.bos_id and tgt[where[-1]] == vocab.eos_id
        segments += 1
      pad = seg == 0
      assert (b["input_ids"][row][pad] == vocab.pad_id).all()
      assert (b["loss_weights"][row][pad] == 0).all() and (pos[pad] == 0).all()
  # Each language's held-out stream, cut into chunks of 254 tokens, once; short ones packed.
  assert segments == sum(-(-n // 254) for n in stream.values())
  assert any(b["segment_ids"].max() > 1 for b in batches)


def test_heldout_batches_hold_each_shards_held_out_text_in_shard_order(mixture, tmp_path):
  """The trainer's held-out MLM batches of a text mixture: 40 lines per language, every
  2nd held out (the first 20): data shard 0's rows hold lines 0-9 ("apple"), shard 1's
  lines 10-19 ("house"), none a training line ("river"); a host reading both shards
  concatenates what each gives alone. A mixture whose shard has no held-out line gives
  no batch."""
  lines = ["apple apple apple"] * 10 + ["house house house"] * 10 + ["river river river"] * 20
  for lang in ("eng_Latn", "fra_Latn"):
    (tmp_path / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
  tasks.register_text_directory(tmp_path, name="test_pipeline_heldout", validation_every=2)

  def heldout(name, shards, num_shards=2):
    return pipeline.heldout_batches(name, shards=shards, num_shards=num_shards, length=16,
                                    batch_size=4, count=3, seed=7, mlm=MlmConfig())

  both = heldout("test_pipeline_heldout", [0, 1])
  alone = [heldout("test_pipeline_heldout", [s]) for s in (0, 1)]
  assert len(both) == 3
  vocab = vocab_lib.default_vocabulary()
  for b, *parts in zip(both, *alone):
    assert sorted(b) == sorted(pipeline.FIELDS) and b["targets"].shape == (8, 16)
    for k in b:
      np.testing.assert_array_equal(b[k], np.concatenate([p[k] for p in parts]))
    for i, row in enumerate(b["targets"]):
      letters = set(vocab.decode(row[row >= 4]).replace(" ", ""))  # pieces, not specials
      assert letters and letters <= set("apple" if i < 4 else "house"), (i, letters)
  assert heldout(MIXTURE, [0, 1]) == []  # one held-out line per language: shard 0 has none
  assert len(heldout(MIXTURE, [0], num_shards=1)) == 3


def test_same_seed_same_batches_other_seed_other_batches(mixture):
  first = _take(_iterator(seed=3), 3)
  again = _take(_iterator(seed=3), 3)
  other = _take(_iterator(seed=4), 3)
  for a, b in zip(first, again):
    for k in pipeline.FIELDS:
      np.testing.assert_array_equal(a[k], b[k])
  assert any((a["input_ids"] != c["input_ids"]).any() for a, c in zip(first, other))


@pytest.mark.parametrize("make", [_iterator, _tf_iterator], ids=["streams", "tf_data"])
def test_state_restores_the_uninterrupted_stream(mixture, make):
  it = make(seed=5)
  _take(it, 4)
  state = it.get_state()
  expected = _take(it, 5)
  _take(it, 40)
  later_state = it.get_state()
  assert len(later_state) < 1.2 * len(state)                 # no growth with the step
  resumed = make(seed=5)
  resumed.set_state(state)
  for a, b in zip(expected, _take(resumed, 5)):
    for k in pipeline.FIELDS:
      np.testing.assert_array_equal(a[k], b[k])


def test_state_of_other_settings_is_refused(mixture):
  state = _iterator(seed=5).get_state()
  with pytest.raises(DataError) as e:
    _iterator(seed=6).set_state(state)
  assert "\n" not in str(e.value) and "restore with the settings it was saved with" in str(e.value)
  with pytest.raises(DataError, match="state is unreadable"):
    _iterator(seed=5).set_state(b"junk")


def test_state_of_another_pipeline_graph_is_one_line(mixture):
  """Same settings, another tf.data graph (a changed corpus or polyglot version): one line,
  which the trainer turns into a restart of the stream (train.restore_data)."""
  import io, zipfile  # noqa: E401  pylint: disable=g-import-not-at-top,multiple-imports
  ours = _tf_iterator(seed=5).get_state()
  theirs = _tf_iterator(seed=5, shuffle_buffer=0).get_state()  # no shuffle in its graph
  out = io.BytesIO()
  with zipfile.ZipFile(io.BytesIO(ours)) as a, zipfile.ZipFile(io.BytesIO(theirs)) as b, \
       zipfile.ZipFile(out, "w") as z:
    for name in ("identity.json", "made.json", "replay.npz"):
      z.writestr(name, a.read(name))
    for name in b.namelist():
      if name.startswith("tf/"):
        z.writestr(name, b.read(name))
  with pytest.raises(DataError) as e:
    _tf_iterator(seed=5).set_state(out.getvalue())
  assert "\n" not in str(e.value) and "saved by another input pipeline" in str(e.value)


def test_device_iterator_gives_global_arrays_and_exact_state(mixture):
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  host_reference = _take(_iterator(seed=7), 6)
  dev = pipeline.DeviceIterator(_iterator(seed=7), sharding, buffer_size=2)
  first = _take(dev, 2)
  assert first[0]["input_ids"].sharding == sharding and first[0]["input_ids"].shape == (16, 32)
  state = dev.get_state()          # the thread has read ahead; those batches are in the state
  rest = _take(dev, 2)
  dev.close()
  resumed = pipeline.DeviceIterator(_iterator(seed=7), sharding)
  resumed.set_state(state)
  again = _take(resumed, 2)
  resumed.close()
  for got, want in zip(first + rest, host_reference):
    np.testing.assert_array_equal(np.asarray(got["targets"]), want["targets"])
  for got, want in zip(again, host_reference[2:]):
    np.testing.assert_array_equal(np.asarray(got["input_ids"]), want["input_ids"])


def test_hosts_read_disjoint_shards():
  corpus = sources.embedded_corpus()
  tasks.register_embedded("test_pipeline_shards", languages=["eng_Latn"])
  seen = []
  for index in range(2):
    it = pipeline.make_iterator("test_pipeline_shards", length=256, batch_size=1, split="train",
                                shard_index=index, num_shards=2, shuffle_buffer=0)
    text = vocab_lib.default_vocabulary().decode(next(it)["targets"][0])
    seen.append({line for line in corpus.train_lines("eng_Latn") if line in text})
  assert seen[0] and seen[1] and not seen[0] & seen[1]


def test_shards_are_dealt_non_blank_lines_and_a_short_language_whole(tmp_path):
  """Paragraphs separated by blank lines, read by 2 shards: each is dealt half of the
  paragraphs (never only blank lines, whose stream would never give a chunk); a language of 2
  training lines, read by 3 shards: each reads both (a shard dealt none would wait forever)."""
  paragraphs = [f"paragraph {i} of the test text" for i in range(40)]
  (tmp_path / "eng_Latn.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
  (tmp_path / "fra_Latn.txt").write_text("un\ndeux\ntrois\n", encoding="utf-8")
  mixture = tasks.register_text_directory(tmp_path, name="test_pipeline_dealt")
  eng, fra = (t.source for t in mixture.tasks)
  train = paragraphs[eng.num_input_examples("validation"):]

  def lines(source, index, count):
    ds = source.get_dataset("train", shard_info=seqio.ShardInfo(index, count))
    return [line.decode() for line in ds.as_numpy_iterator()]

  assert [lines(eng, i, 2) for i in range(2)] == [train[0::2], train[1::2]]
  assert [lines(fra, i, 3) for i in range(3)] == [["deux", "trois"]] * 3
  assert [lines(fra, i, 2) for i in range(2)] == [["deux"], ["trois"]]
  vocab = vocab_lib.default_vocabulary()
  for index in range(3):  # each shard's stream starts (it used to wait forever on `fra`)
    it = pipeline.make_iterator("test_pipeline_dealt", length=16, batch_size=8, seed=1,
                                shard_index=index, num_shards=3)
    text = " ".join(vocab.decode(row) for _ in range(10) for row in next(it)["targets"])
    assert "deux" in text and "paragraph" in text, index


def test_embedded_mixture_of_over_100_languages_yields_batches():
  langs = sorted(sources.embedded_corpus().texts)[::5]       # every 5th: 126 languages
  mixture = tasks.register_embedded("test_pipeline_126", languages=langs)
  assert len(mixture.tasks) == len(langs) > 100
  batch = next(pipeline.make_iterator("test_pipeline_126", length=64, batch_size=8,
                                      shuffle_buffer=64))
  assert batch["input_ids"].shape == (8, 64) and batch["loss_weights"].sum() > 0


@pytest.mark.parametrize("kwargs, words", [
    (dict(length=2), ["PipelineConfig.length=2 is invalid", "> 2"]),
    (dict(batch_size=0), ["batch_size=0 is invalid"]),
    (dict(split="test"), ["split='test' is invalid", "train"]),
    (dict(shard_index=2, num_shards=2), ["shard_index=2 is invalid"]),
])
def test_bad_settings_are_one_line_errors(mixture, kwargs, words):
  with pytest.raises(ConfigError) as e:
    _iterator(**kwargs)
  assert "\n" not in str(e.value)
  for word in words:
    assert word in str(e.value)


def test_unknown_mixture_lists_the_registered_ones():
  with pytest.raises(DataError) as e:
    pipeline.make_iterator("no_such_mixture", length=16, batch_size=1)
  assert "\n" not in str(e.value) and "'embedded'" in str(e.value)


@pytest.mark.parametrize("field, value", [
    ("mask_rate", 0.0), ("mask_rate", 1.5), ("random_token_rate", -0.1),
])
def test_mlm_config_is_validated(field, value):
  with pytest.raises(ConfigError, match=f"MlmConfig.{field}"):
    MlmConfig(**{field: value})
  with pytest.raises(ConfigError, match="mask_token_rate \\+ random_token_rate"):
    MlmConfig(mask_token_rate=0.9, random_token_rate=0.2)
