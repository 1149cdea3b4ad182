"""SentencePiece vocabulary with XLM-R ids, as a seqio Vocabulary.

Ids follow XLM-R (fairseq), so that Hugging Face's `XLMRobertaTokenizer`,
loaded from a folder holding our model as `sentencepiece.bpe.model`, gives
the same ids (tests/test_vocab.py checks it):

  0 `<s>`   1 `<pad>`   2 `</s>`   3 `<unk>`   4.. pieces   vocab_size-1 `<mask>`

The SentencePiece model keeps SentencePiece's default layout (`<unk>`=0,
`<s>`=1, `</s>`=2, no `<pad>`); its piece `i >= 3` has id `i + 1` here (HF's
`fairseq_offset = 1`), its `<unk>` is 3, and `<mask>` is appended after the
last piece. So `vocab_size = pieces + 2` (`<pad>` and `<mask>` are added).

This class is where XLM-R ids meet seqio's conventions: seqio's Vocabulary
assumes pad=0, eos=1, unk=2; here `pad_id`, `eos_id`, `bos_id` and `unk_id`
return XLM-R's ids and `decode` does not stop at the first `</s>` (an MLM
sequence holds one per document). The one seqio routine that hard-codes 0 as
padding, its packer, is wrapped by `preprocessors.MlmFeatureConverter`.
"""
from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import io
import itertools
import os
import pathlib
from typing import Callable, Iterable, Sequence

import numpy as np

from polyglot import _env, paths
from polyglot.data import cache, sources
from polyglot.data.ids import BOS_ID, EOS_ID, FIRST_PIECE_ID, PAD_ID, UNK_ID  # noqa: F401
from polyglot.errors import ConfigError, DataError

tf = _env.import_tensorflow()
# pylint: disable=g-import-not-at-top,wrong-import-position
import seqio  # noqa: E402
import sentencepiece as spm  # noqa: E402
from sentencepiece import sentencepiece_model_pb2  # noqa: E402
import tensorflow_text as tf_text  # noqa: E402
# pylint: enable=g-import-not-at-top,wrong-import-position

MASK_PIECE = "<mask>"
HF_MODEL_FILENAME = "sentencepiece.bpe.model"  # what XLMRobertaTokenizer loads from a folder
WORD_START = "\u2581"  # SentencePiece's word-boundary marker
# SentencePiece's own ids in the model file: unk, bos, eos (its defaults), no pad.
_SPM_LAYOUT = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1}
_SPM_MAX = 2**31 - 1  # SentencePiece's trainer reads vocab_size as a 32-bit int


def _check_model(proto: sentencepiece_model_pb2.ModelProto, name: str) -> None:
  """DataError unless the model has the layout the id mapping above assumes."""
  spec = proto.trainer_spec
  layout = {key: getattr(spec, key) for key in _SPM_LAYOUT}
  if layout != _SPM_LAYOUT:
    raise DataError(f"vocabulary {name} has special ids {layout}, XLM-R layout needs "
                    f"{_SPM_LAYOUT}: retrain it with tools/train_vocab.py")
  for spm_id, piece in enumerate(proto.pieces):
    if piece.piece == MASK_PIECE:
      raise DataError(f"vocabulary {name} has {MASK_PIECE} at id {spm_id + 1}, but XLM-R puts "
                      f"{MASK_PIECE} last (polyglot appends it): retrain without a "
                      f"user-defined {MASK_PIECE}")


class Vocabulary(seqio.Vocabulary):
  """A SentencePiece model seen through XLM-R's ids (see the module docstring).

  `model` is the serialized model, a path to a `.model` file, or a function
  returning the serialized model, called on first use (the default
  vocabulary is trained on demand that way).
  """

  def __init__(self, model: bytes | str | os.PathLike | Callable[[], bytes], *,
               name: str | None = None):
    super().__init__(extra_ids=0)
    self._source = model
    if name is None:
      if isinstance(model, bytes):
        name = f"<model sha256:{hashlib.sha256(model).hexdigest()[:12]}>"
      else:
        name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else repr(model)
    self.name = name
    self._tf_tokenizer_cache = None

  @functools.cached_property
  def model_bytes(self) -> bytes:
    """The serialized SentencePiece model (what a checkpoint stores)."""
    if isinstance(self._source, bytes):
      data = self._source
    elif callable(self._source):
      data = self._source()
    else:
      path = paths.Path(paths.resolve(self._source))
      if not path.is_file():
        raise DataError(f"vocabulary file {path} does not exist: pass the path of a "
                        "SentencePiece .model file or train one with tools/train_vocab.py")
      data = path.read_bytes()
    proto = sentencepiece_model_pb2.ModelProto()
    try:
      proto.ParseFromString(data)
    except Exception as e:  # protobuf raises its own DecodeError
      raise DataError(f"vocabulary {self.name} is not a SentencePiece model ({e}): pass a "
                      ".model file written by SentencePiece") from e
    if not proto.pieces:
      raise DataError(f"vocabulary {self.name} is not a SentencePiece model (no pieces): pass "
                      "a .model file written by SentencePiece")
    _check_model(proto, self.name)
    return data

  @functools.cached_property
  def _processor(self) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_proto=self.model_bytes)

  @functools.cached_property
  def _pieces(self) -> np.ndarray:
    """Token string of every id, as HF's tokenizer would print it."""
    sp = self._processor
    pieces = ["<s>", "<pad>", "</s>", "<unk>"]
    pieces += [sp.id_to_piece(i) for i in range(3, sp.get_piece_size())]
    return np.array(pieces + [MASK_PIECE], dtype=object)

  # seqio.Vocabulary: special ids.
  @property
  def bos_id(self) -> int:
    return BOS_ID

  @property
  def pad_id(self) -> int:
    return PAD_ID

  @property
  def eos_id(self) -> int:
    return EOS_ID

  @property
  def unk_id(self) -> int:
    return UNK_ID

  @property
  def mask_id(self) -> int:
    return self.vocab_size - 1

  @property
  def _base_vocab_size(self) -> int:
    return self._processor.get_piece_size() + 2  # + <pad> + <mask>

  @functools.cached_property
  def word_start(self) -> np.ndarray:
    """bool [vocab_size]: the piece begins a word (starts with `▁`); False for specials."""
    starts = np.array([str(p).startswith(WORD_START) for p in self._pieces])
    starts[:FIRST_PIECE_ID] = False
    starts[self.mask_id] = False
    return starts

  # Python encode/decode.
  def _encode(self, s: str) -> Sequence[int]:
    ids = np.asarray(self._processor.encode(s), dtype=np.int64)
    return np.where(ids == 0, UNK_ID, ids + 1).tolist()

  def encode_many(self, texts: Sequence[str | bytes], num_threads: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """`_encode` of many texts by SentencePiece's own threads (`num_threads`, default one per
    core): (ids int32 [total], lengths int64 [len(texts)]), the texts' ids concatenated."""
    pieces = self._processor.encode(list(texts), num_threads=num_threads or len(
        os.sched_getaffinity(0)))
    lengths = np.fromiter(map(len, pieces), np.int64, len(pieces))
    ids = np.fromiter(itertools.chain.from_iterable(pieces), np.int32, int(lengths.sum()))
    return np.where(ids == 0, UNK_ID, ids + 1).astype(np.int32), lengths

  def _decode(self, ids: Iterable[int]) -> str:
    return self.decode(ids)

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`; `<s>`, `<pad>`, `</s>` are dropped, `<unk>`/`<mask>` printed as such."""
    ids = [int(i) if 0 <= int(i) < self.vocab_size else UNK_ID for i in ids]
    pieces = self._pieces[[i for i in ids if i not in (BOS_ID, PAD_ID, EOS_ID)]]
    return "".join(pieces).replace(WORD_START, " ").strip()

  # TensorFlow encode/decode (used inside tf.data pipelines).
  def _tf_tokenizer(self) -> tf_text.SentencepieceTokenizer:
    # Built eagerly once and captured by every traced function, so the model
    # bytes are not copied into each of hundreds of per-language graphs.
    if self._tf_tokenizer_cache is None:
      with tf.init_scope():
        self._tf_tokenizer_cache = tf_text.SentencepieceTokenizer(model=self.model_bytes)
    return self._tf_tokenizer_cache

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    ids = self._tf_tokenizer().tokenize(s)
    return tf.where(tf.equal(ids, 0), UNK_ID, ids + 1)

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    return self.decode_tf(ids)

  def decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """`decode` in TensorFlow, over the last axis of `ids`."""
    with tf.init_scope():
      pieces = tf.constant(self._pieces.astype(str))
    ids = tf.where((ids >= 0) & (ids < self.vocab_size), ids, UNK_ID)
    tokens = tf.gather(pieces, ids)
    tokens = tf.where(ids <= EOS_ID, "", tokens)  # drop <s>, <pad>, </s>
    text = tf.strings.reduce_join(tokens, axis=-1)
    return tf.strings.strip(tf.strings.regex_replace(text, WORD_START, " "))

  # Identity: tasks of one mixture must share a vocabulary (seqio compares them).
  def __eq__(self, other) -> bool:
    if self is other:
      return True
    return isinstance(other, Vocabulary) and self.model_bytes == other.model_bytes

  def __hash__(self) -> int:
    return hash(self.sha256)

  @functools.cached_property
  def sha256(self) -> str:
    """The model's SHA-256, hex: what caches made with this vocabulary are keyed by."""
    return hashlib.sha256(self.model_bytes).hexdigest()

  def __str__(self) -> str:
    return f"Vocabulary({self.name}, vocab_size={self.vocab_size})"

  def __getstate__(self) -> dict:
    """Pickled as its model bytes and name (Beam workers, other processes); the tokenizers
    are rebuilt there on first use."""
    return {"model": self.model_bytes, "name": self.name}

  def __setstate__(self, state: dict) -> None:
    self.__init__(state["model"], name=state["name"])

  def save(self, directory: str | os.PathLike) -> str:
    """Writes the model as `<directory>/sentencepiece.bpe.model` (HF's file name); the
    directory may be local or a URL."""
    path = paths.join(paths.resolve(directory), HF_MODEL_FILENAME)
    paths.write_bytes(path, self.model_bytes)
    return path


@dataclasses.dataclass(frozen=True)
class VocabConfig:
  """How to train a vocabulary.

  `vocab_size` counts every id (specials and `<mask>` included), so a model
  config can use it as is; with `hard_vocab_limit=False` SentencePiece may
  return fewer pieces when the sample is too small to support them.
  """
  vocab_size: int = 8000
  character_coverage: float = 0.9995  # SentencePiece's default for rich character sets
  sample_size: int = 100_000          # sentences drawn at the mixture's rates
  seed: int = 0
  num_threads: int = 2

  def __post_init__(self):
    c = "VocabConfig"
    if not FIRST_PIECE_ID + 100 <= self.vocab_size <= _SPM_MAX:
      raise ConfigError(f"{c}.vocab_size={self.vocab_size} is invalid: use at least "
                        f"{FIRST_PIECE_ID + 100} (and at most {_SPM_MAX})")
    if not 0.9 <= self.character_coverage <= 1.0:
      raise ConfigError(f"{c}.character_coverage={self.character_coverage} is invalid: use a "
                        "value in [0.9, 1] (0.9995 for many scripts, 1.0 for small alphabets)")
    if self.sample_size < 1:
      raise ConfigError(f"{c}.sample_size={self.sample_size} is invalid: use >= 1 sentences")
    if self.num_threads < 1:
      raise ConfigError(f"{c}.num_threads={self.num_threads} is invalid: use >= 1")
    if not 0 <= self.seed < 2**32:
      raise ConfigError(f"{c}.seed={self.seed} is invalid: use an integer in [0, 2**32) "
                        "(SentencePiece's seed is unsigned 32-bit)")


def train(texts: Iterable[str], cfg: VocabConfig = VocabConfig()) -> Vocabulary:
  """Trains a unigram SentencePiece model on `texts` (one sentence each)."""
  out = io.BytesIO()
  spm.set_random_generator_seed(cfg.seed)
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=out, model_type="unigram",
        vocab_size=cfg.vocab_size - 2,  # <pad> and <mask> are added around the pieces
        character_coverage=cfg.character_coverage, input_sentence_size=cfg.sample_size,
        shuffle_input_sentence=True, hard_vocab_limit=False, num_threads=cfg.num_threads,
        minloglevel=2, **_SPM_LAYOUT)
  except RuntimeError as e:  # e.g. fewer ids than the characters to cover
    reason = str(e).splitlines()[0]
    raise DataError(f"SentencePiece cannot train a {cfg.vocab_size}-id vocabulary on this sample "
                    f"({reason}): raise vocab_size or lower character_coverage") from None
  return Vocabulary(out.getvalue())


def sample_texts(datasets: Sequence[tf.data.Dataset], rates: Sequence[float], size: int,
                 seed: int) -> list[str]:
  """`size` texts from `datasets` (of strings), language i drawn with probability ∝ rates[i].

  The per-language counts are one multinomial draw; each language then gives
  that many lines from its start (cycling when it is short).
  """
  probs = np.asarray(rates, dtype=np.float64)
  counts = np.random.default_rng(seed).multinomial(size, probs / probs.sum())
  choice = tf.data.Dataset.from_tensor_slices(np.repeat(np.arange(len(counts)), counts))
  mixed = tf.data.Dataset.choose_from_datasets([d.repeat() for d in datasets], choice)
  return [t.decode("utf-8") for t in mixed.as_numpy_iterator()]


def train_from_mixture(mixture_or_task_name: str, cfg: VocabConfig = VocabConfig()
                       ) -> Vocabulary:
  """Trains on `cfg.sample_size` train-split lines drawn at the mixture's (temperature) rates."""
  # pylint: disable-next=g-import-not-at-top  (mixtures imports this module)
  from polyglot.data import mixtures
  provider = mixtures.get_provider(mixture_or_task_name)
  tasks = seqio.get_subtasks(provider)
  rates = ([provider.get_rate(t) for t in tasks] if isinstance(provider, seqio.Mixture)
           else [1.0])
  datasets = [sources.text_lines(t.source.get_dataset("train", shuffle=False)) for t in tasks]
  try:
    texts = sample_texts(datasets, rates, cfg.sample_size, cfg.seed)
  except MemoryError:
    raise DataError(f"a sample of {cfg.sample_size} sentences does not fit in memory: lower "
                    "sample_size") from None
  return train(texts, cfg)


def default_vocabulary() -> Vocabulary:
  """An 8000-id vocabulary trained on the embedded corpus, built on first use and cached.

  The sample is drawn at the embedded mixture's rates (alpha 0.3) from the
  train split.

  Training takes about 15 s on 2 cores; the model lands in
  `$POLYGLOT_CACHE/vocab/` and is reused by every later process.
  """
  return _default_vocabulary()


# The embedded corpus has ~2,700 distinct lines: 30k draws carry its temperature weights.
DEFAULT_CONFIG = VocabConfig(sample_size=30_000)


@functools.cache
def _default_vocabulary() -> Vocabulary:
  cfg = DEFAULT_CONFIG
  key = hashlib.sha256(repr((cfg, sources.embedded_fingerprint())).encode()).hexdigest()[:12]
  path = cache.cache_dir("vocab") / f"embedded-{cfg.vocab_size}-{key}.model"

  def load_or_train() -> bytes:
    with open(path.with_suffix(".lock"), "w") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)  # one process trains, the others wait and read
      if not path.exists():
        _train_default(path, cfg)
    return path.read_bytes()

  return Vocabulary(load_or_train, name=str(path))


def _train_default(path: pathlib.Path, cfg: VocabConfig) -> None:
  # pylint: disable-next=g-import-not-at-top  (mixtures imports this module)
  from polyglot.data import mixtures
  corpus = sources.embedded_corpus()
  rates = mixtures.sampling_rates(corpus.sizes(), mixtures.DEFAULT_ALPHA)
  datasets = [tf.data.Dataset.from_tensor_slices(list(corpus.train_lines(lang)))
              for lang in rates]
  texts = sample_texts(datasets, list(rates.values()), cfg.sample_size, cfg.seed)
  paths.write_bytes(path, train(texts, cfg).model_bytes)
