"""Building blocks of the mobile image backbones (EfficientNet-Lite, MobileNetV2) in Flax NNX.

Both families are a stem convolution, a list of inverted-residual blocks (1x1 expansion, depthwise
kxk, linear 1x1 projection, identity shortcut when shape allows) and a 1x1 head convolution,
followed by global average pooling and a linear classifier. :class:`MobileBackbone` builds either
from a static list of :class:`BlockConfig` and records nothing but arrays; every stage is its own
submodule so ``transrate_jax.capture.intermediates`` names it.

Layer names that capture reports (children before parents, in call order)::

  stem/conv, stem/bn, stem,
  blocks/{i}/expand/conv, blocks/{i}/expand/bn, blocks/{i}/expand,      (when expansion > 1)
  blocks/{i}/depthwise/conv, blocks/{i}/depthwise/bn, blocks/{i}/depthwise,
  blocks/{i}/project_conv, blocks/{i}/project_bn, blocks/{i},
  head/conv, head/bn, head, dropout, classifier, output

No name inside a block ends with a digit, so the glob ``"blocks/*[0-9]"`` selects exactly the
block outputs (post-residual), the stages a layer sweep compares.

Weights are NHWC / HWIO; depthwise convolutions are ``nnx.Conv`` with ``feature_group_count``
equal to the channels, computed by :func:`depthwise_conv` (fast on CPU).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx



def _numpy_normal(key, shape, dtype, std: float):
  """Normal(0, std) drawn by NumPy from the 64 bits of ``key``, or by JAX when ``key`` is traced.

  Eager JAX sampling compiles one program per parameter shape (tens of seconds for a backbone's
  hundred-odd shapes on a CPU); NumPy draws the same seeded tensors in milliseconds. Under a
  transform (``nnx.eval_shape``, ``nnx.jit``) the key is abstract and JAX samples instead.
  """
  if isinstance(key, jax.core.Tracer):
    return std * jax.random.normal(key, shape, dtype)
  bits = np.asarray(jax.random.key_data(key)).astype(np.uint64).ravel()
  seed = [int(b) for b in bits]
  draw = np.random.default_rng(seed).standard_normal(shape)
  return jnp.asarray(draw * std, dtype)


def conv_init(key, shape, dtype=jnp.float32):
  """He (Kaiming) normal initialisation on fan-in, for convolutions followed by ReLU6.

  ``shape`` is ``[kh, kw, in / groups, out]``: fan-in ``kh * kw * in / groups``.
  """
  fan_in = int(np.prod(shape[:-1]))
  return _numpy_normal(key, shape, dtype, float(np.sqrt(2.0 / fan_in)))


def linear_init(key, shape, dtype=jnp.float32):
  """Normal(0, 0.01), as torchvision initialises its MobileNetV2 classifier."""
  return _numpy_normal(key, shape, dtype, 0.01)


CONV_INIT = conv_init
LINEAR_INIT = linear_init

BLOCK_GLOB = "blocks/*[0-9]"


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """One inverted-residual block.

  Attributes:
    cin: input channels.
    cout: output channels.
    expand: expansion ratio of the 1x1 convolution (1: no expansion convolution).
    kernel: depthwise kernel side.
    stride: depthwise stride (1 or 2).
  """
  cin: int
  cout: int
  expand: int
  kernel: int
  stride: int

  @property
  def hidden(self) -> int:
    return self.cin * self.expand

  @property
  def residual(self) -> bool:
    return self.stride == 1 and self.cin == self.cout


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
  """A whole backbone.

  Attributes:
    blocks: the inverted-residual blocks in order.
    stem: stem output channels (3x3, stride 2).
    head: head output channels (1x1).
    num_classes: classifier outputs.
    mean, std: per-channel input normalisation, in the [0, 1] units of the model input:
      the model computes ``(x - mean) / std``.
    bn_eps: BatchNorm epsilon.
    same_padding: TF "SAME" padding (stride 2 pads more on the bottom/right) if True, else
      PyTorch's symmetric ``(k - 1) // 2``.
    dropout: dropout rate before the classifier (training only).
  """
  blocks: Tuple[BlockConfig, ...]
  stem: int
  head: int
  num_classes: int
  mean: Tuple[float, float, float]
  std: Tuple[float, float, float]
  bn_eps: float
  same_padding: bool
  dropout: float = 0.2


def relu6(x):
  return jnp.clip(x, 0, 6)


def _padding(kernel: int, same: bool):
  if same:
    return "SAME"
  p = (kernel - 1) // 2
  return ((p, p), (p, p))


def depthwise_conv(inputs, kernel, window_strides, padding, lhs_dilation=None,
                   rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                   precision=None, **kwargs):
  """``lax.conv_general_dilated`` for depthwise NHWC convolutions, as ``k * k`` shifted products.

  XLA's CPU backend runs grouped convolutions with one group per channel 15-70x slower than this
  sum of strided slices times per-channel weights, which fuses into one loop. Anything that is
  not a plain depthwise NHWC/HWIO convolution (dilation, other layouts, groups) goes to
  ``lax.conv_general_dilated`` unchanged.

  Args:
    inputs: [n, h, w, c].
    kernel: [kh, kw, 1, c].
    window_strides: (sh, sw).
    padding: "SAME", "VALID" or ((top, bottom), (left, right)).

  Returns:
    [n, h', w', c].
  """
  nhwc = ("NHWC", "HWIO", "NHWC")
  plain = (inputs.ndim == 4 and kernel.ndim == 4
           and (dimension_numbers is None
                or jax.lax.conv_dimension_numbers(inputs.shape, kernel.shape, dimension_numbers)
                == jax.lax.conv_dimension_numbers(inputs.shape, kernel.shape, nhwc))
           and all(d == 1 for d in (lhs_dilation or (1, 1)))
           and all(d == 1 for d in (rhs_dilation or (1, 1)))
           and kernel.shape[2] == 1
           and feature_group_count == inputs.shape[-1] == kernel.shape[-1])
  if not plain:
    return jax.lax.conv_general_dilated(
        inputs, kernel, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision, **kwargs)
  kh, kw = kernel.shape[:2]
  sh, sw = window_strides
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(inputs.shape[1:3], (kh, kw), (sh, sw), padding)
  (pt, pb), (pl, pr) = padding
  x = jnp.pad(inputs, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  n, hp, wp, c = x.shape
  ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
  out = None
  for i in range(kh):
    for j in range(kw):
      tap = jax.lax.slice(x, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                          (1, sh, sw, 1)) * kernel[i, j, 0]
      out = tap if out is None else out + tap
  return out


def check_images(x) -> jax.Array:
  """``x`` as a JAX array, checked to be ``[n, h, w, 3]`` floating-point images.

  Raises:
    ValueError: another shape, or an integer dtype.
  """
  x = jnp.asarray(x)
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"an image model takes [n, h, w, 3] RGB images in [0, 1]; got shape "
                     f"{x.shape}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"images must be floats in [0, 1]; got dtype {x.dtype}.")
  return x


class ConvBNAct(nnx.Module):
  """Convolution (no bias), BatchNorm and optionally ReLU6: ``[n, h, w, cin] -> [n, h', w', cout]``.

  Its output (post-activation) is what capture records under this module's name.
  """

  def __init__(self, cin: int, cout: int, kernel: int, *, stride: int = 1, groups: int = 1,
               act: bool = True, eps: float, same: bool, rngs: nnx.Rngs):
    self.conv = nnx.Conv(cin, cout, (kernel, kernel), strides=stride,
                         padding=_padding(kernel, same), feature_group_count=groups,
                         use_bias=False, kernel_init=CONV_INIT,
                         conv_general_dilated=(depthwise_conv if groups > 1
                                               else jax.lax.conv_general_dilated),
                         rngs=rngs)
    self.bn = nnx.BatchNorm(cout, epsilon=eps, momentum=0.99, rngs=rngs)
    self.act = act

  def __call__(self, x):
    y = self.bn(self.conv(x))
    return relu6(y) if self.act else y


class InvertedResidual(nnx.Module):
  """Expand (1x1, ReLU6), depthwise (kxk, ReLU6), project (1x1, linear), plus the shortcut.

  ``[n, h, w, cin] -> [n, h / stride, w / stride, cout]``.
  """

  def __init__(self, cfg: BlockConfig, *, eps: float, same: bool, rngs: nnx.Rngs):
    self.residual = cfg.residual
    hidden = cfg.hidden
    self.expand = (ConvBNAct(cfg.cin, hidden, 1, eps=eps, same=same, rngs=rngs)
                   if cfg.expand != 1 else None)
    self.depthwise = ConvBNAct(hidden, hidden, cfg.kernel, stride=cfg.stride, groups=hidden,
                               eps=eps, same=same, rngs=rngs)
    self.project_conv = nnx.Conv(hidden, cfg.cout, (1, 1), use_bias=False,
                                 kernel_init=CONV_INIT, rngs=rngs)
    self.project_bn = nnx.BatchNorm(cfg.cout, epsilon=eps, momentum=0.99, rngs=rngs)

  def __call__(self, x):
    y = x if self.expand is None else self.expand(x)
    y = self.project_bn(self.project_conv(self.depthwise(y)))
    return x + y if self.residual else y


class MobileBackbone(nnx.Module):
  """Stem, inverted-residual blocks, head, global average pool, dropout, classifier.

  Call: ``model(x)`` with ``x`` ``[n, h, w, 3]`` RGB floats in [0, 1] (any ``h, w``; the model
  normalises inside) returns logits ``[n, num_classes]``.
  """

  def __init__(self, cfg: BackboneConfig, *, rngs: nnx.Rngs):
    eps, same = cfg.bn_eps, cfg.same_padding
    self.mean = tuple(float(m) for m in cfg.mean)
    self.std = tuple(float(s) for s in cfg.std)
    self.stem = ConvBNAct(3, cfg.stem, 3, stride=2, eps=eps, same=same, rngs=rngs)
    self.blocks = nnx.List([InvertedResidual(b, eps=eps, same=same, rngs=rngs)
                            for b in cfg.blocks])
    self.head = ConvBNAct(cfg.blocks[-1].cout, cfg.head, 1, eps=eps, same=same, rngs=rngs)
    self.dropout = nnx.Dropout(cfg.dropout)
    self.classifier = nnx.Linear(cfg.head, cfg.num_classes, kernel_init=LINEAR_INIT, rngs=rngs)

  def normalize(self, x):
    """``[n, h, w, 3]`` in [0, 1] to the network's input scale (dtype kept)."""
    x = check_images(x)
    mean = jnp.asarray(self.mean, x.dtype)
    std = jnp.asarray(self.std, x.dtype)
    return (x - mean) / std

  def features(self, x):
    """The head's pooled output ``[n, head]`` (before dropout and the classifier)."""
    y = self.stem(self.normalize(x))
    for block in self.blocks:
      y = block(y)
    return jnp.mean(self.head(y), axis=(1, 2))

  def __call__(self, x):
    return self.classifier(self.dropout(self.features(x)))


def layer_names(cfg: BackboneConfig) -> Tuple[str, ...]:
  """The names ``capture.intermediates`` reports for a :class:`MobileBackbone`, in call order."""
  names: List[str] = ["stem/conv", "stem/bn", "stem"]
  for i, b in enumerate(cfg.blocks):
    p = f"blocks/{i}"
    if b.expand != 1:
      names += [f"{p}/expand/conv", f"{p}/expand/bn", f"{p}/expand"]
    names += [f"{p}/depthwise/conv", f"{p}/depthwise/bn", f"{p}/depthwise",
              f"{p}/project_conv", f"{p}/project_bn", p]
  names += ["head/conv", "head/bn", "head", "dropout", "classifier", "output"]
  return tuple(names)


# ---------------------------------------------------------------------------------------------
# Weight conversion from PyTorch state dicts.


def conv_kernel(w: np.ndarray) -> np.ndarray:
  """PyTorch ``[out, in / groups, kh, kw]`` to Flax ``[kh, kw, in / groups, out]``."""
  return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


class StateDictMapper:
  """Maps a PyTorch state dict onto flat Flax paths, checking every source key is used once."""

  def __init__(self, state: Mapping[str, np.ndarray], *, name: str):
    self.state = dict(state)
    self.name = name
    self.used: set = set()
    self.out: Dict[str, np.ndarray] = {}

  def take(self, key: str) -> np.ndarray:
    if key not in self.state:
      raise ValueError(f"{self.name}: the weight file has no {key!r}.")
    self.used.add(key)
    return np.asarray(self.state[key], np.float32)

  def conv(self, flax_path: str, torch_key: str) -> None:
    self.out[f"{flax_path}/kernel"] = conv_kernel(self.take(f"{torch_key}.weight"))

  def bn(self, flax_path: str, torch_key: str) -> None:
    for ours, theirs in (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"),
                         ("var", "running_var")):
      self.out[f"{flax_path}/{ours}"] = self.take(f"{torch_key}.{theirs}")
    self.used.add(f"{torch_key}.num_batches_tracked")

  def linear(self, flax_path: str, torch_key: str) -> None:
    self.out[f"{flax_path}/kernel"] = np.ascontiguousarray(self.take(f"{torch_key}.weight").T)
    self.out[f"{flax_path}/bias"] = self.take(f"{torch_key}.bias")

  def finish(self) -> Dict[str, np.ndarray]:
    unused = sorted(set(self.state) - self.used)
    if unused:
      raise ValueError(f"{self.name}: {len(unused)} weights were not mapped: {unused[:5]}.")
    return self.out
