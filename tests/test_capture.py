"""Tests of transrate_jax._src.capture: Linen, NNX and a transformer block written here."""

import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from transrate_jax._src import capture
from transrate_jax._src.capture import intermediates
from transrate_jax._src.capture import pool

RTOL = 1e-5
ATOL = 1e-6


def _x(n=11, shape=(8, 8, 1), seed=0):
  return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def _conv(x, kernel, bias=None):
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                   precision=jax.lax.Precision.HIGHEST)
  return y if bias is None else y + bias


# ----------------------------------------------------------------------------- Linen CNN


class LinenCNN(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    x = nn.BatchNorm(use_running_average=False)(x)
    x = nn.Dropout(0.5, deterministic=False)(x)
    x = nn.relu(nn.Conv(6, (3, 3))(x))
    return nn.Dense(3)(x.mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def linen_cnn():
  model = LinenCNN()
  x = _x()
  variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x[:2])
  # Non-trivial running statistics, so eval mode differs from batch statistics.
  stats = jax.tree.map(lambda a: a + 0.3, variables["batch_stats"])
  return model, {"params": variables["params"], "batch_stats": stats}, x


def _linen_reference(variables, x):
  p, s = variables["params"], variables["batch_stats"]["BatchNorm_0"]
  with jax.default_matmul_precision("highest"):
    c0 = _conv(x, p["Conv_0"]["kernel"], p["Conv_0"]["bias"])
    h = jax.nn.relu(c0)
    bn = (h - s["mean"]) / jnp.sqrt(s["var"] + 1e-5) * p["BatchNorm_0"]["scale"] \
        + p["BatchNorm_0"]["bias"]
    c1 = _conv(bn, p["Conv_1"]["kernel"], p["Conv_1"]["bias"])
    out = jax.nn.relu(c1).mean(axis=(1, 2)) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
  return {"Conv_0": c0, "BatchNorm_0": bn, "Dropout_0": bn, "Conv_1": c1, "Dense_0": out,
          "output": out}


def test_linen_names_shapes_and_values(linen_cnn):
  model, variables, x = linen_cnn
  with jax.default_matmul_precision("highest"):
    feats = intermediates(model, x, variables=variables, batch_size=4, progress=False)
  assert list(feats) == ["Conv_0", "BatchNorm_0", "Dropout_0", "Conv_1", "Dense_0", "output"]
  ref = _linen_reference(variables, x)
  for name, f in feats.items():
    expected = pool(ref[name], "mean")
    assert f.shape == expected.shape, name
    np.testing.assert_allclose(f, expected, rtol=RTOL, atol=ATOL, err_msg=name)


# ----------------------------------------------------------------------------- NNX CNN


class ConvBN(nnx.Module):

  def __init__(self, cin, cout, *, rngs):
    self.conv = nnx.Conv(cin, cout, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(cout, rngs=rngs)

  def __call__(self, x):
    return nnx.relu(self.bn(self.conv(x)))


class InheritedBlock(ConvBN):
  """Only inherits __call__ (nnx.capture's method_outputs misses these)."""


class NNXCNN(nnx.Module):

  def __init__(self, *, rngs):
    self.blocks = nnx.List([ConvBN(1, 4, rngs=rngs), InheritedBlock(4, 5, rngs=rngs)])
    self.dropout = nnx.Dropout(0.5, rngs=rngs)
    self.head = nnx.Linear(5, 3, rngs=rngs)

  def __call__(self, x):
    for block in self.blocks:
      x = block(x)
    return self.head(self.dropout(x.mean(axis=(1, 2))))


@pytest.fixture(scope="module")
def nnx_cnn():
  model = NNXCNN(rngs=nnx.Rngs(0))
  for block in model.blocks:  # non-trivial running statistics
    block.bn.mean[...] = 0.2 * jnp.arange(block.bn.mean.shape[0], dtype=jnp.float32)
    block.bn.var[...] = jnp.full(block.bn.var.shape, 1.5, jnp.float32)
  return model, _x()


def _nnx_reference(model, x):
  out = {}
  with jax.default_matmul_precision("highest"):
    for i, block in enumerate(model.blocks):
      c = _conv(x, block.conv.kernel[...], block.conv.bias[...])
      bn = block.bn
      b = (c - bn.mean[...]) / jnp.sqrt(bn.var[...] + bn.epsilon) * bn.scale[...] + bn.bias[...]
      x = jax.nn.relu(b)
      out.update({f"blocks/{i}/conv": c, f"blocks/{i}/bn": b, f"blocks/{i}": x})
    m = x.mean(axis=(1, 2))
    o = m @ model.head.kernel[...] + model.head.bias[...]
  out.update({"dropout": m, "head": o, "output": o})
  return out


def test_nnx_names_shapes_values_and_eval_mode(nnx_cnn):
  model, x = nnx_cnn
  with jax.default_matmul_precision("highest"):
    feats = intermediates(model, x, batch_size=5, progress=False)
  assert list(feats) == ["blocks/0/conv", "blocks/0/bn", "blocks/0", "blocks/1/conv",
                         "blocks/1/bn", "blocks/1", "dropout", "head", "output"]
  ref = _nnx_reference(model, x)
  for name, f in feats.items():
    np.testing.assert_allclose(f, pool(ref[name]), rtol=RTOL, atol=ATOL, err_msg=name)
  # The caller's model is not switched to eval mode and its classes are restored.
  assert model.blocks[0].bn.use_running_average is False
  assert model.dropout.deterministic is False
  assert "__call__" not in vars(InheritedBlock)


@pytest.mark.parametrize("kind,assemble_arrays", [("linen", 256), ("nnx", 256), ("nnx", 10)])
def test_batch_size_independence(kind, assemble_arrays, linen_cnn, nnx_cnn, monkeypatch):
  """Any batch size gives the same features; the batches are joined by one program for all
  layers, or (``assemble_arrays`` below batches x layers) a group of layers at a time."""
  monkeypatch.setattr(capture, "_ASSEMBLE_ARRAYS", assemble_arrays)
  if kind == "linen":
    model, variables, x = linen_cnn
  else:
    (model, x), variables = nnx_cnn, None
  full = intermediates(model, x, variables=variables, batch_size=1000, progress=False)
  for bs in (1, 3, 4):
    part = intermediates(model, x, variables=variables, batch_size=bs, progress=False)
    assert list(part) == list(full)
    for name in full:
      assert part[name].shape == (len(x), full[name].shape[1])
      np.testing.assert_allclose(part[name], full[name], rtol=RTOL, atol=ATOL, err_msg=name)


# ----------------------------------------------------------------------------- transformer


class Block(nnx.Module):

  def __init__(self, d, *, rngs):
    self.ln1 = nnx.LayerNorm(d, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=d, decode=False, rngs=rngs)
    self.ln2 = nnx.LayerNorm(d, rngs=rngs)
    self.mlp = nnx.Linear(d, d, rngs=rngs)

  def __call__(self, x):
    x = x + self.attn(self.ln1(x))
    return x + self.mlp(nnx.gelu(self.ln2(x)))


class TinyTransformer(nnx.Module):

  def __init__(self, *, rngs):
    self.embed = nnx.Linear(3, 8, rngs=rngs)
    self.block = Block(8, rngs=rngs)
    self.head = nnx.Linear(8, 2, rngs=rngs)

  def __call__(self, x):
    h = self.block(self.embed(x))
    return self.head(h[:, 0])


def test_transformer_tokens_and_every_pool_mode():
  model = TinyTransformer(rngs=nnx.Rngs(1))
  x = _x(n=6, shape=(5, 3))
  with jax.default_matmul_precision("highest"):
    h = model.block(model.embed(jnp.asarray(x)))
  expected = {
      "mean": np.asarray(h).mean(1), "max": np.asarray(h).max(1),
      "flatten": np.asarray(h).reshape(6, -1), "first": np.asarray(h)[:, 0],
  }
  for mode, ref in expected.items():
    with jax.default_matmul_precision("highest"):
      feats = intermediates(model, x, layers=["block", "head"], pool=mode, batch_size=4,
                            progress=False)
    assert list(feats) == ["block", "head"]
    np.testing.assert_allclose(feats["block"], ref, rtol=RTOL, atol=ATOL, err_msg=mode)
    assert feats["head"].shape == (6, 2)  # 2-D outputs pass through
  feats = intermediates(model, x, pool=lambda a: a.reshape(a.shape[0], -1)[:, :3],
                        progress=False)
  assert feats["block"].shape == (6, 3)
  names = list(intermediates(model, x, progress=False))
  assert names[:2] == ["embed", "block/ln1"] and names[-2:] == ["head", "output"]
  assert any(n.startswith("block/attn") for n in names)


def test_pool_function():
  rng = np.random.default_rng(3)
  a = rng.normal(size=(4, 3, 2, 5)).astype(np.float32)
  np.testing.assert_allclose(pool(a, "mean"), a.reshape(4, 6, 5).mean(1), rtol=1e-6)
  np.testing.assert_allclose(pool(a, "max"), a.reshape(4, 6, 5).max(1))
  np.testing.assert_allclose(pool(a, "flatten"), a.reshape(4, -1))
  np.testing.assert_allclose(pool(a, "first"), a[:, 0, 0])
  np.testing.assert_allclose(pool(a[:, 0, 0], "max"), a[:, 0, 0])
  assert pool(a[:, 0, 0, 0]).shape == (4, 1)
  assert pool(jnp.ones((2, 3, 4), jnp.bfloat16)).dtype == jnp.float32
  with pytest.raises(ValueError, match="pool must be one of"):
    pool(a, "median")


# ----------------------------------------------------------------------------- selection, errors


class CountingHead(nnx.Module):
  """A linear layer that counts how often it is traced (Python runs only while JAX traces)."""

  traces = 0

  def __init__(self, *, rngs):
    self.linear = nnx.Linear(4, 3, rngs=rngs)

  def __call__(self, x):
    CountingHead.traces += 1
    return self.linear(jnp.tanh(x))


def test_same_structure_shares_the_probe_and_the_program():
  """A model and another of the same structure (a pretrained backbone and its random control)
  are traced once for the layer names and once for the program; each still gets its own
  features. A new layer selection traces the program again, new input shapes both."""
  x = _x(n=11, shape=(4,))
  a, b = CountingHead(rngs=nnx.Rngs(0)), CountingHead(rngs=nnx.Rngs(1))
  CountingHead.traces = 0
  got = [intermediates(m, x, batch_size=4, progress=False) for m in (a, b)]
  assert CountingHead.traces == 2  # the probe and the jitted forward, for both models
  for model, feats in zip((a, b), got):
    with jax.default_matmul_precision("highest"):
      h = jnp.tanh(x) @ model.linear.kernel[...] + model.linear.bias[...]
    assert list(feats) == ["linear", "output"]
    for name in feats:  # 11 rows from batches of 4: the last one padded, its padding dropped
      np.testing.assert_allclose(feats[name], h, rtol=RTOL, atol=ATOL, err_msg=name)
  assert not np.allclose(got[0]["output"], got[1]["output"])
  intermediates(b, x, layers="output", batch_size=4, progress=False)
  assert CountingHead.traces == 3  # the new selection's program; the names were known
  intermediates(a, x[:, :2].repeat(2, axis=1), batch_size=5, progress=False)
  assert CountingHead.traces == 5  # another batch shape: probed and traced again


def test_layer_selection(nnx_cnn):
  model, x = nnx_cnn
  get = lambda layers: list(intermediates(model, x, layers=layers, progress=False))
  assert get("blocks/*/bn") == ["blocks/0/bn", "blocks/1/bn"]
  assert get("head") == ["head"]
  assert get(re.compile(r"conv$")) == ["blocks/0/conv", "blocks/1/conv"]
  assert get(["output", "blocks/1"]) == ["blocks/1", "output"]  # call order
  assert get(lambda name: name.count("/") == 1) == ["blocks/0", "blocks/1"]


def test_errors(nnx_cnn, linen_cnn):
  model, x = nnx_cnn
  with pytest.raises(ValueError, match=r"unknown layer name\(s\) \['nope'\].*blocks/0/conv"):
    intermediates(model, x, layers=["head", "nope"], progress=False)
  with pytest.raises(ValueError, match="matches no layer; available layers: blocks/0/conv"):
    intermediates(model, x, layers="zzz*", progress=False)
  with pytest.raises(ValueError, match="cannot be called on inputs of shape") as info:
    intermediates(model, x[..., 0], progress=False)
  assert info.value.__cause__ is not None
  with pytest.raises(ValueError, match="cannot be called"):
    intermediates(model, np.ones((4, 8, 8, 2), np.float32), progress=False)
  with pytest.raises(ValueError, match="batch_size"):
    intermediates(model, x, batch_size=0, progress=False)
  with pytest.raises(ValueError, match="pool must be"):
    intermediates(model, x, pool="median", progress=False)
  with pytest.raises(ValueError, match="inputs must be an array"):
    intermediates(model, [[1.0]], progress=False)
  with pytest.raises(ValueError, match="NNX module carries its own state"):
    intermediates(model, x, variables={}, progress=False)
  lmodel, variables, _ = linen_cnn
  with pytest.raises(ValueError, match="Linen module needs its variables"):
    intermediates(lmodel, x, progress=False)
  with pytest.raises(ValueError, match="flax.linen.Module or a flax.nnx.Module"):
    intermediates(lambda v: v, x, progress=False)


def test_progress_bar(nnx_cnn, capsys):
  model, x = nnx_cnn
  intermediates(model, x, layers="head", batch_size=4, progress=True)
  assert "intermediates" in capsys.readouterr().err
  intermediates(model, x, layers="head", batch_size=4, progress=False)
  assert capsys.readouterr().err == ""


def test_flax_not_imported_by_the_package():
  code = ("import sys, transrate_jax; assert 'flax' not in sys.modules; "
          "import transrate_jax.capture as c; assert 'flax' in sys.modules; "
          "assert callable(c.intermediates) and callable(c.pool)")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=str(_root()))


def _root():
  import pathlib  # pylint: disable=import-outside-toplevel
  return pathlib.Path(__file__).resolve().parents[1]
