"""The argument validators of dsoftmax.validation: the ranges, the types they take and refuse,
the estimator's hyper-parameter table, and that the names they check agree with the library."""

from __future__ import annotations

import doctest
import inspect
import math
import subprocess
import sys

import numpy as np
import pytest

from dsoftmax import SoftmaxRegression, validation
from dsoftmax.defaults import SCHEDULES, SOLVERS
from dsoftmax.optim import OPTIMIZERS
from dsoftmax.optim import SCHEDULES as SCHEDULE_FACTORIES
from dsoftmax.validation import (
    AT_LEAST_ONE,
    CHOICES,
    FLAGS,
    NON_NEGATIVE,
    NUMBERS,
    ONE_OR_MORE,
    POSITIVE,
    UNIT_INTERVAL,
    Range,
    check_bool,
    check_choice,
    check_hyper_parameters,
    check_nesterov,
    check_number,
    check_seed,
    finite_float,
    real_number,
    seed_of,
    whole_number,
)


def test_the_module_examples_run():
    result = doctest.testmod(validation, raise_on_error=False, verbose=False)
    assert result.attempted >= 3 and result.failed == 0


@pytest.mark.parametrize(
    ("valid", "inside", "outside", "wording"),
    [
        (Range(0.0, 1.0), [0.0, 0.5, np.float32(0.999)], [1.0, -1e-9], "in [0.0, 1.0)"),
        (Range(0, 1, low_open=True, high_open=False), [1, 1e-9], [0, 1.5], "in (0, 1]"),
        (ONE_OR_MORE, [1, 10**12], [0, 0.5], "in [1, inf)"),
        (AT_LEAST_ONE, [1, np.int64(7)], [0, -3], ">= 1"),
        (POSITIVE, [1e-300], [0.0, -1.0], "> 0"),
        (NON_NEGATIVE, [0, 3.5], [-1], ">= 0"),
        (UNIT_INTERVAL, [0], [1], "in [0, 1)"),
        (Range(high=2, high_open=False), [2, -5], [2.5], "<= 2"),
    ],
)
def test_a_range_holds_its_numbers_and_names_itself(valid, inside, outside, wording):
    assert all(value in valid for value in inside)
    assert not any(value in valid for value in outside)
    assert str(valid) == wording
    for never in (math.nan, math.inf, -math.inf):
        assert never not in valid


def test_numbers_of_numpy_pass_and_bools_do_not():
    assert whole_number("n", np.int32(3)) == 3 and type(whole_number("n", np.int32(3))) is int
    assert real_number("x", np.float32(0.5)) == 0.5 and type(real_number("x", 1)) is float
    for bad in (True, np.True_, 2.0, "2", None):
        with pytest.raises(TypeError, match=r"n must be an integer, got .* of type"):
            whole_number("n", bad)
    for bad in (False, np.False_, "0.1", None):
        with pytest.raises(TypeError, match=r"x must be a real number, got .* of type"):
            real_number("x", bad)
    with pytest.raises(ValueError, match=r"x must be finite, got inf"):
        finite_float("x", np.inf)


def test_check_number_converts_and_names_the_range_and_the_fix():
    assert check_number("tol", np.float64(0.25), POSITIVE) == 0.25
    assert type(check_number("k", np.int64(4), AT_LEAST_ONE, integer=True)) is int
    with pytest.raises(ValueError, match=r"^eps must be > 0, got 0\.0; 1e-8 is usual\.$"):
        check_number("eps", 0, POSITIVE, fix="1e-8 is usual")
    with pytest.raises(ValueError, match=r"^k must be in \[1, inf\), got 0\.$"):
        check_number("k", 0, ONE_OR_MORE, integer=True)
    with pytest.raises(TypeError, match=r"k must be an integer, got 1\.5"):
        check_number("k", 1.5, ONE_OR_MORE, integer=True)
    with pytest.raises(ValueError, match=r"momentum must be finite, got nan"):
        check_number("momentum", math.nan, UNIT_INTERVAL)


def test_choices_bools_and_seeds():
    assert check_choice("solver", "sgd", SOLVERS) == "sgd"
    for bad in ("SGD", None, 1, ["sgd"]):
        with pytest.raises(ValueError, match=r"solver must be one of \['lbfgs', 'sgd', 'adam'\]"):
            check_choice("solver", bad, SOLVERS)
    assert check_bool("flag", np.True_) is True and check_bool("flag", False) is False
    for bad in (1, "yes", None):
        with pytest.raises(TypeError, match=r"flag must be True or False, got"):
            check_bool("flag", bad)
    assert check_seed(np.uint8(7)) == 7
    with pytest.raises(ValueError, match=r"random_state must be >= 0, got -1"):
        check_seed(-1, name="random_state")
    with pytest.raises(TypeError, match=r"seed must be a non-negative integer, got True"):
        check_seed(True)


def test_seed_of_takes_ints_as_they_are_and_draws_from_a_random_state():
    assert seed_of(np.int64(12)) == 12
    assert seed_of(np.random.RandomState(0)) == seed_of(np.random.RandomState(0))
    assert 0 <= seed_of(None) < np.iinfo(np.int32).max
    with pytest.raises(ValueError, match="cannot be used to seed"):
        seed_of("zero")
    # None draws from NumPy's global RandomState, as scikit-learn's check_random_state(None).
    from sklearn.utils import check_random_state

    np.random.seed(5)  # noqa: NPY002 (the global state is what is tested)
    drawn = seed_of(None)
    np.random.seed(5)  # noqa: NPY002 (the global state is what is tested)
    assert drawn == check_random_state(None).randint(np.iinfo(np.int32).max)


def test_the_nesterov_rule_speaks_in_the_callers_names():
    assert check_nesterov(True, 0.9) is True and check_nesterov(np.False_, 0.0) is False
    with pytest.raises(ValueError, match=r"^nesterov=True needs momentum > 0, got 0\.0; set"):
        check_nesterov(True, 0.0)
    with pytest.raises(ValueError, match=r"^--nesterov needs --momentum > 0, got 0; set --mom"):
        check_nesterov(True, 0, nesterov_name="--nesterov", momentum_name="--momentum")
    with pytest.raises(TypeError, match=r"nesterov must be True or False, got 'yes'"):
        check_nesterov("yes", 0.9)


# -------------------------------------------------------------- the estimator's parameters
def test_the_tables_name_parameters_of_the_estimator_and_its_defaults_pass():
    parameters = inspect.signature(SoftmaxRegression.__init__).parameters
    assert set(NUMBERS) | set(CHOICES) | set(FLAGS) <= set(parameters)
    defaults = SoftmaxRegression().get_params(deep=False)
    check_hyper_parameters(defaults)
    for name in NUMBERS:
        number = NUMBERS[name]
        assert number.check(name, defaults[name]) == defaults[name]


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"max_iter": True}, TypeError, r"max_iter must be an integer, got True"),
        ({"l2": "0.1"}, TypeError, r"l2 must be a real number, got '0\.1'"),
        ({"l2": np.inf}, ValueError, r"l2 must be finite, got inf"),
        ({"checkpoint_every": 0}, ValueError, r"checkpoint_every must be in \[1, inf\), got 0"),
        ({"verbose": -1}, ValueError, r"verbose must be in \[0, inf\), got -1"),
        ({"fit_intercept": "yes"}, TypeError, r"fit_intercept must be True or False"),
        ({"hold_data": "disk"}, ValueError, r"hold_data must be one of \['auto', 'memory'"),
        ({"class_weight": ["balanced"]}, ValueError, r"class_weight must be None, 'balanced'"),
        ({"chunk_rows": "big"}, ValueError, r"chunk_rows must be 'auto' or a whole number >= 1"),
        ({"chunk_rows": 0}, ValueError, r"chunk_rows must be in \[1, inf\), got 0"),
        ({"chunk_rows": 1.5}, TypeError, r"chunk_rows must be an integer, got 1\.5"),
    ],
)
def test_check_hyper_parameters_refuses_each_kind_of_bad_value(params, error, message):
    with pytest.raises(error, match=message):
        check_hyper_parameters({**SoftmaxRegression().get_params(deep=False), **params})


def test_optional_numbers_take_none():
    check_hyper_parameters({**SoftmaxRegression().get_params(deep=False), "checkpoint_every": None})
    with pytest.raises(TypeError, match="max_iter must be an integer, got None"):
        check_hyper_parameters({**SoftmaxRegression().get_params(deep=False), "max_iter": None})


# ------------------------------------------------------------- agreement with the library
def test_the_shared_names_agree_with_the_optimizers():
    assert tuple(SCHEDULE_FACTORIES) == SCHEDULES
    assert SOLVERS == ("lbfgs", *OPTIMIZERS)
    assert CHOICES["lr_schedule"] is SCHEDULES and CHOICES["solver"] is SOLVERS


def test_validation_and_the_command_line_parser_import_no_numerical_library():
    code = (
        "import sys\n"
        "import dsoftmax.validation\n"
        "from dsoftmax.cli import build_parser\n"
        "build_parser().format_help()\n"
        "heavy = {'numpy', 'dask', 'distributed', 'zarr', 'sklearn', 'scipy', 'fsspec'}\n"
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert completed.stdout == "[]\n", completed.stdout + completed.stderr
