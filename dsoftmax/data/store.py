"""The store: where a dataset lives, what it holds, and the reads of its chunks.

Every chunk of a dataset's lazy arrays is read by one task of ours, :func:`read_row_chunk`,
through fsspec (a local file straight into a NumPy buffer): the stored object is read with a
size bound, decoded within the size its array declares (:mod:`dsoftmax.data.decode`), and
transient I/O errors (connection resets, timeouts) are retried ``read_retries`` times with a
doubling pause. A chunk that cannot be read or decoded raises :class:`ChunkReadError` naming
the store, the array, the chunk, its rows and its store key.

Local stores are listed without following links: a symbolic link or a special file among the
store's files is refused, so a store reads only its own regular files; a chunk read refuses
them too.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dask.array as da
import fsspec
import numpy as np
import zarr
from dask.highlevelgraph import HighLevelGraph
from fsspec.implementations.local import LocalFileSystem

from ..validation import url_storage_options
from .decode import ChunkEncoding, decode_chunk, max_stored_bytes
from .format import rows_text

__all__ = [
    "ChunkReadError",
    "ChunkSource",
    "as_url",
    "filesystem",
    "lazy_rows",
    "open_group",
    "read_row_chunk",
    "stored_keys",
]

#: Pause before the first retry of a chunk read, in seconds; it doubles at every retry.
READ_RETRY_BACKOFF = 0.1
#: Longest pause between two tries of a chunk read, in seconds.
READ_RETRY_MAX_PAUSE = 5.0

# ---------------------------------------------------------------------------------------------
# Where the store is
# ---------------------------------------------------------------------------------------------


def as_url(url: str | os.PathLike) -> str:
    """``url`` as a string, after refusing what is neither a path nor a URL."""
    if not isinstance(url, str | os.PathLike):
        raise TypeError(f"url must be a path or an fsspec URL string, got {type(url).__name__}.")
    return os.fspath(url)


def is_local(url: str) -> bool:
    return "://" not in url


def store_location(url: str) -> str:
    """``url`` itself for fsspec URLs; an absolute path for local paths, because the store
    travels to worker processes whose working directory may differ."""
    return os.path.abspath(url) if is_local(url) else url


def open_group(url: str, mode: str, storage_options: Mapping | None) -> zarr.Group:
    """The Zarr group at ``url``, opened with ``mode``."""
    options = url_storage_options(url, storage_options)
    extra = {"storage_options": options} if options else {}
    return zarr.open_group(store_location(url), mode=mode, **extra)


def filesystem(url: str, storage_options: Mapping | None) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the store's path on it."""
    options = url_storage_options(url, storage_options)
    fs, path = fsspec.core.url_to_fs(store_location(url), **(options or {}))
    # Listings of object stores are cached per filesystem instance, and instances are shared.
    fs.invalidate_cache()
    return fs, path.rstrip("/")


# ---------------------------------------------------------------------------------------------
# What the store holds
# ---------------------------------------------------------------------------------------------


def stored_keys(url: str, storage_options: Mapping | None) -> set[str]:
    """Keys of every object of the store (``"X/c/3/0"``), in one listing; empty when there is
    no store at ``url``.

    Raises
    ------
    ValueError
        When a local store holds a symbolic link or anything but directories and regular files.
    """
    if is_local(url):
        root = store_location(url)
        return _local_keys(root, url) if os.path.isdir(root) else set()
    fs, root = filesystem(url, storage_options)
    try:
        paths = fs.find(root)
    except FileNotFoundError:
        return set()
    return {path[len(root) + 1 :] for path in paths if path.startswith(f"{root}/")}


def _local_keys(root: str, url: str) -> set[str]:
    """Keys of the regular files under ``root``, walked without following links."""
    keys: set[str] = set()
    pending = [""]
    while pending:
        prefix = pending.pop()
        with os.scandir(os.path.join(root, prefix)) as entries:
            for entry in entries:
                key = f"{prefix}{entry.name}"
                if entry.is_symlink():
                    raise ValueError(
                        f"{url!r} holds a symbolic link {key!r} (to {os.readlink(entry.path)!r}); "
                        "a dataset reads only its own regular files. Replace the link with a copy "
                        "of the file, or write the dataset again."
                    )
                if entry.is_dir(follow_symlinks=False):
                    pending.append(f"{key}/")
                elif entry.is_file(follow_symlinks=False):
                    keys.add(key)
                else:
                    raise ValueError(
                        f"{url!r} holds {key!r}, which is neither a regular file nor a "
                        "directory (a pipe, socket or device); remove it, or write the dataset "
                        "again."
                    )
    return keys


# ---------------------------------------------------------------------------------------------
# Errors of chunk reads
# ---------------------------------------------------------------------------------------------


class ChunkReadError(ValueError):
    """A chunk of a dataset could not be read or decoded.

    The message names the store, the array, the chunk index, its rows, its store key, the
    underlying error and the fix. The attributes repeat those facts for programs; they are None
    on an error rebuilt from its message alone.

    Attributes
    ----------
    url : str
        The dataset's path or URL.
    array : str
        ``"X"``, ``"y"``, ``"Y"`` or ``"sample_weight"``.
    chunk_index : int
        Position of the chunk along the rows.
    rows : tuple of (int, int)
        First row and one past the last row of the chunk.
    key : str
        The chunk's key in the store, e.g. ``"X/c/3/0"``.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        array: str | None = None,
        chunk_index: int | None = None,
        rows: tuple[int, int] | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.array = array
        self.chunk_index = chunk_index
        self.rows = rows
        self.key = key


#: Errors of the class names below (from optional libraries, so matched by name) are transient.
_TRANSIENT_ERROR_CLASSES = frozenset(
    {
        # botocore: endpoint, proxy and connect-timeout errors; read timeouts, closed
        # connections and broken streams; a body shorter than announced.
        ("botocore.exceptions", "ConnectionError"),
        ("botocore.exceptions", "HTTPClientError"),
        ("botocore.exceptions", "IncompleteReadError"),
        # aiohttp: connection errors, and a response body cut short.
        ("aiohttp.client_exceptions", "ClientConnectionError"),
        ("aiohttp.client_exceptions", "ClientPayloadError"),
    }
)
#: OSErrors that retrying does not cure: a decoder's complaint, or a lasting refusal.
_LASTING_OS_ERRORS = (
    gzip.BadGzipFile,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
#: Refusals of the reader's credentials (besides ``PermissionError``, which s3fs and local
#: files raise): the store may be intact.
_REFUSAL_ERROR_CLASSES = frozenset(
    {
        ("botocore.exceptions", "NoCredentialsError"),
        ("botocore.exceptions", "PartialCredentialsError"),
        ("botocore.exceptions", "CredentialRetrievalError"),
    }
)


def _error_in(error: BaseException, classes: frozenset[tuple[str, str]]) -> bool:
    return any((cls.__module__, cls.__qualname__) in classes for cls in type(error).__mro__)


def _is_refusal(error: BaseException) -> bool:
    """Whether ``error`` refused the reader access (missing or rejected credentials)."""
    return isinstance(error, PermissionError) or _error_in(error, _REFUSAL_ERROR_CLASSES)


def _is_transient(error: BaseException) -> bool:
    """Whether ``error`` may go away if the read is tried again (network and I/O trouble);
    decode errors and refusals are never transient."""
    if isinstance(error, _LASTING_OS_ERRORS):
        return False
    if isinstance(error, OSError):  # also TimeoutError and ConnectionError
        return True
    return _error_in(error, _TRANSIENT_ERROR_CLASSES)


def _retry_pause(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
    return min(READ_RETRY_BACKOFF * 2.0**attempt, READ_RETRY_MAX_PAUSE)


# ---------------------------------------------------------------------------------------------
# Reading chunks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ChunkSource:
    """What a chunk-read task needs: one array of a store, and how messages name it.

    The fsspec filesystem pickles as its class and options (no open connection), so a remote
    worker reconnects itself; the source sits in the graph once, under its own key.

    Attributes
    ----------
    fs : fsspec filesystem
    root : str
        The store's path on ``fs``.
    url : str
        The store as the user named it, for messages.
    name : str
        The array.
    encoding : ChunkEncoding
    read_retries : int
    """

    fs: Any
    root: str
    url: str
    name: str
    encoding: ChunkEncoding
    read_retries: int

    def read(self, key: str) -> np.ndarray:
        """The decoded chunk stored under ``key`` (relative to the store)."""
        limit = max_stored_bytes(self.encoding)
        path = f"{self.root}/{key}"
        # fsspec's own local filesystem only: a subclass may read its files its own way.
        if type(self.fs) is LocalFileSystem:
            data = _read_local_file(path, limit)
        else:
            data = self.fs.cat_file(path, start=0, end=limit + 1)
        if len(data) > limit:
            raise ValueError(
                f"the stored chunk is over {limit} bytes, more than any encoding of one chunk "
                f"of this array ({self.encoding.nbytes} bytes) takes"
            )
        return decode_chunk(data, self.encoding)


def _read_local_file(path: str, limit: int) -> np.ndarray:
    """The bytes of the regular file ``path`` (not a link), in a NumPy buffer.

    NumPy's large buffers are backed by huge pages where the kernel offers them, so filling
    one costs a fraction of the page faults of a ``bytes`` object of the same size, and an
    uncompressed chunk decodes in place instead of being copied. Only ``limit + 1`` bytes of a
    larger file are read, which refuses it. A link or a special file put in place of a chunk
    after the store was opened is refused without being followed or waited on.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ValueError(f"the stored chunk {path!r} is a symbolic link") from error
        raise
    with os.fdopen(descriptor, "rb", buffering=0) as file:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"the stored chunk {path!r} is not a regular file")
        size = min(info.st_size, limit + 1)
        buffer = np.empty(size, dtype=np.uint8)
        view, filled = memoryview(buffer), 0
        while filled < size:
            count = file.readinto(view[filled:])
            if not count:
                break
            filled += count
    return buffer[:filled]


def _chunk_read_error(
    source: ChunkSource,
    chunk_index: int,
    rows: tuple[int, int],
    key: str,
    error: Exception,
    tries: int,
) -> ChunkReadError:
    """The error for a chunk whose last try (of ``tries``) failed with ``error``."""
    where = (
        f"chunk {chunk_index} of {source.name} in {source.url!r} "
        f"({rows_text(rows[0], rows[1] - rows[0])}, store key {key!r})"
    )
    cause = f"{type(error).__name__}: {error}"
    rewrite = (
        "the store is damaged: rewrite it, e.g. with dsoftmax.data.write_dataset, "
        "convert_numpy or `dsoftmax convert`, from the source data"
    )
    if _is_refusal(error):
        message = (
            f"cannot read {where}: access refused ({cause}). The workers read the chunks "
            "themselves, with the storage_options the dataset was opened with (without them, "
            "with their own environment's credentials): check that credentials reach the "
            "workers and may read this store. The store itself is probably intact."
        )
    elif _is_transient(error):
        message = (
            f"cannot read {where} after {tries} {'try' if tries == 1 else 'tries'} "
            f"(read_retries={source.read_retries}): {cause}. Check that the store is reachable "
            "(network, endpoint, credentials in storage_options) and try again, or open the "
            f"dataset with a larger read_retries; if the error persists, {rewrite}."
        )
    else:
        message = f"cannot read {where}: {cause}. {rewrite[0].upper()}{rewrite[1:]}."
    return ChunkReadError(
        message, url=source.url, array=source.name, chunk_index=chunk_index, rows=rows, key=key
    )


def read_row_chunk(
    source: ChunkSource, chunk_index: int, start: int, stop: int, key: str
) -> np.ndarray:
    """Worker task: rows ``start:stop`` (one chunk, stored under ``key``) of one array.

    Transient I/O errors are retried ``source.read_retries`` times with a doubling pause; any
    other failure, or a transient one that outlasts the retries, raises :class:`ChunkReadError`.
    """
    retries = 0
    while True:
        try:
            return source.read(key)[: stop - start]
        except MemoryError:
            raise
        except Exception as error:
            if retries == source.read_retries or not _is_transient(error):
                raise _chunk_read_error(
                    source, chunk_index, (start, stop), key, error, retries + 1
                ) from error
        # Outside the except block, so a later error does not chain every earlier one.
        time.sleep(_retry_pause(retries))
        retries += 1


def row_chunk_bounds(n_rows: int, chunk_rows: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of every chunk of rows: the Zarr chunks, the last one shorter."""
    return [(start, min(start + chunk_rows, n_rows)) for start in range(0, n_rows, chunk_rows)]


def lazy_rows(array: zarr.Array, source: ChunkSource, fingerprint: str) -> da.Array:
    """A dask array over ``array`` with one :func:`read_row_chunk` task per chunk of rows."""
    # Deterministic: two opens of one store share dask keys (and blocks already in memory).
    token = hashlib.sha256(f"{source.url}\0{fingerprint}".encode()).hexdigest()[:16]
    dask_name = f"dsoftmax-{source.name}-{token}"
    source_key = f"{dask_name}-source"
    other_axes = (0,) * (array.ndim - 1)
    bounds = row_chunk_bounds(array.shape[0], array.chunks[0])
    graph: dict[Any, Any] = {source_key: source}
    for index, (start, stop) in enumerate(bounds):
        key = f"{source.name}/{array.metadata.encode_chunk_key((index, *other_axes))}"
        graph[(dask_name, index, *other_axes)] = (
            read_row_chunk,
            source_key,
            index,
            start,
            stop,
            key,
        )
    chunks = (tuple(stop - start for start, stop in bounds), *((size,) for size in array.shape[1:]))
    return da.Array(
        HighLevelGraph.from_collections(dask_name, graph, dependencies=()),
        dask_name,
        chunks=chunks,
        dtype=array.dtype,
        meta=np.empty((0,) * array.ndim, dtype=array.dtype),
    )
