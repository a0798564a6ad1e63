"""Resume a fit after its process is killed, and end exactly where an uninterrupted fit ends.

Runs minibatch SGD with checkpoints in a second process (this script with ``--trainer``),
SIGKILLs that process as soon as its first checkpoint is on disk (as a preempted job or an
out-of-memory kill would), then continues with ``fit(..., resume=True)`` here and compares the
weights with those of a fit that was never interrupted: for sgd and adam they are the same, bit
for bit. The same holds for a fit on a cluster, and for ``dsoftmax train ... --checkpoint-dir DIR
--resume``; see docs/reliability.md.

    python examples/resume.py [--n-samples 20000] [--epochs 40] [--checkpoint-every 200]
        [--workdir DIR]
"""

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from dsoftmax import SoftmaxRegression
from dsoftmax.persist import CheckpointManager


def make_data(n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded rows labelled by a noisy linear rule: the same arrays in every process."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_samples, 20))
    y = np.argmax(X @ rng.standard_normal((20, 4)) + rng.standard_normal((n_samples, 4)), axis=1)
    return X, y


def fit(settings: dict, n_samples: int, resume: bool = False) -> SoftmaxRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # when sgd runs all its epochs
        return SoftmaxRegression(**settings).fit(*make_data(n_samples), resume=resume)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--checkpoint-every", type=int, default=200, help="optimizer steps")
    parser.add_argument("--workdir", type=Path, help="where to checkpoint (default: temp)")
    parser.add_argument("--trainer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dsoftmax-example-"))
    checkpoints = workdir / "checkpoints"

    settings = dict(
        solver="sgd", learning_rate=0.05, momentum=0.9, batch_size=256, l2=1e-4,
        max_iter=args.epochs, random_state=0,  # the seed fixes the minibatch order
    )  # fmt: skip
    checkpointed = dict(
        settings, checkpoint_dir=str(checkpoints), checkpoint_every=args.checkpoint_every
    )
    if args.trainer:  # the job to interrupt: this script again, in a process of its own
        fit(checkpointed, args.n_samples)
        return

    shutil.rmtree(checkpoints, ignore_errors=True)  # a fresh fit refuses old checkpoints
    command = [sys.executable, __file__, *sys.argv[1:], "--workdir", str(workdir), "--trainer"]
    trainer = subprocess.Popen(command)
    manager = CheckpointManager(str(checkpoints))
    while trainer.poll() is None and not manager.steps():
        time.sleep(0.005)
    trainer.send_signal(signal.SIGKILL)
    if trainer.wait() != -signal.SIGKILL:
        raise SystemExit(f"the trainer ended (code {trainer.returncode}) before it was killed")
    resumed_from = manager.steps()[-1]
    print(f"killed the trainer after its checkpoint of step {resumed_from}; resuming")

    resumed = fit(checkpointed, args.n_samples, resume=True)
    reference = fit(settings, args.n_samples)
    same = np.array_equal(resumed.coef_, reference.coef_) and np.array_equal(
        resumed.intercept_, reference.intercept_
    )
    print(
        f"result: resumed_from_step={resumed_from} epochs={resumed.n_iter_} "
        f"same_as_uninterrupted={same}"
    )


if __name__ == "__main__":
    main()
