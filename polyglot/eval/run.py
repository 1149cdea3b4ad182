"""A benchmark run: find the data, fine-tune or embed per task, score, report; resumable.

`Run(request)` opens the checkpoint; `prepare()` finds the data and fits every
task's settings to the checkpoint (`hparams.fit`: a warning per change, one
ConfigError naming every setting that does not fit) before anything is
written; `execute(jobs)` does the work and writes the report.
`evaluate(request)` is both; `python -m polyglot.eval` then writes
config.gin, so a run that fails leaves the report and config of the last one
that did not. The output directory holds:

  results.json, results.md, results.png   the report (`report.write_report`)
  config.gin                               the operative gin config and the settings fitted to
                                           the checkpoint (the entry point)
  scores/<task>.json                       a task's scores, their key ("settings") and the
                                           wall time that made them ("seconds")
  predictions/<split>/...                  the predictions scored, in the benchmark's
                                           submission format (`Benchmark.write_predictions`;
                                           XGLUE's), written with the scores
  finetuned/<task>/<step>/                 a task's selected fine-tuned model: a polyglot
                                           checkpoint that `polyglot.load` reads (meta:
                                           model_kind, model_config, labels, task, and
                                           under the benchmark's name the selection with
                                           its key in "settings")

scores/ and finetuned/ are keyed by content, not by path: the sha256 of the
evaluated checkpoint's parameter and vocabulary files (`checkpoint.fingerprint`) and its
model config; the sha256 of the names and bytes of the task's data files the
work reads (`tasks.fingerprint`: English train, and English dev when it
selects the model; scores add each scored language's evaluation split); the
task's settings as fitted; the example caps (and, for scores, the languages).
A rerun reuses what matches. What does not is redone with a warning naming
the file and what changed: scores are computed again (also when the file
cannot be read); a fine-tuned model is moved aside, never deleted
(`finetuned/<task>.stale-<unix time>`, or `.damaged-` when it cannot be read),
and fine-tuned again.

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
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from polyglot import api, checkpoint, models, paths, sharding
from polyglot.errors import CheckpointError, ConfigError, DataError
from polyglot.eval import (embed, finetune, hparams, metrics, readers, report, retrieval,
                           tasks)
from polyglot.eval.benchmarks import Benchmark
from polyglot.eval.hparams import RetrievalHparams, TaskHparams, EvalConfig
from polyglot.eval.tokenizer import SentencePieceTokenizer

log = logging.getLogger("polyglot.eval")

SCORES_DIR = "scores"
PREDICTIONS_DIR = "predictions"
FINETUNED_DIR = "finetuned"


@dataclasses.dataclass(frozen=True)
class Request:
  """One evaluation: a checkpoint, a benchmark's tasks with their settings, data, an
  output dir."""
  checkpoint_dir: str
  output_dir: str
  benchmark: Benchmark
  tasks: tuple[tasks.TaskSpec, ...]
  hparams: Mapping[str, TaskHparams | RetrievalHparams]  # by task name
  data_dir: str | None = None
  tfds_data_dir: str | None = None
  step: int | None = None
  languages: tuple[str, ...] | None = None  # None: every language the data has
  config: EvalConfig = EvalConfig()
  mesh: sharding.MeshConfig | None = None   # None: one device
  # Per task, the settings the user bound (--gin_file, --gin.X): kept as given. The
  # others are fitted to the checkpoint (`hparams.fit`).
  user_set: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)

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


# How a warning names the parts of a cache key.
_KEY_NAMES = {"params": "checkpoint parameters", "vocab": "checkpoint vocabulary",
              "model_config": "model config", "data": "data files", "hparams": "task settings"}


def changed(stored: Any, key: Mapping[str, Any]) -> str:
  """The parts of a cache key that differ from the `stored` one, in words."""
  stored = stored if isinstance(stored, Mapping) else {}
  parts = [k for k in key if stored.get(k) != key[k]] + [k for k in stored if k not in key]
  return ", ".join(_KEY_NAMES.get(k, k) for k in parts)


def move_aside(directory: str, why: str) -> str:
  """Renames `directory` to `<directory>.<why>-<unix time>` (never deleted); the new name."""
  stamp = int(time.time())
  while paths.Path(f"{directory}.{why}-{stamp}").exists():
    stamp += 1
  paths.Path(directory).rename(f"{directory}.{why}-{stamp}")
  return f"{directory}.{why}-{stamp}"


def read_scores(path: str) -> dict[str, Any]:
  """A stored `scores/<task>.json`; ValueError when it is not one (truncated, not UTF-8,
  another shape)."""
  stored = json.loads(paths.Path(path).read_text(encoding="utf-8"))
  if not (isinstance(stored, dict)
          and all(isinstance(stored.get(k), dict) for k in ("settings", "scores", "splits"))):
    raise ValueError("not a scores file: no settings, scores and splits objects")
  return stored


def read_fine_tuned(directory: str, benchmark: str, key: Mapping[str, Any], target
                    ) -> tuple[Any, dict] | str:
  """(params on `target`'s shardings, selection info) of the newest model in `directory`
  when `benchmark`'s run made it with `key`, else what changed; raises when it cannot be
  read."""
  reader = checkpoint.Checkpointer(directory, read_only=True)
  try:
    step = reader.resolve_step()
    info = dict(reader.read_meta(step).get(benchmark, {}))
    stored = info.pop("settings", None)
    if stored != key:
      return changed(stored, key)
    return reader.restore(target, step=step).params, info
  finally:
    reader.close()


def make_mesh(cfg: sharding.MeshConfig | None) -> Mesh:
  """The mesh `cfg` describes over all devices, or the first device alone."""
  if cfg is None:
    return sharding.make_mesh(sharding.MeshConfig(data=1), jax.devices()[:1])
  return sharding.make_mesh(cfg)


class Source:
  """The evaluated checkpoint: step, config and identity at once, parameters on first use.

  `identity` is what the caches are keyed on: the sha256 of the parameter and
  vocabulary files, and the model config.
  """

  def __init__(self, checkpoint_dir: str, step: int | None, mesh: Mesh):
    self.directory = checkpoint.checkpoint_dir(checkpoint_dir)
    if not paths.Path(self.directory).is_dir():
      raise CheckpointError(f"checkpoint dir {checkpoint_dir} does not exist; pass the workdir "
                            "of a polyglot.train run (or its checkpoints/ folder)")
    reader = checkpoint.Checkpointer(self.directory, read_only=True)
    self.step = reader.resolve_step(step)
    self.meta = api.model_meta(reader, self.step)
    self.cfg = models.EncoderConfig.from_dict(self.meta["model_config"])
    self.identity = {"params": checkpoint.fingerprint(self.directory, self.step),
                     "vocab": checkpoint.fingerprint(self.directory, self.step, "vocab"),
                     "model_config": self.meta["model_config"]}
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


def limit_pool(s: readers.RetrievalSet, n: int) -> readers.RetrievalSet:
  """The first n queries, their relevant candidates and the first n others (smoke runs)."""
  queries = s.queries[:n]
  keep = {c for q in queries for c in q.relevant} | {c.id for c in s.candidates[:n]}
  return readers.RetrievalSet(queries, tuple(c for c in s.candidates if c.id in keep))


def load_examples(data: tasks.TaskData, lang: str, split: str, limit: int):
  """`readers.load`, cut to the first `limit` examples when limit > 0."""
  examples = readers.load(data, lang, split)
  if not limit:
    return examples
  if isinstance(examples, readers.TatoebaSet):
    return readers.TatoebaSet(examples.source[:limit], examples.english[:limit])
  if isinstance(examples, readers.BuccSet):
    return limit_bucc(examples, limit)
  if isinstance(examples, readers.RetrievalSet):
    return limit_pool(examples, limit)
  return examples[:limit]


# ---- the run ----

@dataclasses.dataclass(frozen=True)
class Job:
  """One task of a run: the data found and the settings fitted to the checkpoint."""
  spec: tasks.TaskSpec
  data: tasks.TaskData
  hparams: TaskHparams | RetrievalHparams


def train_sources(job: Job) -> list[tuple[str, str]]:
  """(language, split)s fine-tuning reads: English train, English dev when it selects, and
  the intermediate task's English data when there is one."""
  en = job.spec.train_language
  dev = job.hparams.eval_every_steps and job.data.has(en, "dev")
  first = job.data.has(en, tasks.INTERMEDIATE)
  return [(en, "train"), *([(en, "dev")] if dev else []),
          *([(en, tasks.INTERMEDIATE)] if first else [])]


def eval_sources(job: Job, langs: Sequence[str]) -> list[tuple[str, str]]:
  """(language, split)s scoring reads: each evaluation split, and BUCC's dev (threshold)."""
  keys = [(lang, job.data.eval_split(lang)) for lang in langs]
  if job.spec.metric == "bucc_f1":
    keys += [(lang, "dev") for lang in langs if job.data.has(lang, "dev")]
  return keys


def fitted_bindings(request: Request, jobs: Sequence[Job]) -> list[str]:
  """gin bindings of the settings `Run.prepare` fitted (`xnli/TaskHparams.max_seq_length = 64`)."""
  lines = []
  for job in jobs:
    name, given = job.spec.name, request.hparams[job.spec.name]
    lines += [f"{name}/{type(given).__name__}.{f.name} = {getattr(job.hparams, f.name)!r}"
              for f in dataclasses.fields(given)
              if getattr(job.hparams, f.name) != getattr(given, f.name)]
  return lines


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

  def prepare(self) -> list[Job]:
    """The tasks that can run, with settings fitted to the checkpoint (a warning per
    change); one ConfigError naming every setting that does not fit the model or mesh."""
    cfg, multiple = self.source.cfg, finetune.batch_multiple(self.mesh)
    jobs, errors = [], []
    for spec, data in self.discover():
      name = spec.name
      fit = hparams.fit(name, self.request.hparams[name], cfg.num_layers, cfg.max_len,
                        self.request.user_set.get(name, frozenset()))
      for notice in fit.notices:
        log.warning("%s", notice)
      errors += fit.errors
      hp = fit.hparams
      if isinstance(hp, TaskHparams) and hp.batch_size % multiple:
        errors.append(f"{name}/TaskHparams.batch_size={hp.batch_size} does not split over the "
                      f"mesh's {multiple} batch shards: pass "
                      f"--gin.{name}/TaskHparams.batch_size=<a multiple of {multiple}>")
      jobs.append(Job(spec, data, hp))
    if errors:
      raise ConfigError("; ".join(errors))
    return jobs

  def scores_settings(self, job: Job, langs: list[str]) -> dict[str, Any]:
    """The key of a task's scores (see the module docstring)."""
    fine_tuned, c = job.spec.fine_tuned, self.request.config
    used = eval_sources(job, langs) + (train_sources(job) if fine_tuned else [])
    return _normalized({
        **self.source.identity, "data": tasks.fingerprint(job.data, used), "languages": langs,
        "hparams": dataclasses.asdict(job.hparams),
        "max_train_examples": c.max_train_examples if fine_tuned else 0,
        "max_eval_examples": c.max_eval_examples})

  def finetuned_settings(self, job: Job) -> dict[str, Any]:
    """The key of a fine-tuned model: English dev, cut to max_eval_examples, selects it."""
    c = self.request.config
    return _normalized({
        **self.source.identity, "task": job.spec.name,
        "data": tasks.fingerprint(job.data, train_sources(job)),
        "hparams": dataclasses.asdict(job.hparams), "max_train_examples": c.max_train_examples,
        "max_eval_examples": c.max_eval_examples})

  def stored_scores(self, name: str, path: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The scores at `path` when made with `key`; else None, with a warning saying why."""
    if not paths.Path(path).is_file():
      return None
    try:
      stored = read_scores(path)
    except ValueError as e:
      log.warning("%s: %s cannot be read (%s): scoring again", name, path, checkpoint.reason(e))
      return None
    if stored["settings"] != key:
      log.warning("%s: %s is stale (%s changed): scoring again", name, path,
                  changed(stored["settings"], key))
      return None
    log.info("%s: reusing scores from %s", name, path)
    return stored

  def task_scores(self, job: Job) -> dict[str, Any]:
    """A task's stored scores when made with the same key, else fresh ones."""
    name = job.spec.name
    path = paths.join(self.out, SCORES_DIR, f"{name}.json")
    langs = eval_languages(job.data, self.request.languages)
    key = self.scores_settings(job, langs)
    stored = self.stored_scores(name, path, key)
    if stored is not None:
      return stored
    start = time.perf_counter()
    if job.spec.fine_tuned:
      scores, splits, model = self.fine_tuned_scores(job, langs)
    else:
      (scores, splits), model = self.retrieval_scores(job, langs), None
    result = {"task": name, "settings": key, "checkpoint": self.source.directory,
              "step": self.source.step, "data_dir": job.data.root, "scores": scores,
              "splits": splits, "model": model,
              "seconds": round(time.perf_counter() - start, 1)}
    _write_json(path, result)
    return result

  # -- fine-tuned tasks --

  def split(self, job: Job, lang: str, split: str, examples, training: bool) -> finetune.Split:
    feats = finetune.featurize(job.spec, examples, self.tok, job.hparams.max_seq_length,
                               training=training)
    return finetune.Split(lang, split, examples, feats)

  def stored_model(self, name: str, directory: str, key: dict[str, Any],
                   tm: finetune.TaskModel) -> tuple[Any, dict[str, Any]] | None:
    """(params, selection info) of `directory` when fine-tuned with `key`; else None, after
    moving a stale or unreadable model aside with a warning."""
    if not paths.Path(directory).is_dir():
      return None
    try:
      found = read_fine_tuned(directory, self.request.benchmark.name, key,
                              checkpoint.abstract(tm.abstract, tm.shardings))
    except Exception as e:  # pylint: disable=broad-except  (unreadable: fine-tuned again)
      why, what = "damaged", f"cannot be read ({checkpoint.reason(e)})"
    else:
      if not isinstance(found, str):
        log.info("%s: reusing the fine-tuned model in %s (step %s)", name, directory,
                 found[1].get("step"))
        return found
      why, what = "stale", f"is stale ({found} changed)"
    moved = move_aside(directory, why)
    log.warning("%s: %s %s: moved aside to %s; fine-tuning again", name, directory, what, moved)
    return None

  def fine_tuned_model(self, job: Job, tm: finetune.TaskModel) -> tuple[Any, dict[str, Any]]:
    """(params, selection info) from finetuned/<task>, or by fine-tuning now and saving."""
    spec, hp, cfg, en = job.spec, job.hparams, self.request.config, job.spec.train_language
    directory = paths.join(self.out, FINETUNED_DIR, spec.name)
    key = self.finetuned_settings(job)
    stored = self.stored_model(spec.name, directory, key, tm)
    if stored is not None:
      return stored
    start, first_steps = None, None
    if (en, tasks.INTERMEDIATE) in train_sources(job):
      first = finetune.fine_tune(
          spec, tm, hp, self.source.encoder_params(),
          self.split(job, en, tasks.INTERMEDIATE, load_examples(
              job.data, en, tasks.INTERMEDIATE, cfg.max_train_examples), training=True),
          None, self.tok, self.rows)
      start, first_steps = first.params, first.num_steps
      log.info("%s: fine-tuned on the intermediate task (%d steps); now on its own data",
               spec.name, first_steps)
    train = self.split(job, en, "train", load_examples(job.data, en, "train",
                                                       cfg.max_train_examples), training=True)
    dev = None
    if (en, "dev") in train_sources(job):
      examples = load_examples(job.data, en, "dev", cfg.max_eval_examples)
      if finetune.has_gold(spec, examples):
        dev = self.split(job, en, "dev", examples, training=False)
      else:
        log.warning("%s: English dev has no gold answers: no model selection", spec.name)
    result = finetune.fine_tune(spec, tm, hp, self.source.encoder_params(), train, dev,
                                self.tok, self.rows, start)
    info = {"step": result.step, "num_steps": result.num_steps, "dev_score": result.dev_score,
            **({"intermediate_steps": first_steps} if first_steps else {})}
    self.save_fine_tuned(directory, spec, tm, result, {"settings": key, **info})
    return result.params, info

  def save_fine_tuned(self, directory: str, spec: tasks.TaskSpec, tm: finetune.TaskModel,
                      result: finetune.Result, info: dict[str, Any]) -> None:
    """A polyglot checkpoint of the selected model (HF-exportable via its meta)."""
    meta = {"model_kind": tm.kind, "model_config": tm.cfg.to_dict(), "task": spec.name,
            self.request.benchmark.name: info}
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

  def fine_tuned_scores(self, job: Job, langs: list[str]):
    """Scores of every labelled evaluation split; no fine-tuning when none is labelled."""
    spec, limit = job.spec, self.request.config.max_eval_examples
    found = [(lang, job.data.eval_split(lang)) for lang in langs]
    found = [(lang, split, load_examples(job.data, lang, split, limit)) for lang, split in found]
    unlabelled = [f"{lang}/{split}" for lang, split, ex in found if not finetune.has_gold(spec, ex)]
    if unlabelled:
      log.warning("%s: no gold answers in %s (an unlabelled copy): not scored", spec.name,
                  ", ".join(unlabelled))
    evals = [self.split(job, lang, split, ex, training=False) for lang, split, ex in found
             if finetune.has_gold(spec, ex)]
    if not evals:
      return {}, {}, None
    tm = finetune.task_model(spec, self.source.cfg, self.mesh)
    params, info = self.fine_tuned_model(job, tm)
    scores, splits = {}, {}
    write = self.request.benchmark.write_predictions
    for s in evals:
      scores[s.lang], pred = finetune.evaluate(spec, tm, params, s, job.hparams, self.rows,
                                               self.tok)
      splits[s.lang] = s.split
      if write is not None:
        write(paths.join(self.out, PREDICTIONS_DIR, s.split), spec, s.lang, pred)
      log.info("%s %s/%s: %s", spec.name, s.lang, s.split, _brief(scores[s.lang]))
    return scores, splits, info

  # -- retrieval tasks --

  def embeddings(self, job: Job, sentences, lang: str, side: str):
    return self.source.embedder(sentences, job.hparams, f"{job.spec.name} {lang} {side}")

  def tatoeba(self, job: Job, lang: str) -> dict[str, Any]:
    s = load_examples(job.data, lang, "test", self.request.config.max_eval_examples)
    acc = retrieval.tatoeba_accuracy(self.embeddings(job, s.source, lang, "source"),
                                     self.embeddings(job, s.english, lang, "en"))
    return {"accuracy": acc, "split": "test"}

  def bucc_candidates(self, job: Job, lang: str, split: str):
    s = load_examples(job.data, lang, split, self.request.config.max_eval_examples)
    cands = retrieval.bucc_candidates(
        s.source_ids, s.source, self.embeddings(job, s.source, lang, f"{split} source"),
        s.english_ids, s.english, self.embeddings(job, s.english, lang, f"{split} en"))
    return cands, s.gold

  def bucc(self, job: Job, lang: str) -> dict[str, Any]:
    """F1 with the threshold chosen on dev, on test (or on dev when it is all there is)."""
    threshold = None
    if job.data.has(lang, "dev"):
      cands, gold = self.bucc_candidates(job, lang, "dev")
      threshold = retrieval.optimize_threshold(cands, gold)
    else:
      log.warning("%s %s: no dev set, the threshold is chosen on test", job.spec.name, lang)
    split = "test" if job.data.has(lang, "test") else "dev"
    if split == "test":
      cands, gold = self.bucc_candidates(job, lang, "test")
    return {**retrieval.bucc_scores(cands, gold, threshold), "split": split}

  def pool(self, job: Job, langs: list[str]):
    """mAP@20 of every language's queries against one pool, the candidates of all the
    languages (LAReQA's answer sentences, Mewsli-X's entities), embedded once."""
    name, limit = job.spec.name, self.request.config.max_eval_examples
    splits = {lang: job.data.eval_split(lang) for lang in langs}
    s = readers.merge_retrieval_sets(
        [load_examples(job.data, lang, split, limit) for lang, split in splits.items()],
        f"{name} under {job.data.root}")
    embedder = self.source.embedder
    pool = embedder([c.encoded for c in s.candidates], job.hparams, f"{name} candidates")
    queries = embedder([q.text for q in s.queries], job.hparams, f"{name} queries")
    ranked = retrieval.rank_pool(queries, pool, [c.id for c in s.candidates], metrics.TOP_K)
    by_lang = metrics.map_by_language(s.queries, {q.id: r for q, r in zip(s.queries, ranked)})
    scores = {lang: {"map@20": value} for lang, value in by_lang.items()}
    for lang in scores:
      log.info("%s %s/%s: %s", name, lang, splits[lang], _brief(scores[lang]))
    return scores, {lang: splits[lang] for lang in scores}

  def retrieval_scores(self, job: Job, langs: list[str]):
    if job.spec.metric == "map_at_20":
      return self.pool(job, langs)
    scores, splits = {}, {}
    fn = self.bucc if job.spec.metric == "bucc_f1" else self.tatoeba
    for lang in langs:
      scores[lang] = fn(job, lang)
      splits[lang] = scores[lang].pop("split")
      log.info("%s %s/%s: %s", job.spec.name, lang, splits[lang], _brief(scores[lang]))
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
                           f"to published {r.benchmark.title} results)")
    return meta

  def execute(self, jobs: Sequence[Job]) -> dict[str, str]:
    """Scores every job (reusing what matches), writes the report; returns its paths."""
    results = {job.spec.name: self.task_scores(job) for job in jobs}
    scores = {t: res["scores"] for t, res in results.items()}
    splits = {t: res["splits"] for t, res in results.items()}
    seconds = {t: res["seconds"] for t, res in results.items() if "seconds" in res}
    files = report.write_report(self.out, self.request.benchmark, scores,
                                self.metadata(results), splits, seconds)
    log.info("report: %s", ", ".join(files.values()))
    return files


def _brief(m: Mapping[str, Any]) -> str:
  return ", ".join(f"{k} {v:.2f}" for k, v in m.items() if isinstance(v, float))


def evaluate(request: Request) -> dict[str, str]:
  """Runs (or resumes) `request`; returns the report's paths (json, md, png)."""
  run = Run(request)
  return run.execute(run.prepare())
