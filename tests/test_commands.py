"""Every command that README.md and docs/*.md show runs as written, from a repository root.

The commands run as subprocesses in a temporary directory that looks like the
repository root (`commands_testing.make_root`: symlinks to polyglot/, gin/,
tasks/, tools/, docs/, ..., `../shared` beside it, `.venv/bin/python` a
two-line script that runs this interpreter), so relative paths work as
written and relative outputs (`workdir/demo`, `hf/demo`, `ckpt/...`,
`xtreme/demo`) land there. They chain as a user's would: the demo run writes
`workdir/demo`, which the Python API, the Hugging Face export, fill-mask and
XTREME then read. `COMMANDS` says, for each, the text as documented and what
runs instead (`replace`: inside its words; `append`: flags added at the end
that shorten it; `options`/`drop`: the launchers' dry runs) and why;
`test_every_documented_command_is_run_or_listed` keeps it equal to the docs.
Absolute paths run under a fake root: `/data/cc100` is `<tmp>/fs/data/cc100`.
`python` in docs/*.md is the activated environment's (`.venv/bin` first on
PATH). Jobs run in background threads, two processes at a time
(`commands_testing.Jobs`), each once; the tests wait for what they check.

Command -> test (README.md):
  make demo, make test                     not run here: CI runs both (.ci/run)
  make install ACCEL=gpu                   not run: tests/test_accelerators.py dry-runs it
                                           (a GPU install downloads CUDA wheels)
  python -m polyglot.train                 test_demo_run_trains_and_saves
  ... --gin.NUM_STEPS=1000 --workdir=workdir/demo-long     test_demo_long_run
  tools/train_vocab.py --text_dir /data/cc100 ...          test_vocabulary_then_single_gpu_host_run
  ... --gin_file=runs/pretrain_base.gin --workdir=/ckpt/base  (same test)
  tools/cache_tasks.py ..., train ... --gin_file=data/tokenized.gin
                                           test_beam_cache_then_training_from_it_equals_the_raw_run
  tools/launch_tpu_pod.sh ...              test_tpu_pod_dry_run_prints_the_worker_command,
                                           test_tpu_pod_command_on_two_processes_and_a_bucket
  sbatch --nodes=4 tools/launch_slurm.sh ...  test_slurm_dry_run_prints_the_node_command
  python -m polyglot.train --coordinator_address=... (hosts 0, 1)
                                           test_anywhere_else_commands_are_the_two_process_run
  tools/plan_memory.py --model=large --mesh=fsdp=8 --batch=64   test_plan_memory[plan_large]
  tools/benchmark.py train ... --compare_hf                test_benchmark_compares_with_hf
  tools/benchmark.py train ... --attention cudnn ...        test_benchmark_bf16_flash_command
  tools/benchmark.py scaling --model small                 test_benchmark_scaling
  the Python API block                     test_python_api_block
  tools/convert_to_hf.py ... --output_dir=hf/demo, python -m polyglot.fill_mask ...,
  and the prose's `pipeline("fill-mask", model="hf/demo")`
                                           test_export_then_hf_pipeline_equals_fill_mask
  tools/convert_from_hf.py, tools/extend_vocab.py, train --gin_file=runs/continue_from_hf.gin,
  tools/convert_to_hf.py --checkpoint_dir=/ckpt/xlmr-ext-run
                                           test_xlmr_import_extend_continue_export
  python -m polyglot.eval --benchmark=xtreme test_xtreme_on_the_demo_checkpoint (../shared/data)
  python -m polyglot.eval.xtreme            test_xtreme_two_tasks_two_languages (same)
  train --gin_file=runs/infoxlm_cpu.gin, python -m polyglot.eval --benchmark=bitext ...,
  tools/convert_to_hf.py --checkpoint_dir=workdir/infoxlm_cpu
                                           test_infoxlm_cpu_recipe_then_bitext_retrieval_and_export
  train --gin_file=runs/xlme_cpu.gin, python -m polyglot.eval.xtreme --checkpoint_dir=workdir/xlme_cpu,
  tools/convert_to_hf.py --checkpoint_dir=workdir/xlme_cpu
                                           test_xlme_cpu_recipe_then_xtreme_and_export

Command -> test (docs/cross_lingual.md):
  tools/objectives_experiment.py ...        NOT_RUN (six runs); its parts run above

Command -> test (docs/benchmarks.md):
  train --model small --steps 10 --no_record --profile /tmp/trace   test_benchmark_profile
  python -c "... flops_per_token ..."       test_flops_one_liner_prints_the_quoted_figures
  train ... --attention cudnn ... (first GPU command)     = README's (test_benchmark_bf16_flash_...)
  scaling --model small --steps 3 --warmup 1              = README's scaling command once shortened
  python -c "... len(seqio...('embedded').tasks)"          test_embedded_mixture_has_630_tasks
  tools/benchmark.py data --batches 5000 --warmup 100 --cold   test_benchmark_data
  tools/cache_tasks.py --output_dir=cache/embedded, data ... --tokenized cache/embedded
                                                           (same test)
  train --model base ... --objectives mlm,tlm,xlco          test_benchmark_of_three_objectives
  NOT_RUN lists the rest: the train-table rows (records the tool wrote), the other GPU
  commands (--remat, moe_base_e8, --profile: flags run by the commands above), scaling
  with `--lengths` and no value (README's scaling command runs its expert row).

Command -> test (docs/scaling.md):
  plan_memory rows 1 (= README's), 4, 7 and 12        test_plan_memory[...]
  python -c "... parameter counts ..."      test_parameter_count_one_liner
  NOT_RUN lists the other eleven plan_memory commands (same tool and model, other mesh
  sizes or one of the flags that a run command combines; the RTD plans as well: their step
  is planned on a tiny model in tests/test_sharding.py).

Multi-host: the one two-process run (expensive: ~2 x a training run on 2 cores) is the
TPU pod's, since it adds what no other test has: several processes writing one
checkpoint to a bucket (the GCS emulator, tests/gcs_emulator.py). Its workers' command
is the one `tools/launch_tpu_pod.sh --dry_run` prints, and `--multihost` is given the
"anywhere else" commands' own `--coordinator_address/--num_processes/--process_id`
(127.0.0.1 and a free port for 10.0.0.1:8476): so those two commands run in it as well
(their other flags are the single-host command's, run above). The SLURM node command
is checked as printed: it is the same `polyglot.train --multihost` with the user's
flags; finding the processes from SLURM's environment is jax.distributed's.
"""
from __future__ import annotations

import ast
import base64
import dataclasses
import json
import os
import pathlib
import re
import shlex
import socket
import sys

import pytest

import commands_testing as ct
import gcs_emulator

LANGS = ("eng_Latn", "fra_Latn", "swh_Latn", "rus_Cyrl", "arb_Arab", "cmn_Hans")  # /data/cc100
NEW_LANGS = ("zul_Latn", "xho_Latn", "amh_Ethi", "yor_Latn")  # /data/glot500c
DEMO_STEPS = 20
SHORT = ("--gin.NUM_STEPS=4", "--gin.BATCH_SIZE=8", "--gin.TrainConfig.seq_len=64",
         "--gin.TrainConfig.eval_every=0")
TINY = ("--gin.model_preset.name='tiny'",)
SIX = ("--gin.TrainConfig.mixture=@embedded_mixture()",
       f"--gin.embedded_mixture.languages={list(LANGS)}")
ON_CPU = ("--gin.MeshConfig.platform=None",)
ABSOLUTE = (("/data/", "{fs}/data/"), ("/ckpt/", "{fs}/ckpt/"))
BENCH_DIR = (("/tmp/bench/", "{fs}/bench/"),)
BENCH = ("--steps", "2", "--warmup", "1", "--no_record")
HF_FILES = {"config.json", "model.safetensors", "sentencepiece.bpe.model", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json"}


@dataclasses.dataclass(frozen=True)
class Command:
  """A documented command (`text`) and how it runs here."""
  text: str
  why: str = ""                                  # the reason for each change below
  replace: tuple[tuple[str, str], ...] = ()      # (as written, what runs) in its words
  append: tuple[str, ...] = ()                   # flags added at the end
  drop: int = 0                                  # words dropped at the front (sbatch ...)
  options: tuple[str, ...] = ()                  # inserted before `--`, else after word 1
  devices: int = 1                               # CPU devices (XLA_FLAGS)


# ---- README.md ----

README_TPU = ("tools/launch_tpu_pod.sh TPU_NAME ZONE --setup -- --gin_file=runs/pretrain_base.gin "
              "--gin_file=mesh/tpu_v4_32.gin --gin.TEXT_DIR=\"'/data/cc100'\" "
              "--gin.VOCAB=\"'/data/spm.model'\" --workdir=gs://bucket/polyglot/base")
README_SLURM = ("sbatch --nodes=4 tools/launch_slurm.sh --gin_file=runs/pretrain_base.gin "
                "--gin.TEXT_DIR=\"'/data/cc100'\" --gin.VOCAB=\"'/data/spm.model'\" "
                "--gin.MeshConfig.data=4 --gin.MeshConfig.fsdp=8 --workdir=/shared/ckpt")
README_HOSTS = tuple(
    ".venv/bin/python -m polyglot.train --coordinator_address=10.0.0.1:8476 --num_processes=2 "
    f"--process_id={i} --gin_file=runs/pretrain_base.gin --gin.TEXT_DIR=\"'/data/cc100'\" "
    "--gin.VOCAB=\"'/data/spm.model'\" --workdir=/shared/ckpt" for i in (0, 1))
README_API = """import polyglot, jax.numpy as jnp
model, vocab, cfg, step, meta = polyglot.load("workdir/demo")   # newest checkpoint
logits, aux = model(jnp.asarray([[0, *vocab.encode("Habari ya dunia"), 2]]))"""
README_FILL_MASK = (".venv/bin/python -m polyglot.fill_mask --checkpoint_dir=workdir/demo "
                    "\"Habari ya <mask>.\" --top_k=5")
XTREME_SHORT = ("--gin_file={base}/xtreme_smoke.gin",)

COMMANDS: dict[str, Command] = {
    "demo": Command(
        ".venv/bin/python -m polyglot.train",
        "300 steps with evaluation every 100 -> 20 steps, none",
        append=(f"--gin.NUM_STEPS={DEMO_STEPS}", "--gin.TrainConfig.log_every=5",
                "--gin.TrainConfig.eval_every=0")),
    "demo_long": Command(
        ".venv/bin/python -m polyglot.train --gin_file=runs/demo.gin --gin.NUM_STEPS=1000 "
        "--workdir=workdir/demo-long",
        "1000 steps -> 4 (the last --gin.NUM_STEPS wins), no evaluation; the 630 languages "
        "-> 6 (building their input pipelines is most of a short run; the demo run builds "
        "all)", append=("--gin.NUM_STEPS=4", "--gin.TrainConfig.eval_every=0", *SIX)),
    "train_vocab": Command(
        ".venv/bin/python tools/train_vocab.py --text_dir /data/cc100 --vocab_size 250002 "
        "--output /data/spm.model",
        "/data/cc100: 6 languages of the embedded corpus; 100k sampled sentences -> 2000 "
        "(vocab_size stays: SentencePiece keeps what the text supports)",
        replace=ABSOLUTE, append=("--sample_size", "2000")),
    "pretrain_base": Command(
        ".venv/bin/python -m polyglot.train --gin_file=runs/pretrain_base.gin "
        "--gin.TEXT_DIR=\"'/data/cc100'\" --gin.VOCAB=\"'/data/spm.model'\" --workdir=/ckpt/base",
        "8 CPU devices for gpu_8's fsdp=8, its platform check off; base -> tiny (bf16 kept); "
        "500k steps of 256 x 512 -> 4 of 8 x 64, each logged",
        replace=ABSOLUTE, append=(*TINY, *ON_CPU, *SHORT, "--gin.TrainConfig.log_every=1"),
        devices=8),
    "pretrain_mmbert": Command(
        ".venv/bin/python -m polyglot.train --gin_file=runs/pretrain_mmbert.gin "
        "--gin.TEXT_DIR=\"'/data/cc100'\" --gin.VOCAB=\"'/data/spm.model'\" "
        "--workdir=/ckpt/mmbert",
        "as pretrain_base; the phases start at steps 2 and 3 of the 4, with 2, 4 and all 6 "
        "languages", replace=ABSOLUTE,
        append=(*TINY, *ON_CPU, *SHORT, "--gin.TrainConfig.log_every=1", "--gin.MID_STEP=2",
                "--gin.DECAY_STEP=3", "--gin.MixtureSchedule.languages=(2, 4, None)"),
        devices=8),
    "cache_cc100": Command(
        ".venv/bin/python tools/cache_tasks.py --gin_file=runs/pretrain_base.gin "
        "--gin.TEXT_DIR=\"'/data/cc100'\" --gin.VOCAB=\"'/data/spm.model'\" "
        "--output_dir=/data/cc100-ids", "/data/cc100 as above", replace=ABSOLUTE),
    "pretrain_base_cached": Command(
        ".venv/bin/python -m polyglot.train --gin_file=runs/pretrain_base.gin "
        "--gin_file=data/tokenized.gin --gin.CACHE_DIR=\"'/data/cc100-ids'\" "
        "--gin.VOCAB=\"'/data/spm.model'\" --workdir=/ckpt/base",
        "as pretrain_base, into /ckpt/base-ids (the raw run's workdir is compared with it)",
        replace=(("/ckpt/base", "{fs}/ckpt/base-ids"), *ABSOLUTE),
        append=(*TINY, *ON_CPU, *SHORT, "--gin.TrainConfig.log_every=1"), devices=8),
    "tpu_dry_run": Command(
        README_TPU, "--dry_run (launcher option): prints each worker's command; no gcloud here",
        options=("--dry_run",)),
    "tpu_pod": Command(
        README_TPU,
        "the worker command the dry run prints, on 2 processes x 4 CPU devices: --multihost "
        "gets the 'anywhere else' coordinator flags (127.0.0.1:<free port>); "
        "gs://bucket -> the GCS emulator's bucket; /data -> the fake root; tpu_v4_32's "
        "fsdp=16 -> 8 (the devices there are), its platform check off; base -> tiny, 4 steps "
        "of 8 x 64",
        replace=(("gs://bucket/", "gs://{bucket}/"), ("/data/", "{fs}/data/")),
        append=("--gin.MeshConfig.fsdp=8", *ON_CPU, *TINY, *SHORT), devices=4),
    "slurm_dry_run": Command(
        README_SLURM, "no SLURM here: the script runs itself (SLURM_SUBMIT_DIR set, as sbatch "
        "does) with --dry_run, which prints each node's command",
        drop=2, options=("--dry_run",)),
    "plan_large": Command(
        ".venv/bin/python tools/plan_memory.py --model=large --mesh=fsdp=8 --batch=64"),
    "bench_compare": Command(
        ".venv/bin/python tools/benchmark.py train --model small --batch_size 8 --seq_len 128 "
        "--compare_hf",
        "small 8 x 128, 20 steps -> tiny 4 x 32, 2 steps; --no_record keeps docs/benchmarks.md",
        append=("--model", "tiny", "--batch_size", "4", "--seq_len", "32", *BENCH)),
    "bench_flash": Command(
        ".venv/bin/python tools/benchmark.py train --model large --seq_len 512 --batch_size 32 "
        "--dtype bfloat16 --attention cudnn --attention_dropout 0",
        "cuDNN flash attention needs a GPU: XLA's attention, still bf16 and no attention "
        "dropout; large 32 x 512 -> tiny 2 x 64, 2 steps, --no_record",
        replace=(("cudnn", "xla"),),
        append=("--model", "tiny", "--seq_len", "64", "--batch_size", "2", *BENCH)),
    "bench_scaling": Command(
        ".venv/bin/python tools/benchmark.py scaling --model small",
        "small, 8192 tokens, 6 lengths and 4 expert counts -> tiny, 64 tokens, lengths 16 "
        "and 32, 4 experts, 1 step, --no_record",
        append=("--model", "tiny", "--tokens", "64", "--lengths", "16", "32", "--experts",
                "4", "--seq_len", "16", "--steps", "1", "--warmup", "1", "--no_record")),
    "api": Command(
        README_API, "run as a script, with a line appended that prints what it computed",
        append=("print(step, tuple(logits.shape), cfg.vocab_size, "
                "bool(jnp.isfinite(logits).all()))",)),
    "to_hf_demo": Command(
        ".venv/bin/python tools/convert_to_hf.py --checkpoint_dir=workdir/demo "
        "--output_dir=hf/demo"),
    "hf_pipeline": Command(
        'pipeline("fill-mask", model="hf/demo")',
        "README prose: run by python -c, offline, on fill_mask's text with top_k=10"),
    "fill_mask": Command(README_FILL_MASK),
    "xlmr_download": Command(
        "models/xlm-roberta-base",
        "no download here: a random tiny XLMRobertaForMaskedLM saved with save_pretrained, "
        "the embedded corpus's SentencePiece model beside it"),
    "from_hf": Command(
        ".venv/bin/python tools/convert_from_hf.py --hf_dir=models/xlm-roberta-base "
        "--output_dir=ckpt/xlmr-base"),
    "extend": Command(
        ".venv/bin/python tools/extend_vocab.py --checkpoint_dir=ckpt/xlmr-base "
        "--text_dir=/data/glot500c --vocab_size=32000 --init=mean --output_dir=ckpt/xlmr-ext",
        "/data/glot500c: 4 new languages of the embedded corpus; 100k sampled sentences -> "
        "2000", replace=ABSOLUTE, append=("--sample_size=2000",)),
    "continue": Command(
        ".venv/bin/python -m polyglot.train --gin_file=runs/continue_from_hf.gin "
        "--workdir=/ckpt/xlmr-ext-run --gin.INIT_FROM=\"'ckpt/xlmr-ext'\" "
        "--gin.VOCAB=\"'ckpt/xlmr-ext/sentencepiece.bpe.model'\" "
        "--gin.TEXT_DIR=\"'/data/glot500c'\"",
        "8 CPU devices for gpu_8's fsdp=8, its platform check off; 100k steps of 256 x 512 "
        "-> 4 of 8 x 64 (the model is the checkpoint's)",
        replace=ABSOLUTE, append=(*ON_CPU, *SHORT), devices=8),
    "to_hf_ext": Command(
        ".venv/bin/python tools/convert_to_hf.py --checkpoint_dir=/ckpt/xlmr-ext-run "
        "--output_dir=hf/xlmr-ext", replace=ABSOLUTE),
    "xtreme": Command(
        ".venv/bin/python -m polyglot.eval --benchmark=xtreme --checkpoint_dir=workdir/demo "
        "--data_dir=../shared/data/xtreme --output_dir=xtreme/demo",
        "a smoke-run gin file: 16 training and 8 evaluation examples, 4 steps, length 64, "
        "retrieval from layer 1 (tests/test_xtreme_run.py's)", append=XTREME_SHORT),
    "xtreme_de_zh": Command(
        ".venv/bin/python -m polyglot.eval.xtreme --checkpoint_dir=workdir/demo "
        "--data_dir=../shared/data/xtreme --output_dir=xtreme/demo-de-zh "
        "--tasks=udpos,tatoeba --languages=de,zh --gin.udpos/TaskHparams.batch_size=16",
        "the same smoke-run gin file (its flags, parsed after gin files, keep batch 16)",
        append=XTREME_SHORT),
    "infoxlm_cpu": Command(
        ".venv/bin/python -m polyglot.train --gin_file=runs/infoxlm_cpu.gin",
        "300 steps of 16 rows -> 6 of 8, no evaluation; 8 bible languages -> 3 (28 pair "
        "tasks per objective -> 3)",
        append=("--gin.NUM_STEPS=6", "--gin.BATCH_SIZE=8", "--gin.TrainConfig.eval_every=0",
                "--gin.BIBLE_LANGUAGES=['swh_Latn', 'est_Latn', 'wol_Latn']")),
    "multilingual_experiment": Command(
        "python tools/multilingual_experiment.py --steps 3000 --seeds 0 1 "
        "--workdir workdir/multilingual_experiment",
        "the annealed arm only (the arms differ only in gin bindings), 2 steps, seed 0; "
        "the fertility vocabularies from 500 sampled lines",
        append=("--arms", "annealed", "--steps", "2", "--seeds", "0", "--vocab_sample", "500")),
    "bitext_bible": Command(
        ".venv/bin/python -m polyglot.eval --benchmark=bitext --checkpoint_dir=workdir/infoxlm_cpu "
        "--bible=../shared/data/parallel/bible --languages=swh_Latn,est_Latn,wol_Latn --books=REV "
        "--output_dir=bitext/infoxlm_cpu",
        "the first 64 aligned verses of each pair", append=("--max_pairs=64",)),
    "to_hf_infoxlm": Command(
        ".venv/bin/python tools/convert_to_hf.py --checkpoint_dir=workdir/infoxlm_cpu "
        "--output_dir=hf/infoxlm_cpu"),
    "xlme_cpu": Command(
        ".venv/bin/python -m polyglot.train --gin_file=runs/xlme_cpu.gin",
        "300 steps of 16 rows -> 6 of 8, no evaluation; 8 bible languages -> 3",
        append=("--gin.NUM_STEPS=6", "--gin.BATCH_SIZE=8", "--gin.TrainConfig.eval_every=0",
                "--gin.BIBLE_LANGUAGES=['swh_Latn', 'est_Latn', 'wol_Latn']")),
    "xtreme_xlme": Command(
        ".venv/bin/python -m polyglot.eval.xtreme --checkpoint_dir=workdir/xlme_cpu "
        "--data_dir=../shared/data/xtreme --output_dir=xtreme/xlme_cpu --tasks=udpos "
        "--languages=de,zh",
        "the smoke-run gin file of the first XTREME command", append=XTREME_SHORT),
    "to_hf_xlme": Command(
        ".venv/bin/python tools/convert_to_hf.py --checkpoint_dir=workdir/xlme_cpu "
        "--output_dir=hf/xlme_cpu"),
    # ---- docs/benchmarks.md ----
    "bench_profile": Command(
        "python tools/benchmark.py train --model small --steps 10 --no_record --profile /tmp/trace",
        "small 8 x 128, 10 steps -> tiny 2 x 32, 2 steps; /tmp/trace under the fake root",
        replace=(("/tmp/", "{fs}/tmp/"),),
        append=("--model", "tiny", "--batch_size", "2", "--seq_len", "32", *BENCH)),
    "bench_objectives": Command(
        "python tools/benchmark.py train --model base --seq_len 512 --batch_size 32 --dtype "
        "bfloat16 --attention cudnn --attention_dropout 0 --objectives mlm,tlm,xlco",
        "a GPU command: XLA's attention, still bf16; base 32 x 512 -> tiny 2 x 64 (XLCo's "
        "131,072-key queue kept), 2 steps, --no_record",
        replace=(("cudnn", "xla"),),
        append=("--model", "tiny", "--seq_len", "64", "--batch_size", "2", *BENCH)),
    "flops": Command(
        "python -c \"from polyglot import models, trainer; cfg = models.preset('small'); "
        "print([trainer.flops_per_token(cfg, 128, n / 128) / 1e6 for n in (128, 39)])\""),
    "tasks_count": Command(
        "python -c \"import tasks, seqio; "
        "print(len(seqio.get_mixture_or_task('embedded').tasks))\""),
    "bench_data": Command(
        ".venv/bin/python tools/benchmark.py data --batches 5000 --warmup 100 --cold",
        "630 languages -> one language's task, 2 batches of 4 x 64 after 1",
        append=("--mixture", "embedded.swh_Latn", "--batches", "2", "--warmup", "1",
                "--length", "64", "--batch_size", "4")),
    "cache_embedded": Command(
        ".venv/bin/python tools/cache_tasks.py --output_dir=cache/embedded",
        "630 languages -> the six of /data/cc100 (the benchmark below builds them)",
        append=SIX),
    "bench_data_tokenized": Command(
        ".venv/bin/python tools/benchmark.py data --batches 5000 --warmup 100 "
        "--tokenized cache/embedded", "as bench_data: 2 batches of 4 x 64 after 1",
        append=("--batches", "2", "--warmup", "1", "--length", "64", "--batch_size", "4")),
    "bench_corpus": Command(
        ".venv/bin/python tools/benchmark.py corpus --languages 1000 "
        "--output_dir /tmp/bench/udhr1000", "1000 -> 12 languages, into the test's folder",
        replace=BENCH_DIR, append=("--languages", "12")),
    "cache_udhr": Command(
        ".venv/bin/python tools/cache_tasks.py --gin_file=runs/demo.gin "
        "--gin_file=data/text_directory.gin --gin.TEXT_DIR=\"'/tmp/bench/udhr1000'\" "
        "--output_dir=/tmp/bench/udhr1000-ids", "the test's folder", replace=BENCH_DIR),
    "bench_data_udhr_tokenized": Command(
        ".venv/bin/python tools/benchmark.py data --batches 5000 --warmup 100 "
        "--tokenized /tmp/bench/udhr1000-ids", "as bench_data, the test's folder",
        replace=BENCH_DIR,
        append=("--batches", "2", "--warmup", "1", "--length", "64", "--batch_size", "4")),
    "bench_data_udhr_text": Command(
        ".venv/bin/python tools/benchmark.py data --batches 5000 --warmup 100 "
        "--text_dir /tmp/bench/udhr1000 --cold", "as bench_data, the test's folder",
        replace=BENCH_DIR,
        append=("--batches", "2", "--warmup", "1", "--length", "64", "--batch_size", "4")),
    "bench_corpus_copies": Command(
        ".venv/bin/python tools/benchmark.py corpus --languages 10 --copies 1000 "
        "--output_dir /tmp/bench/udhr10x1000", "10 -> 2 languages, 1000 -> 3 copies, into "
        "the test's folder", replace=BENCH_DIR, append=("--languages", "2", "--copies", "3")),
    "bench_data_copies": Command(
        ".venv/bin/python tools/benchmark.py data --batches 5000 --warmup 100 "
        "--text_dir /tmp/bench/udhr10x1000 --cold", "as bench_data, the test's folder",
        replace=BENCH_DIR,
        append=("--batches", "2", "--warmup", "1", "--length", "64", "--batch_size", "4")),
    # ---- docs/scaling.md ----
    "plan_moe_e8": Command(
        "python tools/plan_memory.py --model=moe_large_e64 --mesh=expert=8 --batch=64 --seq=512"),
    "plan_layers_1": Command(
        "python tools/plan_memory.py --model=large --mesh=fsdp=8 --batch=64 --seq=512 --layers=1"),
    "plan_remat_bf16": Command(
        "python tools/plan_memory.py --model=large --mesh=fsdp=8 --batch=64 --seq=512 "
        "--remat=full --dtype=bfloat16"),
    "param_count": Command(
        "python -c \"import jax; from flax import nnx; from polyglot import models\n"
        "for name in ('large', 'moe_large_e64'):\n"
        "  m = nnx.eval_shape(lambda: models.build('masked_lm', models.preset(name), "
        "rngs=nnx.Rngs(0)))\n"
        "  print(name, sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param))))\""),
}

# Documented commands that run as another entry of COMMANDS.
SAME_AS = {
    "python tools/benchmark.py train --model large --seq_len 512 --batch_size 32 --dtype "
    "bfloat16 --attention cudnn --attention_dropout 0": "bench_flash",
    "python tools/benchmark.py scaling --model small --steps 3 --warmup 1": "bench_scaling",
    "python tools/plan_memory.py --model=large --mesh=fsdp=8 --batch=64 --seq=512": "plan_large",
    ".venv/bin/python tools/benchmark.py data --batches 5000 --warmup 100 "
    "--text_dir /tmp/bench/udhr1000": "bench_data_udhr_text",  # the same, without --cold
    README_HOSTS[0]: "tpu_pod",
    README_HOSTS[1]: "tpu_pod",
    "python -m polyglot.eval --benchmark=xtreme": "xtreme",  # the prose's names of the command
    "python -m polyglot.eval --benchmark=xtreme|xtreme_r|xglue": "xtreme",
    "python -m polyglot.eval --benchmark=bitext": "bitext_bible",
}

SAMPLING_ONE_LINER = (
    "python -c \"import time, jax; from polyglot.objectives import rtd\n"
    "for shape in [(8, 39, 8000), (32, 154, 250002)]:\n"
    "  x = jax.random.normal(jax.random.key(0), shape)\n"
    "  for f in (jax.jit(jax.random.categorical), jax.jit(rtd.sample)):\n"
    "    f(jax.random.key(1), x).block_until_ready(); t = time.perf_counter()\n"
    "    f(jax.random.key(2), x).block_until_ready()\n"
    "    print(shape, f.__name__, round(time.perf_counter() - t, 3))\"")

RECORD = "a row the tool wrote into its results table (the command column records how the row "
SAME_PLAN = "same tool, model and step as the plan_memory commands run; "
NOT_RUN = {
    "make demo": "CI runs it after the suite (.ci/run)",
    ".venv/bin/python -m polyglot.eval.languages workdir/demo":
        "run as written by tests/test_language_eval.py, on the workdir/demo of a demo.gin "
        "run of 6 languages that evaluates (the demo job here skips evaluation)",
    "make test": "CI itself (.ci/run)",
    ".venv/bin/python -m polyglot.eval --benchmark=xtreme_r --checkpoint_dir=workdir/demo "
    "--data_dir=download --output_dir=xtreme_r/demo":
        "XCOPA is not in ../shared/data: tests/test_xtreme_r_run.py runs this command on files "
        "in XTREME's download layout with XCOPA's (a tiny checkpoint, a smoke-run gin file)",
    ".venv/bin/python -m polyglot.eval --benchmark=xglue --checkpoint_dir=workdir/demo "
    "--data_dir=xglue_full_dataset --output_dir=xglue/demo":
        "XGLUE's data is not here: tests/test_xglue_run.py runs this command on the nine "
        "tasks' files in the released layout (a tiny checkpoint, a smoke-run gin file)",
    "make install ACCEL=gpu": "downloads CUDA wheels; tests/test_accelerators.py dry-runs "
                              "the target and checks the extra",
    "python tools/benchmark.py train --model base --batch_size 32 --seq_len 128 --steps 2 "
    "--warmup 1 --no_record": "a 31 s step measured on this machine (docs/benchmarks.md, the "
                              "XTREME cost estimate); the command shape runs in "
                              "test_benchmark_compares_with_hf",
    "python tools/benchmark.py train --model small --steps 30 --warmup 3 --compare_hf":
        RECORD + "was made); the command shape runs in test_benchmark_compares_with_hf",
    "python tools/benchmark.py train --model tiny --steps 30 --warmup 3 --compare_hf":
        RECORD + "was made); the command shape runs in test_benchmark_compares_with_hf",
    "python tools/benchmark.py train --model small --steps 20 --warmup 3 --compare_hf "
    "--prediction_rate none":
        RECORD + "was made); tests/test_trainer.py runs prediction_rate=None",
    "python tools/benchmark.py train --model large --seq_len 512 --batch_size 64 --dtype "
    "bfloat16 --attention cudnn --attention_dropout 0 --remat dots_with_no_batch_dims_saveable":
        "a GPU command: the first GPU command runs (on CPU, XLA attention) with the same "
        "flags but --remat, whose policies tests/test_scan_layers.py runs (this one too)",
    "python tools/benchmark.py train --model moe_base_e8 --seq_len 512 --batch_size 64 --dtype "
    "bfloat16 --attention cudnn --attention_dropout 0":
        "a GPU command: the first GPU command runs with the same flags but an MoE preset, "
        "whose train step the scaling runs time (4 experts)",
    "python tools/benchmark.py train --model large --seq_len 512 --batch_size 32 --dtype "
    "bfloat16 --attention cudnn --attention_dropout 0 --profile /tmp/trace":
        "the first GPU command (run) plus --profile (run by test_benchmark_profile)",
    "python tools/benchmark.py scaling --model small --lengths --experts 8 --steps 3 "
    "--warmup 1": "README's scaling command runs (test_benchmark_scaling) with its expert "
                  "row; this one only leaves out the length rows (--lengths with no value)",
    "python tools/benchmark.py scaling --model small --lengths --steps 3 --warmup 1":
        "README's scaling command runs (test_benchmark_scaling) with its dense peer and expert "
        "rows; this one leaves out the length rows (--lengths with no value)",
    "python tools/plan_memory.py --model=large --mesh=data=8,fsdp=8 --batch=512 --seq=512":
        SAME_PLAN + "64 fake devices (the per-device memory is the fsdp=8 row's, checked)",
    "python tools/plan_memory.py --model=large --mesh=data=16,fsdp=16 --batch=2048 --seq=512":
        SAME_PLAN + "256 fake devices, a slower compile",
    "python tools/plan_memory.py --model=moe_large_e64 --mesh=fsdp=8,expert=8 --batch=512 "
    "--seq=512": SAME_PLAN + "64 fake devices; the expert=8 row runs",
    "python tools/plan_memory.py --model=moe_large_e64 --mesh=data=4,fsdp=8,expert=8 "
    "--batch=2048 --seq=512": SAME_PLAN + "256 fake devices, a slower compile",
    "python tools/plan_memory.py --model=large --mesh=fsdp=8 --batch=64 --seq=512 "
    "--objective=rtd": SAME_PLAN + "the RTD step's plan runs on a tiny model in "
                       "tests/test_sharding.py (what the generator adds to the shards)",
    "python tools/plan_memory.py --model=base --mesh=fsdp=8 --batch=64 --seq=512 "
    "--objective=mlm": SAME_PLAN + "base compiles its 12 layers unscanned (13 s); the "
                       "objective's path runs in the large RTD row",
    "python tools/plan_memory.py --model=base --mesh=fsdp=8 --batch=64 --seq=512 "
    "--objective=rtd": SAME_PLAN + "base compiles both stacks unscanned (34 s); the large "
                       "RTD row runs",
    "python tools/plan_memory.py --model=large --mesh=fsdp=8 --batch=64 --seq=512 --layers=2":
        SAME_PLAN + "--layers runs with 1",
    "python tools/plan_memory.py --model=large --mesh=fsdp=8 --batch=64 --seq=512 --layers=4":
        SAME_PLAN + "--layers runs with 1",
    "python tools/plan_memory.py --model=large --mesh=fsdp=8 --batch=64 --seq=512 --remat=full":
        SAME_PLAN + "--remat=full runs together with --dtype=bfloat16",
    "python tools/plan_memory.py --model=large --mesh=fsdp=8 --batch=64 --seq=512 "
    "--dtype=bfloat16": SAME_PLAN + "--dtype=bfloat16 runs together with --remat=full",
    "python tools/objectives_experiment.py --tokens 3000000 --seeds 0 1 "
    "--output workdir/objectives_experiment.json":
        "six training runs, ~40 min on 2 cores: each arm is README's infoxlm_cpu command (run) "
        "with RunConfig.objectives and NUM_STEPS set, scored by the bitext command (run); "
        "tests/test_objectives_experiment.py runs its step counts and table",
    "python tools/objectives_experiment.py --flops 2.835e12 --arms MLM \"MLM + TLM\" MRTD "
    "\"MRTD + TRTD\" --seeds 0 1 --output workdir/rtd_experiment.json":
        "eight training runs and UD-POS fine-tunings, ~65 min on 2 cores: each arm is README's "
        "infoxlm_cpu or xlme_cpu command (run) with RunConfig.objectives and NUM_STEPS set, "
        "scored by the bitext and XTREME commands (run); tests/test_objectives_experiment.py "
        "runs its FLOPs accounting, step counts and table",
    SAMPLING_ONE_LINER:
        "a minute of sampling from [32, 154, 250002] logits; tests/test_objectives_rtd.py "
        "checks that the sampler's draws follow the softmax",
}

# Prose and fixtures that run without being documented command lines.
UNDOCUMENTED = {COMMANDS["hf_pipeline"].text, COMMANDS["xlmr_download"].text}
XTREME_DATA = ct.SHARED / "data" / "xtreme"


# ---- the root and its jobs ----

def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def write_corpus(directory: pathlib.Path, langs) -> None:
  """`<lang>.txt` files of the embedded corpus's text, each line 6 times over."""
  from polyglot.data import sources  # pylint: disable=g-import-not-at-top
  texts = sources.embedded_corpus().texts
  directory.mkdir(parents=True)
  for lang in langs:
    (directory / f"{lang}.txt").write_text("\n".join(list(texts[lang]) * 6) + "\n",
                                          encoding="utf-8")


class Root:
  """The temporary root (`root`), the fake `/` for absolute paths (`fs`), logs, runs."""

  def __init__(self, base: pathlib.Path):
    self.base, self.root, self.fs = base, ct.make_root(base), base / "fs"
    self.logs = base / "logs"
    self.logs.mkdir()
    write_corpus(self.fs / "data" / "cc100", LANGS)
    write_corpus(self.fs / "data" / "glot500c", NEW_LANGS)
    self.port = free_port()
    self.processes: list = []

  def values(self) -> dict[str, str]:
    return {"root": str(self.root), "fs": str(self.fs), "base": str(self.base),
            "bucket": gcs_emulator.BUCKET, "port": str(self.port)}

  def env(self, devices: int = 1, **extra: str) -> dict[str, str]:
    """What a user's shell has, with the venv first on PATH, plus CPU JAX with `devices`
    devices, a compilation cache shared by the commands, nothing fetched from the Hub.
    $POLYGLOT_CACHE, when set, passes through (else the default cache)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", JAX_COMPILATION_CACHE_DIR=str(self.base / "jax_cache"),
               PATH=f"{self.root / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env.update(extra)
    return env

  def words(self, name: str) -> list[str]:
    """COMMANDS[name] as it runs here (without what only its job adds)."""
    cmd, values = COMMANDS[name], self.values()
    words = shlex.split(cmd.text)[cmd.drop:]
    words = [ct.substitute(w, [(a, b.format(**values)) for a, b in cmd.replace]) for w in words]
    if cmd.options:
      at = words.index("--") if "--" in words else 1
      words[at:at] = cmd.options
    return words + [a.format(**values) for a in cmd.append]

  def start(self, name: str, argv: list[str] | None = None, *, log: str | None = None,
            cwd: pathlib.Path | None = None, **env: str):
    return ct.run(argv or self.words(name), cwd=cwd or self.root,
                  env=self.env(COMMANDS[name].devices, **env), log=self.logs / (log or name),
                  processes=self.processes)

  def run(self, name: str, argv: list[str] | None = None, **kwargs) -> ct.Result:
    return ct.wait(self.start(name, argv, **kwargs))


def run_api(r: Root) -> ct.Result:
  script = r.base / "api_block.py"
  script.write_text(README_API + "\n" + "\n".join(COMMANDS["api"].append) + "\n")
  return r.run("api", [".venv/bin/python", str(script)])


def run_hf_pipeline(r: Root) -> ct.Result:
  text, = [w for w in shlex.split(README_FILL_MASK) if "<mask>" in w]
  code = ("import json\nfrom transformers import pipeline\n"
          f"fill = {COMMANDS['hf_pipeline'].text}\n"
          f"print(json.dumps(fill({text!r}, top_k=10)))\n")
  return r.run("hf_pipeline", [".venv/bin/python", "-c", code])


def run_xlmr_download(r: Root) -> ct.Result:
  return r.run("xlmr_download", [".venv/bin/python", ct.__file__, "tiny-xlmr",
                                 COMMANDS["xlmr_download"].text])


def worker_command(dry_run: ct.Result) -> tuple[pathlib.Path, list[str]]:
  """(directory, command) of the training line that a launcher's dry run printed."""
  line = [l for l in dry_run.stdout.splitlines() if "polyglot.train" in l][-1]
  words = shlex.split(line)
  assert words[0] == "cd" and words[2] == "&&", line
  return pathlib.Path(words[1]), words[3:]


def coordinator_flags(process_id: int, port: int) -> list[str]:
  """The 'anywhere else' command's own process flags, its address made 127.0.0.1:<port>."""
  flags = [w for w in shlex.split(README_HOSTS[process_id])
           if w.startswith(("--coordinator_address=", "--num_processes=", "--process_id="))]
  return [w.replace("10.0.0.1:8476", f"127.0.0.1:{port}") for w in flags]


def run_tpu_pod(r: Root, dry_run: ct.Result) -> tuple[list[ct.Result], dict[str, bytes]]:
  """Both processes' results and what they left in the bucket (read before the in-memory
  emulator stops)."""
  cwd, worker = worker_command(dry_run)
  cmd, values = COMMANDS["tpu_pod"], r.values()
  worker = [ct.substitute(w, [(a, b.format(**values)) for a, b in cmd.replace]) for w in worker]
  worker += [a.format(**values) for a in cmd.append]
  with gcs_emulator.emulator(r.logs / "emulator.log") as url:
    results = ct.wait_all([
        r.start("tpu_pod", worker + coordinator_flags(i, r.port), log=f"tpu_pod.{i}", cwd=cwd,
                **gcs_emulator.client_env(url)) for i in (0, 1)])
    files = bucket_files(url, "polyglot/base") if results[0].returncode == 0 else {}
  return results, files


def bucket_files(url: str, prefix: str) -> dict[str, bytes]:
  """Object name (under `prefix/`) -> content, as Google's own client lists the bucket
  (pointed at `url` by its options: this process's environment is the other jobs')."""
  from google.auth.credentials import AnonymousCredentials  # pylint: disable=g-import-not-at-top
  from google.cloud import storage  # pylint: disable=g-import-not-at-top
  client = storage.Client(project="polyglot-test", credentials=AnonymousCredentials(),
                          client_options={"api_endpoint": url})
  blobs = client.list_blobs(gcs_emulator.BUCKET, prefix=f"{prefix}/")
  return {b.name[len(prefix) + 1:]: b.download_as_bytes() for b in blobs
          if not b.name.endswith("/")}


def run_xtreme(r: Root, name: str) -> ct.Result:
  from test_xtreme_run import smoke_gin  # pylint: disable=g-import-not-at-top
  smoke_gin(r.base / "xtreme_smoke.gin")
  return r.run(name)


def job_specs(r: Root) -> ct.Jobs:
  """How each entry of COMMANDS runs and what it reads, the chains first."""
  simple = lambda name, *needs, slots=1: ct.Job(lambda: r.run(name), needs, slots)
  jobs = {  # the chains first: a ready step of one passes the independent jobs below
      "demo": simple("demo"),
      "xlmr_download": ct.Job(lambda: run_xlmr_download(r)),
      "from_hf": simple("from_hf", "xlmr_download"),
      "extend": simple("extend", "from_hf"),
      "continue": simple("continue", "extend"),
      "to_hf_ext": simple("to_hf_ext", "continue"),
      "train_vocab": simple("train_vocab"),
      "tpu_dry_run": simple("tpu_dry_run", slots=0),
      "tpu_pod": ct.Job(lambda: run_tpu_pod(r, jobs_.result("tpu_dry_run")),
                        ("tpu_dry_run", "train_vocab"), slots=2),
      "slurm_dry_run": ct.Job(lambda: r.run("slurm_dry_run", SLURM_SUBMIT_DIR=str(r.root)),
                              slots=0),
      "to_hf_demo": simple("to_hf_demo", "demo"),
      "hf_pipeline": ct.Job(lambda: run_hf_pipeline(r), ("to_hf_demo",)),
      "fill_mask": simple("fill_mask", "demo"),
      "api": ct.Job(lambda: run_api(r), ("demo",)),
      "xtreme": ct.Job(lambda: run_xtreme(r, "xtreme"), ("demo",)),
      # After the first: its fine-tuning steps come from the compilation cache.
      "xtreme_de_zh": ct.Job(lambda: run_xtreme(r, "xtreme_de_zh"), ("xtreme",)),
      "pretrain_base": simple("pretrain_base", "train_vocab"),
      "pretrain_mmbert": simple("pretrain_mmbert", "train_vocab"),
      "cache_cc100": simple("cache_cc100", "train_vocab"),
      "pretrain_base_cached": simple("pretrain_base_cached", "cache_cc100"),
      "cache_embedded": simple("cache_embedded"),
      "bench_data_tokenized": simple("bench_data_tokenized", "cache_embedded"),
      "bench_corpus": simple("bench_corpus"),
      "cache_udhr": simple("cache_udhr", "bench_corpus"),
      "bench_data_udhr_tokenized": simple("bench_data_udhr_tokenized", "cache_udhr"),
      "bench_data_udhr_text": simple("bench_data_udhr_text", "bench_corpus"),
      "bench_corpus_copies": simple("bench_corpus_copies"),
      "bench_data_copies": simple("bench_data_copies", "bench_corpus_copies"),
      "demo_long": simple("demo_long", "demo"),  # the demo's train step, from the cache
      "infoxlm_cpu": simple("infoxlm_cpu"),
      "bitext_bible": simple("bitext_bible", "infoxlm_cpu"),
      "multilingual_experiment": simple("multilingual_experiment"),
      "to_hf_infoxlm": simple("to_hf_infoxlm", "infoxlm_cpu"),
      "xlme_cpu": simple("xlme_cpu"),
      # After the first XTREME job: both write the smoke-run gin file.
      "xtreme_xlme": ct.Job(lambda: run_xtreme(r, "xtreme_xlme"), ("xlme_cpu", "xtreme")),
      "to_hf_xlme": simple("to_hf_xlme", "xlme_cpu"),
  }
  jobs.update({name: simple(name) for name in COMMANDS if name not in jobs})
  jobs_ = ct.Jobs(jobs)
  jobs_.processes = r.processes  # killed by close()
  return jobs_


def uses(*names: str):
  """Marks a test with the jobs it reads: the module starts them all when it starts."""
  def mark(fn):
    fn.jobs = names
    return fn
  return mark


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Root:
  """The repository root the commands run in, shared by the module."""
  return Root(tmp_path_factory.mktemp("commands"))


@pytest.fixture(scope="module")
def jobs(request, root):
  """The jobs of every selected test of this module, started together."""
  jobs_ = job_specs(root)
  wanted = []
  for item in request.session.items:
    if item.module is sys.modules[__name__]:
      wanted += getattr(item.function, "jobs", ())
      callspec = getattr(item, "callspec", None)
      if callspec and "job" in callspec.params:
        wanted.append(callspec.params["job"])
  if not XTREME_DATA.is_dir():
    wanted = [w for w in wanted if not w.startswith("xtreme")]
  jobs_.start(wanted)
  yield jobs_
  jobs_.close()
  print("\njob seconds:", json.dumps(jobs_.seconds))


# ---- the table against the docs ----

def test_every_documented_command_is_run_or_listed():
  documented = {text for _, text in ct.documented_commands()}
  run = {c.text for c in COMMANDS.values()}
  assert not documented - run - set(SAME_AS) - set(NOT_RUN), "run it (COMMANDS) or list it"
  assert not (run | set(SAME_AS) | set(NOT_RUN)) - documented - UNDOCUMENTED, "stale entries"
  assert set(SAME_AS.values()) <= set(COMMANDS)


def test_markdown_commands_are_blocks_lines_and_command_spans():
  markdown = "\n".join([
      "Run `tools/x.py --a=1` or `python -m polyglot.train` (a name), `make install`.",
      "```bash", "# a comment", "python -m a --b=1 \\", "    --c='x  y'   # note", "make demo",
      "```", "  ```", '  python -c "import a', "  print(1)\"", "  ```",
      "```python", "import polyglot", "x = 1   # kept", "```", "    python tools/y.py --z",
      "    not a command", "- `python -c \"print(2)\"`"])
  assert ct.markdown_commands(markdown) == [
      "tools/x.py --a=1", "python -m a --b=1 --c='x  y'", "make demo",
      'python -c "import a\n  print(1)"', "import polyglot\nx = 1   # kept",
      "python tools/y.py --z", 'python -c "print(2)"']


def test_substitutions_touch_paths_at_word_or_value_starts_only():
  swap = [("/data/", "/tmp/fs/data/")]
  assert ct.substitute("--gin.X='/data/cc100'", swap) == "--gin.X='/tmp/fs/data/cc100'"
  assert ct.substitute("--text_dir=/data/x", swap) == "--text_dir=/tmp/fs/data/x"
  assert ct.substitute("/data/x", swap) == "/tmp/fs/data/x"
  assert ct.substitute("workdir/data/x", swap) == "workdir/data/x"


def test_folders_named_like_gin_folders_in_the_working_directory(tmp_path, root):
  """README has users create `models/xlm-roberta-base` in the checkout (and many keep a
  `data/`): gin must still read `include 'models/tiny.gin'` from gin/, not take the folder
  for a Python package (it raised TypeError there). A bad binding stops the run right after
  the includes: one error line, exit 2."""
  for name in ("models", "data", "mesh"):
    (tmp_path / name).mkdir()
  done = ct.wait(ct.run([str(root.root / ".venv/bin/python"), "-m", "polyglot.train",
                         "--gin.TrainConfig.no_such_field=1"], cwd=tmp_path, env=root.env(),
                        log=tmp_path / "train"))
  assert done.returncode == 2, done.stderr[-3000:]
  assert done.stderr.strip().splitlines()[-1] == (
      "error: gin: Configurable 'TrainConfig' doesn't have a parameter named 'no_such_field'.")


# ---- README: training, the Python API, Hugging Face ----

def train_losses(workdir: pathlib.Path) -> dict[int, float]:
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def committed(workdir: pathlib.Path, step: int) -> bool:
  return (workdir / "checkpoints" / str(step) / "commit_success.txt").is_file()


@uses("demo")
def test_demo_run_trains_and_saves(jobs, root):
  done = jobs.result("demo").ok()
  workdir = root.root / "workdir" / "demo"
  assert f"step {DEMO_STEPS}/{DEMO_STEPS}" in done.stdout
  assert f"done: {workdir} (loss" in done.stdout
  losses = train_losses(workdir)
  assert sorted(losses) == [5, 10, 15, 20] and losses[20] < losses[5] - 0.2, losses
  assert committed(workdir, DEMO_STEPS)
  assert f"NUM_STEPS = {DEMO_STEPS}" in (workdir / "config.gin").read_text()


@uses("demo_long")
def test_demo_long_run(jobs, root):
  done = jobs.result("demo_long").ok()
  workdir = root.root / "workdir" / "demo-long"
  assert f"done: {workdir} (loss" in done.stdout and committed(workdir, 4)
  assert "NUM_STEPS = 4" in (workdir / "config.gin").read_text()


@uses("api")
def test_python_api_block(jobs):
  """The block loads the demo's newest checkpoint and runs the model on one row."""
  out = jobs.result("api").ok().stdout.strip()
  m = re.fullmatch(r"(\d+) \(1, (\d+), (\d+)\) (\d+) True", out)
  assert m, out
  step, length, logits_width, vocab_size = map(int, m.groups())
  assert step == DEMO_STEPS and length >= 3 and logits_width == vocab_size > 1000


def fill_mask_lines(stdout: str) -> list[tuple[str, float]]:
  """(token, score) of each prediction line `  0.0123  'piece'   filled text`."""
  out = []
  for line in stdout.splitlines():
    m = re.match(r"  (\d\.\d{4})  ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\") ", line)
    if m:
      out.append((ast.literal_eval(m.group(2)), float(m.group(1))))
  return out


@uses("to_hf_demo", "fill_mask", "hf_pipeline")
def test_export_then_hf_pipeline_equals_fill_mask(jobs, root):
  """convert_to_hf writes the folder; HF's pipeline on it, offline, predicts what
  polyglot.fill_mask prints (scores to its 4 printed decimals; a 20-step model's scores are
  close together, so each of polyglot's 5 is looked up among HF's top 10)."""
  exported = jobs.result("to_hf_demo").ok()
  hf_dir = root.root / "hf" / "demo"
  assert f"wrote {hf_dir}: XLMRobertaForMaskedLM from step {DEMO_STEPS}" in exported.stdout
  assert {p.name for p in hf_dir.iterdir()} == HF_FILES
  ours = fill_mask_lines(jobs.result("fill_mask").ok().stdout)
  assert len(ours) == 5, jobs.result("fill_mask").stdout
  assert [s for _, s in ours] == sorted((s for _, s in ours), reverse=True)
  theirs = json.loads(jobs.result("hf_pipeline").ok().stdout.strip().splitlines()[-1])
  for token, score in ours:
    assert any(t["token_str"] == token and abs(t["score"] - score) <= 6e-5 for t in theirs), (
        token, score, theirs)


@uses("train_vocab", "pretrain_base")
def test_vocabulary_then_single_gpu_host_run(jobs, root):
  spm = root.fs / "data" / "spm.model"
  made = jobs.result("train_vocab").ok()
  m = re.search(rf"^{re.escape(str(spm))}: vocab_size=(\d+) \(mask_id=(\d+)\)", made.stdout, re.M)
  assert m and int(m.group(2)) == int(m.group(1)) - 1 and spm.is_file(), made.stdout
  done = jobs.result("pretrain_base").ok()
  workdir = root.fs / "ckpt" / "base"
  assert "backend cpu: 8 x cpu (process 0 of 1)" in done.stderr
  assert f"done: {workdir} (loss" in done.stdout and committed(workdir, 4)
  config = (workdir / "config.gin").read_text()
  assert "model_preset.name = 'tiny'" in config and "MeshConfig.fsdp = 8" in config
  import polyglot  # pylint: disable=g-import-not-at-top
  assert polyglot.load(str(workdir)).config.vocab_size == int(m.group(1))


@uses("train_vocab", "pretrain_mmbert")
def test_mmbert_recipe_run(jobs, root):
  """README's mmBERT command: its three phases (sampling exponent, languages, masking) in
  the operative config, and the run trains through them to its last checkpoint."""
  done = jobs.result("pretrain_mmbert").ok()
  workdir = root.fs / "ckpt" / "mmbert"
  assert f"done: {workdir} (loss" in done.stdout and committed(workdir, 4)
  config = (workdir / "config.gin").read_text()
  for line in ("MixtureSchedule.alphas = (0.7, 0.5, 0.3)",
               "MixtureSchedule.mask_rates = (0.3, 0.15, 0.05)",
               "MixtureSchedule.steps = (0, %MID_STEP, %DECAY_STEP)", "MID_STEP = 2",
               "DECAY_STEP = 3", "LossConfig.prediction_rate = %PREDICTION_RATE",
               "PREDICTION_RATE = 0.6"):
    assert line in config, line
  assert sorted(train_losses(workdir)) == [1, 2, 3, 4]


@uses("train_vocab", "pretrain_base", "cache_cc100", "pretrain_base_cached")
def test_beam_cache_then_training_from_it(jobs, root):
  """README's Beam job tokenizes /data/cc100 (DirectRunner); the run from its cache reads its
  token streams (the checkpoint's data state: a batch count and a counter per language) and
  starts at the raw run's loss (the same corpus and initialization, other draws)."""
  cache = root.fs / "data" / "cc100-ids"
  made = jobs.result("cache_cc100").ok()
  assert f"cached cc100: {len(LANGS)} tasks" in made.stdout and (cache / "mixture.json").is_file()
  jobs.result("pretrain_base_cached").ok()
  jobs.result("pretrain_base").ok()
  raw, cached = (train_losses(root.fs / "ckpt" / n) for n in ("base", "base-ids"))
  assert sorted(raw) == sorted(cached) == [1, 2, 3, 4]
  assert abs(cached[1] - raw[1]) < 0.02 * raw[1], (raw, cached)
  data = root.fs / "ckpt" / "base-ids" / "checkpoints" / "4" / "data" / "metadata"
  for shards in json.loads(data.read_text())["states"].values():
    for shard in shards:
      state = json.loads(base64.b64decode(shard))
      assert state["identity"]["reader"] == "streams" and len(state["counts"]) == len(LANGS)
      assert state["made"] == 4


# ---- README: multi-host ----

def user_flags(text: str, after: str) -> list[str]:
  """The training flags of a documented launcher command: its words after `after`."""
  words = shlex.split(text)
  return words[words.index(after) + 1:]


@uses("tpu_dry_run")
def test_tpu_pod_dry_run_prints_the_worker_command(jobs, root):
  done = jobs.result("tpu_dry_run").ok()
  lines = [l for l in done.stdout.splitlines() if not l.startswith("#")]
  assert [shlex.split(l) for l in lines] == [
      ["cd", str(root.root), "&&", "make", "install", "ACCEL=tpu"],
      ["cd", str(root.root), "&&", ".venv/bin/python", "-m", "polyglot.train", "--multihost",
       *user_flags(README_TPU, "--")]]
  assert done.stdout.startswith("# every worker of TPU TPU_NAME (zone ZONE) would run")


@uses("tpu_pod")
def test_tpu_pod_command_on_two_processes_and_a_bucket(jobs, root):
  """Both processes train one job, attention through the splash kernel sharded over both;
  process 0 alone reports; the checkpoint and logs are in the bucket, written by two
  processes."""
  pytest.importorskip("gcp_storage_emulator")
  results, files = jobs.result("tpu_pod")
  for i, res in enumerate(results):
    res.ok()
    assert coordinator_flags(i, root.port) == res.argv[-3:]
    assert f"(process {i} of 2, 8 devices in all)" in res.stderr
  _, worker = worker_command(jobs.result("tpu_dry_run"))
  assert results[0].argv[:3] == worker[:3] == [".venv/bin/python", "-m", "polyglot.train"]
  assert "done: gs://polyglot-test/polyglot/base (loss" in results[0].stdout
  assert "done:" not in results[1].stdout
  assert {"checkpoints/4/commit_success.txt", "config.gin", "metrics.jsonl"} <= set(files)
  assert any(k.startswith("checkpoints/4/params/ocdbt.process_1/") for k in files), sorted(files)
  config = files["config.gin"].decode()
  assert "MeshConfig.fsdp = 8" in config
  # The TPU mesh file's Pallas splash attention (interpret mode here), without dropout.
  assert "model_preset.attention_impl = 'splash'" in config
  assert "model_preset.attention_dropout_rate = 0.0" in config
  assert "splash attention runs in Pallas interpret mode" in results[0].stderr


@uses("slurm_dry_run", "tpu_dry_run")
def test_slurm_dry_run_prints_the_node_command(jobs, root):
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  done = jobs.result("slurm_dry_run").ok()
  cwd, node = worker_command(done)
  assert cwd == root.root
  assert node == [".venv/bin/python", "-m", "polyglot.train", "--multihost",
                  *user_flags(README_SLURM, "tools/launch_slurm.sh")]
  assert node[:4] == worker_command(jobs.result("tpu_dry_run"))[1][:4]
  try:
    importlib.metadata.version("jax-cuda12-plugin")
  except importlib.metadata.PackageNotFoundError:
    assert "no CUDA build of JAX" in done.stderr and "a real run stops here" in done.stderr


def test_anywhere_else_commands_are_the_two_process_run():
  """The two hosts' commands differ in --process_id only; their process flags are those the
  TPU pod's run passes (address aside); the rest is the single-host configuration."""
  from polyglot import train  # pylint: disable=g-import-not-at-top
  hosts = [shlex.split(text) for text in README_HOSTS]
  assert [w for w in hosts[0] if w != "--process_id=0"] == [
      w for w in hosts[1] if w != "--process_id=1"]
  for i, words in enumerate(hosts):
    args = train.parse_flags(words[3:])
    assert (args.coordinator_address, args.num_processes, args.process_id) == (
        "10.0.0.1:8476", 2, i)
    assert args.gin_file == ["runs/pretrain_base.gin"] and args.workdir == "/shared/ckpt"
    assert args.gin_bindings == ["TEXT_DIR='/data/cc100'", "VOCAB='/data/spm.model'"]
    assert coordinator_flags(i, 1234) == [
        "--coordinator_address=127.0.0.1:1234", "--num_processes=2", f"--process_id={i}"]


# ---- README and docs: tools ----

def plan(stdout: str) -> dict[str, float]:
  return {k: float(v) for k, v in re.findall(r"^  (\w+) +([\d.]+) GiB per device$", stdout,
                                              re.M)}


# docs/scaling.md's figures (GiB per device): params and AdamW state to 0.01, temp and peak
# to 0.1 (with 0.05 of slack for XLA:CPU's scheduling).
PLANS = {
    "plan_large": ("model=large layers=24 dtype=float32 remat=none", "64x512",
                   {"params": 0.26, "optimizer": 0.52, "temp": 21.2, "peak": 22.0}),
    "plan_moe_e8": ("model=moe_large_e64 layers=24", "64x512",
                    {"params": 4.72, "optimizer": 9.43, "temp": 32.0, "peak": 46.2}),
    "plan_layers_1": ("model=large layers=1", "64x512", {"temp": 4.2}),
    "plan_remat_bf16": ("dtype=bfloat16 remat=full", "64x512", {"temp": 4.6}),
}


@pytest.mark.parametrize("job", sorted(PLANS))
def test_plan_memory(jobs, job):
  done = jobs.result(job).ok()
  header, batch, want = PLANS[job]
  assert header in done.stdout and f"batch={batch}" in done.stdout, done.stdout
  got = plan(done.stdout)
  for name, value in want.items():
    tolerance = 0.005 if name in ("params", "optimizer") else 0.1
    assert abs(got[name] - value) <= tolerance, (name, got)


def last_json(result: ct.Result) -> dict:
  return json.loads(result.stdout.strip().splitlines()[-1])


@uses("bench_compare")
def test_benchmark_compares_with_hf(jobs):
  done = jobs.result("bench_compare").ok()
  result = last_json(done)
  ours, hf = result["polyglot"], result["hf"]
  assert result["batch"] == "4x32" and ours["devices"].endswith("cpu") and ours["mfu"] is None
  assert ours["tokens_per_s"] > 0 and hf["tokens_per_s"] > 0 and ours["compile_s"] > 0
  assert result["ratio"] == round(ours["tokens_per_s"] / hf["tokens_per_s"], 2)
  assert ours["memory_gib"] > 0 and hf["torch"].startswith("2.")
  assert f"{result['ratio']}x" in done.stderr


@uses("bench_flash")
def test_benchmark_bf16_flash_command(jobs):
  result = last_json(jobs.result("bench_flash").ok())
  assert result["batch"] == "2x64" and "hf" not in result
  assert "bfloat16" in json.dumps(result) and result["polyglot"]["tokens_per_s"] > 0


@uses("bench_objectives")
def test_benchmark_of_three_objectives(jobs):
  result = last_json(jobs.result("bench_objectives").ok())
  assert result["batch"] == "2x64" and "objectives mlm,tlm,xlco" in result["command"]
  assert result["polyglot"]["tokens_per_s"] > 0


@uses("bench_scaling")
def test_benchmark_scaling(jobs):
  rows = [json.loads(l) for l in jobs.result("bench_scaling").ok().stdout.strip().splitlines()]
  assert [(r["variant"], r["batch"]) for r in rows[:3]] == [
      ("length 16", "4x16"), ("length 32", "2x32"), ("dense, the experts' peer", "4x16")]
  # Experts mlp_dim / top_k wide: the dense MLP's active parameters, timed against it.
  assert re.fullmatch(r"4 experts top-2 of width 64, capacity, groups of 1024: \d+\.\d\dx dense",
                      rows[3]["variant"]), rows[3]["variant"]
  ratio = float(rows[3]["variant"].split(": ")[1][:-len("x dense")])
  assert ratio == pytest.approx(rows[3]["step_ms"] / rows[2]["step_ms"], abs=0.006)
  assert len(rows) == 4 and rows[3]["batch"] == "4x16"


@uses("bench_profile")
def test_benchmark_profile(jobs, root):
  done = jobs.result("bench_profile").ok()
  assert last_json(done)["batch"] == "2x32"
  traces = list((root.fs / "tmp" / "trace").rglob("*.xplane.pb"))
  assert traces and traces[0].stat().st_size > 0


@uses("bench_data", "cache_embedded", "bench_data_tokenized")
def test_benchmark_data(jobs):
  cores = [str(c) for c in (1, len(os.sched_getaffinity(0)))]
  lines = jobs.result("bench_data").ok().stdout.strip().splitlines()
  rows = [l.split(" | ") for l in lines[2:]]
  assert lines[0].startswith("| mixture | input | tasks | length | batch | cores |")
  assert [r[:6] for r in rows] == [["| embedded.swh_Latn", "text, cold",
                                    "1", "64", "4", c] for c in cores]
  assert "cached embedded_custom: 6 tasks" in jobs.result("cache_embedded").ok().stdout
  lines = jobs.result("bench_data_tokenized").ok().stdout.strip().splitlines()
  assert [l.split(" | ")[:6] for l in lines[2:]] == [
      ["| embedded_custom_tokenized", "tokenized", "6", "64", "4", c] for c in cores]


needs_udhr = pytest.mark.skipif(not (ct.SHARED / "data" / "corpus").is_dir(),
                                reason="the shared UDHR corpus is absent")


@needs_udhr
@uses("bench_corpus", "cache_udhr", "bench_data_udhr_tokenized", "bench_data_udhr_text",
      "bench_corpus_copies", "bench_data_copies")
def test_benchmark_data_on_the_shared_corpus_split_into_languages(jobs, root):
  assert "12 languages from" in jobs.result("bench_corpus").ok().stdout
  assert "cached udhr1000: 12 tasks" in jobs.result("cache_udhr").ok().stdout
  assert "2 languages from" in jobs.result("bench_corpus_copies").ok().stdout
  copies = sorted((root.fs / "bench" / "udhr10x1000").glob("*.txt"))
  assert len(copies) == 2
  for copied in copies:  # the first 2 languages of the 12-language split, 3 times over
    once = (root.fs / "bench" / "udhr1000" / copied.name).read_text(encoding="utf-8")
    assert copied.read_text(encoding="utf-8") == once * 3
  cores = [str(c) for c in (1, len(os.sched_getaffinity(0)))]
  for job, name, kind, count in (
      ("bench_data_udhr_tokenized", "udhr1000_tokenized", "tokenized", "12"),
      ("bench_data_udhr_text", "udhr1000", "text, cold", "12"),
      ("bench_data_copies", "udhr10x1000", "text, cold", "2")):
    lines = jobs.result(job).ok().stdout.strip().splitlines()
    assert [l.split(" | ")[:6] for l in lines[2:]] == [
        [f"| {name}", kind, count, "64", "4", c] for c in cores], lines


@uses("flops")
def test_flops_one_liner_prints_the_quoted_figures(jobs):
  """docs/benchmarks.md: '33.2 against 24.4 MFLOP per token'."""
  got = ast.literal_eval(jobs.result("flops").ok().stdout.strip())
  assert [round(x, 1) for x in got] == [33.2, 24.4]


@uses("tasks_count")
def test_embedded_mixture_has_630_tasks(jobs):
  assert jobs.result("tasks_count").ok().stdout.strip() == "630"


@uses("param_count")
def test_parameter_count_one_liner(jobs):
  """docs/scaling.md: 560,142,482 and 6,906,587,282."""
  assert jobs.result("param_count").ok().stdout.split() == [
      "large", "560142482", "moe_large_e64", "6906587282"]


# ---- README: XLM-R import, extension, continued pretraining, export ----

@uses("to_hf_ext")
def test_xlmr_import_extend_continue_export(jobs, root):
  imported = jobs.result("from_hf").ok()
  assert f"wrote {root.root / 'ckpt' / 'xlmr-base'}: masked_lm" in imported.stdout
  extended = jobs.result("extend").ok()
  m = re.search(r"(\d+) pieces of 'glot500c' added, vocab_size=(\d+)", extended.stdout)
  assert m and int(m.group(1)) > 0, extended.stdout
  vocab_size = int(m.group(2))
  done = jobs.result("continue").ok()
  workdir = root.fs / "ckpt" / "xlmr-ext-run"
  assert f"done: {workdir} (loss" in done.stdout and committed(workdir, 4)
  exported = jobs.result("to_hf_ext").ok()
  hf_dir = root.root / "hf" / "xlmr-ext"
  assert f"wrote {hf_dir}: XLMRobertaForMaskedLM from step 4" in exported.stdout
  assert {p.name for p in hf_dir.iterdir()} == HF_FILES
  config = json.loads((hf_dir / "config.json").read_text())
  assert config["vocab_size"] == vocab_size and config["hidden_size"] == 64  # tiny, not base


# ---- README: XTREME ----

needs_xtreme_data = pytest.mark.skipif(not XTREME_DATA.is_dir(),
                                       reason=f"no XTREME data at {XTREME_DATA}")


def xtreme_report(done: ct.Result, out: pathlib.Path) -> dict:
  """results.json of a finished run into `out`, after checking its other files."""
  assert f"done: {out / 'results.md'}" in done.stdout
  assert (out / "results.png").stat().st_size > 0 and (out / "results.md").is_file()
  result = json.loads((out / "results.json").read_text())
  assert result["run"]["step"] == DEMO_STEPS
  return result


needs_bible = pytest.mark.skipif(not (ct.SHARED / "data" / "parallel" / "bible").is_dir(),
                                 reason="../shared/data/parallel/bible is absent")


@needs_bible
@uses("multilingual_experiment")
def test_multilingual_experiment(jobs, root):
  """docs/multilingual.md's experiment: the skewed corpus (4 full books, 33 cut to 1% to
  5%), the annealed arm's run and per-group losses, the fertility of three vocabularies."""
  done = jobs.result("multilingual_experiment").ok()
  out = root.root / "workdir" / "multilingual_experiment"
  result = json.loads((out / "results.json").read_text())
  full = {f.stem: sum(1 for line in f.read_text(encoding="utf-8").splitlines() if "\t" in line)
          for f in (ct.SHARED / "data" / "parallel" / "bible").glob("*_*.tsv")}
  lines = result["lines"]
  assert sorted(lines) == sorted(full) and len(lines) == 37
  head = {"est_Latn", "gla_Latn", "hye_Armn", "swh_Latn"}
  for lang, n in lines.items():
    share = n / full[lang]
    assert share > 0.99 if lang in head else 0.009 < share < 0.051, (lang, n, full[lang])
  [arm] = result["arms"].items()
  assert arm[0] == "annealed" and 0 < arm[1]["head"]["loss"] and 0 < arm[1]["tail"]["loss"]
  assert len(arm[1]["languages"]) == 37
  config = (out / "runs" / "annealed-seed0" / "config.gin").read_text()
  assert "MixtureSchedule.steps = (0, 1, 2)" in config
  assert "MixtureSchedule.alphas = (0.7, 0.5, 0.3)" in config
  assert set(result["fertility"]) == {"default", "alpha=0.3", "alpha=1.0"}
  assert all(len(v) == 37 and min(v.values()) > 0 for v in result["fertility"].values())
  assert "| annealed |" in done.stdout and "| alpha=1.0 |" in done.stdout
  assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"


@needs_bible
@uses("infoxlm_cpu", "bitext_bible", "to_hf_infoxlm")
def test_infoxlm_cpu_recipe_then_bitext_retrieval_and_export(jobs, root):
  """MLM + TLM + XLCo on UDHR and bible pairs; the checkpoint scores and exports as any."""
  done = jobs.result("infoxlm_cpu").ok()
  assert f"done: {root.root / 'workdir' / 'infoxlm_cpu'}" in done.stdout
  rows = [json.loads(line) for line in
          (root.root / "workdir" / "infoxlm_cpu" / "metrics.jsonl").read_text().splitlines()]
  last = [r for r in rows if r["split"] == "train"][-1]
  assert {"mlm_loss", "tlm_loss", "xlco_loss", "xlco_queue_filled"} <= set(last)
  scored = jobs.result("bitext_bible").ok().stdout
  assert re.search(r"swh_Latn-est_Latn +64 ", scored) and "average" in scored
  report = json.loads((root.root / "bitext" / "infoxlm_cpu" / "results.json").read_text())
  assert report["settings"]["books"] == ["REV"] and len(report["pairs"]) == 3
  jobs.result("to_hf_infoxlm").ok()
  assert HF_FILES <= {p.name for p in (root.root / "hf" / "infoxlm_cpu").iterdir()}


@needs_bible
@needs_xtreme_data
@uses("xlme_cpu", "xtreme_xlme", "to_hf_xlme")
def test_xlme_cpu_recipe_then_xtreme_and_export(jobs, root):
  """MRTD + TRTD on UDHR and bible pairs; XTREME fine-tunes the discriminator; it exports as
  an XLMRobertaModel whose hidden states are the polyglot encoder's."""
  workdir = root.root / "workdir" / "xlme_cpu"
  assert f"done: {workdir}" in jobs.result("xlme_cpu").ok().stdout
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  last = [r for r in rows if r["split"] == "train"][-1]
  assert {"mrtd_detection_loss", "mrtd_generator_loss", "trtd_detection_loss"} <= set(last)
  assert "mlm_loss" not in last
  done = jobs.result("xtreme_xlme").ok()
  out = root.root / "xtreme" / "xlme_cpu"
  assert f"done: {out / 'results.md'}" in done.stdout
  result = json.loads((out / "results.json").read_text())
  assert set(result["tasks"]) == {"udpos"} and result["run"]["step"] == 6
  assert set(result["tasks"]["udpos"]["languages"]) == {"de", "zh"}
  assert "XLMRobertaModel" in jobs.result("to_hf_xlme").ok().stdout

  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  import polyglot  # pylint: disable=g-import-not-at-top
  hf = transformers.AutoModel.from_pretrained(str(root.root / "hf" / "xlme_cpu")).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(root.root / "hf" / "xlme_cpu"))
  ids = tokenizer(["Habari ya dunia", "Tere maailm"], padding=True, return_tensors="pt")
  with torch.no_grad():
    theirs = hf(**ids).last_hidden_state.numpy()
  loaded = polyglot.load(str(workdir))
  ours = np.asarray(loaded.model.encoder(ids["input_ids"].numpy().astype(np.int32)).last_hidden)
  real = ids["attention_mask"].numpy() > 0
  np.testing.assert_allclose(ours[real], theirs[real], atol=2e-4)


@needs_xtreme_data
@uses("xtreme")
def test_xtreme_on_the_demo_checkpoint(jobs, root):
  """Every task with data in ../shared/data/xtreme (the others are reported as missing)."""
  done = jobs.result("xtreme").ok()
  result = xtreme_report(done, root.root / "xtreme" / "demo")
  assert {"udpos", "tatoeba"} <= set(result["tasks"]) <= set(
      "xnli,pawsx,udpos,panx,xquad,mlqa,tydiqa,bucc2018,tatoeba".split(","))
  assert "missing data, skipped" in done.stderr


@needs_xtreme_data
@uses("xtreme_de_zh")
def test_xtreme_two_tasks_two_languages(jobs, root):
  done = jobs.result("xtreme_de_zh").ok()
  result = xtreme_report(done, root.root / "xtreme" / "demo-de-zh")
  assert set(result["tasks"]) == {"udpos", "tatoeba"}
  for entry in result["tasks"].values():
    assert set(entry["languages"]) == {"de", "zh"}
  # The command's own setting, parsed after the smoke-run file's.
  assert re.search(r"udpos: fine-tuning on \d+ English features for \d+ steps \(batch 16\)",
                   done.stderr)
