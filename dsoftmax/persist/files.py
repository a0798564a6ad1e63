"""The files of model and checkpoint directories: read as hostile, replaced atomically under a lock.

Reading. A local directory is opened once, and each of its files is read through that handle:
``lstat`` first (a symbolic link, a FIFO, a device, a socket or a directory is refused by name,
and nothing is opened that could block or read forever), then ``open`` with ``O_NOFOLLOW`` and
``O_NONBLOCK``, ``fstat`` again on the open file, and at most the stated number of bytes read.
On fsspec filesystems (object stores) the size comes from ``fs.info`` before a ranged read of at
most that many bytes. A read that fails because a concurrent save replaced the directory is
retried on the new directory; a missing directory is looked for once more under its lock.

Replacing (local disk). Every write into a directory holds that directory's advisory lock (the
file ``.dsoftmax.lock``, removed when the lock is released), so concurrent saves serialize and the
last one wins. The new directory is staged beside the target (``.tmp-model-<name>-<tag>``), each
file fsync'd, and swapped with the target in one ``renameat2(RENAME_EXCHANGE)``; where the system
lacks it, the target is renamed to a backup (``.old-model-<name>-<tag>``) and the staged directory
renamed into place. Under the lock, what a killed write left is dealt with first: a backup whose
target is missing is renamed back (the interrupted save did not happen), every other staging
directory or backup is removed. Loading a missing model restores such a backup too.

Object stores have no rename and no lock: the manifest is written last and marks the directory
complete, and concurrent saves to one object-store path are not serialized.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..validation import url_storage_options

try:
    import fcntl
except ImportError:  # not POSIX: saves into one directory are not serialized between processes
    fcntl = None

__all__ = [
    "FAULT_PAUSE_ENV",
    "FAULT_PAUSE_MID_SWAP_ENV",
    "LOCK_NAME",
    "MANIFEST",
    "Location",
    "MissingFileError",
    "ModelFileError",
    "locate",
    "read_directory",
    "remove_directory",
    "replace_directory",
]

logger = logging.getLogger("dsoftmax")

MANIFEST = "manifest.json"
LOCK_NAME = ".dsoftmax.lock"
_STAGING_PREFIX = ".tmp-model-"
_BACKUP_PREFIX = ".old-model-"
_BACKUP = re.compile(r"^\.old-model-(?P<name>.+)-[0-9a-f]{8}$")
#: Reads of a directory that saves keep replacing, before one more under its lock.
_READ_ATTEMPTS = 4

#: Fault-injection hooks for tests of crash safety, unset in normal use. ``"<path part>:<seconds>"``
#: pauses every write whose target path contains ``<path part>``: FAULT_PAUSE_ENV after its files
#: are staged and before they are moved into place; FAULT_PAUSE_MID_SWAP_ENV makes the write take
#: the two-rename swap of systems without ``RENAME_EXCHANGE`` and pauses between its two renames,
#: so that a test can kill the process there.
FAULT_PAUSE_ENV = "DSOFTMAX_FAULT_PAUSE_BEFORE_COMMIT"
FAULT_PAUSE_MID_SWAP_ENV = "DSOFTMAX_FAULT_PAUSE_MID_SWAP"

T = TypeVar("T")


class ModelFileError(ValueError):
    """A model or checkpoint file is missing, corrupt, tampered with, unsafe to read or of an
    unknown format."""


class MissingFileError(ModelFileError):
    """A file that a model or checkpoint directory must hold is not there."""


@dataclass(frozen=True)
class Location:
    """A directory on the local disk (``local``, ``root`` an absolute path) or on an fsspec
    filesystem (``root`` without the protocol)."""

    fs: Any
    root: str
    local: bool

    def child(self, name: str) -> Location:
        """The entry ``name`` inside this directory (not resolved: links there are refused)."""
        return Location(self.fs, f"{self.root.rstrip('/')}/{name}", self.local)


def locate(path: str, storage_options: dict | None = None) -> Location:
    """Where ``path`` (a local path or fsspec URL) is. A local path is resolved once, here: the
    user's own symbolic links to a model or checkpoint directory are followed, and nothing
    inside that directory ever is. ``storage_options`` beside a local path are ignored with a
    :class:`UserWarning`, as for datasets (:func:`dsoftmax.validation.url_storage_options`)."""
    storage_options = url_storage_options(str(path), storage_options)
    fs, root = fsspec.url_to_fs(str(path), **(storage_options or {}))
    if isinstance(fs, LocalFileSystem):
        return Location(fs, os.path.realpath(root), True)
    return Location(fs, root.rstrip("/"), False)


# --------------------------------------------------------------------------------- reading
def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _not_a_directory(path: str, mode: int) -> str:
    """Why ``path`` (of type ``mode``) cannot be a model or checkpoint."""
    if not stat.S_ISREG(mode):
        return (
            f"{path!r} is {_kind(mode)}, not a directory: a model or checkpoint is a directory "
            "of regular files."
        )
    parent = os.path.dirname(path)
    inside = (
        f" {os.path.basename(path)!r} is one of the files of the model {parent!r}: pass that "
        "directory."
        if os.path.isfile(os.path.join(parent, MANIFEST))
        else ""
    )
    return (
        f"{path!r} is a file; a model or checkpoint is a directory, holding {MANIFEST} and its "
        f"arrays.{inside}"
    )


class LocalDirectory:
    """A directory on the local disk, opened once; its files are read through that handle."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            raise MissingFileError(f"{path!r} does not exist.") from None
        if not stat.S_ISDIR(info.st_mode):
            raise ModelFileError(_not_a_directory(path, info.st_mode))
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self._fd = os.open(path, flags)
        except FileNotFoundError:
            raise MissingFileError(f"{path!r} does not exist.") from None
        except OSError as error:
            if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            raise ModelFileError(f"{path!r} changed into a link or a file while opened.") from None
        opened = os.fstat(self._fd)
        self.identity = (opened.st_dev, opened.st_ino)

    def close(self) -> None:
        os.close(self._fd)

    def read(self, name: str, limit: int, bound: str) -> bytes:
        """The bytes of regular file ``name``, refused when larger than ``limit`` (``bound`` says
        where the limit comes from)."""
        try:
            info = os.stat(name, dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            raise MissingFileError(f"{name} is missing from {self.path!r}.") from None
        self._check_regular(name, info, limit, bound)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=self._fd)
        except FileNotFoundError:
            raise MissingFileError(f"{name} is missing from {self.path!r}.") from None
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            raise ModelFileError(self._not_regular(name, "a symbolic link")) from None
        with open(fd, "rb", buffering=0) as handle:
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
                raise ModelFileError(f"{name} in {self.path!r} changed while it was read.")
            self._check_regular(name, opened, limit, bound)
            data = _read_at_most(handle, opened.st_size)
        if data is None:
            raise ModelFileError(f"{name} in {self.path!r} grew while it was read.")
        return data

    def _check_regular(self, name: str, info: os.stat_result, limit: int, bound: str) -> None:
        if not stat.S_ISREG(info.st_mode):
            raise ModelFileError(self._not_regular(name, _kind(info.st_mode)))
        if info.st_size > limit:
            raise ModelFileError(_too_large(name, self.path, info.st_size, limit, bound))

    def _not_regular(self, name: str, kind: str) -> str:
        return (
            f"{name} in {self.path!r} is {kind}, not a regular file: model and checkpoint "
            "directories hold regular files only, and nothing there is followed elsewhere. "
            "Replace it with the file itself, or save the model again."
        )


class RemoteDirectory:
    """A directory (key prefix) on an fsspec filesystem such as an object store."""

    def __init__(self, fs: Any, root: str) -> None:
        self.fs = fs
        self.path = root
        fs.invalidate_cache(root)

    def close(self) -> None:
        pass

    def read(self, name: str, limit: int, bound: str) -> bytes:
        """The bytes of object ``name``, refused by its listed size before it is read."""
        path = f"{self.path}/{name}"
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            raise MissingFileError(f"{name} is missing from {self.path!r}.") from None
        if info.get("type") != "file":
            raise ModelFileError(
                f"{name} in {self.path!r} is a {info.get('type', 'non-file')}, not a file."
            )
        size = info.get("size")
        if not isinstance(size, int) or size > limit:
            raise ModelFileError(_too_large(name, self.path, size, limit, bound))
        if size == 0:
            return b""  # a ranged read of an empty object is refused by S3
        data = self.fs.cat_file(path, start=0, end=size + 1)
        if len(data) > size:
            raise ModelFileError(f"{name} in {self.path!r} grew while it was read.")
        return data


def _too_large(name: str, where: str, size: Any, limit: int, bound: str) -> str:
    return (
        f"{name} in {where!r} holds {size} bytes, more than the {limit} that {bound}; it was "
        "not written by dsoftmax as this model. Save the model again."
    )


def _read_at_most(handle: Any, size: int) -> bytearray | None:
    """The ``size`` bytes of ``handle``, or None when it holds more (it grew since its size was
    checked): memory stays bounded by the checked size."""
    buffer = bytearray(size + 1)
    view = memoryview(buffer)
    filled = 0
    while filled <= size:
        count = handle.readinto(view[filled:])
        if not count:
            break
        filled += count
    view.release()
    if filled > size:
        return None
    del buffer[filled:]
    return buffer


def read_directory(location: Location, read: Callable[[Any], T]) -> T:
    """``read(directory)`` on the directory at ``location``.

    A local read that a concurrent save disturbed is repeated on the new directory; a missing
    directory, or one that saves keep replacing, is read once more under the directory's lock,
    after what a killed save left is recovered (a model it left only as a backup is restored).
    """
    if not location.local:
        return read(RemoteDirectory(location.fs, location.root))
    root = location.root
    for _ in range(_READ_ATTEMPTS):
        try:
            directory = LocalDirectory(root)
        except MissingFileError:
            break
        try:
            return read(directory)
        except ModelFileError:
            if _identity(root) == directory.identity:
                raise  # the directory's own damage, not a concurrent save's
        finally:
            directory.close()
    return _read_under_lock(root, read)


def _read_under_lock(root: str, read: Callable[[Any], T]) -> T:
    with contextlib.ExitStack() as lock:
        try:
            lock.enter_context(_exclusive_lock(os.path.dirname(root)))
            _recover_leftovers(os.path.dirname(root))
        except OSError:
            pass  # a directory this process may not write to: read it as it is
        directory = LocalDirectory(root)
        try:
            return read(directory)
        finally:
            directory.close()


def _identity(path: str) -> tuple[int, int] | None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return (info.st_dev, info.st_ino)


# --------------------------------------------------------------------------------- writing
def replace_directory(
    location: Location, payloads: dict[str, bytes], *, force: bool = False
) -> None:
    """Make ``location`` a directory holding exactly ``payloads`` (file name → bytes).

    On a local disk the old directory is replaced whole or not at all (see the module
    docstring). ``location`` must be absent or a model or checkpoint directory (one with a
    ``manifest.json``), so nothing else is ever written over; ``force`` replaces whatever
    entry is there (a link is replaced, never followed), for names the caller owns.
    """
    if location.local:
        _replace_local(location.root, payloads, force)
    else:
        _replace_remote(location.fs, location.root, payloads, force)


def _replace_local(target: str, payloads: dict[str, bytes], force: bool) -> None:
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    with _exclusive_lock(parent):
        _recover_leftovers(parent)
        if not force:
            _check_replaceable(target)
        staging = _stage(parent, name, payloads)
        try:
            _fault_pause(FAULT_PAUSE_ENV, target)
            _commit(staging, target)
        finally:
            if os.path.lexists(staging):
                _remove(staging)


def _check_replaceable(target: str) -> None:
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode) and os.path.lexists(os.path.join(target, MANIFEST)):
        return
    # Only a model (or checkpoint) is ever replaced: never a dataset or someone's folder.
    raise ModelFileError(
        f"refusing to write over {target!r}: it exists and is not a dsoftmax model or "
        "checkpoint. Choose another path or remove it first."
    )


def _stage(parent: str, name: str, payloads: dict[str, bytes]) -> str:
    staging = _fresh_path(parent, _STAGING_PREFIX, name)
    os.mkdir(staging)
    for file_name, data in payloads.items():
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(os.open(os.path.join(staging, file_name), flags, 0o666), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    _fsync_directory(staging)
    return staging


def _commit(staging: str, target: str) -> None:
    """Put ``staging`` at ``target``; the old directory there goes."""
    parent, name = os.path.split(target)
    if not os.path.lexists(target):
        os.rename(staging, target)
        _fsync_directory(parent)
        return
    if _fault_seconds(FAULT_PAUSE_MID_SWAP_ENV, target) is None and _exchange(staging, target):
        _fsync_directory(parent)
        _remove(staging)  # the old directory, now at the staging path
        return
    backup = _fresh_path(parent, _BACKUP_PREFIX, name)
    os.rename(target, backup)
    _fault_pause(FAULT_PAUSE_MID_SWAP_ENV, target)
    os.rename(staging, target)
    _fsync_directory(parent)
    _remove(backup)


def _recover_leftovers(parent: str) -> None:
    """Under ``parent``'s lock: rename back each backup whose target a killed two-rename save
    left missing, and remove every other staging directory and backup there."""
    with os.scandir(parent) as entries:
        leftovers = sorted(
            entry.name
            for entry in entries
            if entry.name.startswith(_STAGING_PREFIX) or _backup_of(entry.name)
        )
    for entry in leftovers:
        path = os.path.join(parent, entry)
        target = _backup_of(entry)
        if target and not os.path.lexists(os.path.join(parent, target)):
            os.rename(path, os.path.join(parent, target))
            _fsync_directory(parent)
            logger.warning(
                "dsoftmax: restored %s, which a save killed mid-swap had moved to %s",
                os.path.join(parent, target),
                entry,
            )
        else:
            _remove(path)


def _backup_of(entry: str) -> str | None:
    match = _BACKUP.match(entry)
    return match["name"] if match else None


def _fresh_path(parent: str, prefix: str, name: str) -> str:
    while True:
        path = os.path.join(parent, f"{prefix}{name}-{secrets.token_hex(4)}")
        if not os.path.lexists(path):
            return path


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _exclusive_lock(directory: str) -> Iterator[None]:
    """Hold ``directory``'s advisory lock. The holder removes the lock file before it lets go,
    so a waiter that then gets the lock of the removed file tries again on a fresh one."""
    if fcntl is None:
        yield
        return
    path = os.path.join(directory, LOCK_NAME)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _is_at(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def _is_at(fd: int, path: str) -> bool:
    try:
        info = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (info.st_dev, info.st_ino) == (opened.st_dev, opened.st_ino)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: str, second: str) -> bool:
    """Swap two directory entries in one step (Linux ``renameat2``); False where the system or
    the filesystem cannot, so that the caller takes the two-rename path."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    done = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), first, None, second)


def _renameat2() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    path_at = [ctypes.c_int, ctypes.c_char_p]
    function.argtypes = [*path_at, *path_at, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _fault_seconds(variable: str, target: str) -> float | None:
    setting = os.environ.get(variable)
    if not setting:
        return None
    part, _, seconds = setting.rpartition(":")
    return float(seconds) if part and part in target else None


def _fault_pause(variable: str, target: str) -> None:
    seconds = _fault_seconds(variable, target)
    if seconds is not None:
        time.sleep(seconds)


def _replace_remote(fs: Any, root: str, payloads: dict[str, bytes], force: bool) -> None:
    fs.invalidate_cache(root)
    if not force and fs.exists(root) and fs.ls(root) and not fs.exists(f"{root}/{MANIFEST}"):
        raise ModelFileError(
            f"refusing to write over {root!r}: it holds objects and is not a dsoftmax model or "
            "checkpoint. Choose another path or remove it first."
        )
    if fs.exists(f"{root}/{MANIFEST}"):
        fs.rm(f"{root}/{MANIFEST}")
    for name, data in payloads.items():
        if name != MANIFEST:
            fs.pipe_file(f"{root}/{name}", data)
    fs.pipe_file(f"{root}/{MANIFEST}", payloads[MANIFEST])


def remove_directory(location: Location) -> None:
    """Remove a model or checkpoint directory; on object stores its manifest first, so that a
    half-removed one reads as incomplete."""
    root = location.root
    if location.local:
        with _exclusive_lock(os.path.dirname(root)):
            if os.path.lexists(root):
                _remove(root)
        return
    with contextlib.suppress(FileNotFoundError):
        location.fs.rm(f"{root}/{MANIFEST}")
    with contextlib.suppress(FileNotFoundError):
        location.fs.rm(root, recursive=True)
