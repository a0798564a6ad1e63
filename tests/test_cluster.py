"""Tests of dsoftmax.cluster against real local clusters and real ``dask`` CLI processes."""

from __future__ import annotations

import logging
import operator
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import dask
import distributed
import psutil
import pytest
from dask.system import CPU_COUNT
from daskprocs import dask_command, dask_processes
from distributed.security import Security
from distributed.system import MEMORY_LIMIT

from dsoftmax.cluster import (
    close_local_cluster,
    dashboard_link,
    describe,
    get_client,
    local_client,
    local_cluster,
    make_security,
)

LOOPBACK = "127.0.0.1"


def active_client() -> distributed.Client | None:
    try:
        return distributed.default_client()
    except ValueError:
        return None


def require_no_active_client() -> None:
    assert active_client() is None, (
        f"a test left Dask client {active_client()} active; close it so that get_client(None) "
        "can be tested"
    )


def listening_sockets(root: psutil.Process) -> list[tuple[int, str, int]]:
    """(pid, ip, port) of every listening TCP and bound UDP socket of ``root`` and descendants."""
    found = []
    for process in [root, *root.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        for conn in connections:
            listening = conn.status == psutil.CONN_LISTEN
            bound_udp = conn.type == socket.SOCK_DGRAM and conn.laddr
            if listening or bound_udp:
                found.append((process.pid, conn.laddr.ip, conn.laddr.port))
    return found


def alive(pids: set[int]) -> set[int]:
    """The pids among ``pids`` that still run (zombies waiting to be reaped do not run)."""
    running = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.add(pid)
        except psutil.NoSuchProcess:
            pass
    return running


def wait_until_gone(pids: set[int], timeout: float = 10.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while (left := alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A self-signed certificate that is its own CA, as PEM files: (ca, cert, key)."""
    pytest.importorskip("cryptography")
    credentials = Security.temporary()
    ca, cert, key = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.write_text(credentials.tls_ca_file)
    cert.write_text(credentials.tls_client_cert)
    key.write_text(credentials.tls_client_key)
    return ca, cert, key


# --- the default: a private local cluster ---------------------------------------------------


@pytest.fixture(scope="class")
def default_client():
    """The client of the local cluster that get_client(None) starts, for one test class."""
    require_no_active_client()
    client = get_client()
    yield client
    close_local_cluster()


@pytest.mark.cluster
class TestDefaultLocalCluster:
    @pytest.fixture
    def client(self, default_client):
        return default_client

    def test_every_process_listens_on_loopback_only(self, client):
        sockets = listening_sockets(psutil.Process())
        assert {ip for _, ip, _ in sockets} == {LOOPBACK}, sockets

        ports_here = {port for pid, _, port in sockets if pid == os.getpid()}
        info = client.scheduler_info()
        assert port_of(info["address"]) in ports_here  # the scheduler runs in this process
        nanny_ports = {port_of(worker["nanny"]) for worker in info["workers"].values()}
        assert nanny_ports <= ports_here
        worker_pids = set(client.run(os.getpid).values())
        assert len(worker_pids) == len(info["workers"])
        assert worker_pids <= {pid for pid, _, _ in sockets}  # each worker process listens

    def test_workers_have_one_thread_and_a_share_of_80_percent_of_memory(self, client):
        workers = client.scheduler_info()["workers"].values()
        n_workers = min(CPU_COUNT, 4)
        assert len(workers) == n_workers
        assert [worker["nthreads"] for worker in workers] == [1] * n_workers
        share = int(0.8 * MEMORY_LIMIT / n_workers)
        assert [worker["memory_limit"] for worker in workers] == [share] * n_workers

    def test_workers_start_without_numpys_transparent_huge_pages(self, client):
        environments = client.run(os.environ.get, "NUMPY_MADVISE_HUGEPAGE")
        assert set(environments.values()) == {"0"}
        # The setting reaches the workers only: this process's configuration is as it was.
        assert "NUMPY_MADVISE_HUGEPAGE" not in dask.config.get(
            "distributed.nanny.pre-spawn-environ", {}
        )

    def test_dashboard_is_on_loopback_or_off_without_bokeh(self, client):
        link = dashboard_link(client)
        try:
            import distributed.dashboard.scheduler  # noqa: F401
        except ImportError:
            assert link is None
            assert describe(client).endswith("dashboard none")
        else:
            assert link.startswith(f"http://{LOOPBACK}:")
            assert describe(client).endswith(f"dashboard {link}")

    def test_second_call_returns_the_same_client_without_a_new_cluster(self, client):
        processes_before = {p.pid for p in psutil.Process().children(recursive=True)}
        assert get_client() is client
        assert get_client(None) is client
        assert {p.pid for p in psutil.Process().children(recursive=True)} == processes_before

    def test_the_client_in_a_with_block_is_returned_inside_it(self, client):
        with distributed.Client(client.scheduler.address, timeout=10) as other:
            assert other is not client
            assert get_client() is other
        assert get_client() is client

    def test_a_client_given_is_returned_as_is(self, client):
        with distributed.Client(client.scheduler.address, set_as_default=False) as other:
            assert get_client(other) is other

    def test_it_is_the_shared_local_client_and_its_workers_log_warnings(self, client):
        assert local_client() is client
        assert local_client(worker_log_level=logging.CRITICAL) is client  # running: as it is
        levels = client.run(stream_handler_levels)
        assert set(levels.values()) == {(logging.WARNING,)}, levels


@pytest.mark.cluster
def test_close_local_cluster_closes_client_and_cluster_and_their_processes(caplog):
    require_no_active_client()
    with caplog.at_level(logging.INFO, logger="dsoftmax"):
        client = get_client()
    cluster = client.cluster
    worker_pids = set(client.run(os.getpid).values())
    assert re.search(
        r"Started a local Dask cluster: scheduler tcp://127\.0\.0\.1:\d+, \d+ workers?, "
        r"\d+ threads?, [\d.]+ [GM]iB memory, dashboard ",
        caplog.text,
    )

    close_local_cluster()

    assert client.status == "closed"
    assert cluster.status == distributed.core.Status.closed
    assert wait_until_gone(worker_pids) == set()
    assert active_client() is None
    close_local_cluster()  # a second close is a no-op


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_workers": 0}, "n_workers must be a positive integer; got 0"),
        ({"threads_per_worker": 1.5}, "threads_per_worker must be a positive integer; got 1.5"),
        ({"memory_limit": "lots"}, "memory_limit 'lots' is not a size"),
        ({"memory_limit": -1}, "memory_limit must be a non-negative number of bytes; got -1"),
    ],
)
def test_local_cluster_rejects_bad_settings_before_starting(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        local_cluster(**kwargs)


def stream_handler_levels() -> tuple[int, ...]:
    """The levels of the stream handlers of the ``distributed`` logger (run on a worker)."""
    handlers = logging.getLogger("distributed").handlers
    return tuple(h.level for h in handlers if isinstance(h, logging.StreamHandler))


@pytest.mark.cluster
def test_the_workers_of_a_local_cluster_print_their_logs_from_the_level_asked():
    with (
        local_cluster(n_workers=1, dashboard=False, worker_log_level=logging.CRITICAL) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        levels = client.run(stream_handler_levels)
    assert set(levels.values()) == {(logging.CRITICAL,)}, levels


# --- connecting to an address ---------------------------------------------------------------


@pytest.mark.cluster
def test_address_connects_to_dask_cli_processes_and_computes_on_them(caplog):
    with dask_processes(n_workers=2) as procs:
        with caplog.at_level(logging.INFO, logger="dsoftmax"):
            client = get_client(procs.address, timeout=10)
        try:
            assert client.scheduler.address == procs.address
            assert get_client(procs.address) is client  # cached per address
            assert get_client(procs.address.removeprefix("tcp://")) is client
            assert get_client() is client  # it became the active client

            cli_pids = procs.pids()
            worker_pids = client.run(os.getpid)
            assert len(worker_pids) == 2
            assert set(worker_pids.values()) <= cli_pids
            for worker_address in worker_pids:
                ran_on = client.submit(os.getpid, pure=False, workers=[worker_address])
                assert ran_on.result() == worker_pids[worker_address]
            squares = client.map(operator.mul, range(10), range(10))
            assert client.submit(sum, squares).result() == 285

            summary = describe(client)
            assert summary.startswith(f"scheduler {procs.address}, 2 workers, 2 threads, ")
            assert "2.00 GiB memory" in summary
            assert f"Connected to Dask: {summary}" in caplog.text
            assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

            procs.kill_worker(0)
            procs.wait_for_workers(1)
            assert describe(client).startswith(f"scheduler {procs.address}, 1 worker, 1 thread, ")
            assert len(alive(set(worker_pids.values()))) == 1  # the other one runs on

            procs.add_worker()
            procs.wait_for_workers(2)
            assert len(client.run(os.getpid)) == 2
            cli_pids |= procs.pids()
        finally:
            client.close()
    assert wait_until_gone(cli_pids) == set()  # no process of the block is left


@pytest.mark.cluster
def test_tls_address_with_make_security(tmp_path):
    ca, cert, key = write_tls_files(tmp_path)
    tls_args = ("--tls-ca-file", str(ca), "--tls-cert", str(cert), "--tls-key", str(key))
    with dask_processes(
        n_workers=1,
        extra_scheduler_args=("--protocol", "tls", *tls_args),
        extra_worker_args=("--no-nanny", *tls_args),
    ) as procs:
        assert procs.address.startswith("tls://127.0.0.1:")
        location = procs.address.removeprefix("tls://")
        security = make_security(ca, cert, key)

        with pytest.raises(ConnectionError, match=r"accepts connections but did not answer as a"):
            get_client(f"tcp://{location}", timeout=1)  # plain TCP to a TLS scheduler
        with pytest.raises(ValueError, match=r"uses unencrypted tcp:// .* Use tls://127\.0\.0\.1"):
            get_client(f"tcp://{location}", security=security)

        client = get_client(procs.address, security=security, timeout=10)
        try:
            assert client.submit(operator.add, 1, 2).result() == 3
            assert get_client(location, security=security) is client  # no scheme: tls://
        finally:
            client.close()


def test_closed_port_raises_a_friendly_connection_error_quickly():
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(ConnectionError) as raised:
        get_client(address, timeout=1)
    assert time.monotonic() - start < 10
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"Could not connect to the Dask scheduler at {address} within 1 s")
    assert "(connection refused: nothing listens on port" in message
    assert "Is `dask scheduler` running there" in message
    assert "use tls:// and --tls-ca-file/--tls-cert/--tls-key" in message
    assert active_client() is None  # the failed client did not become the default


def test_a_closed_port_warns_after_the_first_attempt_and_fails_at_the_timeout(caplog):
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=re.escape(f"at {address} within 3 s")):
        get_client(address, timeout=3)
    assert 2.5 < time.monotonic() - start < 15
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert re.fullmatch(
        rf"The Dask scheduler at {re.escape(address)} did not answer within 2 s \(connection "
        rf"refused: nothing listens on port {port_of(address)} of 127\.0\.0\.1\); still trying "
        r"for [01] s \(Ctrl-C stops\)\.",
        warnings[0],
    ), warnings


def test_a_scheduler_that_starts_late_is_waited_for(caplog):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    command = dask_command("scheduler", "--host", "127.0.0.1", "--port", str(port),
                           "--no-dashboard")  # fmt: skip
    started: list[subprocess.Popen] = []
    timer = threading.Timer(
        3.0, lambda: started.append(subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.DEVNULL))
    )  # fmt: skip
    timer.start()
    try:
        client = get_client(address, timeout=60)
        try:
            assert client.scheduler.address == address
            assert active_client() is client  # not the first attempt's client
            assert client.run_on_scheduler(os.getpid) == started[0].pid
        finally:
            client.close()
    finally:
        timer.join()
        for process in started:
            process.kill()
            process.wait(timeout=30)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "did not answer within 2 s (connection refused" in warnings[0]
    assert re.search(r"still trying for 5\d s", warnings[0]), warnings


def test_plain_tcp_to_another_host_warns_that_the_link_is_unprotected(caplog):
    address = "tcp://192.0.2.1:8786"  # TEST-NET-1: never a real host
    with pytest.raises(ConnectionError, match=re.escape(address)):
        get_client(address, timeout=0.2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unencrypted, unauthenticated tcp://" in warnings[0]
    assert "Use tls://192.0.2.1:8786" in warnings[0]


def test_plain_tcp_to_loopback_does_not_warn(caplog):
    with pytest.raises(ConnectionError):
        get_client(f"localhost:{free_port()}", timeout=0.2)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_tls_address_without_credentials_is_rejected():
    with pytest.raises(ValueError, match=r"tls://127\.0\.0\.1:1 needs TLS credentials"):
        get_client("tls://127.0.0.1:1")


@pytest.mark.parametrize(
    ("client", "kwargs", "error", "message"),
    [
        (8786, {}, TypeError, "got int 8786"),
        ("  ", {}, ValueError, "scheduler address is empty"),
        ("tcp://127.0.0.1:1", {"timeout": 0}, ValueError, "timeout must be a positive number"),
    ],
)
def test_get_client_rejects_bad_arguments(client, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        get_client(client, **kwargs)


# --- make_security --------------------------------------------------------------------------


def test_make_security_without_files_defers_to_dask_configuration():
    assert make_security() is None


def test_make_security_builds_mutual_tls_that_requires_encryption(tmp_path):
    ca, cert, key = write_tls_files(tmp_path)
    security = make_security(str(ca), cert, key)
    assert security.require_encryption
    assert (security.tls_ca_file, security.tls_client_cert, security.tls_client_key) == (
        str(ca),
        str(cert),
        str(key),
    )
    assert security.get_connection_args("client")["ssl_context"] is not None


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"tls_ca_file": "ca.pem"}, "tls_cert, tls_key"),
        ({"tls_cert": "c.pem", "tls_key": "k.pem"}, "tls_ca_file"),
        ({"tls_ca_file": "ca.pem", "tls_cert": "c.pem"}, "tls_key"),
    ],
)
def test_make_security_names_what_is_missing(given, missing):
    with pytest.raises(ValueError, match=f"missing: {missing}\\. Pass all three PEM files"):
        make_security(**given)


def test_make_security_names_a_file_that_does_not_exist(tmp_path):
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "cert.pem", "key.pem"))
    for path in (ca, cert):
        path.write_text("")
    with pytest.raises(ValueError, match=re.escape(f"tls_key file not found: '{key}'")):
        make_security(ca, cert, key)


def test_make_security_rejects_files_that_are_not_pem(tmp_path):
    paths = [tmp_path / name for name in ("ca.pem", "cert.pem", "key.pem")]
    for path in paths:
        path.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"could not load the TLS files .* that they are PEM"):
        make_security(*paths)


# --- the dashboard link, logged at start ----------------------------------------------------


def dashboard_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "dsoftmax"
        and record.levelno == logging.INFO
        and record.getMessage().startswith("Dask dashboard: ")
    ]


@pytest.mark.cluster
def test_starting_a_local_cluster_logs_the_dashboard_link_or_why_there_is_none(caplog):
    require_no_active_client()
    with caplog.at_level(logging.INFO, logger="dsoftmax"):
        client = get_client()
    try:
        link = dashboard_link(client)
        lines = dashboard_lines(caplog)
        if link is None:  # bokeh is not installed
            assert lines == ["Dask dashboard: none (it needs bokeh: pip install bokeh)"]
        else:
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/status", link)
            assert lines == [f"Dask dashboard: {link}"]
    finally:
        close_local_cluster()


@pytest.fixture
def in_process_scheduler():
    """The address of a scheduler without workers in this process (starts in ~0.1 s)."""
    with distributed.LocalCluster(
        n_workers=0,
        processes=False,
        protocol="tcp",
        host=LOOPBACK,
        dashboard_address=f"{LOOPBACK}:0",
    ) as cluster:
        yield cluster.scheduler_address


def test_connecting_logs_the_schedulers_dashboard_link(in_process_scheduler, caplog):
    with caplog.at_level(logging.INFO, logger="dsoftmax"):
        client = get_client(in_process_scheduler, timeout=10)
    try:
        (line,) = dashboard_lines(caplog)
        assert re.fullmatch(r"Dask dashboard: http://127\.0\.0\.1:\d+/status", line)
        assert line == f"Dask dashboard: {dashboard_link(client)}"
    finally:
        client.close()


@pytest.mark.parametrize("template", ["{DSOFTMAX_NO_SUCH_VARIABLE}/status", "{scheme://{host}"])
def test_a_dashboard_link_template_that_does_not_format_is_no_link_not_a_crash(
    in_process_scheduler, template, caplog, monkeypatch
):
    monkeypatch.delenv("DSOFTMAX_NO_SUCH_VARIABLE", raising=False)
    with dask.config.set({"distributed.dashboard.link": template}):
        with caplog.at_level(logging.INFO, logger="dsoftmax"):
            client = get_client(in_process_scheduler, timeout=10)
        try:
            assert dashboard_link(client) is None
            assert describe(client).endswith("dashboard none")
            assert dashboard_lines(caplog) == [
                "Dask dashboard: none (the scheduler advertises none, or the "
                "distributed.dashboard.link setting does not format)"
            ]
        finally:
            client.close()
