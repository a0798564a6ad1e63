"""dsoftmax: data-parallel softmax regression with L2 regularization on Dask and Zarr.

>>> from dsoftmax import SoftmaxRegression, open_dataset          # doctest: +SKIP
>>> model = SoftmaxRegression(l2=1e-4).fit(open_dataset("train.zarr"))  # doctest: +SKIP

The public names are imported on first use, so ``dsoftmax --help`` does not pay for importing
Dask, Zarr and scikit-learn.
"""

from importlib.metadata import PackageNotFoundError, version

from .lazy import lazy_names

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
    "open_parquet": "data",
    "write_array": "data",
    "write_dataset": "data",
    "SoftmaxRegression": "estimator",
    "SoftmaxRegressionCV": "estimator_cv",
    "convert_csv": "data.convert",
    "convert_parquet": "data.convert",
    "convert_svmlight": "data.convert",
    "plot_training": "plotting",
    "l2_from_sklearn_C": "objective",
    "l2_from_spark_reg_param": "objective",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


__getattr__, __dir__ = lazy_names(__name__, globals(), _PUBLIC)
