"""Synthetic bag-of-words data: sparse rows shaped like hashed text, in topical classes.

Each document's class is drawn uniformly; its words come from a background vocabulary with
Zipf-like frequencies (``p_r ∝ 1 / (r + 2.7)^1.07`` over the ranks, close to English text) and,
for a share :data:`TOPIC_SHARE` of them, from its class's own topic words (a few hundred words
of middling frequency, Zipf-distributed within the topic). Words are hashed to random columns;
each document's counts are weighted by ``log1p`` and L2-normalized, as
:class:`sklearn.feature_extraction.text.TfidfVectorizer` does by default. The classes are then
learnable by a linear model but not separable, and the memory access of a fit on such rows is
that of real text: frequent words in cache, rare ones far apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse

from .sparse import canonical_csr

__all__ = ["make_bag_of_words"]

#: Zipf exponent and rank offset of the word frequencies.
ZIPF_EXPONENT = 1.07
ZIPF_OFFSET = 2.7
#: Share of a document's words drawn from its class's topic.
TOPIC_SHARE = 0.03
#: Words of each class's topic, drawn among the ranks from :data:`TOPIC_RANKS`.
TOPIC_WORDS = 400
TOPIC_RANKS = (50, 50_000)
#: Documents per piece of the generation, to bound its temporary memory.
_PIECE_ROWS = 65_536


def _zipf_cdf(n_words: int) -> np.ndarray:
    ranks = np.arange(n_words, dtype=np.float64)
    weights = 1.0 / (ranks + ZIPF_OFFSET) ** ZIPF_EXPONENT
    return np.cumsum(weights / weights.sum())


def _draw(rng: np.random.Generator, cdf: np.ndarray, count: int) -> np.ndarray:
    """``count`` ranks drawn from the distribution of ``cdf``."""
    return np.minimum(np.searchsorted(cdf, rng.random(count), side="right"), cdf.shape[0] - 1)


def _topics(rng: np.random.Generator, n_features: int, n_classes: int) -> np.ndarray:
    """Each class's topic words, as ranks of the vocabulary: (n_classes, n_topic_words)."""
    low, high = min(TOPIC_RANKS[0], n_features - 1), min(TOPIC_RANKS[1], n_features)
    size = min(TOPIC_WORDS, high - low)
    return np.stack([rng.choice(np.arange(low, high), size=size, replace=False)
                     for _ in range(n_classes)])  # fmt: skip


def _documents(
    rng: np.random.Generator,
    labels: np.ndarray,
    columns: np.ndarray,
    topics: np.ndarray,
    cdfs: tuple[np.ndarray, np.ndarray],
    nnz_per_row: int,
    dtype: np.dtype,
) -> scipy.sparse.csr_matrix:
    n_rows, n_features = labels.shape[0], columns.shape[0]
    background, topic = cdfs
    # Repeated words merge: draw more than nnz_per_row so that about that many stay distinct.
    lengths = np.maximum(1, rng.poisson(nnz_per_row * 1.15, size=n_rows))
    rows = np.repeat(np.arange(n_rows), lengths)
    ranks = _draw(rng, background, rows.shape[0])
    topical = rng.random(rows.shape[0]) < TOPIC_SHARE
    topic_ranks = _draw(rng, topic, int(topical.sum()))
    ranks[topical] = topics[labels[rows[topical]], topic_ranks]
    counts = scipy.sparse.csr_matrix(
        (np.ones(rows.shape[0]), (rows, columns[ranks])), shape=(n_rows, n_features)
    )
    counts.sum_duplicates()
    counts.data = np.log1p(counts.data)
    norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
    counts = scipy.sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ counts
    return canonical_csr(counts, dtype)


def make_bag_of_words(
    n_samples: int,
    n_features: int,
    n_classes: int,
    *,
    nnz_per_row: int = 100,
    seed: int = 0,
    dtype: Any = "float32",
) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """Synthetic hashed-text rows and their labels (see the module docstring).

    Parameters
    ----------
    n_samples, n_features, n_classes : int
    nnz_per_row : int, default 100
        Distinct words per document, on average.
    seed : int, default 0
    dtype : {"float32", "float64"}

    Returns
    -------
    X : scipy.sparse.csr_matrix of shape (n_samples, n_features)
        Canonical CSR, rows of unit L2 norm.
    y : ndarray of shape (n_samples,), int64
        Class ids in ``[0, n_classes)``.

    Examples
    --------
    >>> X, y = make_bag_of_words(1000, 2**12, 5, nnz_per_row=20)
    >>> X.shape, 15 < X.nnz / X.shape[0] < 25, sorted(set(y.tolist())) == list(range(5))
    ((1000, 4096), True, True)
    """
    for name, value in (("n_samples", n_samples), ("n_features", n_features)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}.")
    if isinstance(nnz_per_row, bool) or not isinstance(nnz_per_row, int) or nnz_per_row < 1:
        raise ValueError(f"nnz_per_row must be an int >= 1, got {nnz_per_row!r}.")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype}.")
    rng = np.random.default_rng(seed)
    columns = rng.permutation(n_features)  # word rank -> hashed column
    topics = _topics(rng, n_features, n_classes)
    y = rng.integers(0, n_classes, size=n_samples)
    cdfs = (_zipf_cdf(n_features), _zipf_cdf(topics.shape[1]))
    pieces = [
        _documents(rng, y[start : start + _PIECE_ROWS], columns, topics, cdfs, nnz_per_row, dtype)
        for start in range(0, n_samples, _PIECE_ROWS)
    ]
    X = pieces[0] if len(pieces) == 1 else scipy.sparse.vstack(pieces, format="csr")
    return canonical_csr(X, dtype), y.astype(np.int64)
