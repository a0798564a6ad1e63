"""The address and TLS settings of a scheduler, checked before connecting, and a failed
connection diagnosed: one plain probe names what Dask's retries hide (refused, unknown host, no
answer, a certificate the other side refused)."""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl

from distributed.comm.addressing import parse_address, parse_host_port, unparse_address
from distributed.security import Security

__all__ = [
    "PROBE_TIMEOUT",
    "check_scheme_matches_security",
    "connection_failure_message",
    "normalize_address",
    "tls_problem",
    "waiting_message",
    "warn_if_unencrypted_remote",
]

logger = logging.getLogger("dsoftmax")

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
UNENCRYPTED_SCHEMES = frozenset({"tcp", "ws"})
#: Seconds for the one diagnostic connection after a failure.
PROBE_TIMEOUT = 2.0
#: How a diagnosis ends when the address accepts connections but did not speak Dask's protocol.
_NOT_DASK = (
    "accepts connections but did not answer as a Dask scheduler, e.g. tcp:// against a TLS "
    "scheduler or tls:// against a plain one"
)


def normalize_address(address: str, security: Security) -> str:
    if "://" in address:
        return address
    scheme = "tls" if security.require_encryption else "tcp"
    return unparse_address(scheme, address)


def check_scheme_matches_security(address: str, security: Security) -> None:
    scheme, location = parse_address(address)
    if scheme in UNENCRYPTED_SCHEMES and security.require_encryption:
        raise ValueError(
            f"scheduler address {address} uses unencrypted {scheme}:// but the TLS settings "
            f"require encryption. Use tls://{location}."
        )
    if scheme == "tls" and security.get_connection_args("client")["ssl_context"] is None:
        raise ValueError(
            f"scheduler address {address} needs TLS credentials and none were given. Pass "
            "security=make_security(ca_file, cert, key) (CLI: --tls-ca-file, --tls-cert, "
            "--tls-key) or set DASK_DISTRIBUTED__COMM__TLS__* in the environment."
        )


def warn_if_unencrypted_remote(address: str) -> None:
    scheme, location = parse_address(address)
    if scheme not in UNENCRYPTED_SCHEMES:
        return
    host, _ = parse_host_port(location)
    if not _is_loopback(host):
        logger.warning(
            "Connecting to %s over unencrypted, unauthenticated %s://: anyone on the network "
            "can read the traffic, and anyone who can reach the scheduler can run code on its "
            "workers. Use tls://%s with --tls-ca-file/--tls-cert/--tls-key.",
            address,
            scheme,
            location,
        )


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost
        return False


def connection_failure_message(
    address: str, timeout: float, exc: BaseException, problem: str | None = None
) -> str:
    """The error of a connection that failed with ``exc``: the TLS ``problem``
    (:func:`tls_problem`) when there is one, else what one plain probe of the address finds."""
    if problem:
        return (
            f"Could not connect to the Dask scheduler at {address}: {problem}. Pass the "
            "cluster's CA with --tls-ca-file and a certificate it signed with --tls-cert/--tls-key."
        )
    return (
        f"Could not connect to the Dask scheduler at {address} within {timeout:g} s "
        f"({_diagnose(address, timeout) or _root_cause(exc)}). Is `dask scheduler` running "
        "there and reachable from here? For a TLS cluster use tls:// and "
        "--tls-ca-file/--tls-cert/--tls-key."
    )


def tls_problem(address: str, exc: BaseException, security: Security | None) -> str | None:
    """What is wrong with the TLS handshake of a failed connection, if that is what failed:
    a certificate refused by one side, which waiting does not mend."""
    return _tls_failure(exc) or _probe_tls(address, security)


def waiting_message(address: str, waited: float, remaining: float) -> str | None:
    """The warning of a connection that keeps trying after its first attempt failed: why
    nothing answered (refused, unknown host, no answer), so that a mistyped address or a
    scheduler that is not running shows at once rather than at the timeout. None when the
    address accepts connections: a busy scheduler answers late, and a scheme that does not
    match is what the error at the timeout explains."""
    why = _diagnose(address, PROBE_TIMEOUT)
    if why is not None and why.endswith(_NOT_DASK):
        return None
    return (
        f"The Dask scheduler at {address} did not answer within {waited:g} s "
        f"({why or 'no answer'}); still trying for {remaining:g} s (Ctrl-C stops)."
    )


def _probe_tls(address: str, security: Security | None) -> str | None:
    """One TLS handshake with the client's credentials: names a certificate refusal that Dask's
    retries hid (it keeps only its last attempt's error)."""
    scheme, location = parse_address(address)
    if scheme != "tls" or security is None:
        return None
    context = security.get_connection_args("client").get("ssl_context")
    if context is None:
        return None
    host, port = parse_host_port(location)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                # With TLS 1.3 the server judges the client's certificate after the client's
                # side of the handshake is done: its verdict comes with the first read.
                tls.settimeout(0.5)
                tls.recv(1)
    except TimeoutError:
        return None  # the handshake held: the scheduler waits for Dask's protocol
    except ssl.SSLError as error:
        return _tls_failure(error)
    except OSError:
        return None
    return None


def _tls_failure(exc: BaseException) -> str | None:
    """Name a TLS handshake failure found in ``exc``'s chain, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return (
                "the scheduler's certificate is not signed by the CA given with --tls-ca-file "
                f"({current.verify_message or current})"
            )
        if isinstance(current, ssl.SSLError):
            text = str(current).lower()
            # The scheduler says "unknown ca", or simply hangs up mid-handshake (EOF).
            if isinstance(current, ssl.SSLEOFError) or "unknown ca" in text or "eof" in text:
                return (
                    "the scheduler ended the TLS handshake, refusing this client's certificate "
                    "(is it signed by the cluster's CA?)"
                )
            return f"the TLS handshake failed ({current.reason or current})"
        current = current.__cause__ or current.__context__
    return None


def _diagnose(address: str, timeout: float) -> str | None:
    """Say why a TCP connection to the address fails, or that it does not."""
    scheme, location = parse_address(address)
    if scheme not in {"tcp", "tls"}:
        return None
    host, port = parse_host_port(location)
    # Dask retries until its timeout and keeps only the last attempt's error, which is often
    # the cancellation itself; one plain connection attempt names the cause reliably.
    try:
        with socket.create_connection((host, port), timeout=min(timeout, PROBE_TIMEOUT)):
            pass
    except ConnectionRefusedError:
        return f"connection refused: nothing listens on port {port} of {host}"
    except socket.gaierror as exc:
        return f"host name {host!r} not found: {exc.strerror}"
    except TimeoutError:
        return f"no answer from {host}:{port}: the host is down or a firewall drops the traffic"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"{host}:{port} {_NOT_DASK}"


def _root_cause(exc: BaseException) -> str:
    root = exc
    seen = {id(root)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        root = nxt
    if not str(root):
        root = exc
    return f"{type(root).__name__}: {root}"
