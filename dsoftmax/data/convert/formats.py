"""Source formats of the converters, told from file name endings."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ...defaults import CONVERT_FORMATS

__all__ = ["FORMATS", "detect_format", "names_parquet"]

_ENDINGS = {
    "npz": (".npz",),
    "npy": (".npy",),
    "parquet": (".parquet", ".pq"),
    "csv": (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zst"),
    "svmlight": (
        ".svm", ".svmlight", ".libsvm", ".txt",
        ".svm.gz", ".svmlight.gz", ".libsvm.gz", ".txt.gz",
        ".svm.bz2", ".svmlight.bz2", ".libsvm.bz2", ".txt.bz2",
    ),
}  # fmt: skip
#: Source formats (:data:`~dsoftmax.defaults.CONVERT_FORMATS`), with the file name endings
#: :func:`detect_format` recognizes.
FORMATS: dict[str, tuple[str, ...]] = {kind: _ENDINGS[kind] for kind in CONVERT_FORMATS}


def _format_of(path: str) -> str | None:
    name = path.rstrip("/").lower()
    # Longest ending first, so that "x.svm.gz" is svmlight and not a bare ".gz".
    endings = sorted(
        ((ending, kind) for kind, names in FORMATS.items() for ending in names),
        key=lambda pair: -len(pair[0]),
    )
    return next((kind for ending, kind in endings if name.endswith(ending)), None)


def names_parquet(path: str | os.PathLike) -> bool:
    """Whether a dataset argument names Parquet files rather than a Zarr store: a name or glob
    pattern ending in ``.parquet`` or ``.pq``, or a local directory that holds such files and
    is not a Zarr group.

    Examples
    --------
    >>> names_parquet("emb/test/*.parquet"), names_parquet("s3://bucket/test.zarr")
    (True, False)
    """
    path = os.fspath(path)
    if _format_of(path) == "parquet":
        return True
    if not os.path.isdir(path) or any(
        os.path.exists(os.path.join(path, marker)) for marker in ("zarr.json", ".zgroup")
    ):
        return False
    endings = FORMATS["parquet"]
    return any(
        name.lower().endswith(endings) for _, _, names in os.walk(path) for name in names
    )


def detect_format(sources: Sequence[str | os.PathLike]) -> str:
    """The format of ``sources``, from their file name endings.

    Parameters
    ----------
    sources : sequence of str or path
        Files, glob patterns (``data/part-*.csv.gz``) or a directory (of Parquet files).

    Returns
    -------
    str
        One of :data:`FORMATS`: ``"npz"`` (one file), ``"npy"`` (two files: X then y),
        ``"parquet"`` (``.parquet``/``.pq`` files, or a local directory), ``"csv"`` (``.csv``,
        optionally compressed) or ``"svmlight"`` (``.svm``, ``.svmlight``, ``.libsvm``,
        ``.txt``, optionally ``.gz``/``.bz2``).

    Raises
    ------
    ValueError
        When an ending is unknown, the sources mix formats, or the count of files does not suit
        the format.
    """
    paths = [os.fspath(source) for source in sources]
    if not paths:
        raise ValueError("no source given; pass at least one file, glob pattern or directory.")
    kinds = []
    for path in paths:
        kind = "parquet" if os.path.isdir(path) else _format_of(path)
        if kind is None:
            endings = ", ".join(ending for names in FORMATS.values() for ending in names)
            raise ValueError(
                f"cannot tell the format of {path!r} from its name; expected one of {endings}, "
                f"or a directory of Parquet files. Name the format with --format "
                f"({', '.join(FORMATS)})."
            )
        kinds.append(kind)
    if len(set(kinds)) > 1:
        found = ", ".join(f"{path!r} ({kind})" for path, kind in zip(paths, kinds, strict=True))
        raise ValueError(f"the sources mix formats: {found}; convert one format at a time.")
    kind = kinds[0]
    _check_source_count(kind, len(paths))
    return kind


def _check_source_count(kind: str, count: int) -> None:
    if kind == "npz" and count != 1:
        raise ValueError(f"a .npz source is one file, got {count}; convert them one at a time.")
    if kind == "npy" and count != 2:
        raise ValueError(
            f"a .npy source is a pair of files, X.npy then y.npy, got {count} file(s)."
        )
