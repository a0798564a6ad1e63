"""The commands that fit and use models: ``dsoftmax train``, ``evaluate``, ``predict``,
``plot`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..validation import check_hyper_parameters, check_nesterov
from .ignored import warn_ignored_options
from .output import EXIT_OK, PROG, UsageError, one_line, resume_command
from .session import CommandCluster

__all__ = ["cmd_demo", "cmd_evaluate", "cmd_plot", "cmd_predict", "cmd_train", "print_test_report"]

logger = logging.getLogger("dsoftmax")


def _open(url: str, args: argparse.Namespace) -> Any:
    """The dataset at ``url`` (a Zarr store, or Parquet files read as they are), with the
    command's storage options and read retries (the data layer's refusals are worded for the
    command line where the command prints them)."""
    from ..data.convert import names_parquet

    if names_parquet(url):
        return _open_parquet(url, args)
    from ..data import open_dataset

    return open_dataset(url, storage_options=args.storage_options, read_retries=args.read_retries)


def _open_parquet(url: str, args: argparse.Namespace) -> Any:
    """Parquet files as a dataset, with the columns the command line names."""
    if args.label_column is None:
        raise UsageError(
            f"{url!r} names Parquet files: give their label column with --label-column NAME, "
            "and their features with --embedding-column NAME, --feature-columns A,B,C "
            "(default: every numeric column but the label, else the only list column of "
            "numbers) or --index-column NAME (sparse rows)."
        )
    dense = args.feature_columns is not None or args.embedding_column is not None
    if args.index_column is not None and dense:
        raise UsageError(
            "--index-column reads sparse rows; --feature-columns and --embedding-column read "
            "dense ones: give one kind."
        )
    if args.index_column is None and (args.value_column is not None or args.n_features):
        raise UsageError("--value-column and --n-features go with --index-column (sparse rows).")
    from ..data import open_parquet

    return open_parquet(
        url,
        label_column=args.label_column,
        feature_columns=args.feature_columns,
        embedding_column=args.embedding_column,
        index_column=args.index_column,
        value_column=args.value_column,
        n_features=args.n_features,
        storage_options=args.storage_options,
    )


def _load_model(url: str, args: argparse.Namespace) -> Any:
    from .search import load_any_model

    return load_any_model(url, storage_options=args.storage_options)


def _saved_model(args: argparse.Namespace) -> Any:
    """The model file at ``args.model`` as its weights, classes and settings, read and checked
    as a model's load reads it, without building the estimator (nor importing scikit-learn)."""
    from ..persist import load_fitted_model

    return load_fitted_model(args.model, storage_options=args.storage_options)


def _shared_hyper_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The estimator's settings that a single fit and a cross-validated grid share, after the
    checks that name the command's options."""
    try:
        check_nesterov(
            args.nesterov, args.momentum, nesterov_name="--nesterov", momentum_name="--momentum"
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.resume and not args.checkpoint_dir:
        raise UsageError("--resume needs --checkpoint-dir")
    if args.resume_from is not None and not args.checkpoint_dir:
        raise UsageError("--resume-from needs --checkpoint-dir")
    return {
        "fit_intercept": not args.no_intercept,
        "solver": args.solver,
        "batch_size": args.batch_size,
        "lr_schedule": args.lr_schedule,
        "momentum": args.momentum,
        "nesterov": args.nesterov,
        "max_iter": args.max_iter,
        "tol": args.tol,
        "validation_fraction": args.validation_fraction,
        "class_weight": args.class_weight,
        "hold_data": args.hold_data,
        "random_state": args.seed,
        "shuffle_window": args.shuffle_window,
        "checkpoint_dir": args.checkpoint_dir,
        "checkpoint_every": args.checkpoint_every,
        "keep_checkpoints": args.keep_checkpoints,
        "storage_options": args.storage_options,
        # >= 1: a progress bar, which tqdm itself hides when stderr is not a terminal.
        "verbose": 1 + args.verbose,
    }


def _checked(model: Any, check: Any) -> Any:
    """``model`` once ``check`` accepts its hyper-parameters; a usage error otherwise."""
    try:
        check(model.get_params(deep=False))
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    return model


def _trainer_from(args: argparse.Namespace) -> Any:
    """The trainer of ``dsoftmax train``: the fit of ``SoftmaxRegression`` without scikit-learn,
    whose import would take a third of the command's start."""
    from ..trainer import SoftmaxTrainer

    model = SoftmaxTrainer(
        l2=args.l2,
        learning_rate=args.learning_rate,
        early_stopping=args.early_stopping,
        **_shared_hyper_parameters(args),
    )
    return _checked(model, check_hyper_parameters)


def _check_model_target(url: str, storage_options: dict | None) -> None:
    """Refuse, before any work, to save a model over something that is not a model."""
    import fsspec

    from ..persist import MANIFEST

    fs, root = fsspec.url_to_fs(url, **(storage_options or {}))
    if fs.exists(root) and not fs.exists(f"{root.rstrip('/')}/{MANIFEST}"):
        raise ValueError(
            f"--model {url!r} exists and is not a dsoftmax model (no {MANIFEST}); refusing to "
            "replace it. Pass a new path, or an existing model's path to replace that model."
        )


def _fit(
    model: Any, data: Any, resume: bool | int = False, command_line: list | None = None
) -> str | None:
    """Fit; return the message of the model's ``convergence_warning`` instead of letting it
    print, or None. ``command_line`` (the command's arguments) gives the command that resumes
    the fit."""
    convergence_warning = model.convergence_warning
    # Read before the fit: a client that lost its scheduler no longer knows the address.
    address = _scheduler_address(model.client)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", convergence_warning)
        try:
            model.fit(data, resume=resume)
        except (ValueError, TypeError, FloatingPointError):
            raise  # bad data or settings, divergence: their messages say what to do
        except Exception as error:
            # The scheduler, a worker or the connection went away mid-fit.
            raise RuntimeError(_stopped_message(model, error, command_line, address)) from error
    message = None
    for warning in caught:
        if issubclass(warning.category, convergence_warning):
            message = str(warning.message)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return message


def _scheduler_address(client: Any) -> str | None:
    """The address of the scheduler ``client`` talks to, or None (no client, or none known)."""
    return getattr(getattr(client, "scheduler", None), "address", None)


def _stopped_message(
    model: Any, error: Exception, command_line: list | None, address: str | None
) -> str:
    """One line: why a fit on the scheduler at ``address`` stopped, and how to go on."""
    from ..cluster import scheduler_lost

    client = model.client
    lost = client is not None and not isinstance(client, str) and scheduler_lost(client)
    if lost:
        cause = (
            f"the connection to the Dask scheduler {address or 'of the fit'} was lost (the "
            "scheduler stopped or the network failed)"
        )
    else:
        cause = one_line(str(error)).split(";")[0].rstrip(". ") or type(error).__name__
    if not model.checkpoint_dir:
        advice = "Rerun the command; with --checkpoint-dir an interrupted fit can be resumed."
    elif lost and command_line is not None:
        advice = (
            f"The checkpoints in {model.checkpoint_dir} are intact: restart the scheduler, then "
            f"continue with: {resume_command(command_line)}"
        )
    else:
        advice = (
            "Restart the cluster and rerun the same command with --resume to continue from "
            f"the last checkpoint in {model.checkpoint_dir}."
        )
    return f"training stopped: {cause}. {advice}"


def _iterations(solver: str, n_iter: int) -> str:
    unit = "iteration" if solver == "lbfgs" else "epoch"
    return f"{n_iter} {unit}{'' if n_iter == 1 else 's'}"


def _not_converged(solver: str, max_iter: int, message: str) -> str:
    """The warning of a fit that stopped at ``--max-iter``, its fix in the command's options
    (the library's ``message`` names the Python parameters; the optimizer's reason, when it
    gives one, is kept)."""
    units = "iterations" if solver == "lbfgs" else "epochs"
    reason = _OPTIMIZER_REASON.search(one_line(message))
    return (
        f"{solver} did not converge in max_iter={max_iter} {units}"
        f"{f' ({reason[1]})' if reason else ''}; the model is saved as it stands: increase "
        "--max-iter or --tol to let it converge"
    )


#: The optimizer's reason in the message of a fit that did not converge.
_OPTIMIZER_REASON = re.compile(r"failed to converge in max_iter=\d+ \w+: (.+); increase max_iter")


def _training_client(dataset: Any, args: argparse.Namespace, cluster: CommandCluster) -> Any:
    """The named scheduler's client; without one, None (the fit runs in this process, on its
    threads) when the data fits this machine's memory, else a local cluster's."""
    from ..fitting import fits_this_process

    if cluster.named:
        return cluster.client()
    fits, reason = fits_this_process(
        dataset.X, dataset.labels, dataset.sample_weight, args.hold_data
    )
    if fits:
        return None  # the estimator decides the same, and says so
    logger.info("dsoftmax: %s", reason)
    return cluster.client()


def _test_set(args: argparse.Namespace, train: Any) -> Any:
    """The ``--test`` dataset, opened and checked against the training data before the fit
    (its path, feature count and classes: a mistake fails in seconds, not after the training),
    or None."""
    if args.test is None:
        return None
    from ..evaluation import class_positions

    test = _open(args.test, args)
    if test.n_features != train.n_features:
        raise ValueError(
            f"--test {args.test!r} has {test.n_features} features but the training data "
            f"{args.data!r} has {train.n_features}."
        )
    class_positions(train.classes, test.classes, args.test)  # its classes: the model's
    return test


def print_test_report(model: Any, test: Any) -> None:
    """Print ``model``'s report on the ``--test`` dataset (nothing when there is none), on the
    client the fit used, or in this process when the fit ran here."""
    if test is None:
        return
    from ..evaluation import evaluate_model, format_report

    print("on the test data:")
    print(format_report(evaluate_model(model, test, client=model.client, progress=True)))


def _fit_on_cluster(
    model: Any,
    args: argparse.Namespace,
    cluster: CommandCluster,
    check_data: Callable[[argparse.Namespace, Any], None] | None = None,
) -> tuple[Any, Any, str | None, float]:
    """Open the data (and the ``--test`` data), check it with ``check_data`` (when given),
    refuse a target that is not a model, fit ``model`` on the cluster or in this process
    (resumed as asked): the training and test datasets, the not-converged message (None when
    converged) and the seconds."""
    dataset = _open(args.data, args)
    if check_data is not None:
        check_data(args, dataset)
    test = _test_set(args, dataset)
    _check_model_target(args.model, args.storage_options)
    model.client = _training_client(dataset, args, cluster)
    started = time.perf_counter()
    resume = args.resume if args.resume_from is None else args.resume_from
    not_converged = _fit(model, dataset, resume, args.command_line)
    return dataset, test, not_converged, time.perf_counter() - started


def cmd_train(args: argparse.Namespace, cluster: CommandCluster) -> int:
    """``dsoftmax train``: fit on the cluster, then save the model (only after a successful fit)."""
    from .search import cmd_train_search, wants_search

    if wants_search(args):
        return cmd_train_search(args, cluster)
    model = _trainer_from(args)
    warn_ignored_options(args)
    dataset, test, not_converged, elapsed = _fit_on_cluster(model, args, cluster)
    if not_converged:
        warning = _not_converged(args.solver, args.max_iter, not_converged)
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    # Saved only after a successful fit: a failure leaves an existing model as it was.
    model.save(args.model, storage_options=args.storage_options)
    stopped = ", stopped at max_iter" if not_converged else ""
    print(
        f"trained {args.solver} on {dataset.n_samples} rows in {elapsed:.2f} s: "
        f"{_iterations(args.solver, model.n_iter_)}{stopped}, final loss "
        f"{model.loss_curve_[-1]:.6f}; model saved to {args.model}"
    )
    print_test_report(model, test)
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace, cluster: CommandCluster) -> int:
    """``dsoftmax evaluate``: print the model's report on a dataset, as text or JSON."""
    from ..evaluation import SavedWeights, evaluate_model, format_report

    fitted = _saved_model(args)
    model = SavedWeights(fitted.coef, fitted.intercept, fitted.classes)
    dataset = _open(args.data, args)
    report = evaluate_model(model, dataset, client=cluster.named_client(), progress=True)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return EXIT_OK


def cmd_predict(args: argparse.Namespace, cluster: CommandCluster) -> int:
    """``dsoftmax predict``: write the predicted labels (and probabilities) to a Zarr group."""
    from ..evaluation import SavedWeights
    from ..prediction import write_predictions

    fitted = _saved_model(args)
    dataset = _open(args.data, args)
    write_predictions(
        SavedWeights(fitted.coef, fitted.intercept, fitted.classes),
        dataset,
        args.out,
        probabilities=args.proba,
        overwrite=args.overwrite,
        storage_options=args.storage_options,
        client=cluster.named_client(),
    )
    written = "predictions and probabilities" if args.proba else "predictions"
    print(f"wrote {written} for {dataset.n_samples} rows to {args.out}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, cluster: CommandCluster) -> int:
    """``dsoftmax demo``: make data, train L-BFGS and SGD on it and report their accuracy."""
    from ..cluster import describe
    from ..data import make_classification
    from ..estimator import SoftmaxRegression
    from ..evaluation import evaluate_model

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dsoftmax-demo-"))
    client = cluster.client()
    print(f"cluster: {describe(client)}")
    started = time.perf_counter()
    common = {"client": client, "overwrite": True}
    train = make_classification(
        str(workdir / "train.zarr"),
        args.n_samples,
        args.n_features,
        args.n_classes,
        chunk_rows=max(1, args.n_samples // 8),
        seed=0,
        **common,
    )
    test = make_classification(
        str(workdir / "test.zarr"),
        max(1000, args.n_samples // 10),
        args.n_features,
        args.n_classes,
        chunk_rows=max(1000, args.n_samples // 40),
        seed=1,
        teacher_seed=0,
        **common,
    )
    print(
        f"data: {train.n_samples} x {train.n_features}, {train.n_classes} classes "
        f"({time.perf_counter() - started:.1f} s)"
    )
    # L-BFGS reaches the optimum; five epochs of momentum SGD, the step annealed to 0 over the
    # run, come close to its loss.
    sgd = {"learning_rate": 0.3, "lr_schedule": "cosine", "batch_size": 8192, "max_iter": 5}
    solvers: dict[str, dict[str, Any]] = {"lbfgs": {}, "sgd": {"momentum": 0.9, **sgd}}
    for solver, options in solvers.items():
        model = SoftmaxRegression(solver=solver, l2=1e-4, random_state=0, client=client, **options)
        started = time.perf_counter()
        not_converged = _fit(model, train)
        elapsed = time.perf_counter() - started
        report = evaluate_model(model, test, client=client)
        stopped = f" (stopped after max_iter={model.max_iter})" if not_converged else ""
        print(
            f"{solver:>5}: {_iterations(solver, model.n_iter_)}{stopped} in {elapsed:.2f} s, "
            f"train loss {model.loss_curve_[-1]:.4f}, test accuracy {report['accuracy']:.4f}"
        )
    model.save(str(workdir / "model"))
    print(f"model saved to {workdir / 'model'}")
    return EXIT_OK


def cmd_plot(args: argparse.Namespace, cluster: CommandCluster) -> int:
    """``dsoftmax plot``: draw the training curves (and a confusion matrix) to a PNG."""
    from ..plotting import check_output_path, plot_training

    check_output_path(args.out)  # before an evaluation that may take long
    model = _load_model(args.model, args)
    report = None
    if args.data:
        from ..evaluation import evaluate_model

        dataset = _open(args.data, args)
        report = evaluate_model(model, dataset, client=cluster.named_client(), progress=True)
    plot_training(model, confusion=report, out=args.out)
    matrix = f", confusion matrix on {args.data}" if args.data else ""
    print(f"wrote training curves{matrix} to {args.out}")
    return EXIT_OK
