"""Fine-tuning ground truth for the zoo: transfer a pre-trained model (or its first layers) to a target.

The expensive ground truth of transferability (Huang et al., "Frustratingly easy transferability
estimation", ICML 2022, Section 5): replace the source head by a fresh linear head with the
target's class count, train every weight on the target training split, report the target test
accuracy. For *layer* selection, transfer only the model up to layer ``k``:

* ``mode="drop"`` (default): the layers above ``k`` are removed; layer ``k``'s output is
  mean-pooled over its spatial axes (exactly the features the scores see, see
  :func:`transrate_jax.capture.intermediates`) and read by the new head.
* ``mode="reinit"``: the architecture is kept whole, the layers above ``k`` are re-initialised
  (fresh weights, fresh BatchNorm statistics) and the new head reads the penultimate features.

Cut points (``cut_points(config)``) are the capture names of the zoo architectures in forward
order: ``blocks/i/linear`` (pre-activation) and ``blocks/i`` (MLP); ``blocks/i/conv``,
``blocks/i``, ``pool``, ``neck/linear``, ``neck`` (CNN); ``stem/conv``, ``stem``,
``blocks/i/conv1``, ``blocks/i/bn1``, ``blocks/i/conv2``, ``blocks/i/bn2``, ``blocks/i``,
``pool`` (ResCNN). Training: AdamW, softmax cross-entropy, shuffled mini-batches from a NumPy
generator seeded with ``seed`` (BatchNorm in train mode), the whole run one ``lax.scan`` in one
compiled program cached per architecture and shape, so repeated seeds do not recompile.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax import traverse_util

from transrate_jax._src import zoo as zoo_lib
from transrate_jax._src.training import scan_train

MODES = ("drop", "reinit")

__all__ = ("cut_points", "forward_to", "finetune_accuracy", "finetune_head_accuracy",
           "transfer_model", "MODES")


def cut_points(config: dict[str, Any]) -> list:
  """Capture names of a zoo architecture where a transfer can be cut, in forward order."""
  arch = config["arch"]
  if arch == "mlp":
    return [n for i in range(len(config["widths"])) for n in (f"blocks/{i}/linear", f"blocks/{i}")]
  if arch == "cnn":
    return ([n for i in range(len(config["widths"])) for n in (f"blocks/{i}/conv", f"blocks/{i}")]
            + ["pool", "neck/linear", "neck"])
  if arch == "rescnn":
    names = ["stem/conv", "stem"]
    for i in range(config["widths"][1]):
      names += [f"blocks/{i}/{m}" for m in ("conv1", "bn1", "conv2", "bn2")] + [f"blocks/{i}"]
    return names + ["pool"]
  raise ValueError(f"unknown architecture {arch!r}.")


def forward_to(model, x, *, arch: str, layer: str) -> jax.Array:
  """Runs a zoo model (any mode) on ``x`` [n, 8, 8, 1] up to ``layer``; its raw output.

  Returns the unpooled output ([n, d] or [n, h, w, c]); ``pool(out, "mean")`` equals the capture
  of that layer (the test checks it).
  """
  if arch == "mlp":
    h = x.reshape(x.shape[0], -1)
    for i, block in enumerate(model.blocks):
      h = block.linear(h)
      if layer == f"blocks/{i}/linear":
        return h
      h = nnx.relu(h)
      if layer == f"blocks/{i}":
        return h
  elif arch == "cnn":
    h = x
    for i, block in enumerate(model.blocks):
      h = _conv(block.conv, h)
      if layer == f"blocks/{i}/conv":
        return h
      h = nnx.relu(h)
      if block.downsample:
        h = nnx.avg_pool(h, (2, 2), strides=(2, 2))
      if layer == f"blocks/{i}":
        return h
    h = jnp.mean(h, axis=(1, 2))
    if layer == "pool":
      return h
    h = model.neck.linear(h)
    if layer == "neck/linear":
      return h
    h = nnx.relu(h)
    if layer == "neck":
      return h
  elif arch == "rescnn":
    h = _conv(model.stem.conv, x)
    if layer == "stem/conv":
      return h
    h = nnx.relu(h)
    if layer == "stem":
      return h
    for i, block in enumerate(model.blocks):
      p = f"blocks/{i}/"
      r = _conv(block.conv1, h)
      if layer == p + "conv1":
        return r
      r = block.bn1(r)
      if layer == p + "bn1":
        return r
      r = _conv(block.conv2, nnx.relu(r))
      if layer == p + "conv2":
        return r
      r = block.bn2(r)
      if layer == p + "bn2":
        return r
      h = nnx.relu(h + r)
      if layer == f"blocks/{i}":
        return h
    h = jnp.mean(h, axis=(1, 2))
    if layer == "pool":
      return h
  raise ValueError(f"layer {layer!r} is not a cut point of a {arch!r} zoo model.")


def _conv(conv, h):
  """A zoo ``nnx.Conv`` (3x3, stride 1, SAME) as im2col + one matmul.

  Same values as ``conv(h)``; XLA:CPU runs the gradient of this form tens of times faster than
  that of a native convolution on these tiny images.
  """
  kh, kw, cin, cout = conv.kernel[...].shape
  ph, pw = kh // 2, kw // 2
  n, hh, ww, _ = h.shape
  hp = jnp.pad(h, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
  patches = jnp.concatenate([hp[:, i:i + hh, j:j + ww, :] for i in range(kh) for j in range(kw)],
                            axis=-1)
  out = jnp.dot(patches.reshape(n * hh * ww, kh * kw * cin),
                conv.kernel[...].reshape(kh * kw * cin, cout)).reshape(n, hh, ww, cout)
  if conv.bias is not None:
    out = out + conv.bias[...]
  return out


def _mean_pool(h):
  return h if h.ndim == 2 else jnp.mean(h.reshape(h.shape[0], -1, h.shape[-1]), axis=1)


class Transfer(nnx.Module):
  """A zoo backbone cut at ``layer``, mean-pooled, read by a fresh linear head."""

  def __init__(self, backbone, *, arch: str, layer: str, width: int, num_classes: int, rngs):
    self.backbone = backbone
    self.arch = arch
    self.layer = layer
    self.head = nnx.Linear(width, num_classes, rngs=rngs)

  def __call__(self, x):
    return self.head(_mean_pool(forward_to(self.backbone, x, arch=self.arch, layer=self.layer)))


def _reinit_above(model, config, layer: str, *, seed: int):
  """A copy of ``model`` whose parameter-holding modules after ``layer`` are re-initialised."""
  order = cut_points(config)
  stop = order.index(layer)
  fresh = zoo_lib.build(config, seed=seed)
  fresh.eval()
  filt = nnx.Any(nnx.Param, nnx.BatchStat)
  old = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, filt)))
  state = nnx.state(fresh, filt)
  new = traverse_util.flatten_dict(nnx.to_pure_dict(state))
  for path, value in old.items():
    module = "/".join(str(p) for p in path[:-1])
    if module in order and order.index(module) <= stop:
      new[path] = value
  nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(new))
  nnx.update(fresh, state)
  return fresh


def transfer_model(model, config: dict[str, Any], *, num_classes: int, layer: Optional[str] = None,
                   mode: str = "drop", seed: int = 0):
  """The network that is trained on the target (train mode): a :class:`Transfer` module.

  Args:
    model: the pre-trained zoo model (not modified).
    config: its zoo configuration (``zoo.info(name)``).
    num_classes: target class count (keyword-only int; the head's width).
    layer: the cut point (default: the penultimate layer, i.e. ordinary fine-tuning).
    mode: ``"drop"`` (layers above ``layer`` removed) or ``"reinit"`` (re-initialised).
    seed: seed of the new head (and of the re-initialised layers).
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}; got {mode!r}.")
  penultimate = zoo_lib.penultimate(config)
  layer = penultimate if layer is None else layer
  if layer not in cut_points(config):
    raise ValueError(f"layer {layer!r} is not a cut point of {config['arch']!r}; choose from "
                     f"{cut_points(config)}.")
  if mode == "reinit":
    backbone, read = _reinit_above(model, config, layer, seed=seed + 1000), penultimate
  else:
    backbone, read = nnx.clone(model), layer
  backbone.eval()
  probe = forward_to(backbone, jnp.zeros((1, 8, 8, 1), jnp.float32), arch=config["arch"],
                     layer=read)
  net = Transfer(backbone, arch=config["arch"], layer=read, width=int(probe.shape[-1]),
                 num_classes=num_classes, rngs=nnx.Rngs(seed))
  net.train()
  return net


@functools.partial(jax.jit, static_argnames=("graphdef", "tx"))
def _train_eval(params, rest, idx, x_tr, y_tr, x_te, y_te, *, graphdef, tx):
  params, rest, losses = scan_train(params, rest, tx.init(params), idx, x_tr, y_tr,
                                    graphdef=graphdef, tx=tx)
  m = nnx.merge(graphdef, params, rest, copy=True)
  m.eval()
  pred = jnp.argmax(m(x_te), axis=-1)
  return jnp.mean((pred == y_te).astype(jnp.float32)), losses


@functools.lru_cache(maxsize=None)
def _optimizer(learning_rate: float, weight_decay: float):
  return optax.adamw(learning_rate, weight_decay=weight_decay)


def finetune_accuracy(model, config: dict[str, Any], x_train, y_train, x_test, y_test, *,
                      num_classes: int, layer: Optional[str] = None, mode: str = "drop",
                      epochs: int = 30, batch_size: int = 32, learning_rate: float = 1e-3,
                      weight_decay: float = 1e-4, seeds: Sequence[int] = (0,)) -> float:
  """Target test accuracy after transferring a zoo model and training all its weights.

  For each seed: a fresh head (and, for ``mode="reinit"``, fresh layers above ``layer``), AdamW
  on softmax cross-entropy over ``epochs`` passes of shuffled mini-batches of ``batch_size``
  (the last incomplete batch of an epoch is dropped); top-1 accuracy on the test split in eval
  mode. Returns the mean over seeds.

  Args:
    model: a pre-trained zoo model (``zoo.load(name)``), not modified.
    config: its configuration (``zoo.info(name)``).
    x_train: [n, 8, 8, 1] target training images; y_train: [n] int labels in 0..C-1.
    x_test: [m, 8, 8, 1]; y_test: [m].
    num_classes: C (keyword-only int).
    layer: cut point (default: penultimate, i.e. ordinary fine-tuning); see :func:`cut_points`.
    mode: ``"drop"`` or ``"reinit"`` (see the module docstring).
    epochs, batch_size: training length (keyword-only ints).
    learning_rate, weight_decay: AdamW settings.
    seeds: seeds averaged over (head initialisation and batch order).

  Returns:
    Mean test accuracy, a Python float in [0, 1].
  """
  def make(seed):
    return transfer_model(model, config, num_classes=num_classes, layer=layer, mode=mode,
                          seed=seed)

  return float(np.mean(_seed_runs(make, x_train, y_train, x_test, y_test, epochs=epochs,
                                  batch_size=batch_size, learning_rate=learning_rate,
                                  weight_decay=weight_decay, seeds=seeds)))


def _seed_runs(make_net, x_train, y_train, x_test, y_test, *, epochs: int, batch_size: int,
               learning_rate: float, weight_decay: float, seeds: Sequence[int]) -> list:
  """Test accuracy of ``make_net(seed)`` (a module in train mode) trained once per seed.

  AdamW on softmax cross-entropy over ``epochs`` passes of shuffled mini-batches of
  ``batch_size`` from a NumPy generator seeded with ``seed`` (the last incomplete batch of an
  epoch is dropped), the whole run one compiled ``lax.scan``; top-1 accuracy in eval mode.
  """
  x_tr, y_tr = jnp.asarray(x_train, jnp.float32), jnp.asarray(y_train, jnp.int32)
  x_te, y_te = jnp.asarray(x_test, jnp.float32), jnp.asarray(y_test, jnp.int32)
  n = x_tr.shape[0]
  if batch_size > n:
    raise ValueError(f"batch_size {batch_size} exceeds the {n} training samples.")
  tx = _optimizer(float(learning_rate), float(weight_decay))
  steps = n // batch_size
  accs = []
  for seed in seeds:
    graphdef, params, rest = nnx.split(make_net(int(seed)), nnx.Param, ...)
    gen = np.random.default_rng(int(seed))
    idx = np.concatenate([gen.permutation(n)[:steps * batch_size].reshape(steps, batch_size)
                          for _ in range(epochs)])
    acc, _ = _train_eval(params, rest, jnp.asarray(idx), x_tr, y_tr, x_te, y_te,
                         graphdef=graphdef, tx=tx)
    accs.append(float(acc))
  return accs


def finetune_head_accuracy(model, x_train, y_train, x_test, y_test, *, num_classes: int,
                           head: str = "classifier", epochs: int = 5, batch_size: int = 32,
                           learning_rate: float = 1e-3, weight_decay: float = 1e-4,
                           bn_momentum: Optional[float] = 0.9,
                           seeds: Sequence[int] = (0,)) -> list:
  """Target test accuracy of a backbone fine-tuned with a fresh head, all weights trained.

  The fine-tuning ground truth for any NNX model whose classifier is the linear submodule
  ``model.<head>`` (the ported backbones of :mod:`transrate_jax.models` name it
  ``classifier``): a copy of the model gets a new ``nnx.Linear(in_features, num_classes)`` in
  its place, then every weight is trained exactly as in :func:`finetune_accuracy` (AdamW on
  softmax cross-entropy, ``epochs`` passes of shuffled mini-batches, BatchNorm and dropout in
  train mode (dropout seeded by ``seed``), the whole run one compiled ``lax.scan``); top-1
  accuracy on the test split in eval mode.

  Args:
    model: an NNX module, not modified.
    x_train: [n, ...] target training inputs; y_train: [n] int labels in 0..C-1.
    x_test: [m, ...]; y_test: [m].
    num_classes: C (keyword-only int; the new head's width).
    head: attribute name of the linear head to replace.
    epochs, batch_size: training length (keyword-only ints).
    learning_rate, weight_decay: AdamW settings.
    bn_momentum: BatchNorm momentum while fine-tuning (None keeps the model's). The default 0.9
      (PyTorch's 0.1) lets the running statistics, which eval mode uses, follow the target data
      within a short run; with the ported backbones' 0.99 they would still be mostly ImageNet's
      after a few hundred steps.
    seeds: one run per seed (head initialisation and batch order).

  Returns:
    The test accuracy of each seed's run, a list of Python floats in [0, 1].
  """
  old = getattr(model, head, None)
  if not isinstance(old, nnx.Linear):
    raise ValueError(f"the model has no nnx.Linear head named {head!r}.")

  def make(seed):
    net = nnx.clone(model)
    setattr(net, head, nnx.Linear(old.in_features, num_classes, rngs=nnx.Rngs(seed)))
    for _, module in nnx.iter_modules(net):
      if isinstance(module, nnx.Dropout) and module.rngs is None:
        module.rngs = nnx.Rngs(dropout=seed).dropout  # dropout is on while training
      if isinstance(module, nnx.BatchNorm) and bn_momentum is not None:
        module.momentum = float(bn_momentum)
    net.train()
    return net

  return _seed_runs(make, x_train, y_train, x_test, y_test, epochs=epochs, batch_size=batch_size,
                    learning_rate=learning_rate, weight_decay=weight_decay, seeds=seeds)
