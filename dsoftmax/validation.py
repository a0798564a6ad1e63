"""Argument validation: every check of a hyper-parameter or an argument, written once.

The estimator, the command line, the optimizers, the sampler and the cluster helpers validate
with these functions, so that each rule (a range, a set of choices, the Nesterov rule) has one
definition and one wording. A message names the argument, what it accepts and the value given,
e.g. ``momentum must be in [0.0, 1.0), got 1.5.``

A :class:`Range` with both bounds reads as an interval (``in [1, inf)``, as scikit-learn writes
the ranges of its hyper-parameters; the user-facing parameters are written so), one with a lower
bound only as a bound (``>= 1``, the wording of the optimizers' and the sampler's arguments).

NumPy integers and floats pass as numbers (NumPy registers them with :mod:`numbers`); bools are
refused wherever a number is expected. The module imports the standard library only (NumPy and
scikit-learn when :func:`seed_of` runs), so that ``dsoftmax --help`` builds its argument types
from it without importing the numerical stack.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

from .defaults import HOLD_CHOICES, SCHEDULES, SCORINGS, SOLVERS

__all__ = [
    "AT_LEAST_ONE",
    "CHOICES",
    "FLAGS",
    "NON_NEGATIVE",
    "NUMBERS",
    "ONE_OR_MORE",
    "POSITIVE",
    "UNIT_INTERVAL",
    "ZERO_OR_MORE",
    "Number",
    "Range",
    "check_bool",
    "check_choice",
    "check_class_weight",
    "check_hyper_parameters",
    "check_nesterov",
    "check_number",
    "check_search_hyper_parameters",
    "check_seed",
    "check_value_grid",
    "finite_float",
    "is_integer",
    "is_real",
    "real_number",
    "seed_of",
    "url_storage_options",
    "whole_number",
]


class Range:
    """The finite numbers between ``low`` and ``high`` (None: unbounded on that side).

    ``value in Range(...)`` is the test; ``str(Range(...))`` the wording of a message. NaN and
    infinities are never inside. A plain class rather than a dataclass, whose import would
    slow the command line's start.

    Examples
    --------
    >>> str(Range(0.0, 1.0)), str(Range(1)), str(Range(0, low_open=True))
    ('in [0.0, 1.0)', '>= 1', '> 0')
    >>> 1.0 in Range(0.0, 1.0)
    False
    """

    __slots__ = ("high", "high_open", "low", "low_open")

    def __init__(
        self,
        low: float | None = None,
        high: float | None = None,
        *,
        low_open: bool = False,
        high_open: bool = True,
    ) -> None:
        self.low, self.high = low, high
        self.low_open, self.high_open = low_open, high_open

    def __repr__(self) -> str:
        return (
            f"Range({self.low!r}, {self.high!r}, low_open={self.low_open}, "
            f"high_open={self.high_open})"
        )

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high}"
        opening = "(" if self.low_open else "["
        closing = ")" if self.high_open else "]"
        return f"in {opening}{self.low}, {self.high}{closing}"


#: Bounds of the pure functions' arguments.
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
AT_LEAST_ONE = Range(1)
#: ``[0, 1)``: momentum, Adam's decay rates, L-BFGS's relative noise.
UNIT_INTERVAL = Range(0, 1)
#: Counts and non-negative numbers of the user-facing parameters, written as intervals.
ONE_OR_MORE = Range(1, math.inf)
ZERO_OR_MORE = Range(0, math.inf)


# ------------------------------------------------------------------------------ numbers
def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer (a Python or NumPy int), bools excluded."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """Whether ``value`` is a real number (int or float, Python or NumPy), bools excluded."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def whole_number(name: str, value: object) -> int:
    """``value`` as a Python int; a TypeError for anything else (floats and bools included)."""
    if not is_integer(value):
        raise TypeError(
            f"{name} must be an integer, got {value!r} of type {type(value).__name__}."
        )
    return int(value)


def real_number(name: str, value: object) -> float:
    """``value`` as a Python float; a TypeError unless it is a real number (bools refused)."""
    if not is_real(value):
        raise TypeError(
            f"{name} must be a real number, got {value!r} of type {type(value).__name__}."
        )
    return float(value)


def finite_float(name: str, value: object) -> float:
    """``value`` as a finite Python float: a TypeError for a non-number, a ValueError for NaN
    or an infinity."""
    number = real_number(name, value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number!r}.")
    return number


def check_number(
    name: str, value: object, valid: Range, *, integer: bool = False, fix: str = ""
) -> Any:
    """``value`` as an int (``integer``) or a finite float, inside ``valid``.

    Parameters
    ----------
    name : str
        The argument's name, as the caller spells it.
    value : object
    valid : Range
        The accepted numbers.
    integer : bool, default False
        Accept integers only (and return an int).
    fix : str, default ""
        Advice appended to the message, e.g. ``"0.9 is the usual choice"``.

    Returns
    -------
    int or float

    Raises
    ------
    TypeError
        When ``value`` is not a number (not an integer, with ``integer``).
    ValueError
        When it is NaN, infinite or outside ``valid``.

    Examples
    --------
    >>> check_number("batch_size", 0, ONE_OR_MORE, integer=True)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be in [1, inf), got 0.
    """
    number = whole_number(name, value) if integer else finite_float(name, value)
    if number not in valid:
        advice = f"; {fix}" if fix else ""
        raise ValueError(f"{name} must be {valid}, got {number!r}{advice}.")
    return number


class Number(NamedTuple):
    """What a numeric hyper-parameter accepts: a range, integers only or not, None or not."""

    valid: Range
    integer: bool = False
    optional: bool = False

    def check(self, name: str, value: object) -> Any:
        """``value`` checked with :func:`check_number` (None passes when ``optional``)."""
        if value is None and self.optional:
            return None
        return check_number(name, value, self.valid, integer=self.integer)


# ----------------------------------------------------------------- other kinds of values
def check_choice(name: str, value: Any, choices: tuple) -> Any:
    """``value`` when it is one of ``choices``; a ValueError listing them otherwise."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")
    return value


def check_bool(name: str, value: object) -> bool:
    """``value`` as a bool; a TypeError unless it is True or False (a NumPy bool passes)."""
    if isinstance(value, bool):
        return value
    numpy = sys.modules.get("numpy")  # a NumPy bool exists only once NumPy is imported
    if numpy is not None and isinstance(value, numpy.bool_):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}.")


def check_seed(seed: object, name: str = "seed") -> int:
    """``seed`` as a non-negative Python int, the seed of a reproducible random stream."""
    if not is_integer(seed):
        raise TypeError(
            f"{name} must be a non-negative integer, got {seed!r} of type "
            f"{type(seed).__name__}; pass a fixed int such as 0 so that runs are reproducible."
        )
    return check_number(name, seed, NON_NEGATIVE, integer=True)


def seed_of(random_state: Any) -> int:
    """The integer seed of a fit: ``random_state`` itself when it is an int, else a draw from
    scikit-learn's ``check_random_state(random_state)`` (None: NumPy's global RandomState, as
    there; a RandomState)."""
    if is_integer(random_state):
        return int(random_state)
    import numpy as np

    high = np.iinfo(np.int32).max
    if random_state is None:
        return int(np.random.randint(high))  # noqa: NPY002 (the global RandomState, as there)
    from sklearn.utils import check_random_state

    return int(check_random_state(random_state).randint(high))


def check_nesterov(
    nesterov: object,
    momentum: float,
    *,
    nesterov_name: str = "nesterov=True",
    momentum_name: str = "momentum",
) -> bool:
    """``nesterov`` as a bool, refusing Nesterov's look-ahead without momentum (it would be
    plain SGD under another name). The names spell the options in the caller's terms (the
    command line passes ``--nesterov`` and ``--momentum``)."""
    use_nesterov = check_bool("nesterov", nesterov)
    if use_nesterov and momentum == 0:
        raise ValueError(
            f"{nesterov_name} needs {momentum_name} > 0, got {momentum!r}; set {momentum_name} "
            "to e.g. 0.9, or turn Nesterov momentum off."
        )
    return use_nesterov


def check_class_weight(class_weight: object) -> None:
    """Refuse a ``class_weight`` that is neither None, ``'balanced'`` nor a dict of finite
    weights >= 0.

    A negative weight would make the objective unbounded below. Whether the dict's labels are
    classes of the data, and whether some class keeps a positive weight, is checked in ``fit``,
    where the classes are known.

    Raises
    ------
    TypeError
        A weight that is not a number.
    ValueError
        Another kind of ``class_weight``, or a weight that is negative, NaN or infinite.

    Examples
    --------
    >>> check_class_weight({0: -1.0})
    Traceback (most recent call last):
    ...
    ValueError: class_weight[0] must be in [0, inf), got -1.0; a weight of 0 drops the class.
    """
    if class_weight is None or class_weight == "balanced":
        return
    if not isinstance(class_weight, dict):
        raise ValueError(
            "class_weight must be None, 'balanced' or a dict {label: weight}, got "
            f"{class_weight!r}."
        )
    for label, weight in class_weight.items():
        check_number(
            f"class_weight[{label!r}]", weight, ZERO_OR_MORE, fix="a weight of 0 drops the class"
        )


# ----------------------------------------------------------- the estimator's hyper-parameters
#: The numeric hyper-parameters of :class:`dsoftmax.SoftmaxRegression`; the command line's
#: options of the same names take their ranges from here.
NUMBERS: dict[str, Number] = {
    "l2": Number(ZERO_OR_MORE),
    "batch_size": Number(ONE_OR_MORE, integer=True),
    "learning_rate": Number(Range(0, math.inf, low_open=True)),
    "momentum": Number(Range(0.0, 1.0)),
    "max_iter": Number(ONE_OR_MORE, integer=True),
    "tol": Number(ZERO_OR_MORE),
    "validation_fraction": Number(Range(0.0, 1.0, low_open=True)),
    "n_iter_no_change": Number(ONE_OR_MORE, integer=True),
    "verbose": Number(ZERO_OR_MORE, integer=True),
    "keep_checkpoints": Number(ONE_OR_MORE, integer=True),
    "checkpoint_every": Number(ONE_OR_MORE, integer=True, optional=True),
    "shuffle_window": Number(ONE_OR_MORE, integer=True, optional=True),
}

#: The hyper-parameters that name a choice, with their choices.
CHOICES: dict[str, tuple[str, ...]] = {
    "solver": SOLVERS,
    "lr_schedule": SCHEDULES,
    "hold_data": HOLD_CHOICES,
}

#: The hyper-parameters that are True or False.
FLAGS = ("fit_intercept", "nesterov", "early_stopping", "warm_start")


def check_hyper_parameters(params: Mapping[str, Any]) -> None:
    """Refuse bad hyper-parameters of :class:`dsoftmax.SoftmaxRegression`, each by its name
    and what it accepts.

    Parameters
    ----------
    params : mapping
        The estimator's ``get_params()``.

    Raises
    ------
    TypeError
        A value of the wrong type (a float where an integer belongs, a string for a number).
    ValueError
        A value outside its range, an unknown choice, or ``nesterov=True`` with ``momentum=0``.
    """
    _check_shared(params, FLAGS)


def _check_shared(params: Mapping[str, Any], flags: tuple[str, ...]) -> None:
    """The checks of the hyper-parameters both estimators have (``flags``: their bools)."""
    for name, number in NUMBERS.items():
        if name in params:
            number.check(name, params[name])
    for name, choices in CHOICES.items():
        check_choice(name, params[name], choices)
    for name in flags:
        check_bool(name, params[name])
    check_nesterov(params["nesterov"], params["momentum"])
    check_class_weight(params["class_weight"])
    check_chunk_rows(params["chunk_rows"])


def check_chunk_rows(value: object) -> None:
    """Refuse a ``chunk_rows`` that is neither ``"auto"`` nor a whole number >= 1."""
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"chunk_rows must be 'auto' or a whole number >= 1, got {value!r}.")
        return
    check_number("chunk_rows", value, ONE_OR_MORE, integer=True)


# ------------------------------------------------- the cross-validated grid's hyper-parameters
#: The hyper-parameters of :class:`dsoftmax.SoftmaxRegressionCV` that take one of a few kinds
#: of values; the others are checked with :data:`NUMBERS`, :data:`CHOICES` and :data:`FLAGS`.
SEARCH_FLAGS = ("fit_intercept", "nesterov", "refit")


def check_value_grid(name: str, values: Any, valid: Range, *, allow_count: bool) -> None:
    """Refuse a grid that is neither a positive count (``allow_count``) nor a non-empty
    sequence of distinct numbers in ``valid``."""
    if allow_count and is_integer(values):
        check_number(name, values, ONE_OR_MORE, integer=True)
        return
    if isinstance(values, str | bytes | Mapping) or not hasattr(values, "__len__"):
        kind = "a positive int or a list of numbers" if allow_count else "a list of numbers"
        raise TypeError(f"{name} must be {kind}, got {values!r:.80}.")
    items = list(values)
    if not items:
        raise ValueError(f"{name} is empty; give at least one value.")
    for value in items:
        check_number(f"each value of {name}", value, valid)
    if len({float(value) for value in items}) != len(items):
        raise ValueError(f"{name} holds a value twice: {[float(v) for v in items]}.")


def _check_cv(cv: Any) -> None:
    """Refuse a ``cv`` of the wrong kind (its splits are checked in ``fit``)."""
    if isinstance(cv, bool) or (is_integer(cv) and cv < 2):
        raise ValueError(
            f"cv must be an int >= 2 (stratified folds), 'validation', a scikit-learn splitter "
            f"or an iterable of (train, test) index arrays, got {cv!r}."
        )
    if is_integer(cv) or cv == "validation" or hasattr(cv, "split"):
        return
    if isinstance(cv, str) or not hasattr(cv, "__iter__"):
        raise ValueError(
            f"cv must be an int >= 2 (stratified folds), 'validation', a scikit-learn splitter "
            f"or an iterable of (train, test) index arrays, got {cv!r:.80}."
        )


def check_search_hyper_parameters(params: Mapping[str, Any]) -> None:
    """Refuse bad hyper-parameters of :class:`dsoftmax.SoftmaxRegressionCV`, each by its name and
    what it accepts: those it shares with :class:`dsoftmax.SoftmaxRegression` as
    :func:`check_hyper_parameters` checks them, and ``l2s``, ``learning_rates``, ``cv``,
    ``scoring`` and ``refit``.

    Raises
    ------
    TypeError, ValueError
    """
    _check_shared(params, SEARCH_FLAGS)
    check_value_grid("l2s", params["l2s"], NUMBERS["l2"].valid, allow_count=True)
    check_choice("scoring", params["scoring"], SCORINGS)
    _check_cv(params["cv"])
    rates = params["learning_rates"]
    if rates is not None:
        if params["solver"] == "lbfgs":
            raise ValueError(
                "learning_rates is a grid of sgd/adam step sizes; solver='lbfgs' takes none. "
                "Set solver='sgd' or 'adam', or learning_rates=None."
            )
        check_value_grid(
            "learning_rates", rates, NUMBERS["learning_rate"].valid, allow_count=False
        )


def url_storage_options(url: str, storage_options: Mapping | None) -> dict | None:
    """The fsspec options that apply to ``url``: ``storage_options`` for a URL, None for a
    local path, for which they are ignored with a :class:`UserWarning`.

    One ``--storage-options`` may serve an object-store dataset and a local model or output in
    the same command, so options beside a local path are not an error; a warning shows them
    unused. Datasets, models and checkpoints all warn from here, one place, so Python shows the
    warning once per path.

    Parameters
    ----------
    url : str
        A local path or an fsspec URL.
    storage_options : mapping or None

    Returns
    -------
    dict or None
        The options to pass to fsspec for ``url``.
    """
    if not storage_options:
        return None
    if "://" not in str(url):
        warnings.warn(
            f"storage_options are ignored for the local path {str(url)!r}: they configure fsspec "
            "URLs (s3://, gs://, ...); drop them, or name the path by its URL.",
            UserWarning,
            stacklevel=1,
        )
        return None
    return dict(storage_options)
