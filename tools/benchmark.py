"""Throughput benchmarks; one subcommand per thing measured.

  python tools/benchmark.py train --model small --batch_size 8 --seq_len 128 --compare_hf
  python tools/benchmark.py train --model large --seq_len 512 --batch_size 32 --dtype bfloat16
  python tools/benchmark.py scaling --model tiny        # step time vs length, vs experts
  python tools/benchmark.py data                        # input pipeline at length 512

`train` times the trainer's real `train_step` (jit, donated state, the mesh's
shardings) on a synthetic masked batch: compile time, then the median of
`--steps` steps after `--warmup`, each blocked on its result. It reports
tokens/s, MFU (`polyglot.trainer.flops_per_token` x tokens/s over the
devices' peak bf16 FLOP/s; n/a on CPU) and peak device memory (the allocator's
peak on accelerators; XLA's compiled estimate of arguments + outputs + temps
on CPU). `--compare_hf` then times Hugging Face PyTorch
`XLMRobertaForMaskedLM` of the same config on the same batch with
`torch.optim.AdamW` and the same hyperparameters, and prints the ratio. Each
run prints one JSON line and, unless `--no_record`, appends a row to the
"Train step" table of docs/benchmarks.md.

`data` measures the host input pipeline (polyglot/data/pipeline.py): input
tokens per second of finished batches (mix, shuffle, mask, batch), after the
pipeline is built and warm; `--tokenized DIR` reads a tokenized cache
(tools/cache_tasks.py) instead of text, `--text_dir DIR` a text directory
(`corpus --languages N` makes one of N languages from the shared UDHR corpus);
`--cold` times the build with the host's token file made in it (the text
tokenized, or the cache's ids copied). It also reports the build time, the size
of the iterator's checkpoint state and the time to save and restore it. Each
measurement runs in a fresh process pinned to `--cores` CPUs
(`os.sched_setaffinity`) with that many stream workers (or tf.data threads);
without `--cores` it runs one core, then all cores. Results in
docs/benchmarks.md.
"""
import argparse
import atexit
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, NamedTuple

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from polyglot import paths  # noqa: E402  pylint: disable=wrong-import-position
from polyglot.convert import cli  # noqa: E402  pylint: disable=wrong-import-position
RECORD = REPO / "docs" / "benchmarks.md"
TRAIN_TABLE_END = "<!-- train rows end -->"
SCALING_TABLE_END = "<!-- scaling rows end -->"


def measure_data(args) -> dict:
  """One run of the input pipeline, in this process (already pinned to its cores)."""
  import tasks  # pylint: disable=g-import-not-at-top  (registrations)
  from polyglot.data import pipeline  # pylint: disable=g-import-not-at-top

  from polyglot.data import cache, tokenized  # pylint: disable=g-import-not-at-top
  if args.cold:  # no token file to map: the build makes it
    tokenized.STREAMS_DIR = f"streams-cold-{os.getpid()}"
    atexit.register(shutil.rmtree, cache.cache_dir(tokenized.STREAMS_DIR), True)
  start = time.perf_counter()
  mixture = args.mixture
  if args.tokenized:  # read from the cache, registered from it alone (no text)
    mixture = tasks.register_tokenized(args.tokenized).name
  elif args.text_dir:
    mixture = tasks.register_text_directory(args.text_dir).name
  it = pipeline.make_iterator(mixture, length=args.length, batch_size=args.batch_size,
                              seed=0, shard_index=0, num_shards=1, num_threads=args.cores)
  built = time.perf_counter()
  next(it)
  first = time.perf_counter()
  for _ in range(args.warmup):
    next(it)
  timed = time.perf_counter()
  tokens = 0
  for _ in range(args.batches):
    tokens += int((next(it)["segment_ids"] > 0).sum())
  seconds = time.perf_counter() - timed
  saved = time.perf_counter()
  state = it.get_state()
  it.set_state(state)
  restored = time.perf_counter()
  corpus = getattr(getattr(it, "stream", None), "corpus", None)
  return {"mixture": mixture, "input": "tokenized" if args.tokenized else "text",
          "cold": args.cold, "corpus_tokens": None if corpus is None else int(corpus.sizes.sum()),
          "tasks": len(getattr(pipeline.mixtures.get_provider(mixture), "tasks", [mixture])),
          "length": args.length, "batch_size": args.batch_size,
          "state_kb": round(len(state) / 1024, 1), "state_ms": round(1e3 * (restored - saved)),
          "cores": args.cores, "build_s": round(built - start, 2),
          "first_batch_s": round(first - built, 2), "batches": args.batches,
          "tokens_per_s": round(tokens / seconds)}


def split_corpus(source: str, count: int, output_dir: str, copies: int = 1) -> list[str]:
  """A text directory of `count` languages made from the one at `source` (F files): file f
  is dealt into `parts` = ceil(count / F) + 1 parts by line (part k: lines k, k + parts, ..),
  and the parts are taken part by part, file by file, skipping parts of fewer than 8 lines;
  a part keeps its file's tag unless that is taken, then its code gets the first free
  private-use script `Qaab`, `Qaac`, .. (the names say they are made up). Each file holds
  its lines `copies` times over (a bigger corpus of the same text). -> the names."""
  from polyglot.data import languages, sources  # pylint: disable=g-import-not-at-top
  files = list(sources.discover_text_files(source).items())
  parts = -(-count // len(files)) + 1
  if parts > 12:
    raise SystemExit(f"error: --languages={count} is too many for the {len(files)} files of "
                     f"{source}: use at most {11 * len(files)}")
  out = pathlib.Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  names = []
  for part in range(parts):
    for language, path in files:
      lines = [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
      lines = lines[part::parts]
      if len(lines) < 8 or len(names) == count:
        continue
      code, k = languages.resolve(language).code, 0
      name = language
      while name in names:  # a language written in several scripts has several files
        k += 1
        name = f"{code}_Qaa{chr(ord('a') + k)}"
      (out / f"{name}.txt").write_text(("\n".join(lines) + "\n") * copies, encoding="utf-8")
      names.append(name)
  if len(names) < count:
    raise SystemExit(f"error: {source} gives {len(names)} parts of 8 lines or more, not "
                     f"--languages={count}: pass a bigger --source")
  return names


def run_corpus(args) -> None:
  names = split_corpus(args.source, args.languages, args.output_dir, args.copies)
  print(f"{args.output_dir}: {len(names)} languages from {args.source}")


def run_data(args) -> None:
  if args.cores:
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.cores]))
    from polyglot.errors import PolyglotError  # pylint: disable=g-import-not-at-top
    try:
      print(json.dumps(measure_data(args)))
    except PolyglotError as e:
      sys.exit(f"error: {e}")
    return
  print("| mixture | input | tasks | length | batch | cores | build s | first batch s | "
        "state KB | save + restore ms | input tokens/s |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for cores in (1, len(os.sched_getaffinity(0))):
    command = [sys.executable, __file__, "data", "--cores", str(cores), "--mixture", args.mixture,
               "--length", str(args.length), "--batch_size", str(args.batch_size),
               "--batches", str(args.batches), "--warmup", str(args.warmup)]
    if args.tokenized:
      command += ["--tokenized", args.tokenized]
    if args.text_dir:
      command += ["--text_dir", args.text_dir]
    if args.cold:
      command += ["--cold"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
      sys.exit(done.stderr.strip().splitlines()[-1])
    r = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"| {r['mixture']} | {r['input']}{', cold' if r['cold'] else ''} | {r['tasks']} | {r['length']} | "
          f"{r['batch_size']} | {r['cores']} | {r['build_s']} | {r['first_batch_s']} | "
          f"{r['state_kb']:,} | {r['state_ms']:,} | {r['tokens_per_s']:,} |")


def synthetic_batch(cfg, batch_size: int, seq_len: int, mask_rate: float = 0.15,
                    seed: int = 0) -> dict[str, np.ndarray]:
  """Full rows `<s> random pieces </s>`, `mask_rate` of the pieces replaced by `<mask>`."""
  rng = np.random.default_rng(seed)
  targets = rng.integers(4, cfg.mask_id, (batch_size, seq_len), dtype=np.int32)  # no specials
  targets[:, 0], targets[:, -1] = cfg.bos_id, cfg.eos_id
  selected = rng.random((batch_size, seq_len)) < mask_rate
  selected[:, [0, -1]] = False
  return {"input_ids": np.where(selected, cfg.mask_id, targets).astype(np.int32),
          "targets": targets, "loss_weights": selected.astype(np.int32),
          "segment_ids": np.ones((batch_size, seq_len), np.int32),
          "positions": np.tile(np.arange(seq_len, dtype=np.int32), (batch_size, 1))}


def synthetic_pairs(cfg, batch_size: int, seq_len: int, seed: int = 1) -> dict[str, np.ndarray]:
  """XLCo rows: full `<s> random pieces </s>` queries and keys."""
  rng = np.random.default_rng(seed)
  def side():
    ids = rng.integers(4, cfg.mask_id, (batch_size, seq_len), dtype=np.int32)
    ids[:, 0], ids[:, -1] = cfg.bos_id, cfg.eos_id
    return ids
  return {"query_ids": side(), "key_ids": side()}


def bench_objectives(names: str, cfg, run_cfg) -> tuple:
  """The objectives of `--objectives` (e.g. mlm,tlm,xlco or mrtd,trtd), each on a batch of
  the run's rows and length; XLCo with InfoXLM's queue and momentum, RTD with ELECTRA's
  generator (1/3) and lambda."""
  from polyglot import objectives  # pylint: disable=g-import-not-at-top
  from polyglot.errors import ConfigError  # pylint: disable=g-import-not-at-top
  configs = {"mlm": objectives.MLM(), "tlm": objectives.TLM(mixture="synthetic"),
             "xlco": objectives.XLCo(mixture="synthetic"), "mrtd": objectives.MRTD(),
             "trtd": objectives.TRTD(mixture="synthetic")}
  unknown = [n for n in names.split(",") if n not in configs]
  if unknown:
    raise ConfigError(f"--objectives {names!r}: unknown {unknown}; use a comma list of "
                      f"{list(configs)}")
  tc = run_cfg.train
  return objectives.build([configs[n] for n in names.split(",")],
                          objectives.DataSpec("synthetic", "mlm", tc.batch_size, tc.seq_len),
                          run_cfg.loss, cfg)


class Runner(NamedTuple):
  steps: Callable[[int], list[float]]    # n -> seconds of n training steps, each blocked on
  report: Callable[[list[float]], dict]  # step seconds -> the measurement


def local_runner(step: Callable[[], None], report: Callable[[list[float]], dict]) -> Runner:
  def steps(n: int) -> list[float]:
    times = []
    for _ in range(n):
      start = time.perf_counter()
      step()
      times.append(time.perf_counter() - start)
    return times
  return Runner(steps, report)


def time_in_turns(runners: list[Runner], warmup: int, steps: int,
                  rounds: int = 2) -> list[list[float]]:
  """Step seconds of each runner: warm-up, then `rounds` turns of steps / rounds steps each.

  Turns spread slow drift in the machine's load over both sides. A turn is a
  block of steps after a pause, not single alternating steps: a thread pool
  keeps spinning briefly after its last op, which would be charged to the
  other side.
  """
  for runner in runners:
    runner.steps(warmup)
  times = [[] for _ in runners]
  for turn in range(rounds):
    for runner, t in zip(runners, times):
      time.sleep(0.5)
      t += runner.steps(steps // rounds + (turn < steps % rounds))
  return times


def polyglot_runner(cfg, batch: dict[str, np.ndarray], args) -> Runner:
  """The trainer's jitted train_step on the mesh; compiled here, timed by the caller."""
  import jax  # pylint: disable=g-import-not-at-top
  from polyglot import optimizer, sharding, train, trainer  # pylint: disable=g-import-not-at-top

  b, l = batch["input_ids"].shape
  run_cfg = train.RunConfig(
      model=cfg, train=train.TrainConfig(num_steps=10_000, batch_size=b, seq_len=l),
      optim=optimizer.OptimConfig(learning_rate=1e-4, warmup_steps=0),
      loss=train.objectives.LossConfig(prediction_rate=args.prediction_rate),
      mesh=sharding.MeshConfig(**_mesh_shape(args.mesh)))
  objs = bench_objectives(getattr(args, "objectives", "mlm"), cfg, run_cfg)
  mesh = sharding.make_mesh(run_cfg.mesh)
  with sharding.use_mesh(mesh):
    setup = train.make_setup(cfg, run_cfg, mesh, objs)
    state = train.fresh_state(setup, cfg, run_cfg, mesh, None, objs)
    batch_sh = sharding.batch_shardings(batch, mesh)
    batches = {o.name: synthetic_pairs(cfg, b, l) if o.data.features == "pairs" else batch
               for o in objs}
    device_batch = {name: jax.device_put(x, sharding.batch_shardings(x, mesh))
                    for name, x in batches.items()}
    step, _ = train.compile_steps(setup, batch_sh["input_ids"], objs)
    rng = jax.random.key(0)
    start = time.perf_counter()
    compiled = step.lower(state, device_batch, rng).compile()
    compile_s = time.perf_counter() - start

  def run():
    nonlocal state
    state, metrics = compiled(state, device_batch, rng)
    jax.block_until_ready(metrics["loss"])

  def report(times: list[float]) -> dict:
    step_s = statistics.median(times)
    device = jax.devices()[0]
    peak = trainer.peak_flops(device)
    tokens = sum(o.data.batch_size * o.data.seq_len for o in objs)
    flops = sum(trainer.objective_flops(cfg, o) for o in objs) / tokens
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      memory = stats["peak_bytes_in_use"]
    else:
      m = compiled.memory_analysis()
      memory = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                + m.temp_size_in_bytes)
    mfu = None if peak is None else round(flops * tokens / step_s / (peak * mesh.size), 4)
    return {"compile_s": round(compile_s, 2), **_step_stats(times, tokens), "mfu": mfu,
            "memory_gib": round(memory / 2**30, 3),
            "devices": f"{mesh.size} x {device.device_kind}"}

  return local_runner(run, report)


def hf_runner(cfg, batch: dict[str, np.ndarray]) -> Runner:
  """HF PyTorch `XLMRobertaForMaskedLM`, same config, batch, AdamW and clipping."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from polyglot.convert import hf  # pylint: disable=g-import-not-at-top

  device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cpu":
    torch.set_num_threads(len(os.sched_getaffinity(0)))
  torch.manual_seed(0)
  config = transformers.XLMRobertaConfig(**hf.config_to_hf(cfg))
  model = transformers.XLMRobertaForMaskedLM(config).to(device).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
  input_ids = torch.from_numpy(batch["input_ids"]).long().to(device)
  labels = torch.from_numpy(np.where(batch["loss_weights"] > 0, batch["targets"], -100)).long()
  labels = labels.to(device)

  def run():
    with torch.autocast(device, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16"):
      loss = model(input_ids=input_ids, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device == "cuda":
      torch.cuda.synchronize()

  def report(times: list[float]) -> dict:
    memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {**_step_stats(times, batch["input_ids"].size),
            "memory_gib": None if memory is None else round(memory, 3),
            "torch": torch.__version__, "threads": torch.get_num_threads()}

  return local_runner(run, report)


def hf_process(cfg, batch: dict[str, np.ndarray], workdir: str) -> Runner:
  """`hf_runner` in a worker process of its own, driven over a pipe.

  PyTorch shares no process with XLA: in one process each library's thread
  pool slowed the other (HF several times slower after an XLA step had run).
  """
  np.savez(os.path.join(workdir, "batch.npz"), **batch)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(cfg.to_dict(), f)
  worker = subprocess.Popen([sys.executable, __file__, "hf-worker", workdir], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)

  def ask(request: str):
    worker.stdin.write(request + "\n")
    worker.stdin.flush()
    reply = worker.stdout.readline()
    if not reply:
      sys.exit(f"error: the HF PyTorch worker stopped (exit {worker.wait()}); see its error above")
    return json.loads(reply)

  def report(times: list[float]) -> dict:
    out = ask("report " + json.dumps(times))
    worker.stdin.close()
    worker.wait()
    return out

  return Runner(lambda n: ask(f"steps {n}"), report)


def run_hf_worker(args) -> None:
  """Serves `hf_process`: 'steps N' -> N step seconds; 'report [..]' -> the measurement."""
  from polyglot import models  # pylint: disable=g-import-not-at-top
  with open(os.path.join(args.workdir, "config.json")) as f:
    cfg = models.EncoderConfig.from_dict(json.load(f))
  batch = dict(np.load(os.path.join(args.workdir, "batch.npz")))
  runner = hf_runner(cfg, batch)
  for line in sys.stdin:
    command, _, value = line.partition(" ")
    reply = runner.steps(int(value)) if command == "steps" else runner.report(json.loads(value))
    print(json.dumps(reply), flush=True)


def _step_stats(times: list[float], tokens: int) -> dict:
  step_s = statistics.median(times)
  return {"step_ms": round(1e3 * step_s, 2),
          "step_ms_range": [round(1e3 * min(times), 2), round(1e3 * max(times), 2)],
          "tokens_per_s": round(tokens / step_s)}


def measure(cfg, batch: dict[str, np.ndarray], args, compare_hf: bool = False) -> dict:
  """{"polyglot": ..., ["hf": ..., "ratio": ...]}, timed in turns; optionally profiled."""
  import jax  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as workdir:
    runners = [polyglot_runner(cfg, batch, args)]
    if compare_hf:
      runners.append(hf_process(cfg, batch, workdir))
    profile = getattr(args, "profile", None)
    if profile:
      jax.profiler.start_trace(profile, create_perfetto_trace=True)
    times = time_in_turns(runners, args.warmup, args.steps)
    if profile:
      jax.profiler.stop_trace()
      print(op_summary(profile, args.steps), file=sys.stderr)
    out = {"polyglot": runners[0].report(times[0])}
    if compare_hf:
      out["hf"] = runners[1].report(times[1])
      out["ratio"] = round(out["polyglot"]["tokens_per_s"] / out["hf"]["tokens_per_s"], 2)
  return out


def op_summary(trace_dir: str, steps: int, top: int = 12) -> str:
  """Device-op milliseconds per step from the trace: matrix-product fusions, the rest, the top ops.

  Ops of one step can overlap on several threads, so the sums can exceed the step time.
  """
  import collections  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
  trace = max(pathlib.Path(trace_dir).rglob("*.trace.json.gz"), key=os.path.getmtime)
  events = json.load(gzip.open(trace))
  events = events["traceEvents"] if isinstance(events, dict) else events
  per_op = collections.Counter()
  for e in events:
    name = e.get("name", "")
    if e.get("ph") == "X" and not (name.startswith("$") or "Thunk" in name or "Pjit" in name
                                    or "ThreadPool" in name or "Execute" in name):
      per_op[name] += e.get("dur", 0) / 1e3 / steps
  products = sum(ms for name, ms in per_op.items() if name.startswith(("ynn", "dot", "xnn")))
  lines = [f"per step: matrix products {products:.1f} ms, other ops "
           f"{sum(per_op.values()) - products:.1f} ms in {len(per_op)} ops; largest:"]
  lines += [f"  {ms:7.1f} ms  {name}" for name, ms in per_op.most_common(top)]
  return "\n".join(lines)


def _mesh_shape(spec: str) -> dict[str, int]:
  """'data=-1' or 'data=2,fsdp=4' -> MeshConfig fields."""
  from polyglot.errors import ConfigError  # pylint: disable=g-import-not-at-top
  shape = {}
  for part in filter(None, spec.split(",")):
    name, _, size = part.partition("=")
    if not size.lstrip("-").isdigit():
      raise ConfigError(f"--mesh={spec!r} is invalid: use axis=size pairs such as data=-1,fsdp=2")
    shape[name.strip()] = int(size)
  return shape


def model_config(args):
  """The preset named by --model with the command line's overrides."""
  from polyglot import models  # pylint: disable=g-import-not-at-top
  overrides = {"dtype": args.dtype, "remat": args.remat, "attention_impl": args.attention}
  if args.scan is not None:
    overrides["scan_layers"] = args.scan
  if args.attention_dropout is not None:
    overrides["attention_dropout_rate"] = args.attention_dropout
  cfg = models.preset(args.model, **overrides)
  if cfg.moe is not None:
    cfg = cfg.replace(moe=with_moe_flags(cfg.moe, args))
  if cfg.max_len < args.seq_len:
    cfg = cfg.replace(max_len=args.seq_len)
  return cfg


def with_moe_flags(moe, args):
  """`moe` with --moe_group_size / --moe_dispatch / --moe_expert_mlp_dim applied."""
  changes = {"group_size": args.moe_group_size, "dispatch": args.moe_dispatch,
             "expert_mlp_dim": args.moe_expert_mlp_dim}
  return dataclasses.replace(moe, **{k: v for k, v in changes.items() if v is not None})


def cpu_name(cpuinfo: str) -> str:
  """'/proc/cpuinfo' text -> 'AMD EPYC (family 26, AVX-512)': the model name, and what sets a
  CPU's matrix-product speed when names repeat across generations (x86 family, widest vector
  extension)."""
  fields = {}  # the first processor's
  for key, _, value in (line.partition(":") for line in cpuinfo.splitlines() if ":" in line):
    fields.setdefault(key.strip(), value.strip())
  name = fields.get("model name") or platform.processor() or platform.machine()
  flags = set(fields.get("flags", "").split())
  vector = next((label for flag, label in (("avx512f", "AVX-512"), ("avx2", "AVX2"))
                 if flag in flags), None)
  details = [f"family {fields['cpu family']}"] if "cpu family" in fields else []
  details += [vector] if vector else []
  return f"{name} ({', '.join(details)})" if details else name


def hardware() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  if device.platform == "cpu":
    try:
      cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
      cpuinfo = ""
    return f"{cpu_name(cpuinfo)}, {len(os.sched_getaffinity(0))} cores"
  return f"{jax.device_count()} x {device.device_kind}"


def append_row(row: str, marker: str) -> None:
  """Inserts a markdown table row above `marker` in docs/benchmarks.md."""
  text = RECORD.read_text()
  if marker not in text:
    sys.exit(f"error: {RECORD} has no '{marker}' line; restore the table it ends")
  RECORD.write_text(text.replace(marker, f"{row}\n{marker}", 1))


def command_line() -> str:
  """This invocation, without --note (its text has a column of its own).

  Flags are recorded in their primary spelling (`--batch-size` as `--batch_size`).
  """
  argv, kept = sys.argv[1:], []
  while argv:
    arg = argv.pop(0)
    name, eq, value = arg.partition("=")
    if name == "--note":
      argv = argv if eq else argv[1:]
    elif name.startswith("--"):
      kept.append("--" + name[2:].replace("-", "_") + eq + value)
    else:
      kept.append(arg)
  return "python tools/benchmark.py " + shlex.join(kept)


def run_train(args) -> None:
  from polyglot.errors import PolyglotError  # pylint: disable=g-import-not-at-top
  try:
    cfg = model_config(args)
    batch = synthetic_batch(cfg, args.batch_size, args.seq_len)
    result = {"model": args.model, "batch": f"{args.batch_size}x{args.seq_len}",
              "dtype": cfg.dtype, "mesh": args.mesh, "remat": cfg.remat,
              "scan_layers": cfg.scan_layers, "prediction_rate": args.prediction_rate,
              **measure(cfg, batch, args, args.compare_hf)}
  except PolyglotError as e:
    sys.exit(f"error: {e}")
  result |= {"date": datetime.date.today().isoformat(), "hardware": hardware(),
             "command": command_line()}
  print(json.dumps(result))
  if args.compare_hf:
    print(f"polyglot {result['polyglot']['tokens_per_s']:,} tokens/s, "
          f"HF PyTorch {result['hf']['tokens_per_s']:,} tokens/s: {result['ratio']}x",
          file=sys.stderr)
  if not args.no_record:
    p, h = result["polyglot"], result.get("hf", {})
    mfu = "n/a" if p["mfu"] is None else f"{100 * p['mfu']:.1f}%"
    append_row(" | ".join([
        "", result["date"], result["hardware"],
        f"{args.model} {result['batch']} {cfg.dtype} {args.mesh}", f"`{result['command']}`",
        f"{p['tokens_per_s']:,}", mfu, f"{p['memory_gib']}", f"{p['compile_s']}",
        f"{h['tokens_per_s']:,}" if h else "", f"{result['ratio']}x" if h else "", args.note,
        ""]).strip(),
        TRAIN_TABLE_END)


def run_scaling(args) -> None:
  from polyglot.errors import PolyglotError  # pylint: disable=g-import-not-at-top
  try:
    scaling(args)
  except PolyglotError as e:
    sys.exit(f"error: {e}")


DENSE_PEER = "dense, the experts' peer"


def scaling(args) -> None:
  """Step time against sequence length (fixed tokens per batch) and expert count (fixed active)."""
  from polyglot import models  # pylint: disable=g-import-not-at-top
  base = model_config(args)
  rows = []
  for length in args.lengths:
    cfg = base.replace(max_len=max(base.max_len, length))
    batch = synthetic_batch(cfg, max(1, args.tokens // length), length)
    rows.append((f"length {length}", cfg, batch))
  if args.experts:
    moe_base = base.moe or with_moe_flags(models.MoEConfig(num_experts=8, top_k=2), args)
    if moe_base.expert_mlp_dim is None:  # the active parameters of the dense MLP
      moe_base = dataclasses.replace(moe_base, expert_mlp_dim=base.mlp_dim // moe_base.top_k)
    batch = synthetic_batch(base, max(1, args.tokens // args.seq_len), args.seq_len)
    rows.append((DENSE_PEER, base.replace(moe=None), batch))
    routing = ("dropless" if moe_base.dispatch == "dropless"
               else f"capacity, groups of {moe_base.group_size}")
    for experts in args.experts:
      cfg = base.replace(moe=dataclasses.replace(moe_base, num_experts=experts))
      rows.append((f"{experts} experts top-{moe_base.top_k} of width "
                   f"{moe_base.expert_mlp_dim}, {routing}", cfg, batch))
  date, where = datetime.date.today().isoformat(), hardware()
  dense_ms = None
  for name, cfg, batch in rows:
    r = measure(cfg, batch, args)["polyglot"]
    if name == DENSE_PEER:
      dense_ms = r["step_ms"]
    elif cfg.moe is not None and dense_ms:
      name = f"{name}: {r['step_ms'] / dense_ms:.2f}x dense"
    b, l = batch["input_ids"].shape
    r |= {"model": args.model, "variant": name, "batch": f"{b}x{l}", "date": date,
          "hardware": where}
    print(json.dumps(r))
    if not args.no_record:
      mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
      append_row(f"| {date} | {where} | {args.model} {cfg.dtype} | {name} | {r['batch']} | "
                 f"{r['step_ms']} | {r['tokens_per_s']:,} | {mfu} | {r['memory_gib']} | "
                 f"{r['compile_s']} |", SCALING_TABLE_END)
  if not args.no_record:
    print(f"rows appended to {RECORD} (command: {command_line()})", file=sys.stderr)


def prediction_rate(text: str) -> float | None:
  """An argparse type: a rate, or 'none' (the decoder at every position)."""
  if text == "none":
    return None
  try:
    return float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"invalid rate {text!r}: use a number in (0, 1] or "
                                     "'none'") from None


def parser() -> cli.ArgumentParser:
  """Flags are spelled with underscores (absl style); the hyphenated spellings are aliases."""
  top = cli.ArgumentParser(__doc__)
  commands = top.add_subparsers(dest="command", required=True)  # parsers of top's class

  def step_flags(p):
    p.add_argument("--model", default="small", help="a preset of polyglot.models (tiny, small, "
                   "base, large, xl, moe_tiny, moe_base_e8, ...)")
    p.add_argument("--seq_len", "--seq-len", type=cli.positive_int, default=128)
    p.add_argument("--dtype", default="float32", help="compute dtype: float32 or bfloat16")
    p.add_argument("--remat", default="none", help="remat policy (polyglot.models.REMAT_POLICIES)")
    p.add_argument("--attention", default="xla", help="xla or cudnn (flash attention on GPU)")
    p.add_argument("--attention_dropout", "--attention-dropout", type=float,
                   help="attention_dropout_rate (default: the preset's; the fused and flash "
                   "paths run at 0)")
    p.add_argument("--scan", action="store_true", default=None,
                   help="scan over layers (default: the preset's)")
    p.add_argument("--no_scan", "--no-scan", dest="scan", action="store_false", default=None,
                   help="do not scan over layers")
    p.add_argument("--moe_group_size", "--moe-group-size", type=cli.positive_int,
                   help="MoEConfig.group_size (default: the preset's)")
    p.add_argument("--moe_dispatch", "--moe-dispatch",
                   help="MoEConfig.dispatch: capacity or dropless")
    p.add_argument("--moe_expert_mlp_dim", "--moe-expert-mlp-dim", type=cli.positive_int,
                   help="MoEConfig.expert_mlp_dim (default: the preset's; scaling: "
                   "mlp_dim / top_k, the dense layer's active parameters)")
    p.add_argument("--mesh", default="data=-1", help="mesh axes, e.g. data=-1 or data=2,fsdp=4")
    p.add_argument("--prediction_rate", "--prediction-rate",
                   type=prediction_rate,
                   default=0.3, help="LossConfig.prediction_rate ('none': decoder everywhere)")
    p.add_argument("--steps", type=cli.positive_int, default=20,
                   help="steps timed (median reported)")
    p.add_argument("--warmup", type=cli.non_negative_int, default=3,
                   help="steps run after compiling, untimed")
    p.add_argument("--no_record", "--no-record", action="store_true",
                   help="do not append to docs/benchmarks.md")

  train = commands.add_parser("train", help="train-step time, tokens/s, MFU, memory")
  step_flags(train)
  train.add_argument("--batch_size", "--batch-size", type=cli.positive_int, default=8,
                     help="global rows per step")
  train.add_argument("--compare_hf", "--compare-hf", action="store_true",
                     help="also time HF PyTorch XLMRobertaForMaskedLM on the same batch")
  train.add_argument("--profile", help="write a jax.profiler trace of the timed steps here")
  train.add_argument("--objectives", default="mlm",
                     help="a comma list of mlm, tlm, xlco, mrtd, trtd: each objective's batch "
                     "is batch_size x seq_len rows in one step (XLCo: pairs of such rows)")
  train.add_argument("--note", default="", help="text for the notes column of the recorded row")
  train.set_defaults(run=run_train)

  scaling = commands.add_parser("scaling", help="step time vs length and vs experts")
  step_flags(scaling)
  scaling.add_argument("--tokens", type=cli.positive_int, default=8192,
                       help="tokens per batch, fixed")
  scaling.add_argument("--lengths", type=cli.positive_int, nargs="*",
                       default=[128, 256, 512, 1024, 2048, 4096])
  scaling.add_argument("--experts", type=cli.positive_int, nargs="*", default=[8, 16, 32, 64],
                       help="expert counts at the preset's top-k, each expert mlp_dim / top_k "
                       "wide (the dense MLP's active parameters), timed against the dense step")
  scaling.set_defaults(run=run_scaling)
  data = commands.add_parser("data", help="input pipeline tokens/s")
  data.add_argument("--mixture", default="embedded", help="a registered seqio mixture or task")
  data.add_argument("--tokenized", type=paths.resolve,
                    help="read this tokenized cache (tools/cache_tasks.py) instead of --mixture")
  data.add_argument("--text_dir", "--text-dir", type=paths.resolve,
                    help="read this text directory (<language>.txt files) instead of --mixture")
  data.add_argument("--cold", action="store_true",
                    help="make the host's token file in the build (a fresh folder for it, "
                    "removed after), instead of memory-mapping the one in $POLYGLOT_CACHE")
  data.add_argument("--length", type=cli.positive_int, default=512)
  data.add_argument("--batch_size", "--batch-size", type=cli.positive_int, default=32,
                    help="rows per batch")
  data.add_argument("--batches", type=cli.positive_int, default=100, help="batches timed")
  data.add_argument("--warmup", type=cli.non_negative_int, default=10,
                    help="batches read before timing")
  data.add_argument("--cores", type=cli.positive_int,
                    help="pin to this many cores (default: 1, then all)")
  data.set_defaults(run=run_data)
  corpus = commands.add_parser("corpus", help="a text directory of N languages for `data`")
  corpus.add_argument("--languages", type=cli.positive_int, required=True)
  corpus.add_argument("--output_dir", "--output-dir", type=paths.resolve, required=True)
  corpus.add_argument("--copies", type=cli.positive_int, default=1,
                      help="write each language's lines this many times over")
  corpus.add_argument("--source", type=paths.resolve,
                      default=str(REPO.parent / "shared" / "data" / "corpus"),
                      help="the text directory split (default: the shared UDHR corpus)")
  corpus.set_defaults(run=run_corpus)
  worker = commands.add_parser("hf-worker", help=argparse.SUPPRESS)
  worker.add_argument("workdir")
  worker.set_defaults(run=run_hf_worker)
  return top


def main(argv=None) -> None:
  args = parser().parse_args(argv)
  args.run(args)


if __name__ == "__main__":
  main()
