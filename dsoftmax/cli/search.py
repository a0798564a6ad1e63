"""``dsoftmax train`` with a grid: ``--l2 a,b,c``, ``--l2-grid N`` or ``--cv``.

Every value of ``--l2`` (and of ``--learning-rate`` for sgd/adam) is trained on every split at
once (:class:`dsoftmax.SoftmaxRegressionCV`); the command prints the held-out score of each
value, mean and standard deviation over the splits (and each split's with ``-v``), marks the
value chosen, refits on every row and saves the model with the grid's results, which
``dsoftmax plot`` draws as a validation curve.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from ..validation import check_search_hyper_parameters
from .ignored import warn_ignored_options
from .output import EXIT_OK, PROG, UsageError, one_line

__all__ = ["cmd_train_search", "load_any_model", "search_table", "wants_search"]

#: The mark of the chosen row of the table.
CHOSEN = "<- chosen"


def wants_search(args: argparse.Namespace) -> bool:
    """Whether ``dsoftmax train`` was asked for a grid rather than one fit."""
    return (
        args.cv is not None
        or args.l2_grid is not None
        or isinstance(args.l2, list)
        or isinstance(args.learning_rate, list)
    )


def _search_from(args: argparse.Namespace) -> Any:
    from ..estimator_cv import SoftmaxRegressionCV
    from .model_commands import _checked, _shared_hyper_parameters

    if args.early_stopping:
        raise UsageError(
            "--early-stopping holds rows out of one fit; a grid's held-out rows are its splits "
            "(--cv). Drop --early-stopping."
        )
    if args.l2_grid is not None and args.l2_given:
        raise UsageError("give either --l2 values or --l2-grid N, not both")
    l2s = args.l2_grid if args.l2_grid is not None else args.l2
    l2s = l2s if isinstance(l2s, int | list) else [l2s]
    rates = args.learning_rate
    if isinstance(rates, list) and args.solver == "lbfgs":
        raise UsageError("several --learning-rate values need --solver sgd or adam")
    model = SoftmaxRegressionCV(
        l2s=l2s,
        cv=5 if args.cv is None else args.cv,
        scoring=args.scoring,
        refit=not args.no_refit,
        grid_memory=args.grid_memory,
        learning_rates=rates if isinstance(rates, list) else None,
        learning_rate=rates if isinstance(rates, float) else 0.01,
        **_shared_hyper_parameters(args),
    )
    return _checked(model, _check_search)


def _check_search(params: dict[str, Any]) -> None:
    from ..fitting import check_memory_size

    check_search_hyper_parameters(params)
    check_memory_size("--grid-memory", params["grid_memory"])


def _check_folds(args: argparse.Namespace, dataset: Any) -> None:
    """Refuse, before the fit, more folds than the data has rows."""
    folds = 5 if args.cv is None else args.cv
    if isinstance(folds, int) and folds > dataset.n_samples:
        cv = f"--cv {folds}" if args.cv is not None else f"--cv's default of {folds} folds"
        raise UsageError(
            f"{cv} needs at least {folds} rows; {args.data!r} has {dataset.n_samples}. Give "
            "fewer folds, or --cv validation."
        )


def cmd_train_search(args: argparse.Namespace, cluster: Any) -> int:
    """Fit the grid on the cluster, print its table, then save the model (after a successful
    fit only)."""
    from .model_commands import _fit_on_cluster, _iterations, print_test_report

    model = _search_from(args)
    warn_ignored_options(args, grid=True)
    dataset, test, not_converged, elapsed = _fit_on_cluster(model, args, cluster, _check_folds)
    print(search_table(model, per_split=args.verbose > 0))
    if not_converged:
        print(
            f"{PROG}: warning: {one_line(not_converged).split(';')[0]}; increase --max-iter or "
            "--tol to let them converge",
            file=sys.stderr,
        )
    model.save(args.model, storage_options=args.storage_options)
    n_models = model.scores_.size
    refit = (
        f"refit on every row: {_iterations(args.solver, len(model.loss_curve_))}, final loss "
        f"{model.loss_curve_[-1]:.6f}"
        if model.refit
        else "no refit: the mean of the splits' models"
    )
    print(
        f"trained {n_models} grid models on {dataset.n_samples} rows in {elapsed:.2f} s, "
        f"chose l2={model.l2_:.6g}{_chosen_rate(model)}; {refit}; model saved to {args.model}"
    )
    print_test_report(model, test)
    return EXIT_OK


def _chosen_rate(model: Any) -> str:
    """``, learning rate=…`` when the grid spans learning rates, else nothing."""
    if getattr(model, "learning_rates_", None) is None:
        return ""
    return f", learning rate={model.learning_rate_:.6g}"


def search_table(model: Any, *, per_split: bool = False) -> str:
    """The held-out scores of a fitted (or loaded) grid as text: one row per λ (and learning
    rate), their mean and standard deviation over the splits, each split's with
    ``per_split``, the chosen row marked."""
    scores = np.asarray(model.scores_)
    n_splits = scores.shape[0]
    rates = getattr(model, "learning_rates_", None)
    cells = scores.reshape(n_splits, len(model.l2s_), -1)
    chosen = tuple(int(i) for i in np.unravel_index(np.nanargmax(cells.sum(axis=0)),
                                                     cells.shape[1:]))  # fmt: skip
    header = ["l2"] + (["learning rate"] if rates is not None else []) + ["mean", "std"]
    if per_split:
        header += [f"split {s}" for s in range(n_splits)]
    rows = []
    for i, l2 in enumerate(model.l2s_):
        for k in range(cells.shape[2]):
            values = cells[:, i, k]
            row = [f"{l2:.6g}"] + ([f"{rates[k]:.6g}"] if rates is not None else [])
            row += [f"{np.mean(values):.6f}", f"{np.std(values):.6f}"]
            if per_split:
                row += [f"{value:.6f}" for value in values]
            rows.append((row, (i, k) == chosen))
    widths = [max(len(header[c]), *(len(row[c]) for row, _ in rows)) for c in range(len(header))]
    lines = [
        f"held-out {model.scoring} ({getattr(model, '_cv_description', '') or 'given splits'}), "
        f"mean and std over {n_splits} split{'s' if n_splits > 1 else ''}:",
        "  ".join(name.rjust(width) for name, width in zip(header, widths, strict=True)),
    ]
    for row, is_chosen in rows:
        text = "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        lines.append(f"{text}  {CHOSEN}" if is_chosen else text)
    return "\n".join(lines)


def load_any_model(url: str, *, storage_options: dict | None = None) -> Any:
    """The model saved at ``url``: a :class:`dsoftmax.SoftmaxRegressionCV` when the file holds a
    grid's results, else a :class:`dsoftmax.SoftmaxRegression`."""
    from ..estimator import SoftmaxRegression
    from ..estimator_cv import SoftmaxRegressionCV
    from ..persist import load_fitted_model

    fitted = load_fitted_model(url, storage_options=storage_options)
    cls = SoftmaxRegressionCV if fitted.search is not None else SoftmaxRegression
    return cls.load(url, storage_options=storage_options)
