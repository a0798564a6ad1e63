"""Cross-validation splits as one fold code per row and a small table of roles.

A grid's models train and are scored on masks over the same blocks. Every split ``s`` gives each
row a role: one of its training rows (:data:`~dsoftmax.kernels.stacked.ROLE_TRAIN`), one of its
held-out rows (:data:`~dsoftmax.kernels.stacked.ROLE_HELD_OUT`), or neither
(:data:`~dsoftmax.kernels.stacked.ROLE_UNUSED`). Rows with the same roles in every split share a
*fold code*; :class:`FoldTable` holds the code of every row (uint8 for up to 256 codes) and the
table ``roles[code, split]``. For k folds the code of a row is the fold that holds it out (k
codes); a splitter whose held-out sets overlap or leave rows out (``ShuffleSplit``) simply has
more codes. The codes travel to the workers once, with the blocks; each evaluation sends the
table.

``cv`` is what :class:`dsoftmax.SoftmaxRegressionCV` takes: an int (stratified folds from
scikit-learn's ``StratifiedKFold`` over the labels, shuffled with the fit's seed), a
scikit-learn splitter, an iterable of ``(train, test)`` index arrays, or ``"validation"``
(:func:`dsoftmax.sampling.split_validation` with ``validation_fraction``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from ..kernels.stacked import ROLE_HELD_OUT, ROLE_TRAIN, ROLE_UNUSED
from ..sampling import split_validation
from ..validation import is_integer

__all__ = ["FoldTable", "describe_cv", "fold_table", "folds_from_splits"]

#: Splits up to which a row's roles are one base-3 number (3^39 < 2^63).
_RADIX_SPLITS = 39


class FoldTable(NamedTuple):
    """The splits of a cross-validation, as fold codes.

    Attributes
    ----------
    codes : ndarray of shape (n_samples,)
        Each row's fold code (uint8, uint16 or int32, the narrowest that holds them).
    roles : ndarray of shape (n_codes, n_splits), uint8
        What a row of each code is to each split.
    description : str
        How the splits were made, for messages and reports.
    """

    codes: np.ndarray
    roles: np.ndarray
    description: str

    @property
    def n_splits(self) -> int:
        return int(self.roles.shape[1])

    @property
    def n_samples(self) -> int:
        return int(self.codes.shape[0])

    def rows(self, split: int, role: int) -> np.ndarray:
        """The rows (sorted int64) whose role in ``split`` is ``role``."""
        wanted = np.flatnonzero(self.roles[:, split] == role)
        return np.flatnonzero(np.isin(self.codes, wanted)).astype(np.int64)

    def counts(self, role: int) -> np.ndarray:
        """Rows of each split with ``role``, shape (n_splits,)."""
        per_code = np.bincount(self.codes, minlength=self.roles.shape[0])
        return (per_code[:, None] * (self.roles == role)).sum(axis=0)

    def digest(self) -> str:
        """sha256 of the codes and the table: which rows each split trains and scores on."""
        hasher = hashlib.sha256()
        for array in (self.codes.astype(np.int64), self.roles):
            hasher.update(str(array.shape).encode())
            hasher.update(np.ascontiguousarray(array).tobytes())
        return hasher.hexdigest()


def describe_cv(cv: Any) -> str:
    """How ``cv`` reads in a message: ``5-fold stratified``, ``validation split``, a splitter's
    repr, or ``N given splits``."""
    if is_integer(cv):
        return f"{int(cv)}-fold stratified"
    if isinstance(cv, str):
        return "validation split"
    return repr(cv) if hasattr(cv, "split") else "given splits"


def fold_table(
    cv: Any, labels: np.ndarray, seed: int, validation_fraction: float
) -> FoldTable:
    """The splits that ``cv`` makes of the rows (see the module docstring).

    Parameters
    ----------
    cv : int, "validation", splitter or iterable of (train, test)
    labels : ndarray of shape (n_samples,)
        Class ids, stratified over by ``StratifiedKFold`` (and given to a splitter as ``y``).
    seed : int
        Shuffles the stratified folds; draws the validation split.
    validation_fraction : float
        Held-out share of ``cv="validation"``.

    Raises
    ------
    ValueError, TypeError
        For a ``cv`` of another kind, or splits that are empty, overlap within a split or name
        rows outside the data.
    """
    n_samples = len(labels)
    if isinstance(cv, bool):
        raise TypeError(f"cv must be an int >= 2, 'validation', a splitter or splits, got {cv!r}.")
    if is_integer(cv):
        return _stratified(int(cv), labels, seed)
    if isinstance(cv, str):
        if cv != "validation":
            raise ValueError(
                f"cv must be an int >= 2 (folds), 'validation', a scikit-learn splitter or an "
                f"iterable of (train, test) index arrays, got {cv!r}."
            )
        train, test = split_validation(n_samples, validation_fraction, seed)
        return folds_from_splits(
            [(train, test)], n_samples, f"validation split ({validation_fraction:g} held out)"
        )
    if hasattr(cv, "split"):
        try:
            splits = list(cv.split(_no_features(n_samples), labels))
        except ValueError as error:
            raise ValueError(f"cv={cv!r} could not split the {n_samples} rows: {error}") from None
        return folds_from_splits(splits, n_samples, repr(cv))
    if isinstance(cv, Iterable):
        splits = list(cv)
        return folds_from_splits(splits, n_samples, f"{len(splits)} given splits")
    raise TypeError(
        f"cv must be an int >= 2 (folds), 'validation', a scikit-learn splitter or an iterable "
        f"of (train, test) index arrays, got {cv!r} of type {type(cv).__name__}."
    )


def _no_features(n_samples: int) -> np.ndarray:
    """An (n_samples, 1) array that takes no memory: splitters only count its rows."""
    return np.broadcast_to(np.int8(0), (n_samples, 1))


def _stratified(n_splits: int, labels: np.ndarray, seed: int) -> FoldTable:
    from sklearn.model_selection import StratifiedKFold

    n_samples = len(labels)
    if n_splits < 2:
        raise ValueError(
            f"cv must be at least 2 folds, got {n_splits}; use cv='validation' for one "
            "held-out split."
        )
    if n_splits > n_samples:
        raise ValueError(f"cv={n_splits} folds need at least {n_splits} rows, got {n_samples}.")
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    try:
        splits = list(splitter.split(_no_features(n_samples), labels))
    except ValueError as error:
        raise ValueError(f"cv={n_splits}: the labels cannot be split so: {error}") from None
    return folds_from_splits(splits, n_samples, f"{n_splits}-fold stratified (seed {seed})")


def folds_from_splits(
    splits: list, n_samples: int, description: str = "given splits"
) -> FoldTable:
    """The fold table of ``(train, test)`` pairs of row indices.

    Raises
    ------
    ValueError
        When there is no split, or a split is empty, names a row twice or outside
        ``[0, n_samples)``, or has a row in both its sets.
    """
    if not splits:
        raise ValueError("cv gave no split; give at least one (train, test) pair.")
    roles = np.zeros((n_samples, len(splits)), dtype=np.uint8)
    for split, pair in enumerate(splits):
        train, test = _pair(pair, split)
        for rows, role, name in ((train, ROLE_TRAIN, "train"), (test, ROLE_HELD_OUT, "test")):
            _check_rows(rows, n_samples, split, name)
            if np.any(roles[rows, split] != ROLE_UNUSED):
                raise ValueError(
                    f"split {split} has rows both in its train and test sets (or twice in one), "
                    f"e.g. row {int(rows[roles[rows, split] != ROLE_UNUSED][0])}; held-out rows "
                    "must not be trained on."
                )
            roles[rows, split] = role
    codes, table = _encode(roles)
    return FoldTable(codes, table, description)


def _pair(pair: Any, split: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        train, test = pair
    except (TypeError, ValueError):
        raise ValueError(
            f"split {split} of cv is not a (train, test) pair of index arrays: {pair!r:.80}."
        ) from None
    return np.asarray(train), np.asarray(test)


def _check_rows(rows: np.ndarray, n_samples: int, split: int, name: str) -> None:
    if rows.ndim != 1 or rows.dtype.kind not in "iu":
        kind = "a boolean mask" if rows.dtype == bool else f"shape {rows.shape} {rows.dtype}"
        raise ValueError(
            f"the {name} rows of split {split} must be a 1-D array of row indices, got {kind}; "
            "pass indices, e.g. np.flatnonzero(mask)."
        )
    if rows.size == 0:
        raise ValueError(f"split {split} has no {name} rows.")
    if rows.min() < 0 or rows.max() >= n_samples:
        raise ValueError(
            f"the {name} rows of split {split} must lie in [0, {n_samples}), got values from "
            f"{rows.min()} to {rows.max()}."
        )
    if np.unique(rows).size != rows.size:
        raise ValueError(f"the {name} rows of split {split} name a row twice.")


def _encode(roles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold codes (one per distinct row of ``roles``) and the table of their roles."""
    n_splits = roles.shape[1]
    if n_splits <= _RADIX_SPLITS:
        powers = 3 ** np.arange(n_splits, dtype=np.int64)
        keys, codes = np.unique(roles.astype(np.int64) @ powers, return_inverse=True)
        table = (keys[:, None] // powers[None, :]) % 3
    else:
        table, codes = np.unique(roles, axis=0, return_inverse=True)
    n_codes = len(table)
    dtype = np.uint8 if n_codes <= 256 else np.uint16 if n_codes <= 65536 else np.int32
    return codes.reshape(-1).astype(dtype), table.astype(np.uint8)
