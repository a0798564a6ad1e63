"""dsoftmax: data-parallel softmax regression with L2 regularization on Dask and Zarr.

>>> from dsoftmax import SoftmaxRegression, open_dataset          # doctest: +SKIP
>>> model = SoftmaxRegression(l2=1e-4).fit(open_dataset("train.zarr"))  # doctest: +SKIP

The public names are imported on first use, so ``dsoftmax --help`` does not pay for importing
Dask, Zarr and scikit-learn.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("dsoftmax")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

_PUBLIC = {
    "ChunkReadError": "data",
    "Dataset": "data",
    "convert_numpy": "data",
    "load_digits": "data",
    "make_classification": "data",
    "open_dataset": "data",
    "write_array": "data",
    "write_dataset": "data",
    "SoftmaxRegression": "estimator",
    "convert_csv": "convert",
    "convert_parquet": "convert",
    "convert_svmlight": "convert",
    "plot_training": "plotting",
    "l2_from_sklearn_C": "objective",
    "l2_from_spark_reg_param": "objective",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dsoftmax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
