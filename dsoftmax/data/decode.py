"""Decoding one stored chunk within the size its array declares.

A chunk of an array of chunk shape ``s`` and dtype ``t`` decodes to exactly
``prod(s) * t.itemsize`` bytes (Zarr stores edge chunks padded to the full shape). Every chunk is
decoded into a buffer of that size, never into one the chunk's own bytes ask for, so a chunk
that claims to be larger -- a few kilobytes that would inflate to gigabytes -- is refused before
any memory is spent on it:

* zstd: the chunk must start with a frame that declares its content size, and that size must be
  the chunk's size. Decoding into a buffer of the chunk's size then bounds every later frame too.
* Blosc and numcodecs' LZ4: the size in the header must be the chunk's size.
* uncompressed: the stored bytes must be the chunk's size.

The stored object itself is read with a bound (:func:`max_stored_bytes`) above which no encoding
of the chunk can be, so a huge object is not read whole either.

Bytes that are not a frame of the codec at all are handed to the decoder, which refuses them
with its own message (e.g. ``RuntimeError: Zstd decompression error``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numcodecs.blosc
import numcodecs.lz4
import numcodecs.zstd
import numpy as np
import zarr
import zarr.codecs
from zarr.codecs.numcodecs import LZ4

__all__ = ["ChunkEncoding", "chunk_encoding", "decode_chunk", "max_stored_bytes"]

#: What a chunk's compressor is called in :class:`ChunkEncoding`.
COMPRESSORS = ("zstd", "blosc", "lz4", "none")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: Skippable zstd frames carry a magic number of 0x184D2A50 to 0x184D2A5F.
ZSTD_SKIPPABLE_MAGIC_MASK = 0xFFFFFFF0
ZSTD_SKIPPABLE_MAGIC = 0x184D2A50
#: Bytes of the Blosc header, whose bytes 4 to 8 hold the decoded size.
BLOSC_HEADER_BYTES = 16
#: More than the longest header the size checks read (a zstd frame header is at most 18).
HEADER_BYTES = 64


@dataclass(frozen=True)
class ChunkEncoding:
    """How the chunks of one array are stored.

    Attributes
    ----------
    compressor : {"zstd", "blosc", "lz4", "none"}
    dtype : str
        The stored dtype with its byte order, e.g. ``"<f4"``.
    shape : tuple of int
        The chunk shape; every stored chunk decodes to this shape.
    """

    compressor: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of one decoded chunk."""
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def chunk_encoding(array: zarr.Array, where: str) -> ChunkEncoding:
    """The encoding of ``array``'s chunks, or a ValueError naming ``where`` when dsoftmax does
    not read it (see the module docstring for what it reads)."""
    rewrite = "write the dataset again with dsoftmax.data.write_dataset"
    if array.metadata.zarr_format != 3:
        raise ValueError(
            f"{where} is a Zarr v{array.metadata.zarr_format} array; a dsoftmax dataset is a "
            f"Zarr v3 group: {rewrite}."
        )
    if array.shards is not None:
        raise ValueError(
            f"{where} is sharded (shards {array.shards}); dsoftmax reads one stored object per "
            f"chunk: {rewrite}."
        )
    serializer, compressors = array.serializer, array.compressors
    if array.filters or not isinstance(serializer, zarr.codecs.BytesCodec) or len(compressors) > 1:
        codecs = [*array.filters, serializer, *compressors]
        raise ValueError(
            f"{where} uses the codecs {codecs}; dsoftmax reads plain bytes compressed by at "
            f"most one of zstd, Blosc or LZ4: {rewrite}."
        )
    compressor = _compressor_name(compressors[0] if compressors else None)
    if compressor is None:
        raise ValueError(
            f"{where} is compressed with {compressors[0]}; dsoftmax reads zstd, Blosc, LZ4 or "
            f"uncompressed chunks: {rewrite} (codec='zstd', 'lz4' or 'none')."
        )
    dtype = np.dtype(array.dtype)
    if serializer.endian is not None and dtype.itemsize > 1:
        dtype = dtype.newbyteorder("<" if serializer.endian.value == "little" else ">")
    return ChunkEncoding(compressor, dtype.str, tuple(int(size) for size in array.chunks))


def _compressor_name(codec: Any) -> str | None:
    if codec is None:
        return "none"
    if isinstance(codec, zarr.codecs.ZstdCodec):
        return "zstd"
    if isinstance(codec, zarr.codecs.BloscCodec):
        return "blosc"
    if isinstance(codec, LZ4):
        return "lz4"
    return None


def max_stored_bytes(encoding: ChunkEncoding) -> int:
    """More bytes than any encoding of one chunk takes: zstd, Blosc and LZ4 add at most a
    small fraction (below 1/128) and a few dozen bytes to incompressible data."""
    return encoding.nbytes + encoding.nbytes // 128 + 4096


def decode_chunk(data: bytes | np.ndarray, encoding: ChunkEncoding) -> np.ndarray:
    """The chunk stored as ``data``, as a writable array of ``encoding.shape`` in native byte
    order. An uncompressed chunk read into a writable uint8 array becomes a view of it.

    Raises
    ------
    ValueError
        When ``data`` declares another decoded size than one chunk's, or holds something this
        reader does not decode; the decoders' own errors (``RuntimeError``, ``ValueError``)
        for damaged bytes.
    """
    nbytes = encoding.nbytes
    if encoding.compressor == "none":
        _check_size(len(data), nbytes, "holds")
        writable = isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.flags.writeable
        buffer = data if writable else np.frombuffer(data, dtype=np.uint8).copy()
    else:
        _check_header(bytes(memoryview(data)[:HEADER_BYTES]), encoding.compressor, nbytes)
        # Zeroed lazily by the OS: only the pages the decoder writes take memory.
        buffer = np.zeros(nbytes, dtype=np.uint8)
        DECODERS[encoding.compressor](data, buffer)
    stored = np.dtype(encoding.dtype)
    values = buffer.view(stored).reshape(encoding.shape)
    return values if stored.isnative else values.astype(stored.newbyteorder("="))


#: The decoders that write into a given buffer and refuse to write past its end.
DECODERS = {
    "zstd": numcodecs.zstd.decompress,
    "blosc": numcodecs.blosc.decompress,
    "lz4": numcodecs.lz4.decompress,
}


def _check_header(data: bytes, compressor: str, nbytes: int) -> None:
    """Refuse ``data`` when its header declares another decoded size than ``nbytes``; leave
    data without a recognizable header to the decoder, which refuses it."""
    if compressor == "zstd":
        _check_zstd_header(data, nbytes)
    elif compressor == "blosc" and len(data) >= BLOSC_HEADER_BYTES:
        _check_size(int.from_bytes(data[4:8], "little"), nbytes, "declares (Blosc header)")
    elif compressor == "lz4" and len(data) >= 4:
        _check_size(int.from_bytes(data[:4], "little"), nbytes, "declares (LZ4 header)")


def _check_size(found: int, nbytes: int, verb: str) -> None:
    if found != nbytes:
        raise ValueError(
            f"the stored chunk {verb} {found} bytes, but one chunk of this array is {nbytes} bytes"
        )


def _check_zstd_header(data: bytes, nbytes: int) -> None:
    """Refuse zstd data whose first frame does not declare ``nbytes`` of content."""
    magic = int.from_bytes(data[:4], "little")
    if len(data) >= 4 and magic & ZSTD_SKIPPABLE_MAGIC_MASK == ZSTD_SKIPPABLE_MAGIC:
        raise ValueError(
            "the stored chunk starts with a skippable zstd frame; dsoftmax reads chunks whose "
            "first frame declares their size"
        )
    if data[:4] != ZSTD_MAGIC or len(data) < 5:
        return  # not a zstd frame: the decoder reports it
    # Frame_Header_Descriptor (RFC 8878, 3.1.1.1.1): the sizes of the fields that follow.
    descriptor = data[4]
    size_flag, single_segment = descriptor >> 6, (descriptor >> 5) & 1
    size_bytes = (single_segment, 2, 4, 8)[size_flag]
    if size_bytes == 0:
        raise ValueError(
            "the stored chunk's zstd frame does not declare its content size; dsoftmax reads "
            "frames that do (as Zarr writes them)"
        )
    start = 5 + (1 - single_segment) + (0, 1, 2, 4)[descriptor & 3]
    size_field = data[start : start + size_bytes]
    if len(size_field) < size_bytes:
        return  # a truncated header: the decoder reports it
    # A 2-byte Frame_Content_Size stores the size minus 256 (RFC 8878, 3.1.1.1.4).
    declared = int.from_bytes(size_field, "little") + (256 if size_bytes == 2 else 0)
    _check_size(declared, nbytes, "declares (zstd frame header)")
