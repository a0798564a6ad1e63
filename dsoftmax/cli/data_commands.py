"""The commands that write datasets: ``dsoftmax make-data`` and ``dsoftmax convert``."""

from __future__ import annotations

import argparse
import time
from typing import Any

from .output import EXIT_OK, UsageError
from .session import CommandCluster

__all__ = ["cmd_convert", "cmd_make_data"]


def cmd_make_data(args: argparse.Namespace, cluster: CommandCluster) -> int:
    """``dsoftmax make-data``: write a synthetic teacher dataset, its chunks made on the named
    cluster, else on threads of this process."""
    from ..data import make_classification

    started = time.perf_counter()
    dataset = make_classification(
        args.out,
        args.n_samples,
        args.n_features,
        args.n_classes,
        chunk_rows=args.chunk_rows,
        seed=args.seed,
        teacher_seed=args.teacher_seed,
        dtype=args.dtype,
        client=cluster.named_client(),
        codec=args.codec,
        storage_options=args.storage_options,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {dataset.n_samples} x {dataset.n_features} {dataset.dtype} with "
        f"{dataset.n_classes} classes to {args.out} in {time.perf_counter() - started:.1f} s"
    )
    return EXIT_OK


#: Options of ``convert`` that only some formats take, with those formats.
_CONVERT_OPTION_FORMATS = {
    "label_column": ("parquet", "csv"),
    "feature_columns": ("parquet", "csv"),
    "embedding_column": ("parquet",),
    "source_storage_options": ("parquet", "csv"),
    "feature_key": ("npz",),
    "label_key": ("npz",),
    "index_column": ("parquet",),
    "value_column": ("parquet",),
    "n_features": ("svmlight", "parquet"),
    "zero_based": ("svmlight",),
    "layout": ("svmlight",),
    "max_dense_bytes": ("svmlight",),
    "dtype": ("parquet", "csv", "svmlight"),
}


def _convert_format(args: argparse.Namespace) -> str:
    """The sources' format, after refusing options that it does not take."""
    from ..data.convert import detect_format

    if args.format is None:
        try:
            kind = detect_format(args.source)
        except ValueError as error:
            raise UsageError(str(error)) from None
    else:
        kind = args.format
        expected = {"npz": 1, "npy": 2}.get(kind)
        if expected is not None and len(args.source) != expected:
            raise UsageError(
                f"--format {kind} takes {'DATA.npz' if kind == 'npz' else 'X.npy y.npy'}, got "
                f"{len(args.source)} path(s)"
            )
    for option, formats in _CONVERT_OPTION_FORMATS.items():
        if getattr(args, option) is not None and kind not in formats:
            flag = "--" + option.replace("_", "-")
            only = ", ".join(formats)
            raise UsageError(f"{flag} does not apply to {kind} sources (only to {only})")
    if kind in ("parquet", "csv") and args.label_column is None:
        raise UsageError(f"{kind} sources need --label-column NAME, the column of the labels")
    if kind == "parquet" and args.index_column is None:
        for option in ("value_column", "n_features"):
            if getattr(args, option) is not None:
                flag = "--" + option.replace("_", "-")
                raise UsageError(f"{flag} takes Parquet sources of sparse rows: add --index-column")
    if args.index_column is not None and (args.feature_columns or args.embedding_column):
        raise UsageError(
            "--index-column reads sparse rows; it does not combine with --feature-columns or "
            "--embedding-column"
        )
    return kind


def _convert_source(args: argparse.Namespace, kind: str) -> Any:
    from .. import data
    from ..data import convert

    output = {
        "codec": args.codec,
        "storage_options": args.storage_options,
        "overwrite": args.overwrite,
    }
    if args.chunk_rows is not None:  # else each source's default (Parquet: its row groups')
        output["chunk_rows"] = args.chunk_rows
    if kind in ("npz", "npy"):
        return data.convert_numpy(
            args.source[0] if kind == "npz" else tuple(args.source),
            args.out,
            label_key=args.label_key or "y",
            feature_key=args.feature_key or "X",
            **output,
        )
    if kind == "svmlight":
        return convert.convert_svmlight(
            args.source,
            args.out,
            n_features=args.n_features,
            zero_based={None: "auto", "auto": "auto", "yes": True, "no": False}[args.zero_based],
            max_dense_bytes=args.max_dense_bytes or convert.DEFAULT_MAX_DENSE_BYTES,
            dtype=args.dtype or "float32",
            layout=args.layout or "auto",
            **output,
        )
    if kind == "parquet" and args.index_column is not None:
        return convert.convert_parquet_sparse(
            args.source,
            args.out,
            label_column=args.label_column,
            index_column=args.index_column,
            value_column=args.value_column,
            n_features=args.n_features,
            dtype=args.dtype,
            source_storage_options=args.source_storage_options,
            **output,
        )
    columns = {
        "label_column": args.label_column,
        "feature_columns": args.feature_columns,
        "source_storage_options": args.source_storage_options,
    }
    if kind == "csv":
        return convert.convert_csv(
            args.source,
            args.out,
            dtype=args.dtype or "float64",
            progress=True,
            **columns,
            **output,
        )
    return convert.convert_parquet(
        args.source,
        args.out,
        embedding_column=args.embedding_column,
        dtype=args.dtype,
        # A bar on a terminal, and the closing rows/s line (on the terminal, or at -v).
        progress=True,
        **columns,
        **output,
    )


def cmd_convert(args: argparse.Namespace, cluster: CommandCluster) -> int:
    """``dsoftmax convert``: write the sources as a Zarr dataset (in this process)."""
    dataset = _convert_source(args, _convert_format(args))
    sparse = f" (sparse, {dataset.n_nonzero} non-zeros)" if dataset.layout == "csr" else ""
    print(
        f"wrote {dataset.n_samples} x {dataset.n_features}{sparse} with {dataset.n_classes} "
        f"classes to {args.out}"
    )
    return EXIT_OK
