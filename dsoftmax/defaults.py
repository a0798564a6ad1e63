"""Names and defaults shared by the library and the command line.

This module imports nothing heavy, so that ``dsoftmax --help`` can show the choices and defaults
that the library uses without importing NumPy, Dask or Zarr. Every other module takes these values
from here instead of repeating them.
"""

from __future__ import annotations

__all__ = [
    "AUTO_CODEC_MIN_SAVING",
    "AUTO_CODEC_SAMPLE_BYTES",
    "BALANCED_BLOCK_COUNTS",
    "CODECS",
    "CONVERT_FORMATS",
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_CODEC",
    "DEFAULT_GRID_MEMORY",
    "DEFAULT_READ_RETRIES",
    "DEFAULT_SCHEDULER_TIMEOUT",
    "FEATURE_DTYPES",
    "HOLD_CHOICES",
    "L2_GRID_RANGE",
    "MIN_BALANCED_BLOCK_ROWS",
    "SCHEDULES",
    "SCORINGS",
    "SOLVERS",
]

#: Seconds to wait for a scheduler named by its address to answer.
DEFAULT_SCHEDULER_TIMEOUT = 30.0

#: Rows per Zarr chunk, the unit of work of every evaluation (and at most per block of NumPy
#: input).
DEFAULT_CHUNK_ROWS = 65536

#: NumPy input with ``chunk_rows="auto"`` is cut into equal blocks of at most
#: :data:`DEFAULT_CHUNK_ROWS` rows, their number rounded up to a multiple of the first of these
#: counts that keeps every block at least :data:`MIN_BALANCED_BLOCK_ROWS` rows: 2 or 4 workers
#: (or threads) then get equal shares of every pass.
BALANCED_BLOCK_COUNTS = (4, 2)
MIN_BALANCED_BLOCK_ROWS = 8192

#: The client's memory for the L-BFGS optimizers of a grid's models that train at once.
DEFAULT_GRID_MEMORY = "2GiB"

#: Attempts at reading one chunk before a read error is reported.
DEFAULT_READ_RETRIES = 3

#: Dtypes a dataset's features may be stored in: float16 halves the bytes read and held, and the
#: kernel computes in float32 from it (float64 sums either way).
FEATURE_DTYPES = ("float32", "float64", "float16")

#: Compression of dataset chunks: "auto" stores dense features with zstd when it saves at least
#: AUTO_CODEC_MIN_SAVING of a sample of the first rows, uncompressed otherwise (every other
#: array with zstd).
CODECS = ("auto", "zstd", "lz4", "none")
DEFAULT_CODEC = "auto"
AUTO_CODEC_MIN_SAVING = 0.2
#: Bytes of the first rows of X that codec "auto" compresses to decide.
AUTO_CODEC_SAMPLE_BYTES = 1 << 20

#: Source formats of ``dsoftmax convert``.
CONVERT_FORMATS = ("npz", "npy", "parquet", "csv", "svmlight")

#: Optimizers of a fit: full-batch L-BFGS, or minibatch SGD and Adam.
SOLVERS = ("lbfgs", "sgd", "adam")

#: Learning-rate schedules of the minibatch solvers.
SCHEDULES = ("constant", "inverse_scaling", "step_decay", "cosine")

#: Where the rows live during a fit on a cluster.
HOLD_CHOICES = ("auto", "memory", "stream")

#: Held-out scores of a cross-validated grid, by scikit-learn's names (higher is better).
SCORINGS = ("neg_log_loss", "accuracy")

#: The range of scikit-learn's ``Cs`` grid (``np.logspace(-4, 4, n)``), as powers of ten: an
#: ``l2s=n`` grid is its image ``λ = 1 / (2 · C · n_samples)``.
L2_GRID_RANGE = (-4.0, 4.0)

#: Environment of the processes dsoftmax starts (the command line's own, and the workers of the
#: clusters it starts). NumPy asks the kernel for transparent huge pages on large allocations; a
#: process that allocates hundreds of megabytes (a worker loading its blocks, a client receiving
#: a wide model's sums every evaluation) then stalls in the kernel's page compaction where memory
#: is fragmented (docs/scaling.md, "Model-sized arrays"). Computation is no slower without.
PROCESS_ENVIRONMENT = {"NUMPY_MADVISE_HUGEPAGE": "0"}
