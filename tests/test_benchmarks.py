"""The benchmark suite: its pure helpers (verdicts, summary, exit status, time to target, cost
model, codec choice, baselines) and, marked slow, a quick run of every benchmark end to end.

``benchmarks`` is a package of the repository, not of the installed project: run the tests with
``python -m pytest`` from the repository root, which puts the root on ``sys.path``.
"""

from __future__ import annotations

import doctest
import itertools
import math
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from benchmarks import (
    bench_epoch,
    bench_grid,
    bench_optimum,
    bench_out_of_core,
    bench_pass,
    bench_scaling,
    bench_sparse,
    bench_wide,
    common,
    report,
    run,
)
from benchmarks.bench_out_of_core import CodecCost, best_codec, restarted_workers
from benchmarks.bench_scaling import (
    CostModel,
    Measurement,
    efficiency,
    fit_cost_model,
    reduce_depth,
)
from benchmarks.common import (
    MemorySampler,
    Section,
    Verdict,
    measure_interleaved,
    time_to_target,
)
from benchmarks.report import EXIT_ERROR, EXIT_MISSED, EXIT_OK, exit_status, summary_table
from dsoftmax.engine import EngineProblem, LocalEngine
from dsoftmax.objective import Params, loss_and_grad
from dsoftmax.sampling import EpochSampler
from dsoftmax.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
#: Every section heading of a report, in the order benchmarks/run.py writes them.
HEADINGS = (
    "### 1. ", "### 2. ", "### 3. ", "### 4. ", "### 5. ", "### 6. ", "### 7. ", "### 8. ",
    "### 9. ", "### 10. ", "### 11. ",
)  # fmt: skip


def small_problem(n_samples: int = 300, n_features: int = 6, n_classes: int = 4):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_samples, n_features)).astype(np.float32)
    y = rng.integers(0, n_classes, n_samples)
    return X, y


# ----------------------------------------------------------------------------- verdicts
@pytest.mark.parametrize(
    ("value", "threshold", "passed"),
    [(0.5, 0.6, True), (0.6, 0.6, True), (0.61, 0.6, False), (math.nan, 0.6, False),
     (math.inf, 0.6, False), (0.0, 0.0, True), (1.0, 0.0, False)],
)  # fmt: skip
def test_a_verdict_passes_when_the_value_is_at_most_the_threshold(value, threshold, passed):
    assert Verdict("t", "m", value, threshold).passed is passed


def test_a_verdict_line_names_the_outcome_the_value_and_the_threshold():
    line = Verdict("1 full pass", "workers ÷ NumPy", 0.42, 0.6).line(informational=False)
    assert line == "- **PASS** — 1 full pass: workers ÷ NumPy = 0.42× (target ≤ 0.60×)"
    missed = Verdict("3 cheap steps", "median step", 12.5, 5.0, unit=" ms")
    assert missed.line(informational=True).startswith("- **FAIL (informational)** — 3 cheap")
    assert "12.50 ms (target ≤ 5.00 ms)" in missed.line(informational=True)
    assert Verdict("5", "restarts", 0.0, 0.0, unit="").formatted(0.0) == "0"
    assert Verdict("2", "time", math.inf, 0.5).formatted(math.inf) == "never"


def test_a_section_prints_its_heading_body_and_one_line_per_verdict():
    verdicts = [Verdict("a", "x", 1.0, 2.0), Verdict("b", "y", 3.0, 2.0)]
    text = Section("pass", "1. Full pass", "body text", verdicts).markdown(informational=False)
    assert text.startswith("### 1. Full pass\n\nbody text")
    assert text.count("\n- **") == 2
    assert "**PASS** — a" in text and "**FAIL** — b" in text


def test_the_summary_table_has_a_row_per_verdict_and_per_error():
    sections = [
        Section("pass", "1", "", [Verdict("1 full pass", "ratio", 0.4, 0.6)]),
        Section("steps", "3", "", [Verdict("3 cheap steps", "ms", 7.0, 5.0, unit=" ms")]),
    ]
    table = summary_table(sections, ["wide"], informational=False)
    lines = table.splitlines()
    assert lines[0] == "| target | measure | value | threshold | verdict |"
    assert len(lines) == 2 + 3
    assert "| 1 full pass | ratio | 0.40× | ≤ 0.60× | PASS |" in lines
    assert "| 3 cheap steps | ms | 7.00 ms | ≤ 5.00 ms | FAIL |" in lines
    assert lines[-1].startswith("| wide |") and lines[-1].endswith("| ERROR |")
    assert "PASS (informational)" in summary_table(sections, [], informational=True)


@pytest.mark.parametrize(
    ("values", "n_errors", "quick", "expected"),
    [([0.1], 0, False, EXIT_OK), ([0.9], 0, False, EXIT_MISSED), ([0.9], 0, True, EXIT_OK),
     ([0.1], 1, True, EXIT_ERROR), ([0.9], 1, False, EXIT_ERROR), ([], 0, False, EXIT_OK)],
)  # fmt: skip
def test_the_exit_status_fails_full_runs_on_misses_and_every_run_on_errors(
    values, n_errors, quick, expected
):
    verdicts = [Verdict("t", "m", value, 0.5) for value in values]
    assert exit_status(verdicts, n_errors, quick=quick) == expected


def test_a_pipe_inside_a_cell_does_not_split_the_markdown_row():
    table = common.markdown_table(["measure", "value"], [["|model − 1|", "0.2"]])
    assert table.splitlines()[-1] == "| \\|model − 1\\| | 0.2 |"


def test_an_error_section_shows_the_exception_and_has_no_verdicts():
    try:
        raise TypeError("unexpected keyword argument 'hold'")
    except TypeError as error:
        section = report.error_section("out_of_core", error)
    assert section.verdicts == []
    assert "TypeError: unexpected keyword argument 'hold'" in section.body
    assert "ERROR" in section.title


def test_share_of_threshold_caps_bars_and_handles_counts():
    assert report.share_of_threshold(Verdict("t", "m", 0.3, 0.6)) == pytest.approx(0.5)
    assert report.share_of_threshold(Verdict("t", "m", 60.0, 0.6)) == report.PLOT_CAP
    assert report.share_of_threshold(Verdict("t", "m", 0.0, 0.0, unit="")) == 0.0
    assert report.share_of_threshold(Verdict("t", "m", math.nan, 1.0)) == report.PLOT_CAP


def test_the_plot_is_a_png(tmp_path: Path):
    sections = [
        Section("pass", "1", "", [Verdict("1 full pass", "ratio", 0.4, 0.6)]),
        Section("scaling", "7", "", [Verdict("7", "error", 0.2, 0.5)],
                series={"pass efficiency": [(1, 1.0), (2, 0.8), (4, 0.45)]}),
    ]  # fmt: skip
    path = tmp_path / "plot.png"
    report.plot_report(sections, path, "title", cores=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------ time to target
def test_time_to_target_is_the_first_evaluation_at_or_below_the_target():
    history = [(0.5, 2.0), (1.0, 1.2), (1.5, 1.0), (2.0, 0.9), (2.5, 0.95)]
    assert time_to_target(history, 1.0) == 1.5
    assert time_to_target(history, 1.9) == 1.0
    assert time_to_target(history, 0.5) == math.inf
    assert time_to_target([], 1.0) == math.inf


# ----------------------------------------------------------------------------- selection
def test_interleaved_runs_start_after_a_pause_and_their_calls_follow_at_once():
    started: list[tuple[str, int, float]] = []

    def candidate(name: str):
        return lambda call: started.append((name, call, time.perf_counter()))

    timings = measure_interleaved(
        {"a": candidate("a"), "b": candidate("b")}, repeat=2, warmup=1, run_length=3, settle=0.05
    )
    assert [(name, call) for name, call, _ in started] == [
        (name, call)
        for round_index in range(3)
        for name in "ab"
        for call in range(3 * round_index, 3 * round_index + 3)
    ]
    gaps = [later[2] - earlier[2] for earlier, later in itertools.pairwise(started)]
    switches = [gap for i, gap in enumerate(gaps) if started[i][0] != started[i + 1][0]]
    within_runs = [gap for i, gap in enumerate(gaps) if i % 3 != 2]
    assert min(switches) >= 0.05
    assert max(within_runs) < 0.05
    assert [len(timings[name].samples) for name in "ab"] == [6, 6]
    with pytest.raises(ValueError, match="settle"):
        measure_interleaved({"a": candidate("a")}, repeat=1, settle=-1.0)


def test_every_target_has_one_benchmark_in_the_issues_order():
    assert list(run.BENCHMARKS) == [
        "pass", "optimum", "steps", "epoch", "out_of_core", "wide", "scaling", "half", "grid",
        "sparse", "end_to_end",
    ]  # fmt: skip
    for module in run.BENCHMARKS.values():
        assert callable(module.run) and module.FULL != module.QUICK


def test_the_grid_section_turns_its_medians_and_memory_into_the_four_verdicts():
    from types import SimpleNamespace

    one = SimpleNamespace(n_iter_=12, loss_curve_=[1.0] * 12)
    grid = SimpleNamespace(n_iter_=np.array([[9, 14]]), loss_curve_=[1.0] * 3, l2_=1e-4)
    timings = {"one fit": common.Timing((2.0, 2.0, 3.0)),
               "10 λ, validation split": common.Timing((5.0, 4.0, 6.0)),
               "8 λ × 3 folds": common.Timing((20.0, 18.0, 30.0))}  # fmt: skip
    fits = {"one fit": one, "10 λ, validation split": grid, "8 λ × 3 folds": grid}
    sklearn = {"seconds": {"dsoftmax": 1.0, "scikit-learn": 10.0}, "l2": (1e-4, 1e-4), "n": 10}
    wide = {"seconds": 1.0, "client_growth": 30 * common.MIB, "worker_growth": 2 * common.MIB,
            "worker_peak": 100 * common.MIB, "stack_bytes": 8 * common.MIB, "at_once": 9,
            "bound": 24 * common.MIB}  # fmt: skip
    section = bench_grid._section(bench_grid.QUICK, timings, fits, sklearn, wide, "none")
    assert section.title.startswith("9. ")
    assert [v.value for v in section.verdicts] == [2.5, 10.0, 0.1, 1.25]
    assert [v.passed for v in section.verdicts] == [True, False, True, False]
    assert "14 max per model, refit 3" in section.body
    assert "| models training at once (grid_memory=2GiB) | 9 |" in section.body


def test_only_selects_benchmarks_in_canonical_order_and_refuses_unknown_names():
    assert run.select_benchmarks(None) == list(run.BENCHMARKS)
    assert run.select_benchmarks("scaling,pass") == ["pass", "scaling"]
    with pytest.raises(ValueError, match=r"unknown: pases\); choose from pass, optimum"):
        run.select_benchmarks("pases")
    with pytest.raises(ValueError, match="none given"):
        run.select_benchmarks(" , ")


def test_partial_and_quick_runs_never_write_the_full_report(tmp_path: Path):
    everything = list(run.BENCHMARKS)
    assert run.report_paths(None, everything, quick=False)[0] == run.FULL_REPORT
    quick, quick_plot = run.report_paths(None, everything, quick=True)
    assert quick == run.SCRATCH / "quick.md" and quick_plot == run.SCRATCH / "quick.png"
    only = run.report_paths(None, ["pass", "wide"], quick=False)[0]
    assert only == run.SCRATCH / "only-pass-wide.md"
    assert run.report_paths(tmp_path / "r.md", ["pass"], quick=True) == (
        tmp_path / "r.md",
        tmp_path / "r.png",
    )


# ------------------------------------------------------------------------------ baselines
@pytest.mark.parametrize("with_intercept", [True, False])
def test_the_naive_numpy_baseline_computes_the_objective(with_intercept: bool):
    X, y = small_problem()
    params = bench_pass.random_params(4, 6)
    if not with_intercept:
        params = Params(params.coef, None)
    naive = bench_pass.naive_loss_and_grad(params, X, y, 1e-3)
    reference = loss_and_grad(params, X.astype(np.float64), y, 1e-3)
    assert bench_pass.largest_difference(naive, reference) < 1e-5
    assert (naive[1].intercept is None) == (not with_intercept)


def test_the_numpy_sgd_loop_follows_the_training_loops_batches_and_math():
    X, y = small_problem(n_samples=1000)
    zero = Params(np.zeros((4, 6)), np.zeros(4))
    sampler = EpochSampler(1000, 64, seed=0)
    in_memory = bench_epoch.numpy_sgd_epoch(X, y, zero, sampler, learning_rate=0.5, l2=1e-3)
    config = TrainConfig(
        solver="sgd", l2=1e-3, max_iter=1, batch_size=64, learning_rate=0.5, momentum=0.0,
        random_state=0,
    )  # fmt: skip
    trained = train(EngineProblem(LocalEngine(X, y, chunk_rows=128), 1e-3), zero, config).params
    np.testing.assert_allclose(in_memory.coef, trained.coef, atol=1e-6)
    np.testing.assert_allclose(in_memory.intercept, trained.intercept, atol=1e-6)
    assert np.abs(trained.coef).max() > 0.01  # it moved


def test_the_float64_objective_matches_loss_and_grad_in_blocks():
    X, y = small_problem(n_samples=500)
    coef = bench_pass.random_params(4, 6).coef
    expected = loss_and_grad(Params(coef, None), X.astype(np.float64), y, 1e-2)[0]
    got = bench_optimum.objective_float64(coef, X, y, 1e-2, block_rows=64)
    assert got == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------- out of core
def test_the_cheapest_codec_depends_on_the_bandwidth():
    costs = [
        CodecCost("zstd-3", store_bytes=400, read_seconds=3.0, pass_seconds=4.0),
        CodecCost("none", store_bytes=1000, read_seconds=1.0, pass_seconds=2.0),
    ]
    assert best_codec(costs, math.inf, n_workers=2) == "none"
    # 1000 bytes at 100 B/s per worker on 2 workers: 5 s more for "none", 2 s for zstd-3.
    assert best_codec(costs, 100.0, n_workers=2) == "zstd-3"


def test_a_restart_shows_as_a_new_pid_a_lost_worker_or_a_new_one():
    before = {"tcp://a": 10, "tcp://b": 11}
    assert restarted_workers(before, dict(before)) == []
    assert restarted_workers(before, {"tcp://a": 10, "tcp://b": 99}) == ["tcp://b"]
    assert restarted_workers(before, {"tcp://a": 10, "tcp://c": 12}) == ["tcp://b", "tcp://c"]


def test_the_memory_sampler_sees_an_allocation_of_this_process():
    import os
    import time

    with MemorySampler({"me": os.getpid()}, interval=0.005) as sampler:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        time.sleep(0.05)
        del block
    assert sampler.peak_delta("me") > 48 * 2**20
    assert sampler.gone == set()


def test_the_memory_sampler_counts_a_process_that_ended_as_gone():
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    with MemorySampler({"ended": finished.pid}) as sampler:
        pass
    assert sampler.gone == {"ended"} and sampler.peak == {}


def test_large_graph_warnings_are_picked_out_of_the_records():
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        for message in (
            "Sending large graph of size 12 MiB.\nThis may cause ...",
            "Large object of size 9 MiB detected in task graph",
            "something else",
        ):
            warnings.warn(message, UserWarning, stacklevel=1)
    assert bench_wide.large_graph_warnings(records) == [
        "Sending large graph of size 12 MiB.",
        "Large object of size 9 MiB detected in task graph",
    ]


# --------------------------------------------------------------------------- cost model
def test_the_reduce_depth_is_the_ceiling_of_log4():
    assert [reduce_depth(n) for n in (1, 2, 4, 5, 16, 17, 64, 65)] == [0, 1, 1, 2, 2, 3, 3, 4]


def test_the_cost_model_fit_recovers_the_constants_it_was_made_with():
    truth = CostModel(
        latency=0.004, per_worker=0.0015, row_seconds=2e-7, select_seconds=5e-7, cores=2
    )
    points = [
        Measurement(p, rows, minibatch, truth.seconds(p, rows, 16, 0, minibatch))
        for p in (1, 2, 3, 4)
        for rows, minibatch in ((1_000_000, False), (8192, True), (64, True))
    ]
    fitted = fit_cost_model(points, cores=2)
    assert fitted.latency == pytest.approx(truth.latency)
    assert fitted.per_worker == pytest.approx(truth.per_worker)
    assert fitted.row_seconds == pytest.approx(truth.row_seconds)
    assert fitted.select_seconds == pytest.approx(truth.select_seconds)
    # Beyond the cores, compute stops shrinking while the per-worker cost keeps growing.
    assert truth.seconds(4, 1_000_000, 16, 0) > truth.seconds(2, 1_000_000, 16, 0)


def test_the_cost_model_charges_the_client_link_per_worker_and_each_reduce_level():
    model = CostModel(latency=0.0, per_worker=0.0, row_seconds=0.0, bandwidth=1e9,
                      hop_latency=1e-3)  # fmt: skip
    # 8 MB to each of 100 workers over one link, then 4 levels of (hop + 8 MB).
    expected = 100 * 8e-3 + 4 * (1e-3 + 8e-3)
    assert model.seconds(100, 0, 100, 8_000_000) == pytest.approx(expected)


def test_a_fan_out_tree_sends_log_many_messages_from_each_sender():
    direct = CostModel(latency=0.0, per_worker=1e-3, row_seconds=0.0)
    tree = CostModel(latency=0.0, per_worker=1e-3, row_seconds=0.0, fan_out=4)
    assert [direct.messages(p) for p in (1, 4, 1000)] == [1, 4, 1000]
    assert [tree.messages(p) for p in (1, 2, 4, 16, 1000)] == [1, 2, 4, 8, 20]
    assert tree.seconds(1000, 0, 1, 0) == pytest.approx(20e-3)


def test_efficiency_is_relative_to_one_worker():
    assert efficiency({1: 2.0, 2: 1.0, 4: 1.0}) == {1: 1.0, 2: 1.0, 4: 0.5}


def test_the_sparse_baseline_is_the_reference_math_with_scipy_products():
    import scipy.sparse

    from dsoftmax.objective import block_sums

    rng = np.random.default_rng(0)
    X = scipy.sparse.random(200, 50, density=0.1, format="csr", random_state=0)
    y = rng.integers(0, 4, 200)
    params = Params(rng.standard_normal((4, 50)), None)
    loss_sum, grad_sum = bench_sparse.scipy_sparse_sums(params, X, y)
    expected = block_sums(params, X.toarray(), y)
    assert loss_sum == pytest.approx(expected.loss_sum, rel=1e-12)
    np.testing.assert_allclose(grad_sum, expected.grad_coef_sum, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "module",
    [
        common,
        report,
        run,
        bench_pass,
        bench_optimum,
        bench_epoch,
        bench_out_of_core,
        bench_wide,
        bench_scaling,
    ],
    ids=lambda m: m.__name__,
)
def test_the_examples_in_the_docstrings_hold(module):
    failures, _ = doctest.testmod(module)
    assert failures == 0


# ----------------------------------------------------------------------------- bench_end_to_end
def test_end_to_end_sizes_parse_and_refuse_what_is_not_three_positive_integers():
    from benchmarks.bench_end_to_end import _sizes

    assert _sizes("500000x256x20, 2000000X256x20") == ((500_000, 256, 20), (2_000_000, 256, 20))
    for bad in ("500000x256", "0x256x20", "ax256x20"):
        with pytest.raises(
            ValueError, match=f"ROWSxFEATURESxCLASSES of positive integers, got {bad!r}"
        ):
            _sizes(bad)


def test_end_to_end_rounds_report_each_parts_median_and_the_totals_range():
    from benchmarks.bench_end_to_end import median_run

    runs = [{"total": total, "seconds": {"convert": convert, "train": total - convert},
             "accuracy": 0.5, "trained": f"round {i}"}
            for i, (total, convert) in enumerate([(9.0, 4.0), (3.0, 1.0), (5.0, 3.0)])]  # fmt: skip
    median = median_run(runs)
    assert median["total"] == 5.0 and median["spread"] == (3.0, 9.0)
    assert median["seconds"] == {"convert": 3.0, "train": 2.0}
    assert median["trained"] == "round 2"
    script = median_run([{"total": 2.0, "load": 1.0, "fit": 0.5, "score": 0.1},
                         {"total": 4.0, "load": 3.0, "fit": 0.7, "score": 0.3}])  # fmt: skip
    assert (script["load"], script["fit"], script["score"]) == (2.0, 0.6, 0.2)


def test_end_to_end_parquet_files_hold_the_rows_features_and_classes_asked_for(tmp_path: Path):
    import pyarrow.parquet as pq

    from benchmarks.bench_end_to_end import write_parquet_files

    written = write_parquet_files(tmp_path, 1001, 7, 3, n_files=4, seed=1)
    table = pq.read_table(sorted(tmp_path.glob("*.parquet")))
    assert written == sum(path.stat().st_size for path in tmp_path.iterdir()) > 0
    assert table.num_rows == 1001 and len(list(tmp_path.iterdir())) == 4
    X = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(1001, 7)
    assert X.dtype == np.float32 and set(table.column("label").to_numpy()) == {0, 1, 2}


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.timeout(900)
def test_a_quick_run_writes_every_section_the_summary_and_the_plot(tmp_path: Path):
    out = tmp_path / "quick.md"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert completed.returncode == 0, (
        f"exit {completed.returncode}\n--- stdout ---\n{completed.stdout[-6000:]}\n"
        f"--- stderr ---\n{completed.stderr[-4000:]}"
    )
    text = out.read_text(encoding="utf-8")
    positions = [text.find(heading) for heading in HEADINGS]
    assert -1 not in positions and positions == sorted(positions), positions
    assert "## Summary" in text and "ERROR" not in text
    assert "| target | measure | value | threshold | verdict |" in text
    summary = text[text.index("## Summary") : text.index("## Benchmarks")]
    rows = re.findall(r"^\| (\d+) [^|]+\|.*\| (?:PASS|FAIL) \(informational\) \|$", summary, re.M)
    assert sorted(set(rows), key=int) == [str(target) for target in range(1, 12)]
    assert "- memory:" in text and "scikit-learn" in text
    assert tmp_path.joinpath("quick.png").read_bytes()[:4] == b"\x89PNG"
