"""Which columns of a Parquet source become the labels and the features: the layout its first
file's schema gives, shared by the converter and by :func:`dsoftmax.open_parquet`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .common import choose_feature_dtype, missing_columns

if TYPE_CHECKING:  # an optional dependency, imported when the converter runs
    import pyarrow as pa

__all__ = ["ParquetLayout", "is_list", "is_numeric", "is_single_precision", "parquet_layout"]

logger = logging.getLogger("dsoftmax")


@dataclass(frozen=True)
class ParquetLayout:
    """Which columns of a Parquet source become what.

    Attributes
    ----------
    label_column : str
    feature_columns : tuple of str
        Numeric columns, one feature each; empty when ``embedding_column`` is used.
    embedding_column : str or None
        A list column whose rows are the feature vectors.
    n_features : int
    dtype : numpy.dtype
        float32 or float64.
    """

    label_column: str
    feature_columns: tuple[str, ...]
    embedding_column: str | None
    n_features: int
    dtype: np.dtype

    @property
    def columns(self) -> list[str]:
        features = [self.embedding_column] if self.embedding_column else self.feature_columns
        return [*features, self.label_column]

    @property
    def feature_names(self) -> list[str]:
        """The feature columns, or ``embedding[i]``."""
        if self.embedding_column:
            return [f"{self.embedding_column}[{i}]" for i in range(self.n_features)]
        return list(self.feature_columns)


def is_numeric(arrow_type: pa.DataType) -> bool:
    """Whether values of ``arrow_type`` are numbers (integers, floats or booleans)."""
    import pyarrow as pa

    return bool(
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_boolean(arrow_type)
    )


def is_single_precision(arrow_type: pa.DataType) -> bool:
    """Whether ``arrow_type`` holds floats of at most 32 bits (features stay float32)."""
    import pyarrow as pa

    return bool(pa.types.is_float32(arrow_type) or pa.types.is_float16(arrow_type))


def is_list(arrow_type: pa.DataType) -> bool:
    """Whether ``arrow_type`` is a list, large list or fixed-size list."""
    import pyarrow as pa

    return bool(
        pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
        or pa.types.is_fixed_size_list(arrow_type)
    )


def parquet_layout(
    fs: Any,
    first_file: str,
    schema: pa.Schema,
    label_column: str,
    feature_columns: list[str] | None,
    embedding_column: str | None,
    dtype: Any,
) -> ParquetLayout:
    """The layout of a source whose first file is ``first_file`` with ``schema``.

    Without ``feature_columns`` or ``embedding_column``, the features are every numeric column
    besides the label; where there is none, the one list column of numbers (an embedding).
    """
    names = schema.names
    missing_columns([label_column], names, repr(first_file))
    if feature_columns is None and embedding_column is None:
        feature_columns = [
            field.name for field in schema if field.name != label_column and is_numeric(field.type)
        ]
        if not feature_columns:
            embedding_column = _sole_embedding(schema, label_column, first_file)
    if embedding_column is not None:
        missing_columns([embedding_column], names, repr(first_file))
        embedding_type = schema.field(embedding_column).type
        if not is_list(embedding_type) or not is_numeric(embedding_type.value_type):
            raise TypeError(
                f"embedding_column {embedding_column!r} has type {embedding_type}; it must be a "
                "list (or fixed-size list) of numbers. Name its numeric columns with "
                "feature_columns instead."
            )
        n_features = _embedding_length(fs, first_file, embedding_column, embedding_type)
        automatic = is_single_precision(embedding_type.value_type)
        return ParquetLayout(
            label_column,
            (),
            embedding_column,
            n_features,
            choose_feature_dtype(dtype, np.dtype(np.float32 if automatic else np.float64)),
        )
    missing_columns(feature_columns, names, repr(first_file))
    for name in feature_columns:
        if not is_numeric(schema.field(name).type):
            raise TypeError(
                f"feature column {name!r} has type {schema.field(name).type}; features must be "
                "numbers. Leave it out of feature_columns, or encode it as numbers first."
            )
    automatic = all(is_single_precision(schema.field(name).type) for name in feature_columns)
    return ParquetLayout(
        label_column,
        tuple(feature_columns),
        None,
        len(feature_columns),
        choose_feature_dtype(dtype, np.dtype(np.float32 if automatic else np.float64)),
    )


def _sole_embedding(schema: pa.Schema, label_column: str, first_file: str) -> str:
    """The one list column of numbers of a schema with no numeric column besides the label."""
    lists = [
        field.name
        for field in schema
        if field.name != label_column and is_list(field.type) and is_numeric(field.type.value_type)
    ]
    if len(lists) == 1:
        logger.info("dsoftmax: the features are the embedding column %r", lists[0])
        return lists[0]
    where = f"{first_file!r} has no numeric column besides the label {label_column!r}"
    if lists:
        raise ValueError(
            f"{where}, and several list columns of numbers: {lists}. Name the features' one "
            "with embedding_column."
        )
    raise ValueError(
        f"{where}; its columns are {schema.names}. Name the features with feature_columns or an "
        "embedding_column."
    )


def _embedding_length(fs: Any, path: str, column: str, arrow_type: pa.DataType) -> int:
    import pyarrow.parquet as pq

    if hasattr(arrow_type, "list_size"):
        return int(arrow_type.list_size)
    with fs.open(path, "rb") as file:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=1, columns=[column]):
            if batch.num_rows and batch.column(0)[0].is_valid:
                return len(batch.column(0)[0])
    raise ValueError(
        f"cannot tell the length of embedding column {column!r}: the first row of {path!r} has "
        "none; put a complete row first, or fix the missing embeddings."
    )
