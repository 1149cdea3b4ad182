"""The TPU-pod user's journey on a bucket: every command with gs:// paths, against a real
GCS API (gcp-storage-emulator on 127.0.0.1, see gcs_emulator.py).

train --workdir=gs://... -> SIGKILL after the first checkpoint -> the same command
resumes to the end -> polyglot.eval.xtreme reads its data from and writes its
report, scores and fine-tuned model to the bucket -> tools/convert_to_hf.py from
the bucket to the bucket -> tools/convert_from_hf.py back -> polyglot.fill_mask
and polyglot.load from the bucket. Every command runs as a subprocess in an
empty working directory, which must still be empty at the end: nothing is
written to the local disk except the cache ($POLYGLOT_CACHE).
"""
import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

import gcs_emulator
import test_train

pytest.importorskip("gcp_storage_emulator")
pytest.importorskip("gcsfs")

REPO = pathlib.Path(__file__).resolve().parents[1]
BUCKET = f"gs://{gcs_emulator.BUCKET}"
TRAIN = ("--gin.NUM_STEPS=12", "--gin.CheckpointConfig.save_every=6")
# XNLI-shaped fixture files (project-made) and smoke-run caps for the evaluation.
EN = ["The cat sleeps on the warm mat.", "A man rides his bike to work.",
      "Rain fell on the city all night.", "The children play football in the park."]
DE = ["Die Katze schläft auf der warmen Matte.", "Ein Mann fährt mit dem Rad zur Arbeit."]
XNLI_CAPS = [f"--gin.xnli/TaskHparams.{k}={v}" for k, v in (
    ("max_steps", 4), ("max_seq_length", 64), ("batch_size", 4), ("eval_every_steps", 2),
    ("warmup_steps", 0))] + ["--gin.EvalConfig.max_train_examples=16",
                             "--gin.EvalConfig.max_eval_examples=8",
                             "--gin.EvalConfig.predict_batch_size=8"]


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  """(emulator URL, environment of the commands, their empty working directory)."""
  root = tmp_path_factory.mktemp("gcs")
  with gcs_emulator.emulator(root / "emulator.log") as url:
    cwd = root / "cwd"
    cwd.mkdir()
    env = dict(test_train.env(), **gcs_emulator.client_env(url),
               POLYGLOT_CACHE=os.environ.get("POLYGLOT_CACHE") or str(root / "cache"))
    yield url, env, cwd


def command(gcs, *args, timeout=600) -> subprocess.CompletedProcess:
  _, env, cwd = gcs
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, timeout=timeout,
                        capture_output=True, text=True)


def train_args(workdir, *extra):
  return ["-m", "polyglot.train", f"--workdir={workdir}", *test_train.BASE, *TRAIN, *extra]


def bucket_files(url, prefix) -> dict[str, bytes]:
  """Object name (under `prefix/`) -> content, as Google's own client lists the bucket."""
  from google.cloud import storage  # pylint: disable=g-import-not-at-top
  with gcs_emulator.pointed_at(url):
    client = storage.Client()
    blobs = client.list_blobs(gcs_emulator.BUCKET, prefix=f"{prefix}/")
    return {b.name[len(prefix) + 1:]: b.download_as_bytes() for b in blobs
            if not b.name.endswith("/")}


def write_xnli(url) -> str:
  from polyglot import paths  # pylint: disable=g-import-not-at-top
  labels = ("entailment", "neutral", "contradiction")
  rows = lambda a, n: "".join(f"{a[i % len(a)]}\t{a[(i + 1) % len(a)]}\t{labels[i % 3]}\n"
                              for i in range(n))
  with gcs_emulator.pointed_at(url):
    for name, text in (("train-en.tsv", rows(EN, 12)), ("dev-en.tsv", rows(EN, 6)),
                       ("dev-de.tsv", rows(DE, 6))):
      paths.Path(f"{BUCKET}/xtreme/xnli/{name}").write_text(text)
  return f"{BUCKET}/xtreme"


@pytest.fixture(scope="module")
def trained(gcs):
  """A run in the bucket, SIGKILLed at step 7, after its (synchronous) step-6 checkpoint, and
  resumed to step 12."""
  url, env, cwd = gcs
  workdir = f"{BUCKET}/run"
  with open(cwd.parent / "killed.stderr", "w") as stderr:
    proc = subprocess.Popen(
        [sys.executable, *train_args(workdir, "--gin.CheckpointConfig.async_save=False")],
        cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=stderr)
  for line in proc.stdout:  # the progress line of every step (log_every=1)
    if line.startswith("step ") and int(line.split()[1].split("/")[0]) >= 7:
      break
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  stderr = (cwd.parent / "killed.stderr").read_text()
  assert "checkpoints/6/commit_success.txt" in bucket_files(url, "run"), stderr[-3000:]
  resumed = command(gcs, *train_args(workdir))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  return workdir, resumed


def test_sigkilled_run_resumes_in_the_bucket_exactly(gcs, trained, tmp_path):
  url, _, cwd = gcs
  _, resumed = trained
  assert f"resumed from step 6 in {BUCKET}/run/checkpoints" in resumed.stderr
  assert f"done: {BUCKET}/run" in resumed.stdout
  files = bucket_files(url, "run")
  assert {"checkpoints/6/commit_success.txt", "checkpoints/12/commit_success.txt",
          "config.gin", "metrics.jsonl"} <= set(files)
  assert any(k.startswith("tensorboard/events.out.tfevents.") and v for k, v in files.items())
  assert "NUM_STEPS = 12" in files["config.gin"].decode()
  # The same steps on local disk, uninterrupted: the bucket changes nothing.
  local = subprocess.run([sys.executable, *train_args(tmp_path / "local")], cwd=REPO,
                         env=test_train.env(), capture_output=True, text=True, timeout=600)
  assert local.returncode == 0, local.stderr[-3000:]
  rows = [json.loads(l) for l in files["metrics.jsonl"].decode().splitlines()]
  ours = {r["step"]: r["loss"] for r in rows if r["split"] == "train"}
  ref = test_train.losses(tmp_path / "local")
  assert [ours[s] for s in range(7, 13)] == [ref[s] for s in range(7, 13)]
  assert os.listdir(cwd) == []


def test_xtreme_reads_and_writes_the_bucket(gcs, trained):
  url, _, cwd = gcs
  workdir, _ = trained
  argv = ["-m", "polyglot.eval.xtreme", f"--checkpoint_dir={workdir}",
          f"--data_dir={write_xnli(url)}", "--tasks=xnli", f"--output_dir={BUCKET}/eval",
          *XNLI_CAPS]
  first = command(gcs, *argv)
  assert first.returncode == 0, first.stderr[-3000:]
  assert f"done: {BUCKET}/eval/results.md" in first.stdout
  files = bucket_files(url, "eval")
  assert {"results.json", "results.md", "results.png", "config.gin",
          "scores/xnli.json"} <= set(files)
  assert any(k.startswith("finetuned/xnli/") and k.endswith("commit_success.txt")
             for k in files)
  results = json.loads(files["results.json"])
  assert set(results["tasks"]["xnli"]["languages"]) == {"en", "de"}
  assert files["results.png"].startswith(b"\x89PNG")
  again = command(gcs, *argv)  # the rerun reuses the scores stored in the bucket
  assert again.returncode == 0 and "xnli: reusing scores" in again.stderr
  assert os.listdir(cwd) == []


def test_hf_export_import_fill_mask_and_load_from_the_bucket(gcs, trained):
  url, _, cwd = gcs
  workdir, _ = trained
  exported = command(gcs, str(REPO / "tools/convert_to_hf.py"), f"--checkpoint_dir={workdir}",
                     f"--output_dir={BUCKET}/hf")
  assert exported.returncode == 0, exported.stderr[-3000:]
  assert f"wrote {BUCKET}/hf" in exported.stdout
  assert {"config.json", "model.safetensors", "sentencepiece.bpe.model", "tokenizer.json",
          "tokenizer_config.json", "special_tokens_map.json"} <= set(bucket_files(url, "hf"))
  imported = command(gcs, str(REPO / "tools/convert_from_hf.py"), f"--hf_dir={BUCKET}/hf",
                     f"--output_dir={BUCKET}/reimported")
  assert imported.returncode == 0, imported.stderr[-3000:]
  filled = command(gcs, "-m", "polyglot.fill_mask", f"--checkpoint_dir={workdir}",
                   "Habari ya <mask>.", "--top_k=3")
  assert filled.returncode == 0 and filled.stdout.count("  0.") == 3, filled.stderr[-3000:]
  assert os.listdir(cwd) == []
  import jax  # pylint: disable=g-import-not-at-top
  import polyglot  # pylint: disable=g-import-not-at-top
  with gcs_emulator.pointed_at(url):
    run = polyglot.load(workdir)
    back = polyglot.load(f"{BUCKET}/reimported")
  assert run.step == 12 and back.step == 0 and back.vocab == run.vocab
  from flax import nnx  # pylint: disable=g-import-not-at-top
  for a, b in zip(jax.tree.leaves(nnx.state(run.model)), jax.tree.leaves(nnx.state(back.model))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_tokenized_cache_in_the_bucket_trains_as_the_same_cache_on_disk(gcs, tmp_path):
  """tools/cache_tasks.py writes to the bucket (Beam, DirectRunner); training batches read
  from it (each host's ids copied once into its local token file) equal those of the same
  cache on disk."""
  url, _, cwd = gcs
  text = tmp_path / "text"
  text.mkdir()
  from polyglot.data import sources  # pylint: disable=g-import-not-at-top
  corpus = sources.embedded_corpus()
  for language in ("swh_Latn", "yor_Latn"):
    (text / f"{language}.txt").write_text("\n".join(corpus.texts[language] * 4) + "\n")
  for out in (f"{BUCKET}/ids", str(tmp_path / "ids")):
    done = command(gcs, str(REPO / "tools/cache_tasks.py"), "--gin_file=runs/demo.gin",
                   "--gin_file=data/text_directory.gin", f"--gin.TEXT_DIR='{text}'",
                   f"--output_dir={out}")
    assert done.returncode == 0 and "cached text: 2 tasks" in done.stdout, done.stderr[-3000:]
  assert "mixture.json" in bucket_files(url, "ids") and os.listdir(cwd) == []
  import tasks  # pylint: disable=g-import-not-at-top
  from polyglot.data import pipeline  # pylint: disable=g-import-not-at-top
  batches = []
  for name, path in (("ids_bucket", f"{BUCKET}/ids"), ("ids_disk", tmp_path / "ids")):
    with gcs_emulator.pointed_at(url):
      tasks.register_tokenized(path, name=name)
      it = pipeline.make_iterator(name, length=32, batch_size=4, shard_index=1, num_shards=2)
      batches.append([next(it) for _ in range(3)])
  for a, b in zip(*batches):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
