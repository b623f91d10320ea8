"""A small model zoo of Flax NNX models pretrained on scikit-learn's digits, shipped with the package.

Ten models differ in architecture (MLP, CNN, residual CNN with BatchNorm), width, depth and
source task (digits 0-4, parity, >= 5, digit mod 3, number of closed loops, left-right flipped
and rotated digits, shuffled labels). They are pretrained on the *source* images of digits
(splits 0/1 of ``digits.npz``) and scored on a *target* task built from disjoint images
(splits 2/3): by default classify digits 5-9, a label set none of the models was trained on.
Models transfer to it unequally: that is what a transferability score has to rank.

Data ship as ``transrate_jax/zoo/digits.npz`` (made by ``scripts/make_datasets.py`` from
scikit-learn, which is not needed at run time); weights as msgpack
(``flax.serialization.to_bytes``, no pickle) under ``transrate_jax/zoo/weights/`` with a JSON
manifest holding each model's configuration, source-task test accuracy and penultimate layer
name. ``scripts/make_zoo.py`` regenerates every file deterministically from a seed.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
from typing import Any

import numpy as np

SOURCE_TRAIN, SOURCE_TEST, TARGET_TRAIN, TARGET_TEST = 0, 1, 2, 3

# Label maps of the source tasks: digit -> class.
_LOOPS = np.array([1, 0, 0, 0, 1, 0, 1, 0, 2, 1])  # closed loops in the handwritten digit.

# name -> (description, number of classes)
SOURCE_TASKS = {
    "digits04": ("digits 0-4 only, 5 classes", 5),
    "parity": ("even vs odd digit, all images", 2),
    "ge5": ("digit >= 5 vs < 5, all images", 2),
    "mod3": ("digit mod 3, all images", 3),
    "loops": ("number of closed loops (0, 1, 2), all images", 3),
    "flip10": ("10 digits, images flipped left-right", 10),
    "rot90": ("10 digits, images rotated by 90 degrees", 10),
    "shuffled": ("10 classes of randomly permuted labels (a negative control)", 10),
}

TARGET_TASKS = {
    "digits59": "classify digits 5-9 (5 classes, labels 0-4) on held-out target images",
    "digits10": "classify all 10 digits on held-out target images",
}

# The zoo: name -> configuration. ``widths``: hidden widths (MLP), conv channels (CNN) or
# [channels, blocks] (ResCNN); ``neck``: width of the CNN's dense layer before the head.
ZOO: dict[str, dict[str, Any]] = {
    "mlp_s_digits04": dict(arch="mlp", widths=[32], task="digits04", epochs=60),
    "mlp_m_parity": dict(arch="mlp", widths=[128, 16], task="parity", epochs=40),
    "mlp_l_flip10": dict(arch="mlp", widths=[256, 128, 64], task="flip10", epochs=40),
    "mlp_m_shuffled": dict(arch="mlp", widths=[128, 64], task="shuffled", epochs=40),
    "cnn_s_digits04": dict(arch="cnn", widths=[8, 16], neck=32, task="digits04", epochs=40),
    "cnn_m_ge5": dict(arch="cnn", widths=[16, 32], neck=16, task="ge5", epochs=30),
    "cnn_l_rot90": dict(arch="cnn", widths=[24, 48], neck=64, task="rot90", epochs=30),
    "rescnn_s_mod3": dict(arch="rescnn", widths=[16, 1], task="mod3", epochs=30),
    "rescnn_m_loops": dict(arch="rescnn", widths=[24, 2], task="loops", epochs=30),
    "rescnn_l_digits04": dict(arch="rescnn", widths=[24, 3], task="digits04", epochs=30),
}

TRAIN_DEFAULTS = dict(batch_size=64, learning_rate=3e-3, weight_decay=1e-4)


# ---------------------------------------------------------------------------------------------
# Data.


def _files():
  return importlib.resources.files("transrate_jax.zoo")


@functools.lru_cache(maxsize=1)
def _digits_npz():
  with _files().joinpath("digits.npz").open("rb") as f:
    data = np.load(f)
    return {k: np.array(data[k]) for k in data.files}


def _images(raw: np.ndarray) -> np.ndarray:
  """uint8 [n, 8, 8] in 0..16 -> float32 [n, 8, 8, 1] in [0, 1]."""
  return (raw.astype(np.float32) / 16.0)[..., None]


def load_digits(split: str = "source"):
  """The shipped digits images with their 10-class labels.

  Args:
    split: ``"source"`` (the images the zoo was trained and tested on) or ``"target"`` (the
      disjoint images the target tasks use).

  Returns:
    ``(x_train [n, 8, 8, 1] float32 in [0, 1], y_train [n] int32, x_test, y_test)``.
  """
  codes = {"source": (SOURCE_TRAIN, SOURCE_TEST), "target": (TARGET_TRAIN, TARGET_TEST)}
  if split not in codes:
    raise ValueError(f"split must be 'source' or 'target'; got {split!r}.")
  d = _digits_npz()
  out = []
  for code in codes[split]:
    keep = d["split"] == code
    out += [_images(d["images"][keep]), d["labels"][keep].astype(np.int32)]
  return tuple(out)


def _source_transform(task: str, x: np.ndarray, y: np.ndarray, *, seed: int = 0):
  if task == "digits04":
    keep = y < 5
    return x[keep], y[keep]
  if task == "parity":
    return x, y % 2
  if task == "ge5":
    return x, (y >= 5).astype(np.int32)
  if task == "mod3":
    return x, y % 3
  if task == "loops":
    return x, _LOOPS[y].astype(np.int32)
  if task == "flip10":
    return x[:, :, ::-1], y
  if task == "rot90":
    return np.rot90(x, k=1, axes=(1, 2)), y
  if task == "shuffled":
    return x, np.random.default_rng(seed).integers(0, 10, size=len(y)).astype(np.int32)
  raise ValueError(f"unknown source task {task!r}; known: {', '.join(SOURCE_TASKS)}.")


def load_source_task(task: str):
  """A zoo source task on the source images: ``(x_train, y_train, x_test, y_test)``."""
  x_tr, y_tr, x_te, y_te = load_digits("source")
  x_tr, y_tr = _source_transform(task, x_tr, y_tr, seed=1)
  x_te, y_te = _source_transform(task, x_te, y_te, seed=2)
  return (np.ascontiguousarray(x_tr), y_tr.astype(np.int32), np.ascontiguousarray(x_te),
          y_te.astype(np.int32))


def load_target_task(name: str = "digits59"):
  """A target task on images no zoo model has seen: ``(x_train, y_train, x_test, y_test)``.

  Args:
    name: ``"digits59"`` (default): digits 5-9 relabelled 0-4, a label set no zoo model was
      trained on (about 225 train and 135 test images); ``"digits10"``: all ten digits
      (449 train, 270 test).

  Returns:
    ``(x_train [n, 8, 8, 1] float32, y_train [n] int32, x_test, y_test)``.
  """
  if name not in TARGET_TASKS:
    raise ValueError(f"unknown target task {name!r}; known: {', '.join(TARGET_TASKS)}.")
  x_tr, y_tr, x_te, y_te = load_digits("target")
  if name == "digits59":
    keep_tr, keep_te = y_tr >= 5, y_te >= 5
    return x_tr[keep_tr], y_tr[keep_tr] - 5, x_te[keep_te], y_te[keep_te] - 5
  return x_tr, y_tr, x_te, y_te


# ---------------------------------------------------------------------------------------------
# Architectures (Flax NNX). Activations live inside block modules, so each block's captured
# output is a post-activation feature map.


def _architectures():
  from flax import nnx  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  class DenseBlock(nnx.Module):
    """Linear + ReLU."""

    def __init__(self, din, dout, *, rngs):
      self.linear = nnx.Linear(din, dout, rngs=rngs)

    def __call__(self, x):
      return nnx.relu(self.linear(x))

  class ConvBlock(nnx.Module):
    """3x3 conv + ReLU, then 2x2 average pooling when ``downsample``."""

    def __init__(self, cin, cout, *, downsample, rngs):
      self.conv = nnx.Conv(cin, cout, (3, 3), rngs=rngs)
      self.downsample = downsample

    def __call__(self, x):
      x = nnx.relu(self.conv(x))
      if self.downsample:
        x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
      return x

  class ResBlock(nnx.Module):
    """relu(x + bn(conv(relu(bn(conv(x))))))."""

    def __init__(self, c, *, rngs):
      self.conv1 = nnx.Conv(c, c, (3, 3), use_bias=False, rngs=rngs)
      self.bn1 = nnx.BatchNorm(c, rngs=rngs)
      self.conv2 = nnx.Conv(c, c, (3, 3), use_bias=False, rngs=rngs)
      self.bn2 = nnx.BatchNorm(c, rngs=rngs)

    def __call__(self, x):
      h = nnx.relu(self.bn1(self.conv1(x)))
      return nnx.relu(x + self.bn2(self.conv2(h)))

  class GlobalPool(nnx.Module):
    """Mean over the spatial axes: [n, h, w, c] -> [n, c]."""

    def __call__(self, x):
      return jnp.mean(x, axis=(1, 2))

  class MLP(nnx.Module):
    """Flatten -> DenseBlock x len(widths) -> Linear head."""

    def __init__(self, widths, num_classes, *, rngs):
      dims = [64, *widths]
      self.blocks = nnx.List([DenseBlock(a, b, rngs=rngs) for a, b in zip(dims, dims[1:])])
      self.head = nnx.Linear(dims[-1], num_classes, rngs=rngs)

    def __call__(self, x):
      x = x.reshape(x.shape[0], -1)
      for block in self.blocks:
        x = block(x)
      return self.head(x)

  class CNN(nnx.Module):
    """ConvBlocks (the first downsamples 8x8 -> 4x4) -> GlobalPool -> DenseBlock neck -> head."""

    def __init__(self, widths, neck, num_classes, *, rngs):
      chans = [1, *widths]
      self.blocks = nnx.List([
          ConvBlock(a, b, downsample=(i == 0), rngs=rngs)
          for i, (a, b) in enumerate(zip(chans, chans[1:]))])
      self.pool = GlobalPool()
      self.neck = DenseBlock(chans[-1], neck, rngs=rngs)
      self.head = nnx.Linear(neck, num_classes, rngs=rngs)

    def __call__(self, x):
      for block in self.blocks:
        x = block(x)
      return self.head(self.neck(self.pool(x)))

  class ResCNN(nnx.Module):
    """ConvBlock stem -> ResBlock x depth (BatchNorm) -> GlobalPool -> head."""

    def __init__(self, width, depth, num_classes, *, rngs):
      self.stem = ConvBlock(1, width, downsample=False, rngs=rngs)
      self.blocks = nnx.List([ResBlock(width, rngs=rngs) for _ in range(depth)])
      self.pool = GlobalPool()
      self.head = nnx.Linear(width, num_classes, rngs=rngs)

    def __call__(self, x):
      x = self.stem(x)
      for block in self.blocks:
        x = block(x)
      return self.head(self.pool(x))

  return MLP, CNN, ResCNN


def build(config: dict[str, Any], *, seed: int = 0):
  """A freshly initialised NNX model for a zoo ``config`` (train mode)."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  mlp, cnn, rescnn = _architectures_cached()
  num_classes = SOURCE_TASKS[config["task"]][1]
  rngs = nnx.Rngs(seed)
  if config["arch"] == "mlp":
    return mlp(config["widths"], num_classes, rngs=rngs)
  if config["arch"] == "cnn":
    return cnn(config["widths"], config["neck"], num_classes, rngs=rngs)
  if config["arch"] == "rescnn":
    width, depth = config["widths"]
    return rescnn(width, depth, num_classes, rngs=rngs)
  raise ValueError(f"unknown architecture {config['arch']!r}.")


_architectures_cached = functools.lru_cache(maxsize=1)(_architectures)


def penultimate(config: dict[str, Any]) -> str:
  """The capture name of the features the head reads."""
  if config["arch"] == "mlp":
    return f"blocks/{len(config['widths']) - 1}"
  return "neck" if config["arch"] == "cnn" else "pool"


# ---------------------------------------------------------------------------------------------
# Training (used by scripts/make_zoo.py and the determinism test).


def _saved_state(model):
  from flax import nnx  # pylint: disable=import-outside-toplevel
  return nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))


def to_bytes(model) -> bytes:
  """Parameters and batch statistics of an NNX model as msgpack bytes."""
  from flax import nnx, serialization  # pylint: disable=import-outside-toplevel
  return serialization.to_bytes(nnx.to_pure_dict(_saved_state(model)))


def from_bytes(model, data: bytes):
  """Loads :func:`to_bytes` output into ``model`` in place; returns it."""
  from flax import nnx, serialization  # pylint: disable=import-outside-toplevel
  state = _saved_state(model)
  pure = serialization.from_bytes(nnx.to_pure_dict(state), data)
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)
  return model


def train(config: dict[str, Any], *, seed: int = 0, epochs: int | None = None):
  """Trains a zoo model on its source task; deterministic given ``seed``.

  AdamW (``TRAIN_DEFAULTS``), softmax cross-entropy, shuffled mini-batches from a NumPy
  generator seeded with ``seed``; the whole run is one ``lax.scan`` under one ``jax.jit``.

  Returns:
    ``(model in eval mode, source-task test accuracy)``.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  epochs = config["epochs"] if epochs is None else epochs
  x_tr, y_tr, x_te, y_te = load_source_task(config["task"])
  model = build(config, seed=seed)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optax.adamw(TRAIN_DEFAULTS["learning_rate"], weight_decay=TRAIN_DEFAULTS["weight_decay"])
  opt_state = tx.init(params)
  bs = TRAIN_DEFAULTS["batch_size"]
  gen = np.random.default_rng(seed)
  steps = len(x_tr) // bs
  idx = np.concatenate([gen.permutation(len(x_tr))[:steps * bs].reshape(steps, bs)
                        for _ in range(epochs)])
  x_tr_j, y_tr_j = jnp.asarray(x_tr), jnp.asarray(y_tr)

  from transrate_jax._src import training  # pylint: disable=import-outside-toplevel

  run = jax.jit(functools.partial(training.scan_train, graphdef=graphdef, tx=tx))
  params, rest, _ = run(params, rest, opt_state, jnp.asarray(idx), x_tr_j, y_tr_j)
  nnx.update(model, params, rest)
  model.eval()
  return model, accuracy(model, x_te, y_te)


def accuracy(model, x, y) -> float:
  """Top-1 accuracy of an NNX classifier (in its current mode) on ``(x, y)``."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  logits = nnx.jit(lambda m, v: m(v))(model, x)
  return float(np.mean(np.asarray(logits).argmax(-1) == np.asarray(y)))


# ---------------------------------------------------------------------------------------------
# Loading.


@functools.lru_cache(maxsize=1)
def _manifest_cached() -> dict[str, Any]:
  return json.loads(_files().joinpath("manifest.json").read_text())


def manifest() -> dict[str, Any]:
  """The zoo manifest (a copy): ``{"models": {name: info}, ...}``."""
  return copy.deepcopy(_manifest_cached())


def list_models() -> list[str]:
  """Names of the zoo models, in manifest order."""
  return list(_manifest_cached()["models"])


def info(name: str) -> dict[str, Any]:
  """One model's manifest entry: architecture, source task, ``source_test_accuracy``,
  ``penultimate`` (the capture name of the features its head reads), ``layers``, file, sha256."""
  models = _manifest_cached()["models"]
  if name not in models:
    raise ValueError(f"unknown zoo model {name!r}; available: {', '.join(models)}.")
  return copy.deepcopy(models[name])


def load(name: str):
  """A pretrained zoo model: a Flax NNX module in eval mode.

  Example:
    >>> from transrate_jax import zoo
    >>> from transrate_jax.capture import intermediates
    >>> model = zoo.load("cnn_s_digits04")
    >>> x_train, y_train, x_test, y_test = zoo.load_target_task()
    >>> feats = intermediates(model, x_train, progress=False)  # {layer: [n, d]}
  """
  import jax  # pylint: disable=import-outside-toplevel
  from flax import nnx, serialization  # pylint: disable=import-outside-toplevel
  entry = info(name)
  data = _files().joinpath("weights", entry["file"]).read_bytes()
  # Build abstractly (no initialiser runs), then fill every variable from the weights file.
  abstract = nnx.eval_shape(lambda: build(entry))
  graphdef, state = nnx.split(abstract)
  saved = _saved_state(abstract)
  restored = serialization.from_bytes(nnx.to_pure_dict(saved), data)
  nnx.replace_by_pure_dict(saved, jax.tree.map(jax.numpy.asarray, restored))
  model = nnx.merge(graphdef, state)
  nnx.update(model, saved)
  if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(nnx.state(model))):
    raise ValueError(f"the zoo weights of {name!r} do not cover every variable.")
  model.eval()
  return model
