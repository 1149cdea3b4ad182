"""An XTREME run: find the data, fine-tune or embed per task, score, report; resumable.

`evaluate(Request)` is what `python -m polyglot.eval.xtreme` calls once gin
has resolved every task's settings. The output directory holds:

  results.json, results.md, results.png   the report (`report.write_report`)
  config.gin                               the operative gin config (the entry point)
  scores/<task>.json                       a task's scores and the settings they came from
  finetuned/<task>/<step>/                 a task's selected fine-tuned model: a polyglot
                                           checkpoint that `polyglot.load` reads (meta:
                                           model_kind, model_config, labels, task, xtreme)

A rerun skips each task whose scores were made with the same settings, and
predicts with `finetuned/<task>` instead of fine-tuning again when that was
made with the same checkpoint, hyperparameters and training cap. A
fine-tuned model made with other settings is an error, never silently
replaced: delete it or pass another output dir.

Fine-tuned tasks train on English and predict every language found
(zero-shot transfer); retrieval tasks embed with the frozen encoder. What a
run asks for but the data lacks is one warning (`tasks.missing`); a task
without English training data, or without any evaluation language, is
skipped.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from polyglot import api, checkpoint, models, paths, sharding
from polyglot.errors import CheckpointError, ConfigError, DataError
from polyglot.eval.xtreme import embed, finetune, readers, report, retrieval, tasks
from polyglot.eval.xtreme.hparams import RetrievalHparams, TaskHparams, XtremeConfig
from polyglot.eval.xtreme.tokenizer import SentencePieceTokenizer

log = logging.getLogger("polyglot.eval.xtreme")

SCORES_DIR = "scores"
FINETUNED_DIR = "finetuned"


@dataclasses.dataclass(frozen=True)
class Request:
  """One evaluation: a checkpoint, tasks with their settings, data, an output dir."""
  checkpoint_dir: str
  output_dir: str
  tasks: tuple[tasks.TaskSpec, ...]
  hparams: Mapping[str, TaskHparams | RetrievalHparams]  # by task name
  data_dir: str | None = None
  tfds_data_dir: str | None = None
  step: int | None = None
  languages: tuple[str, ...] | None = None  # None: every language the data has
  config: XtremeConfig = XtremeConfig()
  mesh: sharding.MeshConfig | None = None   # None: one device

  def __post_init__(self):
    for spec in self.tasks:
      want = TaskHparams if spec.fine_tuned else RetrievalHparams
      if not isinstance(self.hparams.get(spec.name), want):
        raise ConfigError(f"{spec.name} needs {want.__name__} settings, got "
                          f"{type(self.hparams.get(spec.name)).__name__}")


def _normalized(obj: Any) -> Any:
  """JSON's view of `obj` (tuples become lists), for comparing stored settings."""
  return json.loads(json.dumps(obj))


def _write_json(path: str, obj: Any) -> None:
  paths.write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")  # atomic


def make_mesh(cfg: sharding.MeshConfig | None) -> Mesh:
  """The mesh `cfg` describes over all devices, or the first device alone."""
  if cfg is None:
    return sharding.make_mesh(sharding.MeshConfig(data=1), jax.devices()[:1])
  return sharding.make_mesh(cfg)


class Source:
  """The evaluated checkpoint: step and config at once, parameters on first use."""

  def __init__(self, checkpoint_dir: str, step: int | None, mesh: Mesh):
    self.directory = checkpoint.checkpoint_dir(checkpoint_dir)
    if not paths.Path(self.directory).is_dir():
      raise CheckpointError(f"checkpoint dir {checkpoint_dir} does not exist; pass the workdir "
                            "of a polyglot.train run (or its checkpoints/ folder)")
    reader = checkpoint.Checkpointer(self.directory, read_only=True)
    self.step = reader.resolve_step(step)
    self.meta = reader.read_meta(self.step)
    self.cfg = models.EncoderConfig.from_dict(self.meta["model_config"])
    self.mesh = mesh

  @functools.cached_property
  def loaded(self) -> api.Loaded:
    devices = self.mesh.devices.flatten()
    placement = (SingleDeviceSharding(devices[0]) if len(devices) == 1
                 else NamedSharding(self.mesh, PartitionSpec()))
    log.info("loading %s step %d", self.directory, self.step)
    return api.load(self.directory, self.step, placement)

  @functools.cached_property
  def tokenizer(self) -> SentencePieceTokenizer:
    return SentencePieceTokenizer(self.loaded.vocab.model_bytes, f"the vocabulary of "
                                  f"{self.directory}")

  def encoder_params(self):
    return nnx.to_pure_dict(nnx.state(self.loaded.model.encoder))

  @functools.cached_property
  def embedder(self) -> embed.Embedder:
    return embed.Embedder(self.loaded.model.encoder, self.tokenizer, self.mesh)


# ---- data ----

def eval_languages(data: tasks.TaskData, wanted: tuple[str, ...] | None) -> list[str]:
  """Languages to score: those asked for (default: all) that have a dev or test set."""
  have = [lang for lang in data.languages() if data.eval_split(lang)]
  return have if wanted is None else [lang for lang in wanted if lang in have]


def limit_bucc(s: readers.BuccSet, n: int) -> readers.BuccSet:
  """The first n gold pairs and n distractor sentences per side (smoke runs)."""
  gold = sorted(s.gold)[:n]
  keep_src = {p[0] for p in gold} | set(s.source_ids[:n])
  keep_en = {p[1] for p in gold} | set(s.english_ids[:n])
  src = [(i, t) for i, t in zip(s.source_ids, s.source) if i in keep_src]
  en = [(i, t) for i, t in zip(s.english_ids, s.english) if i in keep_en]
  return readers.BuccSet(tuple(i for i, _ in src), tuple(t for _, t in src),
                         tuple(i for i, _ in en), tuple(t for _, t in en), frozenset(gold))


def load_examples(data: tasks.TaskData, lang: str, split: str, limit: int):
  """`readers.load`, cut to the first `limit` examples when limit > 0."""
  examples = readers.load(data, lang, split)
  if not limit:
    return examples
  if isinstance(examples, readers.TatoebaSet):
    return readers.TatoebaSet(examples.source[:limit], examples.english[:limit])
  if isinstance(examples, readers.BuccSet):
    return limit_bucc(examples, limit)
  return examples[:limit]


# ---- the run ----

class Run:
  """Evaluates the tasks of a `Request`, one at a time, reusing finished work."""

  def __init__(self, request: Request):
    self.request = request
    self.out = paths.resolve(request.output_dir)
    self.mesh = make_mesh(request.mesh)
    self.source = Source(request.checkpoint_dir, request.step, self.mesh)
    self.rows = request.config.predict_batch_size

  @property
  def tok(self) -> SentencePieceTokenizer:
    return self.source.tokenizer

  def discover(self) -> list[tuple[tasks.TaskSpec, tasks.TaskData]]:
    """The tasks that can run; one warning for everything asked for but absent."""
    r = self.request
    found, absent = [], []
    for spec in r.tasks:
      data = tasks.discover(spec, data_dir=r.data_dir, tfds_data_dir=r.tfds_data_dir)
      gaps = tasks.missing(data, r.languages)
      absent.extend(gaps)
      no_train = spec.fine_tuned and not data.has(spec.train_language, "train")
      if data.sources and not no_train and eval_languages(data, r.languages):
        found.append((spec, data))
    if absent:
      log.warning("missing data, skipped: %s", "; ".join(str(m) for m in absent))
    if not found:
      raise DataError(f"nothing to evaluate under {r.data_dir or r.tfds_data_dir}: "
                      + "; ".join(str(m) for m in absent))
    return found

  def check_settings(self, specs: list[tasks.TaskSpec]) -> None:
    """Every length, layer and batch fits the model and mesh, before any work starts."""
    cfg, multiple = self.source.cfg, finetune.batch_multiple(self.mesh)
    for spec in specs:
      hp, name = self.request.hparams[spec.name], spec.name
      if isinstance(hp, RetrievalHparams):
        embed.check_layer(name, hp, cfg)
      elif hp.max_seq_length > cfg.max_len:
        raise ConfigError(f"{name}/TaskHparams.max_seq_length={hp.max_seq_length} exceeds the "
                          f"checkpoint's max_len={cfg.max_len}: pass "
                          f"--gin.{name}/TaskHparams.max_seq_length={cfg.max_len}")
      elif hp.batch_size % multiple:
        raise ConfigError(f"{name}/TaskHparams.batch_size={hp.batch_size} does not split over "
                          f"the mesh's {multiple} batch shards: pass "
                          f"--gin.{name}/TaskHparams.batch_size=<a multiple of {multiple}>")

  def scores_settings(self, spec: tasks.TaskSpec, data: tasks.TaskData) -> dict[str, Any]:
    r = self.request
    return _normalized({
        "checkpoint": self.source.directory, "step": self.source.step,
        "data": paths.resolve(data.root), "languages": eval_languages(data, r.languages),
        "hparams": dataclasses.asdict(r.hparams[spec.name]),
        "max_train_examples": r.config.max_train_examples if spec.fine_tuned else 0,
        "max_eval_examples": r.config.max_eval_examples})

  def finetuned_settings(self, spec: tasks.TaskSpec) -> dict[str, Any]:
    r = self.request
    return _normalized({
        "task": spec.name, "checkpoint": self.source.directory, "step": self.source.step,
        "hparams": dataclasses.asdict(r.hparams[spec.name]),
        "max_train_examples": r.config.max_train_examples})

  def task_scores(self, spec: tasks.TaskSpec, data: tasks.TaskData) -> dict[str, Any]:
    """A task's stored scores when made with the same settings, else fresh ones."""
    path = paths.join(self.out, SCORES_DIR, f"{spec.name}.json")
    settings = self.scores_settings(spec, data)
    if paths.Path(path).is_file():
      stored = json.loads(paths.Path(path).read_text(encoding="utf-8"))
      if stored.get("settings") == settings:
        log.info("%s: reusing scores from %s", spec.name, path)
        return stored
      log.info("%s: %s was made with other settings: scoring again", spec.name, path)
    langs = eval_languages(data, self.request.languages)
    if spec.fine_tuned:
      scores, splits, model = self.fine_tuned_scores(spec, data, langs)
    else:
      (scores, splits), model = self.retrieval_scores(spec, data, langs), None
    result = {"task": spec.name, "settings": settings, "scores": scores, "splits": splits,
              "model": model}
    _write_json(path, result)
    return result

  # -- fine-tuned tasks --

  def split(self, spec: tasks.TaskSpec, lang: str, split: str, examples,
            training: bool) -> finetune.Split:
    hp = self.request.hparams[spec.name]
    feats = finetune.featurize(spec, examples, self.tok, hp.max_seq_length, training=training)
    return finetune.Split(lang, split, examples, feats)

  def fine_tuned_model(self, spec: tasks.TaskSpec, data: tasks.TaskData,
                       tm: finetune.TaskModel) -> tuple[Any, dict[str, Any]]:
    """(params, selection info) from finetuned/<task>, or by fine-tuning now and saving."""
    directory = paths.join(self.out, FINETUNED_DIR, spec.name)
    settings = self.finetuned_settings(spec)
    reader = (checkpoint.Checkpointer(directory, read_only=True)
              if paths.Path(directory).is_dir() else None)
    steps = reader.steps() if reader else []
    if steps:
      info = reader.read_meta(steps[-1]).get("xtreme", {})
      stored = info.get("settings", {})
      differ = [k for k in settings if stored.get(k) != settings[k]]
      if differ:
        raise ConfigError(f"{directory} holds a model fine-tuned with other settings "
                          f"({', '.join(differ)} differ); delete it or pass another --output_dir")
      log.info("%s: reusing the fine-tuned model in %s (step %d)", spec.name, directory,
               steps[-1])
      params = reader.restore(checkpoint.abstract(tm.abstract, tm.shardings)).params
      return params, {k: v for k, v in info.items() if k != "settings"}
    hp, cfg, en = self.request.hparams[spec.name], self.request.config, spec.train_language
    train = self.split(spec, en, "train", load_examples(data, en, "train",
                                                        cfg.max_train_examples), training=True)
    dev = None
    if hp.eval_every_steps and data.has(en, "dev"):
      examples = load_examples(data, en, "dev", cfg.max_eval_examples)
      if finetune.has_gold(spec, examples):
        dev = self.split(spec, en, "dev", examples, training=False)
      else:
        log.warning("%s: English dev has no gold answers: no model selection", spec.name)
    result = finetune.fine_tune(spec, tm, hp, self.source.encoder_params(), train, dev,
                                self.tok, self.rows)
    info = {"step": result.step, "num_steps": result.num_steps, "dev_score": result.dev_score}
    self.save_fine_tuned(directory, spec, tm, result, {"settings": settings, **info})
    return result.params, info

  def save_fine_tuned(self, directory: str, spec: tasks.TaskSpec, tm: finetune.TaskModel,
                      result: finetune.Result, info: dict[str, Any]) -> None:
    """A polyglot checkpoint of the selected model (HF-exportable via its meta)."""
    meta = {"model_kind": tm.kind, "model_config": tm.cfg.to_dict(), "task": spec.name,
            "xtreme": info}
    if spec.labels:
      meta["labels"] = list(spec.labels)
    ck = checkpoint.Checkpointer(directory, checkpoint.CheckpointConfig(
        save_every=1, keep_last=1, async_save=False))
    try:
      ck.save(result.step, params=result.params, opt_state={"step": result.step},
              vocab=self.source.loaded.vocab.model_bytes, meta=meta, data=None)
      ck.wait()
    finally:
      ck.close()
    log.info("%s: saved the fine-tuned model (step %d) in %s", spec.name, result.step,
             directory)

  def fine_tuned_scores(self, spec: tasks.TaskSpec, data: tasks.TaskData, langs: list[str]):
    """Scores of every labelled evaluation split; no fine-tuning when none is labelled."""
    limit = self.request.config.max_eval_examples
    found = [(lang, data.eval_split(lang)) for lang in langs]
    found = [(lang, split, load_examples(data, lang, split, limit)) for lang, split in found]
    unlabelled = [f"{lang}/{split}" for lang, split, ex in found if not finetune.has_gold(spec, ex)]
    if unlabelled:
      log.warning("%s: no gold answers in %s (an unlabelled copy): not scored", spec.name,
                  ", ".join(unlabelled))
    evals = [self.split(spec, lang, split, ex, training=False) for lang, split, ex in found
             if finetune.has_gold(spec, ex)]
    if not evals:
      return {}, {}, None
    tm = finetune.task_model(spec, self.source.cfg, self.mesh)
    params, info = self.fine_tuned_model(spec, data, tm)
    hp = self.request.hparams[spec.name]
    scores, splits = {}, {}
    for s in evals:
      scores[s.lang] = finetune.evaluate(spec, tm, params, s, hp, self.rows, self.tok)
      splits[s.lang] = s.split
      log.info("%s %s/%s: %s", spec.name, s.lang, s.split, _brief(scores[s.lang]))
    return scores, splits, info

  # -- retrieval tasks --

  def embeddings(self, spec: tasks.TaskSpec, sentences, lang: str, side: str):
    hp = self.request.hparams[spec.name]
    return self.source.embedder(sentences, hp, f"{spec.name} {lang} {side}")

  def tatoeba(self, spec: tasks.TaskSpec, data: tasks.TaskData, lang: str) -> dict[str, Any]:
    s = load_examples(data, lang, "test", self.request.config.max_eval_examples)
    acc = retrieval.tatoeba_accuracy(self.embeddings(spec, s.source, lang, "source"),
                                     self.embeddings(spec, s.english, lang, "en"))
    return {"accuracy": acc, "split": "test"}

  def bucc_candidates(self, spec, data, lang: str, split: str):
    s = load_examples(data, lang, split, self.request.config.max_eval_examples)
    cands = retrieval.bucc_candidates(
        s.source_ids, s.source, self.embeddings(spec, s.source, lang, f"{split} source"),
        s.english_ids, s.english, self.embeddings(spec, s.english, lang, f"{split} en"))
    return cands, s.gold

  def bucc(self, spec: tasks.TaskSpec, data: tasks.TaskData, lang: str) -> dict[str, Any]:
    """F1 with the threshold chosen on dev, on test (or on dev when it is all there is)."""
    threshold = None
    if data.has(lang, "dev"):
      cands, gold = self.bucc_candidates(spec, data, lang, "dev")
      threshold = retrieval.optimize_threshold(cands, gold)
    else:
      log.warning("%s %s: no dev set, the threshold is chosen on test", spec.name, lang)
    split = "test" if data.has(lang, "test") else "dev"
    if split == "test":
      cands, gold = self.bucc_candidates(spec, data, lang, "test")
    return {**retrieval.bucc_scores(cands, gold, threshold), "split": split}

  def retrieval_scores(self, spec: tasks.TaskSpec, data: tasks.TaskData, langs: list[str]):
    scores, splits = {}, {}
    fn = self.bucc if spec.metric == "bucc_f1" else self.tatoeba
    for lang in langs:
      scores[lang] = fn(spec, data, lang)
      splits[lang] = scores[lang].pop("split")
      log.info("%s %s/%s: %s", spec.name, lang, splits[lang], _brief(scores[lang]))
    return scores, splits

  # -- report --

  def metadata(self, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    r = self.request
    meta = {"checkpoint": self.source.directory, "step": self.source.step,
            "data": r.data_dir or r.tfds_data_dir,
            "languages": ",".join(r.languages) if r.languages else "all in the data",
            "date": datetime.datetime.now().isoformat(timespec="seconds")}
    chosen = [f"{t} step {m['step']}/{m['num_steps']}"
              + (f" (en dev {m['dev_score']:.1f})" if m.get("dev_score") is not None else "")
              for t, res in results.items() if (m := res.get("model"))]
    if chosen:
      meta["fine-tuned models"] = "; ".join(chosen)
    if r.config.max_train_examples or r.config.max_eval_examples:
      meta["smoke run"] = (f"max_train_examples={r.config.max_train_examples}, "
                           f"max_eval_examples={r.config.max_eval_examples} (not comparable "
                           "to XTREME)")
    return meta

  def __call__(self) -> dict[str, str]:
    found = self.discover()
    self.check_settings([spec for spec, _ in found])
    results = {spec.name: self.task_scores(spec, data) for spec, data in found}
    scores = {t: res["scores"] for t, res in results.items()}
    splits = {t: res["splits"] for t, res in results.items()}
    files = report.write_report(self.out, scores, self.metadata(results), splits)
    log.info("report: %s", ", ".join(files.values()))
    return files


def _brief(m: Mapping[str, Any]) -> str:
  return ", ".join(f"{k} {v:.2f}" for k, v in m.items() if isinstance(v, float))


def evaluate(request: Request) -> dict[str, str]:
  """Runs (or resumes) `request`; returns the report's paths (json, md, png)."""
  return Run(request)()
