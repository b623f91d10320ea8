"""Vision backbones of ``transrate_jax.models``: ported weights, safe .pth reading, capture names.

Photos: scikit-image's ``chelsea`` (a tabby cat), ``coffee`` (an espresso cup) and ``rocket``.
Each is centre-cropped to a square, scaled to [0, 1] and resized with ``jax.image.resize``
(bilinear, antialiased) to the model's native size. ImageNet classes: 281-285 cats, 967 espresso,
657 missile / 812 space shuttle.

The float64 reference is a NumPy forward pass written here from the PyTorch state dict as
``read_pth`` returns it (PyTorch layout, names and padding conventions), independent of the Flax
code.
"""

import dataclasses
import fnmatch
import json
import pathlib
import pickle
import struct
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

flax = pytest.importorskip("flax")
skimage_data = pytest.importorskip("skimage.data")

import transrate_jax as tj  # noqa: E402
from transrate_jax import models  # noqa: E402
from transrate_jax._src import cache as cache_lib  # noqa: E402
from transrate_jax._src.models import hub  # noqa: E402
from transrate_jax.capture import intermediates  # noqa: E402
from nnx_forward import forward  # noqa: E402

VISION = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2")
LAYERS_JSON = pathlib.Path(__file__).parent / "data" / "model_layers.json"
PHOTOS = (("chelsea", set(range(281, 286))), ("coffee", {967}), ("rocket", {657, 812}))
BLOCK_GLOB = "blocks/*[0-9]"


def _installed(name):
  try:
    hub.weights_path(hub.get_spec(name))
    return True
  except models.WeightsNotInstalledError:
    return False


needs_weights = pytest.mark.skipif(
    not all(_installed(n) for n in VISION),
    reason="the vision weight packages are not installed")


@pytest.fixture(scope="module")
def pretrained(weight_cache):
  del weight_cache
  return {n: models.load(n) for n in VISION}


@pytest.fixture(scope="module")
def random_init():
  return {n: models.load(n, pretrained=False, seed=0) for n in VISION}


def photo(name, size):
  img = getattr(skimage_data, name)().astype(np.float32) / 255.0
  h, w = img.shape[:2]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  img = img[top:top + s, left:left + s]
  return np.asarray(jax.image.resize(img, (size, size, 3), "linear", antialias=True))


def top5(logits):
  return [set(np.argsort(-row)[:5].tolist()) for row in logits]


# ---------------------------------------------------------------------------------------------
# Classification of real photos.


@needs_weights
@pytest.mark.parametrize("name", VISION)
def test_ported_weights_classify_photos_and_random_init_does_not(name, pretrained, random_init):
  size = models.info(name)["input_size"]
  x = np.stack([photo(p, size) for p, _ in PHOTOS])
  got = forward(pretrained[name], x)
  assert got.shape == (3, 1000) and np.isfinite(got).all()
  for (p, want), top in zip(PHOTOS, top5(got)):
    assert top & want, f"{name} top-5 on {p}: {sorted(top)}, expected one of {sorted(want)}"
  control = forward(random_init[name], x)
  assert np.isfinite(control).all() and np.ptp(control, axis=1).min() > 0
  for (p, want), top in zip(PHOTOS, top5(control)):
    assert not top & want, f"random-init {name} top-5 on {p} hits {sorted(top & want)}"


# ---------------------------------------------------------------------------------------------
# Float64 NumPy reference forward pass, from the PyTorch state dict.


def np_conv(x, w, stride, pads, groups=1):
  """x [n, h, w, c] (NHWC), w [out, in / groups, kh, kw] (PyTorch); pads ((t, b), (l, r))."""
  n, _, _, c = x.shape
  out, _, kh, kw = w.shape
  x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  ho = (x.shape[1] - kh) // stride + 1
  wo = (x.shape[2] - kw) // stride + 1
  sn, sh, sw, sc = x.strides
  patches = np.lib.stride_tricks.as_strided(
      x, (n, ho, wo, kh, kw, c), (sn, sh * stride, sw * stride, sh, sw, sc))
  if groups == 1:
    return np.einsum("nhwijc,ocij->nhwo", patches, w, optimize=True)
  assert groups == c == out and w.shape[1] == 1
  return np.einsum("nhwijc,cij->nhwc", patches, w[:, 0], optimize=True)


def tf_same(size, k, s):
  """TensorFlow "SAME": output ceil(size / s), the odd padding row/column at the bottom/right."""
  total = max((-(-size // s) - 1) * s + k - size, 0)
  return (total // 2, total - total // 2)


def np_bn(x, sd, key, eps):
  g, b = sd[f"{key}.weight"], sd[f"{key}.bias"]
  m, v = sd[f"{key}.running_mean"], sd[f"{key}.running_var"]
  return (x - m) / np.sqrt(v + eps) * g + b


def np_relu6(x):
  return np.minimum(np.maximum(x, 0), 6)


def reference_forward(name, sd, images):
  """Float64 logits of ``name`` from its PyTorch state dict ``sd`` on images in [0, 1]."""
  sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
  x = np.asarray(images, np.float64)
  if name == "mobilenet_v2":
    eps = 1e-5
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])

    def conv(x, key, stride=1, groups=1):
      k = sd[key].shape[-1]
      p = (k - 1) // 2
      return np_conv(x, sd[key], stride, ((p, p), (p, p)), groups)

    x = np_relu6(np_bn(conv(x, "features.0.0.weight", 2), sd, "features.0.1", eps))
    # torchvision's (t, c, n, s) table gives the stride of block i; the rest comes from the keys.
    strides = []
    for _, _, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
      strides += [s] + [1] * (n - 1)
    for i, s in enumerate(strides, start=1):
      p = f"features.{i}.conv"
      h, j = x, 0
      if f"{p}.0.0.weight" in sd and sd[f"{p}.0.0.weight"].shape[-1] == 1:
        h = np_relu6(np_bn(conv(h, f"{p}.0.0.weight"), sd, f"{p}.0.1", eps))
        j = 1
      groups = sd[f"{p}.{j}.0.weight"].shape[0]
      h = np_relu6(np_bn(conv(h, f"{p}.{j}.0.weight", s, groups), sd, f"{p}.{j}.1", eps))
      h = np_bn(conv(h, f"{p}.{j + 1}.weight"), sd, f"{p}.{j + 2}", eps)
      x = x + h if s == 1 and h.shape == x.shape else h
    x = np_relu6(np_bn(conv(x, "features.18.0.weight"), sd, "features.18.1", eps))
    w, b = sd["classifier.1.weight"], sd["classifier.1.bias"]
  else:
    eps = 1e-3
    x = (x * 255.0 - 127.0) / 128.0

    def conv(x, key, stride=1, groups=1):
      k = sd[key].shape[-1]
      pads = (tf_same(x.shape[1], k, stride), tf_same(x.shape[2], k, stride))
      return np_conv(x, sd[key], stride, pads, groups)

    x = np_relu6(np_bn(conv(x, "_conv_stem.weight", 2), sd, "_bn0", eps))
    repeats = (1, 2, 2, 3, 3, 4, 1) if name == "efficientnet_lite0" else (1, 3, 3, 4, 4, 5, 1)
    strides = []
    for n, s in zip(repeats, (1, 2, 2, 2, 1, 2, 1)):
      strides += [s] + [1] * (n - 1)
    assert f"_blocks.{len(strides)}._depthwise_conv.weight" not in sd
    for i, s in enumerate(strides):
      p = f"_blocks.{i}"
      h = x
      if f"{p}._expand_conv.weight" in sd:
        h = np_relu6(np_bn(conv(h, f"{p}._expand_conv.weight"), sd, f"{p}._bn0", eps))
      groups = sd[f"{p}._depthwise_conv.weight"].shape[0]
      h = np_relu6(np_bn(conv(h, f"{p}._depthwise_conv.weight", s, groups), sd, f"{p}._bn1",
                         eps))
      h = np_bn(conv(h, f"{p}._project_conv.weight"), sd, f"{p}._bn2", eps)
      x = x + h if s == 1 and h.shape == x.shape else h
    x = np_relu6(np_bn(conv(x, "_conv_head.weight"), sd, "_bn1", eps))
    w, b = sd["_fc.weight"], sd["_fc.bias"]
  return x.mean(axis=(1, 2)) @ w.T + b


@pytest.fixture(scope="module")
def small_images():
  """Two 64x64 photos (cat, coffee) in [0, 1], float64."""
  return np.stack([photo("chelsea", 64), photo("coffee", 64)]).astype(np.float64)


@needs_weights
@pytest.mark.parametrize("name", VISION)
def test_logits_equal_numpy_float64_reference(name, pretrained, small_images):
  assert jax.config.jax_enable_x64  # tests/conftest.py; the Flax model then runs in float64.
  sd = models.read_pth(hub.weights_path(hub.get_spec(name)))
  want = reference_forward(name, sd, small_images)
  scale = np.abs(want).max()
  got64 = forward(pretrained[name], small_images)
  assert got64.dtype == np.float64
  err64 = np.abs(got64 - want).max() / scale
  assert err64 < 1e-9, err64
  got32 = forward(pretrained[name], small_images.astype(np.float32))
  assert got32.dtype == np.float32
  err32 = np.abs(got32 - want).max() / scale
  assert err32 < 1e-4, err32
  print(f"{name}: max |flax - numpy| / max |numpy|: float64 {err64:.2e}, float32 {err32:.2e}")


# ---------------------------------------------------------------------------------------------
# read_pth: the restricted unpickler and the zip format.


def _str(s):
  b = s.encode("utf-8")
  return pickle.BINUNICODE + struct.pack("<I", len(b)) + b


def _int(i):
  return pickle.BININT + struct.pack("<i", i)


def _global(module, name):
  return pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii")


def _tuple(items):
  return pickle.MARK + b"".join(items) + pickle.TUPLE


def _tensor(storage_type, key, numel, offset, size, stride):
  """Protocol-2 opcodes of ``torch._utils._rebuild_tensor_v2`` on a persistent storage id."""
  pid = _tuple([_str("storage"), _global("torch", storage_type), _str(key), _str("cpu"),
                _int(numel)]) + pickle.BINPERSID
  hooks = _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
  args = _tuple([pid, _int(offset), _tuple([_int(v) for v in size]),
                 _tuple([_int(v) for v in stride]), pickle.NEWFALSE, hooks])
  return _global("torch._utils", "_rebuild_tensor_v2") + args + pickle.REDUCE


def _dict(items):
  return pickle.EMPTY_DICT + pickle.MARK + b"".join(k + v for k, v in items) + pickle.SETITEMS


def _write_zip(path, data_pkl, storages):
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
    zf.writestr("archive/data.pkl", data_pkl)
    zf.writestr("archive/byteorder", "little")
    for key, arr in storages.items():
      little = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"))
      zf.writestr(f"archive/data/{key}", little.tobytes())
    zf.writestr("archive/version", "3\n")


def test_read_pth_zip_format_honours_offsets_strides_and_dtypes(tmp_path):
  rng = np.random.default_rng(0)
  base = rng.normal(size=12).astype(np.float32)         # storage "0", shared by three tensors
  longs = np.arange(5, dtype=np.int64) * 7               # storage "1"
  doubles = rng.normal(size=6)                           # storage "2"
  inner = _dict([
      (_str("a.weight"), _tensor("FloatStorage", "0", 12, 0, (3, 4), (4, 1))),
      (_str("a.weight_t"), _tensor("FloatStorage", "0", 12, 0, (4, 3), (1, 4))),  # transposed
      (_str("b.bias"), _tensor("FloatStorage", "0", 12, 5, (2, 3), (3, 1))),     # offset view
      (_str("steps"), _tensor("LongStorage", "1", 5, 1, (), ())),                # 0-d, offset 1
      (_str("c.double"), _tensor("DoubleStorage", "2", 6, 0, (3, 2), (1, 3))),
      (_str("epoch"), _int(3)),                                                  # not a tensor
  ])
  data = pickle.PROTO + b"\x02" + _dict([(_str("state_dict"), inner)]) + pickle.STOP
  path = tmp_path / "tiny.pth"
  _write_zip(path, data, {"0": base, "1": longs, "2": doubles})
  got = models.read_pth(path)
  assert list(got) == ["a.weight", "a.weight_t", "b.bias", "steps", "c.double"]
  np.testing.assert_array_equal(got["a.weight"], base.reshape(3, 4))
  np.testing.assert_array_equal(got["a.weight_t"], base.reshape(3, 4).T)
  np.testing.assert_array_equal(got["b.bias"], base[5:11].reshape(2, 3))
  assert got["steps"].shape == () and got["steps"].dtype == np.int64 and got["steps"] == 7
  assert got["c.double"].dtype == np.float64
  np.testing.assert_array_equal(got["c.double"], doubles.reshape(2, 3).T)
  assert all(v.flags.c_contiguous for v in got.values())


def test_read_pth_refuses_a_tensor_outside_its_storage(tmp_path):
  data = (pickle.PROTO + b"\x02" + _dict([(_str("w"), _tensor("FloatStorage", "0", 4, 2, (3,),
                                                                (1,)))]) + pickle.STOP)
  path = tmp_path / "oob.pth"
  _write_zip(path, data, {"0": np.zeros(4, np.float32)})
  with pytest.raises(pickle.UnpicklingError, match="reaches element"):
    models.read_pth(path)


class _Payload:
  """Unpickling this creates ``path`` (``open(path, "w")``)."""

  def __init__(self, path):
    self.path = str(path)

  def __reduce__(self):
    return (open, (self.path, "w"))


def test_read_pth_refuses_reduce_payload_before_it_runs(tmp_path):
  control = tmp_path / "control_marker"
  pickle.loads(pickle.dumps(_Payload(control), protocol=2))
  assert control.exists()  # the payload is live when a plain unpickler loads it.

  marker = tmp_path / "marker"
  payload = pickle.dumps({"w": _Payload(marker)}, protocol=2)
  legacy = tmp_path / "legacy.pth"
  legacy.write_bytes(payload)  # the legacy reader's first pickle (the magic number)
  with pytest.raises(models.UnsafePickleError, match=r"io\.open"):
    models.read_pth(legacy)
  assert not marker.exists()

  # The same payload as the state dict of a legacy file with a valid header.
  header = b"".join(pickle.dumps(v, protocol=2) for v in (
      0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}))
  legacy2 = tmp_path / "legacy2.pth"
  legacy2.write_bytes(header + payload + pickle.dumps([], protocol=2))
  with pytest.raises(models.UnsafePickleError, match=r"io\.open"):
    models.read_pth(legacy2)
  assert not marker.exists()

  zipped = tmp_path / "zipped.pth"
  _write_zip(zipped, payload, {})
  with pytest.raises(models.UnsafePickleError):
    models.read_pth(zipped)
  assert not marker.exists()


def test_read_pth_refuses_hand_written_global(tmp_path):
  marker = tmp_path / "pwned"
  # Protocol 0: GLOBAL os.system, then call it on a shell command that would create the marker.
  data = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
  path = tmp_path / "evil.pth"
  _write_zip(path, data, {})
  with pytest.raises(models.UnsafePickleError, match=r"os\.system") as info:
    models.read_pth(path)
  assert isinstance(info.value, pickle.UnpicklingError)
  assert not marker.exists()
  # A global smuggled inside an allowed rebuild call is refused too.
  data = (pickle.PROTO + b"\x02" + _global("torch._utils", "_rebuild_tensor_v2")
          + _tuple([_global("builtins", "eval") + _tuple([_str("1")]) + pickle.REDUCE])
          + pickle.REDUCE + pickle.STOP)
  _write_zip(path, data, {})
  with pytest.raises(models.UnsafePickleError, match=r"builtins\.eval"):
    models.read_pth(path)


@needs_weights
def test_read_pth_reads_the_legacy_weight_files():
  sd = models.read_pth(hub.weights_path(hub.get_spec("mobilenet_v2")))
  assert sd["features.0.0.weight"].shape == (32, 3, 3, 3)
  assert sd["features.0.0.weight"].dtype == np.float32
  assert sd["classifier.1.weight"].shape == (1000, 1280)
  assert sd["features.0.1.num_batches_tracked"].dtype == np.int64
  assert np.all(sd["features.0.1.running_var"] > 0)


# ---------------------------------------------------------------------------------------------
# Layer names, layer_sweep.


@needs_weights
def test_captured_layer_names_are_stable_and_equal_the_spec(pretrained):
  snapshot = json.loads(LAYERS_JSON.read_text())
  x = np.zeros((2, 32, 32, 3), np.float32)
  for name in VISION:
    spec_names = list(models.info(name)["layer_names"])
    assert spec_names == snapshot[name], name
    got = list(intermediates(pretrained[name], x, progress=False))
    assert got == spec_names, name
    blocks = [n for n in got if fnmatch.fnmatchcase(n, BLOCK_GLOB)]
    n_blocks = len(pretrained[name].blocks)
    assert blocks == [f"blocks/{i}" for i in range(n_blocks)], name
    assert BLOCK_GLOB in models.info(name)["description"]


@needs_weights
def test_layer_sweep_equals_transrate_many_on_captured_features(pretrained):
  model = pretrained["efficientnet_lite0"]
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(3), 8)
  base = np.stack([photo(p, 32) for p, _ in PHOTOS])
  x = np.clip(base[y] + 0.05 * rng.normal(size=(len(y), 32, 32, 3)), 0, 1).astype(np.float32)
  result = tj.layer_sweep(model, x, y, layers=BLOCK_GLOB, progress=False)
  feats = intermediates(model, x, layers=BLOCK_GLOB, progress=False)
  assert result.names == list(feats) == [f"blocks/{i}" for i in range(16)]
  want = tj.transrate_many(feats, y, progress=False)
  got = result.scores["transrate"]
  np.testing.assert_allclose(got, [float(want[k]) for k in result.names], rtol=1e-6, atol=1e-9)
  assert np.ptp(got) > 0


# ---------------------------------------------------------------------------------------------
# Weight cache, missing packages, random init.


@needs_weights
def test_second_load_reads_the_cache(tmp_path, monkeypatch):
  monkeypatch.setenv(cache_lib.CACHE_ENV, str(tmp_path))
  name = "mobilenet_v2"
  spec = hub.get_spec(name)
  calls = []

  def counting(path):
    calls.append(path)
    return spec.convert(path)

  monkeypatch.setitem(hub.specs(), name, dataclasses.replace(spec, convert=counting))
  first = models.load(name)
  digest = hub.file_sha256(hub.weights_path(spec))
  cached = tmp_path / f"{name}-{digest[:16]}.msgpack"
  assert len(calls) == 1 and cached.is_file()
  second = models.load(name)
  assert len(calls) == 1
  a, b = hub.state_paths(first), hub.state_paths(second)
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k].get_value()), np.asarray(b[k].get_value()))


def test_missing_weight_package_names_the_pip_command(monkeypatch):
  for name in VISION:
    spec = hub.get_spec(name)
    monkeypatch.setitem(hub.specs(), name, dataclasses.replace(
        spec, module="transrate_jax_no_such_weight_package"))
    with pytest.raises(models.WeightsNotInstalledError) as info:
      models.load(name)
    assert spec.pip in str(info.value) and spec.package in str(info.value)
    assert len(str(info.value).splitlines()) == 1
  assert "--no-deps" in hub.get_spec("mobilenet_v2").pip


def test_random_init_is_seeded_and_needs_no_weights(monkeypatch):
  name = "efficientnet_lite0"
  spec = hub.get_spec(name)
  monkeypatch.setitem(hub.specs(), name, dataclasses.replace(
      spec, module="transrate_jax_no_such_weight_package"))
  a = hub.state_paths(models.load(name, pretrained=False, seed=3))
  b = hub.state_paths(models.load(name, pretrained=False, seed=3))
  c = hub.state_paths(models.load(name, pretrained=False, seed=4))
  k = "blocks/3/depthwise/conv/kernel"
  np.testing.assert_array_equal(np.asarray(a[k].get_value()), np.asarray(b[k].get_value()))
  assert not np.array_equal(np.asarray(a[k].get_value()), np.asarray(c[k].get_value()))
  kernel = np.asarray(a["blocks/1/expand/conv/kernel"].get_value())  # [1, 1, 16, 96]
  assert kernel.shape == (1, 1, 16, 96)
  np.testing.assert_allclose(kernel.std(), np.sqrt(2.0 / 16), rtol=0.1)  # He, fan-in


def test_image_models_reject_wrong_input():
  model = models.load("mobilenet_v2", pretrained=False)
  with pytest.raises(ValueError, match=r"\[n, h, w, 3\]"):
    model(jnp.zeros((2, 32, 32)))
  with pytest.raises(ValueError, match="floats"):
    model(jnp.zeros((2, 32, 32, 3), jnp.uint8))


def test_info_describes_the_vision_models():
  assert set(VISION) <= set(models.list_models("image"))
  for name in VISION:
    info = models.info(name)
    assert info["modality"] == "image"
    assert info["input_size"] == {"efficientnet_lite0": 224, "efficientnet_lite1": 240,
                                  "efficientnet_lite2": 260, "mobilenet_v2": 224}[name]
    assert info["layer_names"][-1] == "output" and "blocks/0" in info["layer_names"]
    assert "ImageNet" in info["pretraining"]
