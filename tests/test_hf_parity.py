"""polyglot's encoder and heads equal Hugging Face's XLMRobertaFor* on the same weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from polyglot import models
from polyglot.convert import hf
from polyglot.errors import ConversionError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CFG = models.preset("tiny", num_layers=2, vocab_size=250, max_len=32)
NUM_LABELS = 3
HF_CLASSES = {
    "masked_lm": "XLMRobertaForMaskedLM",
    "sequence_classification": "XLMRobertaForSequenceClassification",
    "token_classification": "XLMRobertaForTokenClassification",
    "question_answering": "XLMRobertaForQuestionAnswering",
}


def polyglot_model(head: str, cfg=CFG) -> nnx.Module:
  rngs = nnx.Rngs(0)
  return {
      "masked_lm": lambda: models.MaskedLM(cfg, rngs=rngs),
      "sequence_classification": lambda: models.SequenceClassifier(cfg, NUM_LABELS, rngs=rngs),
      "token_classification": lambda: models.TokenClassifier(cfg, NUM_LABELS, rngs=rngs),
      "question_answering": lambda: models.QuestionAnswering(cfg, rngs=rngs),
  }[head]()


def random_hf_model(head: str, seed: int = 0):
  """A tiny HF model whose every parameter (LayerNorms and biases too) is random."""
  torch.manual_seed(seed)
  labels = {i: f"L{i}" for i in range(NUM_LABELS)} if "classification" in head else None
  config = transformers.XLMRobertaConfig(**hf.config_to_hf(CFG, head, labels))
  model = getattr(transformers, HF_CLASSES[head])(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model


def hf_state(model) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def padded_batch(seed: int = 0) -> np.ndarray:
  """Rows of unequal length: <s> tokens </s> then <pad> (id 1)."""
  rng = np.random.default_rng(seed)
  lengths, width = (12, 7, 3, 10), 12
  ids = np.full((len(lengths), width), CFG.pad_id, np.int32)
  for r, n in enumerate(lengths):
    ids[r, :n] = rng.integers(4, CFG.vocab_size - 1, n)
    ids[r, 0], ids[r, n - 1] = CFG.bos_id, CFG.eos_id
  return ids


def hf_outputs(model, ids: np.ndarray, head: str) -> list[np.ndarray]:
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(ids).long(),
                attention_mask=torch.from_numpy(ids != CFG.pad_id).long())
  if head == "question_answering":
    return [out.start_logits.numpy(), out.end_logits.numpy()]
  return [out.logits.numpy()]


def polyglot_outputs(model, ids: np.ndarray, head: str) -> list[np.ndarray]:
  out, _ = model(jnp.asarray(ids))
  return [np.asarray(o) for o in (out if head == "question_answering" else (out,))]


@pytest.mark.parametrize("head", list(HF_CLASSES))
def test_outputs_equal_hf_in_float32(head):
  theirs = random_hf_model(head)
  ours = polyglot_model(head)
  hf.load_params(ours, hf.from_hf(hf_state(theirs), CFG, head))
  ids = padded_batch()
  valid = ids != CFG.pad_id
  for a, b in zip(polyglot_outputs(ours, ids, head), hf_outputs(theirs, ids, head)):
    assert a.shape == b.shape
    # Every position, padding included: a pad query attends to real keys as in HF.
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    if a.ndim >= 2 and a.shape[:2] == ids.shape:
      assert np.abs(a[valid] - b[valid]).max() <= 1e-4


def test_hidden_states_equal_hf_per_layer():
  theirs = random_hf_model("masked_lm", seed=3)
  ours = polyglot_model("masked_lm")
  hf.load_params(ours, hf.from_hf(hf_state(theirs), CFG, "masked_lm"))
  ids = padded_batch(1)
  with torch.no_grad():
    ref = theirs.roberta(input_ids=torch.from_numpy(ids).long(),
                         attention_mask=torch.from_numpy(ids != CFG.pad_id).long(),
                         output_hidden_states=True).hidden_states
  got = ours.encoder(jnp.asarray(ids), output_hidden_states=True).hidden_states
  assert len(got) == len(ref) == CFG.num_layers + 1
  for layer, (a, b) in enumerate(zip(got, ref)):
    np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-4, err_msg=f"layer {layer}")


@pytest.mark.parametrize("head", list(HF_CLASSES))
def test_hf_roundtrip_is_bit_identical(head):
  state = hf_state(random_hf_model(head, seed=1))
  back = hf.to_hf(hf.from_hf(state, CFG, head), CFG, head)
  assert set(back) == set(state)
  for name, value in state.items():
    assert back[name].dtype == value.dtype and np.array_equal(back[name], value), name


def test_polyglot_roundtrip_through_hf_is_bit_identical():
  model = polyglot_model("masked_lm")
  params = hf.params_of(model)
  again = hf.from_hf(hf.to_hf(params, CFG, "masked_lm"), CFG, "masked_lm")
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), params, again)


def test_packed_row_equals_sequences_run_alone():
  """Two sequences packed in one row give the hidden states each gives alone."""
  model = polyglot_model("masked_lm")
  ids = padded_batch(2)
  a, b = ids[1][ids[1] != CFG.pad_id], ids[2][ids[2] != CFG.pad_id]
  width = 14
  packed = np.full((1, width), CFG.pad_id, np.int32)
  packed[0, :len(a)], packed[0, len(a):len(a) + len(b)] = a, b
  segments = np.zeros((1, width), np.int32)
  segments[0, :len(a)], segments[0, len(a):len(a) + len(b)] = 1, 2
  positions = np.zeros((1, width), np.int32)
  positions[0, :len(a)], positions[0, len(a):len(a) + len(b)] = np.arange(len(a)), np.arange(len(b))
  together = model.encoder(jnp.asarray(packed), jnp.asarray(segments),
                           jnp.asarray(positions)).last_hidden[0]
  alone_a = model.encoder(jnp.asarray(a[None])).last_hidden[0]
  alone_b = model.encoder(jnp.asarray(b[None])).last_hidden[0]
  np.testing.assert_allclose(together[:len(a)], alone_a, atol=1e-5)
  np.testing.assert_allclose(together[len(a):len(a) + len(b)], alone_b, atol=1e-5)


def test_bare_encoder_state_dict_imports():
  """An `XLMRobertaModel` state dict (no `roberta.` prefix, with pooler) maps to the encoder."""
  torch.manual_seed(0)
  base = transformers.XLMRobertaModel(
      transformers.XLMRobertaConfig(**hf.config_to_hf(CFG, "encoder"))).eval()
  params = hf.from_hf(hf_state(base), CFG, "encoder")
  np.testing.assert_array_equal(params["encoder"]["embeddings"]["word"],
                                base.embeddings.word_embeddings.weight.detach().numpy())


def test_config_roundtrip_and_xlmr_values():
  kw = hf.config_to_hf(models.preset("base"))
  assert kw["layer_norm_eps"] == 1e-5 and kw["type_vocab_size"] == 1
  assert kw["max_position_embeddings"] == 514 and kw["vocab_size"] == 250002
  assert (kw["pad_token_id"], kw["bos_token_id"], kw["eos_token_id"]) == (1, 0, 2)
  assert hf.config_from_hf(kw) == models.preset("base")
  assert hf.config_from_hf(transformers.XLMRobertaConfig(**kw).to_dict()) == models.preset("base")


def test_mismatches_are_clear_errors():
  state = hf_state(random_hf_model("masked_lm"))
  with pytest.raises(ConversionError, match="classifier.dense.weight is missing"):
    hf.from_hf(state, CFG, "sequence_classification")
  with pytest.raises(ConversionError, match="shape"):
    hf.from_hf(state, CFG.replace(vocab_size=300), "masked_lm")
  with pytest.raises(ConversionError, match="MoE"):
    hf.to_hf({}, models.preset("moe_tiny"), "masked_lm")
  with pytest.raises(ConversionError, match="unknown head"):
    hf.mapping(CFG, "span")


def count_polyglot(cfg, head) -> int:
  abstract = nnx.eval_shape(lambda: polyglot_model(head, cfg))
  return sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


@pytest.mark.parametrize("name", ["tiny", "small", "base", "large", "xl"])
def test_parameter_counts_equal_hf(name):
  cfg = models.preset(name)
  config = transformers.XLMRobertaConfig(**hf.config_to_hf(cfg, "masked_lm"))
  with torch.device("meta"):
    theirs = transformers.XLMRobertaForMaskedLM(config)
  expected = sum(p.numel() for p in theirs.parameters())  # tied decoder counted once
  assert count_polyglot(cfg, "masked_lm") == expected
  if name == "base":
    assert expected == 278_295_186  # XLM-R base with its MLM head (Conneau et al.: 270M)
