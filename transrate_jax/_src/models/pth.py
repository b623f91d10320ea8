"""Reads PyTorch ``.pth`` checkpoints into NumPy without torch and without running pickled code.

Safety policy (that of ``torch.load(weights_only=True)``): a ``.pth`` file is a pickle, and a
pickle can name any importable callable (``os.system``) and call it while it loads. The unpickler
here resolves every global the pickle names through an allow-list, *when the name is read* (the
``GLOBAL`` / ``STACK_GLOBAL`` / ``INST`` / ``OBJ`` opcodes), which is before any call (``REDUCE``,
``NEWOBJ``, ``BUILD``) can happen. The allowed globals are:

* the tensor rebuilders ``torch._utils._rebuild_tensor``, ``_rebuild_tensor_v2``,
  ``_rebuild_parameter`` and ``_rebuild_parameter_with_state``, replaced by NumPy stand-ins
  written here (torch is never imported);
* the storage types ``torch.FloatStorage``, ``torch.HalfStorage``, ... and
  ``torch.UntypedStorage``, which only say the dtype of a storage;
* ``torch.Size`` (a tuple), ``collections.OrderedDict``, ``_codecs.encode`` (protocol-2 pickles
  spell ``bytes`` with it; only latin-1 is accepted), ``builtins.set`` / ``frozenset``.

Any other global raises :class:`UnsafePickleError` naming it, and nothing of the file has run.
Storages are read as raw little-endian (or the file's recorded byte order) bytes into NumPy
arrays; a tensor's offset, shape and strides are checked against its storage's size before a
view is taken, so a crafted file cannot read outside its own data.

Both serialisation formats are read: the zip format of ``torch.save`` since PyTorch 1.6
(``<archive>/data.pkl`` with storages in ``<archive>/data/<key>``) and the legacy format (a
magic-number pickle, a protocol-version pickle, a system-info pickle, the object pickle, the list
of storage keys, then each storage as an int64 element count followed by its bytes).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from typing import Any, Dict

import numpy as np

__all__ = ("read_pth", "UnsafePickleError")

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class UnsafePickleError(pickle.UnpicklingError):
  """A ``.pth`` pickle names a global outside the tensor-loading allow-list (nothing was run)."""


def _bfloat16():
  import ml_dtypes  # pylint: disable=import-outside-toplevel  (a jax dependency)
  return np.dtype(ml_dtypes.bfloat16)


# torch storage type -> NumPy dtype (a callable for dtypes NumPy lacks).
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": _bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "ComplexDoubleStorage": np.complex128,
    "ComplexFloatStorage": np.complex64,
    "UntypedStorage": np.uint8,
}


class _StorageType:
  """Stand-in for a ``torch.*Storage`` class: only its dtype matters."""

  def __init__(self, name: str):
    self.name = name

  @property
  def dtype(self) -> np.dtype:
    kind = _STORAGE_DTYPES[self.name]
    return np.dtype(kind() if callable(kind) and not isinstance(kind, type) else kind)

  def __repr__(self):
    return f"torch.{self.name}"


class _Storage:
  """A storage of ``numel`` elements of ``dtype``; its data is filled in once read."""

  def __init__(self, dtype: np.dtype, numel: int, key: str):
    self.dtype = np.dtype(dtype)
    self.numel = int(numel)
    self.key = key
    self.data = None  # 1-D np.ndarray once read.

  def set_data(self, buf: bytes, byteorder: str) -> None:
    dtype = self.dtype.newbyteorder("<" if byteorder == "little" else ">")
    if len(buf) != self.numel * dtype.itemsize:
      raise pickle.UnpicklingError(
          f"storage {self.key!r}: {len(buf)} bytes for {self.numel} elements of {self.dtype}.")
    self.data = np.frombuffer(buf, dtype=dtype).astype(self.dtype, copy=False)


class _StorageView:
  """Legacy-format view of ``size`` elements of a root storage from element ``offset``."""

  def __init__(self, root: _Storage, offset: int, size: int):
    self.root, self.offset, self.size = root, int(offset), int(size)
    if self.offset < 0 or self.size < 0 or self.offset + self.size > root.numel:
      raise pickle.UnpicklingError(f"storage view [{offset}, {offset} + {size}) is outside its "
                                   f"storage of {root.numel} elements.")

  @property
  def dtype(self):
    return self.root.dtype

  @property
  def numel(self):
    return self.size


class _LazyTensor:
  """A tensor whose storage bytes may come after the pickle (legacy format)."""

  def __init__(self, storage, offset, size, stride):
    if not isinstance(storage, (_Storage, _StorageView)):
      raise pickle.UnpicklingError(f"a tensor's storage is a {type(storage).__name__}, not a "
                                   f"storage reference.")
    self.storage = storage
    self.offset = _int(offset, "storage offset")
    self.size = tuple(_int(s, "size") for s in size)
    self.stride = tuple(_int(s, "stride") for s in stride)
    if len(self.size) != len(self.stride):
      raise pickle.UnpicklingError(f"a tensor has size {self.size} but stride {self.stride}.")
    if self.offset < 0 or any(s < 0 for s in self.size) or any(s < 0 for s in self.stride):
      raise pickle.UnpicklingError("a tensor has a negative offset, size or stride.")
    if all(self.size):  # an empty tensor needs no elements.
      last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
      if last >= storage.numel:
        raise pickle.UnpicklingError(
            f"a tensor of size {self.size}, stride {self.stride} and offset {self.offset} "
            f"reaches element {last} of a storage of {storage.numel}.")

  def materialize(self) -> np.ndarray:
    if isinstance(self.storage, _StorageView):
      root, base = self.storage.root, self.storage.offset
    else:
      root, base = self.storage, 0
    if root.data is None:
      raise pickle.UnpicklingError(f"storage {root.key!r} has no data in the file.")
    flat = root.data
    if not all(self.size):
      return np.zeros(self.size, flat.dtype)
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[base + self.offset:], shape=self.size,
        strides=tuple(s * item for s in self.stride), writeable=False)
    return np.array(view, order="C")  # a contiguous copy, independent of the file buffer.


def _int(v, what):
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
    raise pickle.UnpicklingError(f"a tensor's {what} is {v!r}, not an int.")
  return int(v)


# NumPy stand-ins of torch's rebuild functions (same signatures).
def _rebuild_tensor(storage, storage_offset, size, stride):
  return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata
  return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
  del requires_grad, backward_hooks, state
  return data


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
  if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
    raise pickle.UnpicklingError(f"_codecs.encode is only accepted on a str with latin1; got "
                                 f"{type(obj).__name__} and {encoding!r}.")
  return obj.encode("latin1", errors)


class _Size(tuple):
  """Stand-in for ``torch.Size``."""


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch", "Size"): _Size,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
}
_ALLOWED.update({("torch", name): _StorageType(name) for name in _STORAGE_DTYPES})


class _RestrictedUnpickler(pickle.Unpickler):
  """An unpickler that resolves only allow-listed globals and maps persistent ids to storages."""

  def __init__(self, file, storages: Dict[str, _Storage], legacy: bool):
    super().__init__(file, encoding="latin1")
    self._storages = storages
    self._legacy = legacy

  def find_class(self, module, name):
    try:
      return _ALLOWED[(module, name)]
    except (KeyError, TypeError):
      raise UnsafePickleError(
          f"refusing to load the global {module}.{name}: a .pth file may only name the "
          f"tensor-rebuilding functions, torch storage types and plain containers (the "
          f"torch.load(weights_only=True) policy); nothing was executed.") from None

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
      raise UnsafePickleError(f"refusing the persistent id {pid!r}: only tensor storages are "
                              f"allowed; nothing was executed.")
    if self._legacy:
      if len(pid) != 6:
        raise pickle.UnpicklingError(f"malformed legacy storage id {pid!r}.")
      _, storage_type, key, _location, numel, view = pid
    else:
      if len(pid) != 5:
        raise pickle.UnpicklingError(f"malformed storage id {pid!r}.")
      _, storage_type, key, _location, numel = pid
      view = None
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f"storage {key!r} has type {storage_type!r}, not a torch "
                                   f"storage type.")
    key = str(key)
    dtype = storage_type.dtype
    numel = _int(numel, "storage size")
    storage = self._storages.get(key)
    if storage is None:
      storage = self._storages[key] = _Storage(dtype, numel, key)
    if view is not None:
      _, offset, size = view
      return _StorageView(storage, _int(offset, "view offset"), _int(size, "view size"))
    return storage


def _materialize(obj):
  if isinstance(obj, _LazyTensor):
    return obj.materialize()
  if isinstance(obj, dict):
    out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
    for k, v in obj.items():
      out[k] = _materialize(v)
    return out
  if isinstance(obj, list):
    return [_materialize(v) for v in obj]
  if isinstance(obj, tuple) and not isinstance(obj, _Size):
    return tuple(_materialize(v) for v in obj)
  return obj


def _load_zip(path) -> Any:
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
      raise pickle.UnpicklingError(f"{path}: a zip .pth needs exactly one <archive>/data.pkl; "
                                   f"found {pkl or 'none'}.")
    prefix = pkl[0][:-len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
      byteorder = zf.read(prefix + "byteorder").decode("ascii").strip()
      if byteorder not in ("little", "big"):
        raise pickle.UnpicklingError(f"{path}: unknown byte order {byteorder!r}.")
    storages: Dict[str, _Storage] = {}
    obj = _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), storages, legacy=False).load()
    for key, storage in storages.items():
      name = f"{prefix}data/{key}"
      if name not in names:
        raise pickle.UnpicklingError(f"{path}: storage {key!r} is missing ({name}).")
      storage.set_data(zf.read(name), byteorder)
  return obj


def _load_legacy(path) -> Any:
  with open(path, "rb") as f:
    storages: Dict[str, _Storage] = {}

    def header():
      return _RestrictedUnpickler(f, storages, legacy=True).load()

    magic = header()
    if magic != _LEGACY_MAGIC:
      raise pickle.UnpicklingError(f"{path}: not a PyTorch checkpoint (bad magic number).")
    protocol = header()
    if protocol != _LEGACY_PROTOCOL:
      raise pickle.UnpicklingError(f"{path}: unsupported legacy protocol {protocol!r}.")
    sys_info = header()
    byteorder = "little"
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
      byteorder = "big"
    obj = header()
    keys = header()
    if not isinstance(keys, list):
      raise pickle.UnpicklingError(f"{path}: malformed list of storage keys.")
    for key in keys:
      storage = storages.get(str(key))
      if storage is None:
        raise pickle.UnpicklingError(f"{path}: storage {key!r} is listed but not referenced.")
      raw = f.read(8)
      if len(raw) != 8:
        raise pickle.UnpicklingError(f"{path}: truncated at storage {key!r}.")
      numel = int.from_bytes(raw, byteorder, signed=True)
      if numel != storage.numel:
        raise pickle.UnpicklingError(f"{path}: storage {key!r} has {numel} elements in the "
                                     f"data, {storage.numel} in the pickle.")
      nbytes = numel * storage.dtype.itemsize
      buf = f.read(nbytes)
      if len(buf) != nbytes:
        raise pickle.UnpicklingError(f"{path}: truncated in storage {key!r}.")
      storage.set_data(buf, byteorder)
  return obj


def _flatten(obj, prefix: str, out: Dict[str, np.ndarray]) -> None:
  for k, v in obj.items():
    name = f"{prefix}{k}"
    if isinstance(v, np.ndarray):
      out[name] = v
    elif isinstance(v, dict):
      _flatten(v, name + ".", out)


def read_pth(path) -> Dict[str, np.ndarray]:
  """Reads a PyTorch ``.pth`` state dict as NumPy arrays, safely and without torch.

  The pickle is loaded by a restricted unpickler (see the module docstring): only the tensor
  rebuilders, torch storage types and plain containers may be named; anything else (a
  ``__reduce__`` payload calling ``os.system``, a hand-written ``GLOBAL`` opcode) raises
  :class:`UnsafePickleError` before it can run. Both the zip format (PyTorch >= 1.6) and the
  legacy format are read.

  Args:
    path: a ``.pth`` / ``.pt`` file holding a state dict (a ``{name: tensor}`` mapping), or a
      mapping with a top-level ``"state_dict"`` entry holding one.

  Returns:
    ``{name: np.ndarray}`` with the names as in the file (nested mappings are joined with
    ``"."``), each array a contiguous copy with the storage's dtype (``float32`` for
    ``FloatStorage``, ``int64`` for ``LongStorage``, ...) and the tensor's shape; entries that are
    not tensors (numbers, strings) are left out.

  Raises:
    UnsafePickleError: the pickle names a global outside the allow-list (nothing was executed).
    pickle.UnpicklingError: a malformed file (bad magic number, missing or out-of-range storage).
    ValueError: the file holds no mapping of tensors.
  """
  path = os.fspath(path)
  if zipfile.is_zipfile(path):
    obj = _load_zip(path)
  else:
    obj = _load_legacy(path)
  obj = _materialize(obj)
  if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict):
    raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict.")
  out: Dict[str, np.ndarray] = {}
  _flatten(obj, "", out)
  if not out:
    raise ValueError(f"{path}: the state dict holds no tensors.")
  return out
