"""Reads ONNX models into NumPy without the ``onnx`` package: initializers, and nodes in order.

An ONNX file is one protobuf ``ModelProto``; this module decodes just enough of the protobuf wire
format to read its graph (``ModelProto.graph``, field 7):

* ``GraphProto.initializer`` (field 5): ``TensorProto`` s, returned as NumPy arrays (``raw_data``,
  or packed ``float_data`` / ``int64_data``); tensors stored in external files are refused;
* ``GraphProto.node`` (field 1): ``NodeProto`` s in graph order (ONNX requires topological order)
  with their op type, input and output names, node name and attributes (``AttributeProto``: ints,
  floats, strings, tensors and their lists; subgraphs are not decoded).

Nothing is executed and no code is imported: the file is read as plain data. The backbones read
here are ``minilm_l3`` (``bert.py``, initializers and ``MatMul`` nodes) and
``resnet50_open_nsfw`` (``resnet.py``, convolution and pooling attributes).
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, NamedTuple, Tuple

import numpy as np

__all__ = ("OnnxNode", "read_onnx")


class OnnxNode(NamedTuple):
  """One ``NodeProto``.

  The first three fields are those of the original ``(op_type, inputs, outputs)`` triples, so
  ``node[0]``, ``node[1]``, ``node[2]`` keep their meaning.

  Attributes:
    op_type: the operator, e.g. ``"Conv"``.
    inputs: names of the input values (initializers or other nodes' outputs); an optional input
      left out is ``""``.
    outputs: names of the output values.
    attributes: ``{name: value}``; ints are Python ints, floats Python floats, strings ``bytes``
      decoded as UTF-8 ``str``, lists are lists, tensors NumPy arrays.
    name: the node's name (may be empty).
  """
  op_type: str
  inputs: List[str]
  outputs: List[str]
  attributes: Dict[str, Any]
  name: str


def varint(buf, i: int) -> Tuple[int, int]:
  """The unsigned LEB128 varint at ``buf[i]`` (protobuf's and Thrift's compact encoding) and the
  index after it.

  Raises:
    ValueError: the buffer ends inside the varint.
  """
  result = shift = 0
  while True:
    if i >= len(buf):
      raise ValueError("truncated varint in a protobuf/Thrift buffer.")
    byte = buf[i]
    i += 1
    result |= (byte & 0x7F) << shift
    shift += 7
    if byte < 0x80:
      return result, i


def _signed(value: int) -> int:
  """A varint read as unsigned, as the int64 it encodes (negative values take 10 bytes)."""
  return value - (1 << 64) if value >= 1 << 63 else value


def _fields(buf) -> Iterator[Tuple[int, int, Any]]:
  """Yields ``(field number, wire type, value)`` of a protobuf message (``memoryview``).

  Varints (wire type 0) are ints; length-delimited fields (2), 64-bit (1) and 32-bit (5) values
  are ``memoryview`` slices of ``buf``.
  """
  i, end = 0, len(buf)
  while i < end:
    key, i = varint(buf, i)
    number, wire = key >> 3, key & 7
    if wire == 0:
      value, i = varint(buf, i)
    elif wire == 2:
      size, i = varint(buf, i)
      value, i = buf[i:i + size], i + size
    elif wire == 1:
      value, i = buf[i:i + 8], i + 8
    elif wire == 5:
      value, i = buf[i:i + 4], i + 4
    else:
      raise ValueError(f"unsupported protobuf wire type {wire}: not an ONNX model?")
    yield number, wire, value


def _packed_varints(buf) -> List[int]:
  out, j = [], 0
  while j < len(buf):
    v, j = varint(buf, j)
    out.append(_signed(v))
  return out


_ONNX_DTYPES = {1: np.float32, 6: np.int32, 7: np.int64, 10: np.float16, 11: np.float64}


def _onnx_tensor(buf) -> Tuple[str, np.ndarray]:
  """``(name, array)`` of an ONNX ``TensorProto`` (raw_data, packed float_data or int64_data)."""
  dims, name, dtype, raw, floats, int64s = [], "", None, None, None, []
  for number, wire, value in _fields(buf):
    if number == 1:  # dims, int64, packed or not
      if wire == 0:
        dims.append(_signed(value))
      else:
        dims.extend(_packed_varints(value))
    elif number == 2:
      dtype = value
    elif number == 4:
      floats = value
    elif number == 7:  # int64_data, packed or not
      if wire == 0:
        int64s.append(_signed(value))
      else:
        int64s.extend(_packed_varints(value))
    elif number == 8:
      name = bytes(value).decode()
    elif number == 9:
      raw = value
    elif number == 14 and value == 1:
      raise ValueError("ONNX tensors stored in external files are not supported.")
  if dtype not in _ONNX_DTYPES:
    raise ValueError(f"ONNX tensor {name!r} has unsupported data type {dtype}.")
  if raw is not None:
    array = np.frombuffer(bytes(raw), np.dtype(_ONNX_DTYPES[dtype]).newbyteorder("<"))
  elif floats is not None and dtype == 1:
    array = np.frombuffer(bytes(floats), "<f4")
  elif int64s and dtype == 7:
    array = np.asarray(int64s, np.int64)
  else:
    array = np.zeros((0,), _ONNX_DTYPES[dtype])
  return name, array.reshape(dims).astype(_ONNX_DTYPES[dtype])


def _attribute(buf) -> Tuple[str, Any]:
  """``(name, value)`` of an ONNX ``AttributeProto`` (graph-valued attributes come back as None).

  Fields: name 1, f 2, i 3, s 4, t 5, g 6, floats 7, ints 8, strings 9, tensors 10, type 20
  (1 FLOAT, 2 INT, 3 STRING, 4 TENSOR, 5 GRAPH, 6 FLOATS, 7 INTS, 8 STRINGS, 9 TENSORS).
  """
  name, kind = "", None
  scalar: Dict[int, Any] = {}
  floats: List[float] = []
  ints: List[int] = []
  strings: List[str] = []
  tensors: List[np.ndarray] = []
  for number, wire, value in _fields(buf):
    if number == 1:
      name = bytes(value).decode()
    elif number == 2:
      scalar[1] = float(np.frombuffer(bytes(value), "<f4")[0])
    elif number == 3:
      scalar[2] = _signed(value)
    elif number == 4:
      scalar[3] = bytes(value).decode("utf-8", "replace")
    elif number == 5:
      scalar[4] = _onnx_tensor(value)[1]
    elif number == 7:
      if wire == 5:
        floats.append(float(np.frombuffer(bytes(value), "<f4")[0]))
      else:
        floats.extend(np.frombuffer(bytes(value), "<f4").astype(float).tolist())
    elif number == 8:
      if wire == 0:
        ints.append(_signed(value))
      else:
        ints.extend(_packed_varints(value))
    elif number == 9:
      strings.append(bytes(value).decode("utf-8", "replace"))
    elif number == 10:
      tensors.append(_onnx_tensor(value)[1])
    elif number == 20:
      kind = value
  lists = {6: floats, 7: ints, 8: strings, 9: tensors}
  if kind in scalar:
    return name, scalar[kind]
  if kind in lists:
    return name, lists[kind]
  if kind is None and len(scalar) == 1:  # very old files may omit the type
    return name, next(iter(scalar.values()))
  if kind is None:
    return name, next((v for v in lists.values() if v), None)
  return name, None


def _node(buf) -> OnnxNode:
  op, ins, outs, attrs, name = "", [], [], {}, ""
  for number, _, value in _fields(buf):
    if number == 1:
      ins.append(bytes(value).decode())
    elif number == 2:
      outs.append(bytes(value).decode())
    elif number == 3:
      name = bytes(value).decode()
    elif number == 4:
      op = bytes(value).decode()
    elif number == 5:
      key, v = _attribute(value)
      attrs[key] = v
  return OnnxNode(op, ins, outs, attrs, name)


def read_onnx(path: str) -> Tuple[Dict[str, np.ndarray], List[OnnxNode]]:
  """Initializers and nodes of an ONNX model, read from its protobuf without the ``onnx`` package.

  Args:
    path: the ``.onnx`` file.

  Returns:
    ``(initializers, nodes)``: ``{name: np.ndarray}`` and a list of :class:`OnnxNode`
    ``(op_type, inputs, outputs, attributes, name)`` in graph order.

  Raises:
    ValueError: the file holds no graph, or a tensor of an unsupported type or stored outside the
      file.
  """
  with open(path, "rb") as f:
    data = memoryview(f.read())
  graph = None
  for number, wire, value in _fields(data):
    if number == 7 and wire == 2:
      graph = value
  if graph is None:
    raise ValueError(f"{path} holds no ONNX graph.")
  inits, nodes = {}, []
  for number, wire, value in _fields(graph):
    if number == 5 and wire == 2:
      name, array = _onnx_tensor(value)
      inits[name] = array
    elif number == 1 and wire == 2:
      nodes.append(_node(value))
  return inits, nodes
