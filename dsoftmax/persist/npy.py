"""``.npy`` arrays of model files: numbers only, parsed by their header before anything is built.

A file is read only as far as its manifest entry allows (declared dtype and shape, so at most
``n_bytes(dtype, shape)`` plus the header), its header is parsed with NumPy's public
:mod:`numpy.lib.format` functions and must agree with the manifest and with the file's length,
and only then is the array made from the bytes already read. Nothing is ever unpickled, and a
header that claims more data than the file holds is refused before any allocation.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np

from .files import ModelFileError

__all__ = ["HEADER_LIMIT", "check_dtype", "decode", "encode", "n_bytes"]

#: Kinds of the arrays a model file may hold: floats, signed and unsigned integers, booleans.
ALLOWED_KINDS = "fiub"
#: Largest ``.npy`` header read (NumPy's own default bound for headers it parses).
HEADER_LIMIT = 10_000
_DTYPE = re.compile(r"^[<>|=]?[fiub][1-9][0-9]?$")


def encode(array: np.ndarray) -> bytes:
    """The ``.npy`` bytes of a numeric array."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def check_dtype(text: object, what: str) -> np.dtype:
    """The plain numeric dtype spelled ``text`` (as ``dtype.str`` spells it), or a refusal."""
    if not isinstance(text, str) or not _DTYPE.match(text):
        raise ModelFileError(f"{what} has dtype {text!r}; a model file holds plain numbers only.")
    try:
        dtype = np.dtype(text)
    except TypeError:
        raise ModelFileError(f"{what} has dtype {text!r}, which is not a NumPy dtype.") from None
    if dtype.kind not in ALLOWED_KINDS or dtype.str != text:
        raise ModelFileError(f"{what} has dtype {text!r}; a model file holds plain numbers only.")
    return dtype


def n_bytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    """Bytes of data of an array (Python integers: no overflow for hostile shapes)."""
    return math.prod(shape) * dtype.itemsize


def decode(data: bytes, dtype: np.dtype, shape: tuple[int, ...], what: str) -> np.ndarray:
    """The array stored in ``data``, which must be a ``.npy`` file of ``dtype`` and ``shape``."""
    stream = io.BytesIO(data)
    header = _read_header(stream, what)
    stored_shape, fortran_order, stored_dtype = header
    if stored_dtype.kind not in ALLOWED_KINDS or stored_dtype.fields is not None:
        raise ModelFileError(
            f"{what} is not a plain numeric array: its header declares dtype {stored_dtype}."
        )
    if stored_dtype.str != dtype.str:
        raise ModelFileError(
            f"{what} has unexpected dtype {stored_dtype}; its manifest says {dtype.str}."
        )
    if tuple(stored_shape) != tuple(shape):
        raise ModelFileError(
            f"{what} has shape {tuple(stored_shape)}, manifest says {list(shape)}."
        )
    offset = stream.tell()
    expected = n_bytes(dtype, shape)
    if len(data) - offset != expected:
        raise ModelFileError(
            f"{what} holds {len(data) - offset} bytes of data after its header, which declares "
            f"{expected}: the file is truncated or padded."
        )
    flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset)
    return flat.reshape(shape, order="F" if fortran_order else "C")


def _read_header(stream: io.BytesIO, what: str) -> tuple:
    # NumPy's header parser meets hostile bytes here: whatever it raises is a refusal.
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(stream, max_header_size=HEADER_LIMIT)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(stream, max_header_size=HEADER_LIMIT)
        problem = f"its .npy format version {version} is not one dsoftmax writes"
    except Exception as error:
        problem = f"{type(error).__name__}: {error}"
    raise ModelFileError(f"{what} is not a plain numeric array: {problem}.")
