"""Zarr datasets: the format, writing, opening with its checks, reading chunks, value checks,
synthetic data and converters, and the inputs of a fit.

=================  ==============================================================================
module             job
=================  ==============================================================================
``format``         the dataset format: :class:`Dataset`, group attributes, fingerprint,
                   :func:`check_row_chunks`
``open``           :func:`open_dataset` and its structure checks
``parquet``        :func:`open_parquet`: a dataset over Parquet files, a block per row group
``store``          where a store is, what it holds, chunk reads with retries, lazy dask arrays
``decode``         decoding one chunk within the size its array declares
``write``          :func:`write_dataset`, :func:`write_array`, :func:`remove_array`, codecs
``values``         :func:`block_stats`, :func:`combine_stats`, :func:`check_values`
``labels``         the one label encoder and the one sample-weight validator
``inputs``         the inputs of a fit (NumPy, Dask, a Dataset) in one validated form
``synth``          :func:`make_classification`, :func:`load_digits`
``synth_sparse``   :func:`make_bag_of_words`, hashed-text rows
``convert``        NumPy, Parquet, CSV and svmlight sources (:func:`convert_numpy`, ...)
``sparse``         the canonical CSR form of sparse features and its value checks
``sparse_store``   the sparse dataset format: row blocks of CSR
=================  ==============================================================================

Reading is lazy: :func:`open_dataset` checks the structure without reading data, and
:func:`check_values` makes one pass over the values.

The names below are imported from their module on first use: a worker that reads chunks or
checks values imports those modules only, not the converters' or the fit inputs' dependencies
(pandas, scikit-learn).
"""

from __future__ import annotations

from ..defaults import DEFAULT_CHUNK_ROWS, DEFAULT_READ_RETRIES
from ..lazy import lazy_names

_PUBLIC = {
    "FORMATS": "convert",
    "convert_csv": "convert",
    "convert_numpy": "convert",
    "convert_parquet": "convert",
    "convert_parquet_sparse": "convert",
    "convert_svmlight": "convert",
    "detect_format": "convert",
    "FORMAT_VERSION": "format",
    "Dataset": "format",
    "check_row_chunks": "format",
    "check_sample_weight": "labels",
    "encode_labels": "labels",
    "open_dataset": "open",
    "open_parquet": "parquet",
    "ChunkReadError": "store",
    "load_digits": "synth",
    "make_bag_of_words": "synth_sparse",
    "make_classification": "synth",
    "BlockStats": "values",
    "DatasetStats": "values",
    "block_stats": "values",
    "check_values": "values",
    "combine_stats": "values",
    "remove_array": "write",
    "write_array": "write",
    "write_dataset": "write",
}

__all__ = ["DEFAULT_CHUNK_ROWS", "DEFAULT_READ_RETRIES", *sorted(_PUBLIC)]


__getattr__, __dir__ = lazy_names(__name__, globals(), _PUBLIC)
