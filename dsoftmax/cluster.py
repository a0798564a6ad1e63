"""Connect to a Dask cluster, or start a private one on this machine.

Three ways to get a :class:`distributed.Client`, all through :func:`get_client`:

* pass a ``Client`` you already made: it is used as is;
* pass a scheduler address (``tls://host:8786``, ``tcp://host:8786`` or ``host:8786``): one
  client per address is made and kept for the life of the process, so repeated fits reuse it;
* pass nothing: the active client (``with Client(...)``, the most recent ``Client(...)``, or the
  worker's client inside a task) is used; without one, a :class:`distributed.LocalCluster` is
  started once per process (:func:`local_client`), bound to ``127.0.0.1`` only, and closed when
  the interpreter exits.

The workers of a local cluster write their logs to this process's stderr from the level given
to :func:`local_cluster` (Dask's default, WARNING, unless told otherwise); the command line
raises it so that a failed task shows as its one-line error unless ``-v`` asks for the logs.

Security: a plain ``tcp://`` link is neither encrypted nor authenticated, and anyone who can
reach a scheduler can run code on its workers. Connecting to a host other than this machine
over ``tcp://`` logs a warning; use ``tls://`` with :func:`make_security` (or Dask's own
``DASK_DISTRIBUTED__COMM__TLS__*`` configuration) for a real cluster.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import dask
import dask.system
import distributed
import distributed.system
from dask.utils import format_bytes, parse_bytes
from distributed.comm.addressing import parse_address, parse_host_port
from distributed.security import Security

from .connection import (
    PROBE_TIMEOUT,
    check_scheme_matches_security,
    connection_failure_message,
    normalize_address,
    tls_problem,
    waiting_message,
    warn_if_unencrypted_remote,
)
from .defaults import DEFAULT_SCHEDULER_TIMEOUT, PROCESS_ENVIRONMENT
from .validation import AT_LEAST_ONE, POSITIVE, is_integer, is_real

__all__ = [
    "active_client",
    "close_local_cluster",
    "dashboard_link",
    "describe",
    "get_client",
    "local_client",
    "local_cluster",
    "make_security",
    "scheduler_lost",
]

logger = logging.getLogger("dsoftmax")

#: Upper bound on the default number of local workers: beyond it, scheduling overhead of the
#: small per-step tasks outweighs the extra cores on one machine.
MAX_DEFAULT_LOCAL_WORKERS = 4

#: Share of this machine's memory that a local cluster may use in all, leaving the rest to the
#: client process, which holds the model and receives the reduced sums.
LOCAL_MEMORY_FRACTION = 0.8

#: Seconds of the first attempt to reach a scheduler at an address: after it, a warning says
#: what answered (nothing, a refusal, an unknown host) while the connection keeps trying.
FIRST_ATTEMPT_SECONDS = 2.0

_CLOSED_STATES = frozenset({"closing", "closed"})

_lock = threading.RLock()
_clients_by_address: dict[str, distributed.Client] = {}
_local_cluster: distributed.LocalCluster | None = None  # started by get_client(None)
_local_client: distributed.Client | None = None
_clusters_without_dashboard: weakref.WeakSet[distributed.LocalCluster] = weakref.WeakSet()
#: (id of a client, link) → whether the scheduler answered the link with "not found".
_dashboard_pages_missing: dict[tuple[int, str], bool] = {}
_atexit_registered = False


def get_client(
    client: distributed.Client | str | None = None,
    *,
    security: Security | None = None,
    timeout: float = DEFAULT_SCHEDULER_TIMEOUT,
) -> distributed.Client:
    """Return a Dask client: the one given, one connected to an address, or a local one.

    Parameters
    ----------
    client : Client, str or None, default None
        A ``Client`` is returned unchanged. A string is a scheduler address
        (``tls://host:port``, ``tcp://host:port`` or ``host:port``; without a scheme, ``tls://``
        is used when ``security`` requires encryption, else ``tcp://``); the client made for it
        is cached per address and becomes Dask's default client. None returns the active client
        if there is one, else the client of a :func:`local_cluster` started once per process.
    security : distributed.security.Security or None, default None
        TLS credentials for an address, e.g. from :func:`make_security`. None uses Dask's
        configuration (``DASK_DISTRIBUTED__COMM__TLS__*``).
    timeout : float, default 30.0
        Seconds to wait for the scheduler at an address to answer. When it has not answered
        after 2 s, a warning says what the address answers (nothing, a refusal, an unknown
        host) while the rest of the time is waited for.

    Returns
    -------
    distributed.Client

    Raises
    ------
    ConnectionError
        When the scheduler at the address cannot be reached in ``timeout`` seconds.
    ValueError
        When the address and the security settings disagree (``tcp://`` with encryption
        required, ``tls://`` without credentials), or ``timeout`` is not positive.
    TypeError
        When ``client`` is neither a Client, a string nor None.

    Examples
    --------
    >>> security = make_security("ca.pem", "client.pem", "client.key")  # doctest: +SKIP
    >>> client = get_client("tls://scheduler.example.org:8786", security=security)  # doctest: +SKIP
    >>> print(describe(client))  # doctest: +SKIP
    scheduler tls://10.0.0.5:8786, 8 workers, 8 threads, 100.00 GiB memory, dashboard ...
    """
    if isinstance(client, distributed.Client):
        return client
    if client is None:
        return active_client() or local_client()
    if isinstance(client, str):
        return _client_for_address(client, security=security, timeout=timeout)
    raise TypeError(
        f"client must be a distributed.Client, a scheduler address string or None; got "
        f"{type(client).__name__} {client!r}. Pass e.g. 'tls://host:8786', or None for a "
        "local cluster."
    )


def local_cluster(
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | int | None = "auto",
    dashboard: bool = True,
    worker_log_level: int = logging.WARNING,
) -> distributed.LocalCluster:
    """Start a new cluster of worker processes on this machine, reachable from it only.

    Scheduler, nannies, workers and dashboard all listen on ``127.0.0.1``: nothing on the
    network can reach them. :func:`get_client` calls this once per process; call it yourself
    for a cluster with other settings (and close it).

    Parameters
    ----------
    n_workers : int or None, default None
        Worker processes; None means ``min(CPU count, 4)`` (the CPU count honours CPU affinity
        and container quotas).
    threads_per_worker : int, default 1
        Threads per worker. One thread per process keeps NumPy's BLAS to one core per worker
        (Dask's nanny sets ``OMP_NUM_THREADS=1`` and the like) so workers do not oversubscribe.
    memory_limit : str, int or None, default "auto"
        Memory per worker: ``"auto"`` splits 80% of this machine's memory evenly between the
        workers; a size such as ``"4GiB"`` or a number of bytes sets it directly; None or 0
        sets no limit.
    dashboard : bool, default True
        Serve Dask's dashboard on a free port of ``127.0.0.1``. It needs ``bokeh``; without it,
        the dashboard is turned off (logged at INFO, no warning).
    worker_log_level : int, default logging.WARNING
        The level from which the workers' Dask logs (a failed task's "Compute Failed" record
        and its traceback, for one) reach this process's stderr: ``LocalCluster``'s
        ``silence_logs``. ``logging.CRITICAL`` keeps them off the terminal.

    Returns
    -------
    distributed.LocalCluster
        The caller owns it: close it with ``cluster.close()`` (after its clients).

    Notes
    -----
    Workers are spawned processes, which import the ``__main__`` module: a script that starts
    a local cluster must do so under ``if __name__ == "__main__":``.
    """
    n_workers = _default_n_workers() if n_workers is None else n_workers
    _check_positive_int("n_workers", n_workers)
    _check_positive_int("threads_per_worker", threads_per_worker)
    per_worker_memory = _per_worker_memory(memory_limit, n_workers)
    with_dashboard = dashboard and _bokeh_available()
    # Read by each nanny when it is made, and set before it spawns its worker (NumPy reads the
    # variable when it is imported).
    spawn_environment = {
        **dask.config.get("distributed.nanny.pre-spawn-environ", {}),
        # Without NumPy's huge-page requests a worker loads its blocks about as fast as it reads
        # them, not up to twice as slowly (docs/scaling.md, "Loading"); the scripts of cluster/
        # set it for the workers they start.
        **PROCESS_ENVIRONMENT,
    }
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ": spawn_environment}),
        _workers_ignore_interrupts(),
    ):
        cluster = _new_local_cluster(
            n_workers, threads_per_worker, per_worker_memory, with_dashboard, worker_log_level
        )
    if not with_dashboard:
        _clusters_without_dashboard.add(cluster)
    return cluster


def _new_local_cluster(
    n_workers: int,
    threads_per_worker: int,
    memory_limit: int | str | None,
    with_dashboard: bool,
    worker_log_level: int,
) -> distributed.LocalCluster:
    return distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        memory_limit=memory_limit,
        host="127.0.0.1",
        # Even with the dashboard off the scheduler serves /health on an HTTP port: bind it to
        # loopback and a free port (the default, 8787, clashes between processes).
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": with_dashboard},
        silence_logs=worker_log_level,
    )


@contextlib.contextmanager
def _workers_ignore_interrupts() -> Iterator[None]:
    """Start worker processes that ignore SIGINT (an ignored signal stays ignored in a child).

    A terminal sends Ctrl-C to every process of its foreground group, the workers of a local
    cluster too: each would print a ``KeyboardInterrupt`` traceback, while this process, which
    gets the interrupt as well, stops them itself. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def make_security(
    tls_ca_file: str | Path | None = None,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
) -> Security | None:
    """Build client TLS settings (mutual TLS, encryption required) from three PEM files.

    Parameters
    ----------
    tls_ca_file : str or Path, optional
        CA certificate(s) that signed the scheduler's certificate.
    tls_cert : str or Path, optional
        This client's certificate, signed by a CA the scheduler trusts.
    tls_key : str or Path, optional
        The private key of ``tls_cert`` (the same path as ``tls_cert`` when the file holds both).

    Returns
    -------
    distributed.security.Security or None
        None when all three are None, so that Dask's own configuration
        (``DASK_DISTRIBUTED__COMM__TLS__*``) applies.

    Raises
    ------
    ValueError
        When only some of the three are given, a file does not exist, or the files do not
        load as a certificate chain.
    """
    given = {"tls_ca_file": tls_ca_file, "tls_cert": tls_cert, "tls_key": tls_key}
    if all(path is None for path in given.values()):
        return None
    missing = [name for name, path in given.items() if path is None]
    if missing:
        raise ValueError(
            f"TLS needs tls_ca_file, tls_cert and tls_key together; missing: {', '.join(missing)}. "
            "Pass all three PEM files (CLI: --tls-ca-file, --tls-cert, --tls-key), or none to use "
            "Dask's configuration."
        )
    for name, path in given.items():
        if not Path(path).is_file():
            raise ValueError(
                f"{name} file not found: '{path}'. Pass the path of an existing PEM file."
            )
    security = Security(
        tls_ca_file=str(tls_ca_file),
        tls_client_cert=str(tls_cert),
        tls_client_key=str(tls_key),
        require_encryption=True,
    )
    try:
        security.get_connection_args("client")
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ValueError(
            f"could not load the TLS files (tls_ca_file='{tls_ca_file}', tls_cert='{tls_cert}', "
            f"tls_key='{tls_key}'): {exc}. Check that they are PEM files and that the key "
            "matches the certificate."
        ) from exc
    return security


def dashboard_link(client: distributed.Client) -> str | None:
    """Return the URL of the scheduler's dashboard, or None when it serves none.

    A scheduler advertises its HTTP port whether or not it serves the dashboard there (``dask
    scheduler --no-dashboard`` still serves ``/health``): the link is asked for once per
    client, and a page that is not found means no dashboard. Without bokeh on the scheduler,
    the page only says how to install it. When the page cannot be reached from here, the
    advertised link is returned.

    Parameters
    ----------
    client : distributed.Client

    Returns
    -------
    str or None
    """
    cluster = getattr(client, "cluster", None)
    if cluster is not None and cluster in _clusters_without_dashboard:
        return None
    try:
        link = client.dashboard_link
    # The scheduler advertises no "dashboard" service, or Dask's distributed.dashboard.link
    # template does not format (an unset variable, a stray brace): no link, never a crash.
    except (KeyError, AttributeError, ValueError, IndexError):
        return None
    if not link or _dashboard_page_missing(client, link):
        return None
    return link


def _dashboard_page_missing(client: distributed.Client, link: str) -> bool:
    """Whether the scheduler answers ``link`` with "not found" (its dashboard is off); asked
    once per client."""
    key = (id(client), link)
    if key not in _dashboard_pages_missing:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(link, timeout=PROBE_TIMEOUT):
                missing = False
        except urllib.error.HTTPError as error:
            missing = error.code == 404
        except (OSError, ValueError):  # unreachable from here, or not an http(s) link
            missing = False
        _dashboard_pages_missing[key] = missing
    return _dashboard_pages_missing[key]


def describe(client: distributed.Client) -> str:
    """Summarize a cluster on one line: scheduler, workers, threads, memory, dashboard (its
    link, "disabled" when the scheduler serves none, or "none").

    Parameters
    ----------
    client : distributed.Client

    Returns
    -------
    str
        E.g. ``"scheduler tcp://127.0.0.1:40131, 2 workers, 2 threads, 15.36 GiB memory,
        dashboard http://127.0.0.1:39977/status"``.
    """
    info = client.scheduler_info(n_workers=-1)
    workers = info.get("workers", {}).values()
    n_threads = sum(worker.get("nthreads", 0) for worker in workers)
    limits = [worker.get("memory_limit") for worker in workers]
    if any(not limit for limit in limits):
        memory = "memory not limited"
    else:
        memory = f"{format_bytes(sum(limits))} memory"
    link = dashboard_link(client) or (
        "disabled (the scheduler serves none)" if _dashboard_disabled(client) else "none"
    )
    return (
        f"scheduler {info.get('address', client.scheduler.address)}, "
        f"{_plural(len(workers), 'worker')}, {_plural(n_threads, 'thread')}, {memory}, "
        f"dashboard {link}"
    )


def scheduler_lost(client: distributed.Client, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether ``client`` lost its scheduler: the client says so, or the scheduler's port
    refuses a plain connection (a client notices a lost scheduler only after a while).

    Parameters
    ----------
    client : distributed.Client
    timeout : float
        Seconds to wait for the connection.

    Returns
    -------
    bool
    """
    if client.status not in ("running", "connecting"):
        return True
    try:
        scheme, location = parse_address(client.scheduler.address)
        host, port = parse_host_port(location)
    except (AttributeError, ValueError, TypeError):
        return False
    if scheme not in ("tcp", "tls"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return False
    except OSError:
        return True


def close_local_cluster() -> None:
    """Close the local cluster that :func:`get_client` started, and its client, if any.

    The next ``get_client(None)`` without an active client starts a new one.
    """
    global _local_cluster, _local_client
    with _lock:
        client, cluster = _local_client, _local_cluster
        _local_client = _local_cluster = None
    # Client first: closing the cluster under a live client makes the client try to reconnect.
    if client is not None:
        if cluster is not None:
            _quiet_workers_for_shutdown(client)
        client.close()
    if cluster is not None:
        cluster.close()


def _silence_distributed_logs() -> None:
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def _quiet_workers_for_shutdown(client: distributed.Client) -> None:
    """Silence the Dask logs of the workers of a cluster this process started and is about to
    close: a worker whose heartbeat is in flight when the scheduler stops logs a traceback to
    the command's stderr, though nothing went wrong."""
    try:
        client.run(_silence_distributed_logs)
    except Exception as error:  # the workers may already be gone: nothing to silence
        logger.debug("could not quiet the workers before closing the cluster: %s", error)


def active_client() -> distributed.Client | None:
    """The client a ``with Client(...)`` block or the latest default ``Client`` made, if any;
    never starts a cluster."""
    try:
        # Unlike default_client(), this also finds the worker's client inside a task.
        client = distributed.get_client()
    except ValueError:  # "No global client found and no address provided"
        return None
    return None if client.status in _CLOSED_STATES else client


def local_client(*, worker_log_level: int = logging.WARNING) -> distributed.Client:
    """The client of the local cluster this process shares, started on the first call.

    :func:`get_client` without a client or an address returns it when no client is active;
    :func:`close_local_cluster` closes it (the interpreter's exit does too).

    Parameters
    ----------
    worker_log_level : int, default logging.WARNING
        The workers' log level, as in :func:`local_cluster`; it applies when this call starts
        the cluster, not to one already running.

    Returns
    -------
    distributed.Client
    """
    global _local_cluster, _local_client, _atexit_registered
    with _lock:
        if _local_client is not None and _local_client.status not in _CLOSED_STATES:
            return _local_client
        close_local_cluster()  # one the user closed half-way (client or cluster)
        cluster = local_cluster(worker_log_level=worker_log_level)
        # Direct to workers: the block servers' calls skip a hop through the scheduler.
        client = distributed.Client(cluster, direct_to_workers=True)
        _local_cluster, _local_client = cluster, client
        if not _atexit_registered:
            # Registered after distributed's own exit hooks, so it runs before them.
            atexit.register(close_local_cluster)
            _atexit_registered = True
    if logger.isEnabledFor(logging.INFO):
        logger.info("Started a local Dask cluster: %s", describe(client))
        # local_cluster() asks for a dashboard: there is none only when bokeh is missing.
        _log_dashboard(client, why_none="it needs bokeh: pip install bokeh")
    return client


def _client_for_address(
    address: str, *, security: Security | None, timeout: float
) -> distributed.Client:
    if not address.strip():
        raise ValueError(
            "scheduler address is empty. Pass e.g. 'tls://host:8786', or None for a local cluster."
        )
    if not (is_real(timeout) and timeout in POSITIVE):
        raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}.")
    effective_security = security if security is not None else Security()
    address = normalize_address(address.strip(), effective_security)
    with _lock:
        cached = _clients_by_address.get(address)
        if cached is not None and cached.status not in _CLOSED_STATES:
            return cached
        check_scheme_matches_security(address, effective_security)
        warn_if_unencrypted_remote(address)
        client = _connect(address, security, effective_security, timeout)
        _clients_by_address[address] = client
    if logger.isEnabledFor(logging.INFO):
        logger.info("Connected to Dask: %s", describe(client))
        _log_dashboard(
            client,
            why_none="the scheduler advertises none, or the distributed.dashboard.link setting "
            "does not format",
        )
    return client


def _connect(
    address: str, security: Security | None, effective_security: Security, timeout: float
) -> distributed.Client:
    """A client of the scheduler at ``address``, tried for ``timeout`` seconds in all. When the
    first :data:`FIRST_ATTEMPT_SECONDS` bring no answer, a warning says why (when nothing
    accepts the connection) while the rest of the timeout is waited for: a scheduler still
    starting answers then, and a mistyped address shows at once. A certificate refused on
    either side fails at once."""
    deadline = time.monotonic() + timeout
    first = min(timeout, FIRST_ATTEMPT_SECONDS)
    try:
        return distributed.Client(address, security=security, timeout=first)
    except OSError as exc:  # TimeoutError and refused connections are OSErrors
        failure: OSError = exc
    problem = tls_problem(address, failure, effective_security)
    if first < timeout and not problem:
        # The diagnosis's probe takes its share of the timeout too.
        message = waiting_message(address, first, round(deadline - time.monotonic()))
        if message is not None:
            logger.warning(message)
        remaining = deadline - time.monotonic()
        if remaining > 0:
            try:
                return distributed.Client(address, security=security, timeout=remaining)
            except OSError as exc:
                failure = exc
                problem = tls_problem(address, failure, effective_security)
    raise ConnectionError(
        connection_failure_message(address, timeout, failure, problem)
    ) from failure


def _log_dashboard(client: distributed.Client, *, why_none: str) -> None:
    """Log the dashboard's URL on a line of its own, or why there is none."""
    link = dashboard_link(client)
    if link:
        logger.info("Dask dashboard: %s", link)
    elif not _dashboard_disabled(client):  # a disabled one is said once, by describe()
        logger.info("Dask dashboard: none (%s)", why_none)


def _dashboard_disabled(client: distributed.Client) -> bool:
    """Whether the scheduler of ``client`` answered its dashboard link with "not found"
    (e.g. ``dask scheduler --no-dashboard``)."""
    return any(
        missing for (owner, _), missing in _dashboard_pages_missing.items() if owner == id(client)
    )


def _default_n_workers() -> int:
    return max(1, min(dask.system.CPU_COUNT, MAX_DEFAULT_LOCAL_WORKERS))


def _per_worker_memory(memory_limit: str | int | None, n_workers: int) -> int | str | None:
    if memory_limit is None:
        return None
    if memory_limit == "auto":
        return int(LOCAL_MEMORY_FRACTION * distributed.system.MEMORY_LIMIT / n_workers)
    if not (is_integer(memory_limit) or isinstance(memory_limit, str)):
        raise TypeError(
            f"memory_limit must be 'auto', a size string such as '4GiB', a number of bytes or "
            f"None; got {type(memory_limit).__name__} {memory_limit!r}."
        )
    if isinstance(memory_limit, str):
        try:
            parse_bytes(memory_limit)
        except ValueError as exc:
            raise ValueError(
                f"memory_limit {memory_limit!r} is not a size. Pass 'auto', a size such as "
                "'4GiB', a number of bytes or None."
            ) from exc
    elif memory_limit < 0:
        raise ValueError(
            f"memory_limit must be a non-negative number of bytes; got {memory_limit}. "
            "Pass 0 or None for no limit."
        )
    return memory_limit


def _check_positive_int(name: str, value: object) -> None:
    if not (is_integer(value) and value in AT_LEAST_ONE):
        raise ValueError(f"{name} must be a positive integer; got {value!r}. Pass e.g. 2.")


def _bokeh_available() -> bool:
    # The same import the scheduler tries; it also fails when bokeh is too old for Dask.
    try:
        import distributed.dashboard.scheduler  # noqa: F401
    except ImportError:
        return False
    return True


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
