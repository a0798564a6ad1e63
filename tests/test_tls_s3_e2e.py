"""End to end through TLS and S3, as on a real cluster.

The certificates come from ``cluster/tls/make-certs.sh``; a real ``dask scheduler`` and two
``dask worker`` processes speak mutual TLS on 127.0.0.1 and require encryption; every command
runs as ``python -m dsoftmax ... --scheduler tls://...`` in a subprocess, like a user's client.
The S3 store is a ``moto`` server on 127.0.0.1 that records every request, and the client and
the workers sign their requests with different access keys (each from its own environment, as
on separate machines), so the recording shows who read what: the workers read every chunk of
``X`` themselves, the client reads metadata only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlparse

import distributed
import numpy as np
import pytest
import zarr
from daskprocs import DaskProcesses, dask_processes

from dsoftmax import SoftmaxRegression, open_dataset, write_dataset
from dsoftmax.cluster import make_security

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
MAKE_CERTS = REPO / "cluster" / "tls" / "make-certs.sh"
CLI = (sys.executable, "-m", "dsoftmax")
MOTO_SERVER = (sys.executable, "-m", "moto.server")
COMMAND_TIMEOUT = 120.0
# dsoftmax's get_client waits this long for a scheduler before it gives up.
CONNECT_TIMEOUT = 30
N_SAMPLES, N_FEATURES, N_CLASSES, CHUNK_ROWS = 8000, 6, 3, 2000
REGION = "us-east-1"
CLIENT_KEY, WORKER_KEY = "dsoftmax-client", "dsoftmax-worker"


def aws_environment(access_key: str) -> dict[str, str]:
    """Credentials of one machine, as its environment holds them (never in storage options)."""
    return {
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": f"{access_key}-secret",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def tls_options(directory: Path, role: str, ca_directory: Path | None = None) -> list[str]:
    ca = (ca_directory or directory) / "ca.pem"
    return [
        "--tls-ca-file", str(ca),
        "--tls-cert", str(directory / f"{role}.pem"),
        "--tls-key", str(directory / f"{role}.key"),
    ]  # fmt: skip


def run_cli_many(
    *argvs: Sequence[object], env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess]:
    """Run independent ``dsoftmax`` commands at once; their results in order."""
    processes = [
        subprocess.Popen(
            [*CLI, *map(str, argv)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        for argv in argvs
    ]
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT)
            results.append(
                subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
            )
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def describe(result: subprocess.CompletedProcess) -> str:
    command = " ".join(result.args[2:])
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return f"{command}\nexit {result.returncode}\n{output}"


def assert_success(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, describe(result)


def assert_one_line_error(result: subprocess.CompletedProcess, pattern: str) -> None:
    """Exit code 1, nothing on stdout, one ``dsoftmax: error:`` line matching ``pattern``."""
    assert result.returncode == 1, describe(result)
    assert result.stdout == "", describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, describe(result)
    assert lines[0].startswith("dsoftmax: error: "), describe(result)
    assert re.search(pattern, lines[0]), describe(result)


def worker_task_keys(client: distributed.Client) -> list[str]:
    """Keys of every task the cluster's workers have computed."""

    # Local, so that cloudpickle ships it by value: the workers cannot import this module.
    def computed_task_keys(dask_worker: distributed.Worker) -> list[str]:
        return [
            str(entry[0])
            for entry in dask_worker.state.log
            if len(entry) > 2 and entry[1] == "compute-task"
        ]

    return [key for keys in client.run(computed_task_keys).values() for key in keys]


def count_fit_steps(client: distributed.Client) -> int:
    """Training tasks run so far: every fit loads blocks and starts block servers."""
    return sum(key.startswith("softmax-") for key in worker_task_keys(client))


# ------------------------------------------------------------------------------ fixtures
def make_certs(directory: Path) -> Path:
    """A CA and scheduler/worker/client certificates from the project's script."""
    if shutil.which("openssl") is None or shutil.which("bash") is None:
        pytest.skip("cluster/tls/make-certs.sh needs bash and openssl")
    subprocess.run(
        ["bash", str(MAKE_CERTS), str(directory)], check=True, capture_output=True, timeout=60
    )
    return directory


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def foreign_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Certificates of another CA: what someone outside the cluster could make."""
    return make_certs(tmp_path_factory.mktemp("foreign-certs"))


@pytest.fixture(scope="module")
def cluster(certs: Path) -> Iterator[DaskProcesses]:
    """A TLS-only scheduler and two workers whose environment holds the workers' S3 key."""
    environment = {
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        **aws_environment(WORKER_KEY),
    }
    with dask_processes(
        n_workers=2,
        extra_scheduler_args=("--protocol", "tls", *tls_options(certs, "scheduler")),
        extra_worker_args=tls_options(certs, "worker"),
        env=environment,
    ) as procs:
        yield procs


@pytest.fixture(scope="module")
def tls_client(cluster: DaskProcesses, certs: Path) -> Iterator[distributed.Client]:
    """This test's own view of the cluster (with the client certificate), to inspect it."""
    security = make_security(*(certs / name for name in ("ca.pem", "client.pem", "client.key")))
    with distributed.Client(
        cluster.address, security=security, timeout=CONNECT_TIMEOUT, set_as_default=False
    ) as client:
        yield client


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _moto_answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class RecordingS3:
    """A moto S3 server on 127.0.0.1 with a bucket; records the requests it is asked to."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.endpoint = endpoint
        self.bucket = bucket

    @property
    def storage_options(self) -> dict:
        """What travels with ``--storage-options``: the endpoint, no secret."""
        return {"client_kwargs": {"endpoint_url": self.endpoint, "region_name": REGION}}

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def start_recording(self) -> None:
        self._call("reset-recording")
        self._call("start-recording")

    def recorded(self) -> list[dict]:
        """The requests since :meth:`start_recording`: method, path and signing access key."""
        self._call("stop-recording")
        with urllib.request.urlopen(f"{self.endpoint}/moto-api/recorder/download-recording") as r:
            lines = r.read().decode().splitlines()
        requests = []
        for line in lines:
            entry = json.loads(line)
            signature = re.search(r"Credential=([^/]+)/", entry["headers"].get("Authorization", ""))
            requests.append(
                {
                    "method": entry["method"],
                    "path": urlparse(entry["url"]).path,
                    "access_key": signature.group(1) if signature else None,
                }
            )
        return requests

    def _call(self, action: str) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/recorder/{action}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=10):
            pass


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingS3]:
    pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 end to end")
    pytest.importorskip("s3fs")
    boto3 = pytest.importorskip("boto3")
    log_dir = tmp_path_factory.mktemp("moto")
    endpoint = f"http://127.0.0.1:{_free_port()}"
    # The recording goes to this test's directory (moto's default is the working directory).
    environment = {**os.environ, "MOTO_RECORDER_FILEPATH": str(log_dir / "recording.jsonl")}
    with (log_dir / "moto.log").open("wb") as log:
        server = subprocess.Popen(
            [*MOTO_SERVER, "-H", "127.0.0.1", "-p", endpoint.rsplit(":")[-1]],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    try:
        deadline = time.monotonic() + 30
        while not _moto_answers(endpoint):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"moto_server did not answer at {endpoint}:\n"
                    + (log_dir / "moto.log").read_text(errors="replace")[-3000:]
                )
            time.sleep(0.1)
        bucket = f"dsoftmax-e2e-{uuid.uuid4().hex[:12]}"
        s3_client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=CLIENT_KEY,
            aws_secret_access_key=f"{CLIENT_KEY}-secret",
        )
        s3_client.create_bucket(Bucket=bucket)
        s3_client.close()
        yield RecordingS3(endpoint, bucket)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# ----------------------------------------------------------------------- S3 and local disk
@pytest.mark.s3
@pytest.mark.slow
def test_cli_over_tls_trains_from_s3_and_local_disk_alike_with_workers_reading_the_chunks(
    cluster: DaskProcesses,
    certs: Path,
    s3: RecordingS3,
    tls_client: distributed.Client,
    tmp_path: Path,
) -> None:
    connection = ["--scheduler", cluster.address, *tls_options(certs, "client")]
    s3_options = ["--storage-options", json.dumps(s3.storage_options)]
    client_environment = aws_environment(CLIENT_KEY)
    stores = {
        "s3": {"data": s3.url("train.zarr"), "model": s3.url("model"), "options": s3_options},
        "local": {"data": tmp_path / "train.zarr", "model": tmp_path / "model", "options": []},
    }
    shape = [
        "--n-samples", N_SAMPLES, "--n-features", N_FEATURES, "--n-classes", N_CLASSES,
        "--chunk-rows", CHUNK_ROWS, "--seed", 3,
    ]  # fmt: skip

    def run_on_both(*command: object) -> dict[str, subprocess.CompletedProcess]:
        """The command on both stores at once; "data" and "model" stand for each store's."""
        argvs = []
        for store in stores.values():
            arguments = [store[part] if part in ("data", "model") else part for part in command]
            argvs.append([*arguments, *connection, *store["options"]])
        results = run_cli_many(*argvs, env=client_environment)
        for result in results:
            assert_success(result)
        return dict(zip(stores, results, strict=True))

    made = run_on_both("make-data", "data", *shape)
    assert f"with {N_CLASSES} classes to {s3.url('train.zarr')}" in made["s3"].stdout

    s3.start_recording()
    trained = run_on_both("train", "data", "--model", "model")
    evaluated = run_on_both("evaluate", "model", "data", "--json")
    requests = s3.recorded()

    # Same data, same fit, same scores from the object store as from the local disk.
    local_model = SoftmaxRegression.load(str(stores["local"]["model"]))
    s3_model = SoftmaxRegression.load(
        s3.url("model"),
        storage_options={
            "key": CLIENT_KEY,
            "secret": f"{CLIENT_KEY}-secret",
            **s3.storage_options,
        },
    )
    np.testing.assert_array_equal(s3_model.coef_, local_model.coef_)
    np.testing.assert_array_equal(s3_model.intercept_, local_model.intercept_)
    iterations_and_loss = {
        name: result.stdout.split(": ", 1)[1].split("; model")[0]
        for name, result in trained.items()
    }
    assert iterations_and_loss["s3"] == iterations_and_loss["local"], iterations_and_loss
    s3_report, local_report = (json.loads(evaluated[name].stdout) for name in ("s3", "local"))
    assert s3_report == local_report
    assert s3_report["n_samples"] == N_SAMPLES
    assert s3_report["accuracy"] > 1 / N_CLASSES + 0.2  # it learned something

    # Who read the chunks: every chunk of X and y was fetched with the workers' key, in train
    # and again in evaluate; the client read metadata and wrote the model, never a chunk.
    n_chunks = N_SAMPLES // CHUNK_ROWS
    chunk_path = re.compile(rf"^/{s3.bucket}/train\.zarr/(X|y)/c/")
    chunk_gets = [
        (request["access_key"], request["path"])
        for request in requests
        if request["method"] == "GET" and chunk_path.match(request["path"])
    ]
    for array in ("X", "y"):
        paths = [path for key, path in chunk_gets if f"/train.zarr/{array}/" in path]
        assert len(set(paths)) == n_chunks, sorted(set(paths))
        assert len(paths) >= 2 * n_chunks, paths
    assert {key for key, _ in chunk_gets} == {WORKER_KEY}, Counter(chunk_gets)
    client_paths = {r["path"] for r in requests if r["access_key"] == CLIENT_KEY}
    assert f"/{s3.bucket}/model/manifest.json" in client_paths
    assert not any(chunk_path.match(path) for path in client_paths), sorted(client_paths)
    assert {r["access_key"] for r in requests} <= {CLIENT_KEY, WORKER_KEY}

    # The workers ran our generation and read tasks for the S3 store (dask names hold a digest
    # of the store's URL, so these keys are the S3 dataset's).
    keys = worker_task_keys(tls_client)
    s3_dataset = open_dataset(
        s3.url("train.zarr"),
        storage_options={"key": WORKER_KEY, "secret": f"{WORKER_KEY}-secret", **s3.storage_options},
    )
    assert any(key.startswith("dsoftmax-make-classification-") for key in keys), keys[:20]
    read_tasks = [key for key in keys if key.startswith(f"('{s3_dataset.X.name}', ")]
    assert len(read_tasks) >= 2 * n_chunks, keys[:40]
    local_x = zarr.open_group(str(stores["local"]["data"]), mode="r")["X"][:]
    np.testing.assert_array_equal(s3_dataset.X.compute(scheduler="sync"), local_x)


# ------------------------------------------------------------------------ refused clients
@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "small.zarr"
    X = rng.standard_normal((400, 3)).astype(np.float32)
    write_dataset(str(path), X, (X[:, 0] > 0).astype(np.int64), chunk_rows=100)
    return path


def test_clients_without_a_valid_certificate_are_refused_before_any_work(
    cluster: DaskProcesses,
    certs: Path,
    foreign_certs: Path,
    tls_client: distributed.Client,
    small_dataset: Path,
    tmp_path: Path,
) -> None:
    location = cluster.address.removeprefix("tls://")
    address = re.escape(cluster.address)
    cases = {
        # No certificate at all: dsoftmax does not even try.
        "no-certificate": (
            ["--scheduler", cluster.address],
            rf"scheduler address {address} needs TLS credentials and none were given",
        ),
        # The cluster's CA (which is public) but a certificate that another CA signed: the
        # scheduler rejects the handshake.
        "foreign-certificate": (
            ["--scheduler", cluster.address, *tls_options(foreign_certs, "client", certs)],
            rf"Could not connect to the Dask scheduler at {address}: the scheduler ended the TLS "
            r"handshake, refusing this client's certificate",
        ),
        # Plain TCP to the TLS port.
        "plain-tcp": (
            ["--scheduler", f"tcp://{location}"],
            rf"Could not connect to the Dask scheduler at tcp://{re.escape(location)} within "
            r"\d+ s \(.* accepts connections but did not answer as a Dask scheduler, e\.g\. "
            r"tcp:// against a TLS scheduler",
        ),
        # Plain TCP while holding valid certificates: refused on this side.
        "plain-tcp-with-certificate": (
            ["--scheduler", f"tcp://{location}", *tls_options(certs, "client")],
            rf"uses unencrypted tcp:// but the TLS settings require encryption\. "
            rf"Use tls://{re.escape(location)}\.",
        ),
    }
    fits_before = count_fit_steps(tls_client)
    results = run_cli_many(
        *(
            ["train", small_dataset, "--model", tmp_path / f"model-{name}", *options]
            for name, (options, _) in cases.items()
        )
    )
    for (name, (_, pattern)), result in zip(cases.items(), results, strict=True):
        assert_one_line_error(result, pattern)
        assert not (tmp_path / f"model-{name}").exists(), name
    assert count_fit_steps(tls_client) == fits_before  # no training step ran for any of them


def handshake(address: str, context: ssl.SSLContext) -> None:
    """One TLS handshake with the scheduler at ``tls://host:port``; raises ssl.SSLError."""
    host, port = address.removeprefix("tls://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            tls.do_handshake()


def client_context(ca: Path, certificate_dir: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # as in Dask: the CA, not the host name, admits a peer
    # TLS 1.2 settles the client certificate inside the handshake (1.3 reports it later).
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    if certificate_dir is not None:
        context.load_cert_chain(certificate_dir / "client.pem", certificate_dir / "client.key")
    return context


def test_scheduler_completes_tls_handshakes_only_with_certificates_of_its_ca(
    cluster: DaskProcesses, certs: Path, foreign_certs: Path
) -> None:
    handshake(cluster.address, client_context(certs / "ca.pem", certs))
    with pytest.raises(ssl.SSLError):
        handshake(cluster.address, client_context(certs / "ca.pem"))  # no client certificate
    with pytest.raises(ssl.SSLError):
        handshake(cluster.address, client_context(certs / "ca.pem", foreign_certs))
    with pytest.raises(ssl.SSLError, match="certificate verify failed"):
        # And a client that trusts another CA refuses the scheduler itself.
        handshake(cluster.address, client_context(foreign_certs / "ca.pem", foreign_certs))
