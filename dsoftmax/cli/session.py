"""The Dask client of one ``dsoftmax`` command: made on first use, closed when it ends."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from .output import UsageError, quiet_dask_logging, worker_log_level

__all__ = ["CommandCluster"]

logger = logging.getLogger("dsoftmax")


class CommandCluster:
    """The cluster of one command: ``--scheduler``'s, or a local one started when first needed.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line: ``scheduler``, the TLS files and ``verbose``.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._client: Any = None

    @property
    def named(self) -> bool:
        """Whether the command line names a scheduler."""
        return self.args.scheduler is not None

    def named_client(self) -> Any:
        """The client of the scheduler the command line names, or None: the work then runs
        in this process."""
        return self.client() if self.named else None

    def client(self) -> Any:
        """The command's ``distributed.Client``, connected (or started) on the first call."""
        if self._client is None:
            # Connecting or starting logs the cluster and its dashboard (-v).
            self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        from ..cluster import active_client, get_client, local_client, make_security

        quiet_dask_logging(self.args.verbose)
        if self.args.scheduler is None:
            # TLS files secure a named scheduler's connection; without one they are ignored,
            # with a warning when the command starts.
            level = worker_log_level(self.args.verbose)
            return active_client() or local_client(worker_log_level=level)
        given = [self.args.tls_ca_file, self.args.tls_cert, self.args.tls_key]
        if any(given) and not all(given):
            raise UsageError("--tls-ca-file, --tls-cert and --tls-key go together")
        return get_client(
            self.args.scheduler,
            security=make_security(*given),
            timeout=self.args.scheduler_timeout,
        )

    def close(self) -> None:
        """Close what this command opened; a local cluster goes before the interpreter exits,
        where its shutdown would race the interpreter's own and print errors."""
        if self._client is None:
            return
        from ..cluster import close_local_cluster

        if self.args.scheduler is None:
            close_local_cluster()
        else:
            self._client.close()
        self._client = None
