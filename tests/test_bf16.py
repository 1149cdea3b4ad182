"""bf16 compute (`EncoderConfig.dtype='bfloat16'`, float32 parameters) against float32.

- The trainer's own jitted step (`train.compile_steps` on an fsdp=8 mesh, as
  gin/mesh/gpu_8.gin) in bf16 against the same step in float32, from the same
  train state, on the same real masked batch (the seqio pipeline over five
  scripts): loss, gradients and updated parameters, dense `tiny` and `moe_tiny`.
- polyglot's bf16 `MaskedLM` logits against Hugging Face PyTorch
  `XLMRobertaForMaskedLM` in float32, same weights, real multilingual text
  (Latin, Cyrillic, Arabic, Han, Devanagari) in a padded batch; polyglot's
  float32 logits against the same reference are the baseline.
- gin/runs/continue_from_hf.gin run as shipped (bf16 via models/base.gin, fsdp=8
  via mesh/gpu_8.gin, 256 x 512 batches) from a converted tiny HF model, for 2 steps.

bf16 keeps 8 significant bits: one rounding has a relative error up to 2^-9
(values are spaced 2^-8 apart). Every tolerance below is the measured
difference times a margin, and names the measurement.
"""
import json
import math
import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub reads it: nothing is fetched

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import hf_testing
import polyglot
from polyglot import checkpoint, models, objectives, optimizer, sharding, train
from polyglot.convert import hf
from polyglot.data import pipeline
import tasks

# One language per script; their pieces come from the default (embedded) vocabulary.
SCRIPTS = ("eng_Latn", "rus_Cyrl", "arb_Arab", "cmn_Hans", "hin_Deva")
MIXTURE = "test_bf16_scripts"
BATCH, LENGTH = 16, 64
MESH = sharding.MeshConfig(data=1, fsdp=8)  # gin/mesh/gpu_8.gin's layout, on 8 CPU devices
# The float32 model first learns the batch (20 steps take the loss from ln 8000 = 9.0 to
# ~4.0, accuracy ~0.58), so the compared step has confident logits, where bf16 rounding
# matters most, rather than the near-zero logits of an initialisation.
WARM_STEPS = 20
OPTIM = optimizer.OptimConfig(learning_rate=3e-3, warmup_steps=0)


@pytest.fixture(scope="module")
def batch():
  """A real training batch: packed lines of five scripts, XLM-R masking (15%, 80/10/10)."""
  tasks.register_embedded(MIXTURE, languages=SCRIPTS)
  # The batch the tolerances below were measured on: the tf.data pipeline's first.
  cfg = pipeline.PipelineConfig(MIXTURE, length=LENGTH, batch_size=BATCH, seed=0)
  return next(pipeline.HostIterator(cfg, 0, 1))


# ---------------------------------------------------------------------------
# The train step: bf16 against float32


def compiled_step(cfg: models.EncoderConfig, mesh, batch_sh):
  """The run's (RunConfig, Setup, jitted train step, its lowered StableHLO text)."""
  run = train.RunConfig(model=cfg, train=train.TrainConfig(batch_size=BATCH, seq_len=LENGTH),
                        optim=OPTIM, mesh=MESH)
  setup = train.make_setup(cfg, run, mesh)
  step_fn, _ = train.compile_steps(setup, {"mlm": batch_sh}, objectives.mlm_only(run.loss))
  shapes = {"mlm": jax.tree.map(
      lambda s: jax.ShapeDtypeStruct((BATCH, LENGTH), jnp.int32, sharding=s), batch_sh)}
  with sharding.use_mesh(mesh, run.rules):
    lowered = step_fn.lower(setup.abstract, shapes, jax.random.key(0))
  return run, setup, lowered.compile(), lowered.as_text()


def step_gradients(before, after, grad_norm: float, optim: optimizer.OptimConfig):
  """The gradients a step used, read back from AdamW's first moment.

  mu' = b1 mu + (1 - b1) g c, with clipping c = min(1, clip_norm / |g|) and |g|
  the step's `grad_norm` metric, so g = (mu' - b1 mu) / ((1 - b1) c).
  """
  mu0 = optax.tree_utils.tree_get(before.opt_state, "mu")
  mu1 = optax.tree_utils.tree_get(after.opt_state, "mu")
  clip = min(1.0, optim.clip_norm / grad_norm) if optim.clip_norm else 1.0
  return jax.tree.map(lambda a, b: (a - optim.b1 * b) / ((1 - optim.b1) * clip), mu1, mu0)


def flat(tree) -> np.ndarray:
  """Every leaf, raveled, in float64 (a cosine near 1 needs more than float32)."""
  return np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree.leaves(tree)])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
  return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def dots(hlo: str) -> list[str]:
  return [line for line in hlo.splitlines() if "stablehlo.dot_general" in line]


# Measured on this batch (bf16 - float32, after WARM_STEPS), then the tolerance:
# - loss ~3.97: |diff| 1.6e-4 (tiny), 2.4e-6 (moe_tiny). A logit z is rounded to bf16 (error
#   up to 2^-9 |z|, |z| up to ~10 here) and the loss averages ~150 predicted tokens whose
#   errors have random signs: 2^-9 x 10 / sqrt(150) = 1.6e-3 is an upper estimate. Bound
#   1e-3, 6x the worst measurement.
# - accuracy: 0.582 against 0.601 (tiny: 3 of 153 predictions, near-ties of the top two
#   logits), equal for moe_tiny. Bound 0.05 (8 predictions).
# - gradients, recovered from the optimizer state: cosine 1 - 2.9e-5 (tiny), 1 - 7.3e-5
#   (moe_tiny), bound 1 - 1e-3. Relative error per leaf: at most 0.017 (tiny) and 0.033
#   (moe_tiny), bounds 0.05 and 0.1. The routed leaves (experts, router) of moe_tiny: up to
#   0.125, bound 0.3. Their error is not rounding but routing: 8 of the 1,024 tokens get
#   another top-2 expert pair from the bf16 activations (the router itself is float32), and
#   each moves its whole contribution from one expert to another.
# - the update (new - old parameters, AdamW after 20 steps): relative error 8.4e-4 (tiny),
#   7.4e-3 (moe_tiny); bounds 5e-3 and 3e-2.
TOLERANCES = {
    "tiny": dict(loss=1e-3, accuracy=0.05, grad_cos=1e-3, grad_leaf=0.05, routed_leaf=None,
                 update=5e-3),
    "moe_tiny": dict(loss=1e-3, accuracy=0.05, grad_cos=1e-3, grad_leaf=0.1, routed_leaf=0.3,
                     update=3e-2),
}
ROUTED = ("['experts']", "['router']")


@pytest.mark.parametrize("preset", ["tiny", "moe_tiny"])
def test_bf16_train_step_matches_float32(preset, vocab, batch):
  tol = TOLERANCES[preset]
  # Dropout stays on as the presets have it: its masks depend on the key and shape only,
  # so both dtypes drop the same units.
  cfg32 = models.preset(preset, vocab_size=vocab.vocab_size)
  cfg16 = cfg32.replace(dtype="bfloat16")
  mesh = sharding.make_mesh(MESH)
  batch_sh = sharding.batch_shardings(batch, mesh)
  run, setup, step32, hlo32 = compiled_step(cfg32, mesh, batch_sh)
  _, _, step16, hlo16 = compiled_step(cfg16, mesh, batch_sh)

  # bf16 is really in effect: the float32 step holds no bf16 value, the bf16 step does its
  # matmuls in bf16 (the MoE router and its routing masks stay float32 by design, moe.Router).
  assert "bf16" not in hlo32
  n16, n = sum("bf16" in d for d in dots(hlo16)), len(dots(hlo16))
  if cfg16.moe is None:
    assert n16 == n > 0, (n16, n)
  else:
    assert n16 >= 0.8 * n, (n16, n)
    e, d, f = cfg16.moe.num_experts, cfg16.hidden_size, cfg16.mlp_dim
    assert any(f"tensor<{e}x{d}x{f}xbf16>" in line for line in dots(hlo16))  # the experts

  # One train state (float32 parameters and AdamW moments) for both steps.
  state = train.fresh_state(setup, cfg32, run, mesh, vocab)
  device_batch = {"mlm": jax.device_put(batch, batch_sh)}
  rng = jax.random.key(0)
  for _ in range(WARM_STEPS):
    state, metrics = step32(state, device_batch, rng)
  before = jax.device_get(state)  # the steps donate their input state: keep a host copy
  out = {}
  for name, step in (("float32", step32), ("bfloat16", step16)):
    after, metrics = step(jax.device_put(before, setup.shardings), device_batch, rng)
    metrics = {k: float(np.mean(v)) for k, v in jax.device_get(metrics).items()}
    out[name] = jax.device_get(after), metrics
  (after32, m32), (after16, m16) = out["float32"], out["bfloat16"]

  assert m32["loss"] < math.log(cfg32.vocab_size) - 3  # the model has learned the batch
  assert abs(m16["loss"] - m32["loss"]) <= tol["loss"], (m16["loss"], m32["loss"])
  assert abs(m16["mlm_accuracy"] - m32["mlm_accuracy"]) <= tol["accuracy"]

  g32 = step_gradients(before, after32, m32["grad_norm"], OPTIM)
  g16 = step_gradients(before, after16, m16["grad_norm"], OPTIM)
  np.testing.assert_allclose(np.linalg.norm(flat(g32)), m32["grad_norm"], rtol=1e-4)
  assert cosine(flat(g16), flat(g32)) >= 1 - tol["grad_cos"]
  total = np.linalg.norm(flat(g32))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g32), jax.tree.leaves(g16)):
    norm = np.linalg.norm(a)
    # Skips gradients that are rounding noise: the key biases' is exactly 0 in exact
    # arithmetic (adding q.b to every score of a query leaves its softmax unchanged).
    if norm > 1e-6 * total:
      name = jax.tree_util.keystr(path)
      bound = tol["routed_leaf"] if any(r in name for r in ROUTED) else tol["grad_leaf"]
      assert np.linalg.norm(b - a) / norm <= bound, (name, np.linalg.norm(b - a) / norm)

  u32 = flat(after32.params) - flat(before.params)
  u16 = flat(after16.params) - flat(before.params)
  assert np.linalg.norm(u16 - u32) / np.linalg.norm(u32) <= tol["update"]
  for a, b in zip(jax.tree.leaves(after16.params), jax.tree.leaves(after32.params)):
    assert a.dtype == b.dtype == np.float32  # parameters stay float32 under bf16 compute


# ---------------------------------------------------------------------------
# Logits against Hugging Face PyTorch


def script_rows(vocab, corpus, width: int) -> np.ndarray:
  """The two shortest sample sentences of each script as `<s> pieces </s> <pad>...` rows."""
  texts = []
  for lang in SCRIPTS:
    texts += sorted(corpus.texts[lang], key=lambda t: len(vocab.encode(t)))[:2]
  ids = hf_testing.batch(vocab, texts, width)
  assert (ids[:, -1] == vocab.pad_id).all()  # every row is padded, none is cut
  return ids


def test_bf16_logits_match_hf_float32_on_multilingual_text(vocab, corpus):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  cfg = models.preset("tiny", vocab_size=vocab.vocab_size)
  torch.manual_seed(0)
  theirs = transformers.XLMRobertaForMaskedLM(
      transformers.XLMRobertaConfig(**hf.config_to_hf(cfg))).eval()
  with torch.no_grad():  # every tensor perturbed (LayerNorms, biases), as tests/hf_testing.py
    for p in theirs.parameters():
      p.add_(0.1 * torch.randn_like(p))
  state = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
  ids = script_rows(vocab, corpus, cfg.max_len)
  real = ids != vocab.pad_id
  with torch.no_grad():
    ref = theirs(input_ids=torch.from_numpy(ids).long(),
                 attention_mask=torch.from_numpy(real).long()).logits.numpy()[real]  # [n, v]

  got = {}
  for dtype in ("float32", "bfloat16"):
    ours = models.MaskedLM(cfg.replace(dtype=dtype), rngs=nnx.Rngs(0))
    hf.load_params(ours, hf.from_hf(state, cfg, "masked_lm"))
    assert ours.encoder(jnp.asarray(ids)).last_hidden.dtype == jnp.dtype(dtype)
    logits, _ = ours(jnp.asarray(ids))
    assert logits.dtype == jnp.float32  # the MLM head returns float32 in either dtype
    got[dtype] = np.asarray(logits)[real]
  diff32, diff16 = np.abs(got["float32"] - ref), np.abs(got["bfloat16"] - ref)

  # Measured on these 593 tokens: float32 max 2.6e-6 (the baseline; tests/test_hf_parity.py
  # bounds it by 1e-4); bf16 max 0.054, mean 0.0060, with |logits| up to 4.2. A logit passes
  # ~15 bf16 roundings (per block: LayerNorm out, q, k, v, attention, projection, LayerNorm,
  # wi, gelu, wo; head: dense, gelu, LayerNorm, decoder), each up to 2^-9 relative, amplified
  # by the random weights: bounds 0.12 max and 0.012 mean (2x). Top-1 predictions agree on
  # 98.7% of the tokens (96.6-98.7% over three HF seeds): bound 95%.
  assert diff32.max() <= 1e-4
  assert diff16.max() <= 0.12 and diff16.mean() <= 0.012, (diff16.max(), diff16.mean())
  assert diff16.max() > 100 * diff32.max()  # bf16 rounding shows: bf16 really computed
  agree = (got["bfloat16"].argmax(-1) == ref.argmax(-1)).mean()
  assert agree >= 0.95, agree


# ---------------------------------------------------------------------------
# gin/runs/continue_from_hf.gin as shipped


def test_continue_from_hf_run_as_shipped_trains_in_bf16(vocab, corpus, tmp_path):
  """The README's convert-then-continue commands with the run file's own dtype, mesh and
  length 512. Substitutions: NUM_STEPS=2 (else 100,000), BATCH_SIZE=64 (else 256: 256 rows
  of 512 took 15.8 GiB of the 24 GiB that two test workers share), the required INIT_FROM,
  VOCAB and TEXT_DIR, and MeshConfig.platform=None: gin/mesh/gpu_8.gin asks for GPUs,
  and this test runs its fsdp=8 mesh on 8 CPU devices."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  text_dir = tmp_path / "text"
  text_dir.mkdir()
  for lang in SCRIPTS:
    (text_dir / f"{lang}.txt").write_text("\n".join(corpus.texts[lang]) + "\n", encoding="utf-8")
  cfg = models.preset("tiny", vocab_size=vocab.vocab_size, max_len=512)  # the run's seq_len
  torch.manual_seed(0)
  transformers.XLMRobertaForMaskedLM(
      transformers.XLMRobertaConfig(**hf.config_to_hf(cfg))).save_pretrained(tmp_path / "hf")
  vocab.save(tmp_path / "hf")  # sentencepiece.bpe.model
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  init, workdir = tmp_path / "imported", tmp_path / "run"  # absolute paths
  proc = subprocess.run([sys.executable, "tools/convert_from_hf.py", f"--hf_dir={tmp_path / 'hf'}",
                         f"--output_dir={init}"], cwd=hf_testing.REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  proc = subprocess.run([
      sys.executable, "-m", "polyglot.train", "--gin_file=runs/continue_from_hf.gin",
      f"--workdir={workdir}", f"--gin.INIT_FROM='{init}'",
      f"--gin.VOCAB='{init / 'sentencepiece.bpe.model'}'", f"--gin.TEXT_DIR='{text_dir}'",
      "--gin.NUM_STEPS=2", "--gin.BATCH_SIZE=64", "--gin.MeshConfig.platform=None"],
      cwd=hf_testing.REPO, env=env, capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"done: {workdir}" in proc.stdout

  meta = checkpoint.Checkpointer(str(workdir / checkpoint.SUBDIR), read_only=True).read_meta(2)
  assert meta["model_config"]["dtype"] == "bfloat16"  # models/base.gin's COMPUTE_DTYPE
  assert meta["model_config"]["hidden_size"] == 64    # the checkpoint's model, not base's
  assert "MeshConfig.fsdp = 8" in (workdir / "config.gin").read_text()
  trained = polyglot.load(str(workdir))
  assert trained.step == 2 and trained.config.dtype == "bfloat16"
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  trained_rows = [r for r in rows if r["split"] == "train"]
  assert [r["step"] for r in trained_rows] == [2]
  assert trained_rows[0]["tokens"] == 64 * 512  # the batch, fully packed
  for r in rows:
    # A randomly initialised model predicts ~uniformly: loss ln(8000) = 8.99, in every
    # language too.
    losses = ([v for k, v in r.items() if k.endswith("/loss")] if r["split"] == "eval_languages"
              else [r.get("loss", r.get("mlm_loss"))])
    assert losses and all(abs(x - math.log(vocab.vocab_size)) < 0.5 for x in losses), r
