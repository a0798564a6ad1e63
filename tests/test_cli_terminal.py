"""The ``dsoftmax`` command as a user at a terminal sees it: progress bars on a real
pseudo-terminal, Ctrl-C typed on it, and the messages that point at the next command.

Each command runs as ``python -m dsoftmax ...`` in a session of its own whose controlling
terminal is the pty, so that a ``^C`` written to the pty reaches the command and every process it
started, as it does in a shell.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from daskprocs import dask_processes

from dsoftmax import SoftmaxRegression, write_dataset

CLI = (sys.executable, "-m", "dsoftmax")
COMMAND_TIMEOUT = 180.0


def _take_the_terminal() -> None:
    """In the child: the new session's leader takes the pty (its stdin) as its controlling
    terminal, and Ctrl-C its default meaning, as under an interactive shell (a test run started
    in the background by a non-interactive shell passes SIGINT on ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A ``dsoftmax`` command with stdin and stderr on a pty of 120 columns that is its
    controlling terminal; stdout is a pipe."""

    def __init__(self, *argv: object) -> None:
        self.controller, terminal = os.openpty()
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        self.process = subprocess.Popen(
            [*CLI, *map(str, argv)],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            start_new_session=True,
            preexec_fn=_take_the_terminal,
        )
        os.close(terminal)
        self._shown = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # Read while it runs, so that a full terminal buffer never blocks the command.
        while True:
            try:
                data = os.read(self.controller, 4096)
            except OSError:  # EIO: every process closed the terminal
                return
            if not data:
                return
            self._shown += data

    @property
    def shown(self) -> str:
        return self._shown.decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float = COMMAND_TIMEOUT) -> None:
        """Until ``pattern`` shows on the terminal; fails if the command ends first."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.shown):
            assert self.process.poll() is None, f"exited {self.process.returncode}:\n{self.shown}"
            assert time.monotonic() < deadline, f"{pattern!r} never showed:\n{self.shown}"
            time.sleep(0.05)

    def type_ctrl_c(self) -> None:
        os.write(self.controller, b"\x03")

    def finish(self) -> tuple[int, str, str]:
        """``(exit code, stdout, what the terminal showed)`` once the command and every process
        holding the terminal have ended."""
        try:
            stdout, _ = self.process.communicate(timeout=COMMAND_TIMEOUT)
            self._reader.join(timeout=60)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, 9)
                self.process.wait()
            os.close(self.controller)
        return self.process.returncode, stdout, self.shown


def run_cli(*argv: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, argv)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200,000 × 16 float32 rows of 5 classes of a linear teacher, in 8 chunks."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200_000, 16)).astype(np.float32)
    teacher = rng.standard_normal((5, 16))
    y = np.argmax(X @ teacher.T + rng.gumbel(size=(200_000, 5)), axis=1)
    path = tmp_path_factory.mktemp("terminal") / "train.zarr"
    write_dataset(path, X, y, chunk_rows=25_000)
    return path


# --------------------------------------------------------------------------- progress bars
def test_lbfgs_on_a_terminal_shows_the_load_then_loss_and_gradient_against_tol(dataset, tmp_path):
    terminal = Terminal("train", dataset, "--model", tmp_path / "model", "--tol", "1e-6")
    code, stdout, shown = terminal.finish()
    assert code == 0, shown
    assert re.search(r"loading into this process: .*13\.0M", shown), shown
    bar = re.findall(
        r"lbfgs: iteration (\d+), loss ([\d.]+), max\|grad\| ([\d.e+-]+) \(stops at tol 1e-06\) "
        r"\[[\d:]+,\s+([\d.]+)s/iter\]",
        shown,
    )
    assert len(bar) >= 2, shown
    # The bar's last iteration and loss are the model's.
    model = SoftmaxRegression.load(str(tmp_path / "model"))
    iteration, loss = int(bar[-1][0]), float(bar[-1][1])
    assert 1 <= iteration <= model.n_iter_
    assert loss == pytest.approx(model.loss_curve_[iteration - 1], rel=1e-5)
    assert "Traceback" not in shown and stdout.startswith("trained lbfgs")


def test_convert_on_a_terminal_shows_its_bar_and_a_closing_rows_per_second_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    for index in range(3):
        X = rng.standard_normal((4000, 6)).astype(np.float32)
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), 6)
        table = pa.table({"embedding": embedding, "label": rng.integers(0, 3, 4000)})
        pq.write_table(table, tmp_path / f"part-{index}.parquet", row_group_size=2000)
    terminal = Terminal(
        "convert", tmp_path / "part-*.parquet", "--out", tmp_path / "out.zarr",
        "--label-column", "label", "--embedding-column", "embedding",
    )  # fmt: skip
    code, stdout, shown = terminal.finish()
    assert code == 0, shown
    assert re.search(r"converting: +0%\|.*409k", shown), shown
    assert re.search(r"dsoftmax: converted 12,000 rows \(.* in 3 files\) .* [\d,]+ rows/s", shown)
    assert stdout.startswith("wrote 12000 x 6 with 3 classes")


# --------------------------------------------------------------------------- Ctrl-C
@pytest.mark.cluster
def test_ctrl_c_on_a_local_cluster_exits_130_without_worker_tracebacks(dataset, tmp_path):
    # Streaming asks for a local cluster: its worker processes share the terminal.
    terminal = Terminal(
        "train", dataset, "--model", tmp_path / "model", "--hold-data", "stream",
        "--solver", "sgd", "--batch-size", "256", "--max-iter", "1000", "--shuffle-window", "25000",
    )  # fmt: skip
    terminal.wait_for(r"epoch 1/1000")
    terminal.type_ctrl_c()
    code, _, shown = terminal.finish()
    assert code == 130, shown
    after = shown[shown.index("^C") :] if "^C" in shown else shown
    assert "dsoftmax: interrupted; nothing was saved. With --checkpoint-dir DIR" in after, shown
    assert "Traceback" not in shown and "KeyboardInterrupt" not in shown, shown
    assert not (tmp_path / "model").exists()


def test_ctrl_c_with_checkpoints_gives_the_command_that_resumes(dataset, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    argv = [
        "train", str(dataset), "--model", str(tmp_path / "model"), "--solver", "sgd",
        "--batch-size", "256", "--max-iter", "3", "--checkpoint-dir", str(checkpoints),
        "--checkpoint-every", "50",
    ]  # fmt: skip
    terminal = Terminal(*argv)
    terminal.wait_for(r"epoch 1/3.*\| *[1-9]\d{2,}/\d+")  # a few hundred batches done
    terminal.type_ctrl_c()
    code, _, shown = terminal.finish()
    assert code == 130, shown
    match = re.search(r"continue with: (dsoftmax train .* --resume)\r?\n", shown)
    assert match and "Traceback" not in shown, shown
    assert f"the checkpoints in {checkpoints} are intact" in shown
    resumed = subprocess.run(
        [*CLI, *match.group(1).split()[1:]], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "trained sgd" in resumed.stdout and (tmp_path / "model").is_dir()


# --------------------------------------------------------------------------- messages
def test_a_missing_dataset_points_at_convert_and_make_data(tmp_path):
    result = run_cli("train", tmp_path / "nonexist.zarr", "--model", tmp_path / "model")
    assert result.returncode == 1
    assert re.fullmatch(
        r"dsoftmax: error: no Zarr group at .*nonexist\.zarr.*`dsoftmax convert`.*"
        r"`dsoftmax make-data`.*\n",
        result.stderr,
    ), result.stderr
    assert "write_dataset" not in result.stderr


@pytest.mark.parametrize(
    ("command", "typo", "hint"),
    [("train", "--max-itr", " (did you mean --max-iter?)"),
     ("convert", "--lable-column", " (did you mean --label-column?)"),
     ("train", "--frobnicate", "")],
)  # fmt: skip
def test_an_unknown_option_points_at_the_subcommands_help_with_the_closest_option(
    tmp_path, command, typo, hint
):
    required = {"train": "--model", "convert": "--out"}[command]
    result = run_cli(command, tmp_path / "x", required, tmp_path / "y", typo, "3")
    assert result.returncode == 2
    assert result.stderr == (
        f"dsoftmax: error: unrecognized arguments: {typo} 3{hint} "
        f"(see 'dsoftmax {command} --help')\n"
    ), result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["trian"], "argument COMMAND: invalid choice: 'trian' (choose from 'make-data', "
      "'convert', 'train', 'evaluate', 'predict', 'demo', 'plot') (did you mean 'train'?) "
      "(see 'dsoftmax --help')"),
     (["train", "d.zarr", "--model", "m", "--solver", "lbgfs"], "argument --solver: invalid "
      "choice: 'lbgfs' (choose from 'lbfgs', 'sgd', 'adam') (did you mean 'lbfgs'?) (see "
      "'dsoftmax train --help')"),
     (["train", "d.zarr", "--model", "m", "--solver", "newton"], "argument --solver: invalid "
      "choice: 'newton' (choose from 'lbfgs', 'sgd', 'adam') (see 'dsoftmax train --help')")],
)  # fmt: skip
def test_an_unknown_command_or_choice_names_the_closest_one(arguments, message):
    result = run_cli(*arguments)
    assert result.returncode == 2
    assert result.stderr == f"dsoftmax: error: {message}\n", result.stderr


@pytest.mark.cluster
def test_a_scheduler_without_dashboard_gets_no_link_and_one_disabled_line(tmp_path):
    with dask_processes(n_workers=1, extra_scheduler_args=["--no-dashboard"]) as procs:
        result = run_cli(
            "make-data", tmp_path / "d.zarr", "--n-samples", "2000", "--n-features", "4",
            "--n-classes", "3", "--scheduler", procs.address, "-v",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "dashboard" in line.lower()]
    assert line.endswith(", dashboard disabled (the scheduler serves none)"), result.stderr
    assert result.stderr.count("disabled") == 1 and "http://" not in result.stderr
