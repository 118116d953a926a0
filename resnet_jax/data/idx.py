"""The IDX file format of MNIST and Fashion-MNIST: read (gzipped or not) and write.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values in C order
(LeCun et al., http://yann.lecun.com/exdb/mnist/, "FILE FORMATS"). Written here rather
than taken from a package: the reading is 20 lines, and the packages that do it either
download data themselves or bring a framework along.
"""

import gzip
import os

import numpy as np

# IDX type codes -> numpy dtypes (big-endian, as the format stores them).
_DTYPES = {0x08: np.dtype('u1'), 0x09: np.dtype('i1'), 0x0B: np.dtype('>i2'),
           0x0C: np.dtype('>i4'), 0x0D: np.dtype('>f4'), 0x0E: np.dtype('>f8')}


class IdxError(ValueError):
  """A file that is not a well-formed IDX file."""


def _open(path: str):
  return gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')


def read_bytes(path: str) -> bytes:
  """The file's IDX content (decompressed where the name ends in .gz)."""
  try:
    with _open(path) as file:
      return file.read()
  except (OSError, EOFError) as error:  # gzip's BadGzipFile is an OSError
    raise IdxError(f'{path}: cannot be read: {error}') from None


def parse(content: bytes, path: str = '<bytes>') -> np.ndarray:
  """The array an IDX file's content holds, in native byte order."""
  if len(content) < 4 or content[0] or content[1] or content[2] not in _DTYPES:
    raise IdxError(f'{path}: not an IDX file (magic number {content[:4].hex() or "missing"})')
  dtype, rank = _DTYPES[content[2]], content[3]
  header = 4 + 4 * rank
  if len(content) < header:
    raise IdxError(f'{path}: truncated header ({len(content)} bytes, {rank} dimensions)')
  shape = tuple(int(d) for d in np.frombuffer(content, '>u4', rank, 4))
  expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(content) != expected:
    raise IdxError(f'{path}: {len(content)} bytes, but its header {shape} needs {expected}')
  values = np.frombuffer(content, dtype, offset=header).reshape(shape)
  return values.astype(dtype.newbyteorder('='))


def read(path: str) -> np.ndarray:
  """The array in the IDX file at `path` (.gz: gzipped)."""
  return parse(read_bytes(path), path)


def write(path: str, array: np.ndarray) -> None:
  """Writes `array` (uint8, int8, int16, int32, float32 or float64) as an IDX file,
  gzipped where `path` ends in .gz (tests and subsets build their own files)."""
  codes = {dtype.newbyteorder('='): code for code, dtype in _DTYPES.items()}
  array = np.asarray(array)
  if array.dtype not in codes:
    raise ValueError(f'IDX cannot hold dtype {array.dtype}; valid: {sorted(map(str, codes))}')
  code = codes[array.dtype]
  header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, '>u4').tobytes()
  content = header + array.astype(_DTYPES[code]).tobytes()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with (gzip.open(path, 'wb') if path.endswith('.gz') else open(path, 'wb')) as file:
    file.write(content)
