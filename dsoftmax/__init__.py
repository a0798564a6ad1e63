"""dsoftmax: data-parallel softmax regression with L2 regularization on Dask and Zarr.

>>> from dsoftmax import SoftmaxRegression, open_dataset          # doctest: +SKIP
>>> model = SoftmaxRegression(l2=1e-4).fit(open_dataset("train.zarr"))  # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from .data import (
    Dataset,
    convert_numpy,
    load_digits,
    make_classification,
    open_dataset,
    write_array,
    write_dataset,
)
from .estimator import SoftmaxRegression
from .objective import l2_from_sklearn_C, l2_from_spark_reg_param

try:
    __version__ = version("dsoftmax")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = [
    "Dataset",
    "SoftmaxRegression",
    "__version__",
    "convert_numpy",
    "l2_from_sklearn_C",
    "l2_from_spark_reg_param",
    "load_digits",
    "make_classification",
    "open_dataset",
    "write_array",
    "write_dataset",
]
