"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST (gzip-compressed or raw).

An IDX file is a 4-byte magic number ``00 00 TT NN`` (TT the element type, NN the number of
dimensions), NN big-endian uint32 sizes, then the elements in C order, big-endian. Labels are
``0x00000801`` (uint8, 1-D) and images ``0x00000803`` (uint8, 3-D).
"""

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
from advx import UsageError

# IDX element type code -> big-endian numpy dtype
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
LABELS_MAGIC = 0x00000801
IMAGES_MAGIC = 0x00000803
GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path, magic=None):
    """The array stored in the IDX file ``path`` (native byte order, writable).

    ``path`` may be gzip-compressed (detected from its content, not its name). With ``magic``
    (e.g. :data:`IMAGES_MAGIC`), any other magic number is rejected. A malformed, truncated or
    oversized file raises :class:`~advx.kernel.errors.UsageError` naming the file.
    """
    data = _read_bytes(Path(path))
    dtype, shape, offset = parse_header(data, path, magic)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - offset
    if actual != expected:
        problem = "is truncated" if actual < expected else "has trailing bytes"
        raise UsageError(f"IDX file {str(path)!r} {problem}: its header {shape} announces "
                         f"{expected} bytes of data, the file holds {actual}")
    array = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def parse_header(data, path, magic=None):
    """``(dtype, shape, data_offset)`` from the header of IDX bytes ``data``."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        found = data[:4].hex() or "nothing"
        raise UsageError(f"{str(path)!r} is not an IDX file: its magic number is {found}, "
                         "expected 000008NN (uint8) or another IDX type code")
    found_magic = int.from_bytes(data[:4], "big")
    if magic is not None and found_magic != magic:
        raise UsageError(f"IDX file {str(path)!r} has magic number 0x{found_magic:08x}, "
                         f"expected 0x{magic:08x}")
    ndim = data[3]
    offset = 4 + 4 * ndim
    if ndim == 0 or len(data) < offset:
        raise UsageError(f"IDX file {str(path)!r} has a truncated or empty header "
                         f"({ndim} dimensions, {len(data)} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return IDX_DTYPES[data[2]], shape, offset


def _read_bytes(path):
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read IDX file {str(path)!r}: {exc.strerror or exc}") from None
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise UsageError(f"IDX file {str(path)!r} is a damaged gzip file: {exc}") from None


def write_idx(path, array, compress=None):
    """Write ``array`` to ``path`` as IDX; gzip-compressed when ``compress`` or a ``.gz`` name.

    The element type must be one IDX can store (uint8, int8, int16, int32, float32, float64).
    """
    path = Path(path)
    array = np.asarray(array)
    code = _type_code(array.dtype)
    if not 1 <= array.ndim <= 255:
        raise UsageError(f"IDX stores 1 to 255 dimensions, got an array of {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        payload = gzip.compress(payload, mtime=0)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def _type_code(dtype):
    for code, idx_dtype in IDX_DTYPES.items():
        if np.dtype(dtype).newbyteorder("=") == idx_dtype.newbyteorder("="):
            return code
    allowed = ", ".join(str(d.newbyteorder("=")) for d in IDX_DTYPES.values())
    raise UsageError(f"IDX cannot store dtype {dtype}; allowed: {allowed}")
