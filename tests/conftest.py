"""Shared fixtures: a real S3 API (``moto_server``) on 127.0.0.1 for the ``s3`` tests, and
``dsoftmax`` commands run in this process."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

S3_STARTUP_TIMEOUT = 30.0
S3_REGION = "us-east-1"
S3_KEY = "testing"


@dataclass(frozen=True)
class S3Server:
    """A running ``moto_server``: its endpoint and the log it writes."""

    endpoint_url: str
    log_path: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(endpoint_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint_url}/moto-api/", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _wait_until_up(process: subprocess.Popen, endpoint_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + S3_STARTUP_TIMEOUT
    while not _answers(endpoint_url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            log = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"moto_server did not answer at {endpoint_url}; its log:\n{log}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """Start ``python -m moto.server`` on a free port of 127.0.0.1; stop it after the session."""
    pytest.importorskip("moto.server", reason="moto[server] is needed for the s3 tests")
    port = _free_port()
    endpoint_url = f"http://127.0.0.1:{port}"
    log_dir = Path(tempfile.mkdtemp(prefix="dsoftmax-moto-"))
    log_path = log_dir / "moto_server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_up(process, endpoint_url, log_path)
        yield S3Server(endpoint_url=endpoint_url, log_path=log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def s3_storage_options(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, dict]]:
    """A fresh bucket: ``("s3://<bucket>", storage_options)`` for s3fs on the moto server."""
    pytest.importorskip("s3fs")
    boto3 = pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", S3_REGION)
    bucket = f"dsoftmax-test-{uuid.uuid4().hex[:16]}"
    # s3fs.mkdir sends LocationConstraint=us-east-1, which S3 (and moto) reject for that region.
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name=S3_REGION,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_KEY,
    )
    client.create_bucket(Bucket=bucket)
    client.close()
    storage_options = {
        "key": S3_KEY,
        "secret": S3_KEY,
        "client_kwargs": {"endpoint_url": s3_server.endpoint_url, "region_name": S3_REGION},
    }
    # s3fs shares one filesystem instance (and its listing cache) between equal options; a
    # fresh bucket per test keeps listings apart, and the data layer invalidates the cache
    # before it lists. Clearing the instance cache instead would orphan open aiohttp sessions.
    yield f"s3://{bucket}", storage_options


@pytest.fixture(autouse=True, scope="module")
def _no_shared_local_cluster_across_modules() -> Iterator[None]:
    """Close, after each test module, the local cluster that a fit without a client may have
    started (``dsoftmax.cluster.get_client(None)``): it would stay the active client, and the
    in-memory fits of later modules would run on it instead of in process."""
    yield
    from dsoftmax.cluster import close_local_cluster

    close_local_cluster()


@pytest.fixture
def run_cli_here(capsys):
    """Run ``dsoftmax`` in this process (no start-up cost); returns (code, stdout, stderr).
    The command configures the package's logger: it is put back afterwards."""
    from dsoftmax import cli

    logger = logging.getLogger("dsoftmax")
    saved = (logger.handlers[:], logger.level, logger.propagate)

    def run(*argv: object) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = cli.main([str(arg) for arg in argv])
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
        finally:
            logger.handlers[:], logger.level, logger.propagate = saved
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
