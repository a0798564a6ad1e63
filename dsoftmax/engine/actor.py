"""Block servers: one Dask actor per worker that evaluates the blocks already in its memory.

A call goes from the client straight to the worker through distributed's public Actor API
(``client.submit(BlockServer, actor=True)``, then methods called on the proxy), with no
scheduler and no task graph in between. The blocks stay ordinary Dask data: when a worker dies,
Dask recomputes them from the store, and the engine runs that evaluation as tasks instead.

Requests and replies travel as one msgpack buffer each (:func:`encode_request`,
:func:`encode_reply`) holding numbers, strings and raw array bytes: cheaper than serializing each
argument separately, and nothing in it can run code. Small evaluations run on the worker's event
loop (an ``async`` method), sparing a hop to a thread and back; larger ones run in the actor's
thread, so that the event loop keeps serving.

Actor calls reach the worker directly when the client was made with
``direct_to_workers=True`` (the client of the local cluster dsoftmax starts is); otherwise the
scheduler relays them, one more hop per step: a client that can reach the workers gains by
asking for it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import distributed
import msgpack
import numpy as np

from ..kernels.stacked import Stack, StackMetrics, StackSums
from ..objective import BlockMetrics, BlockReport, BlockSums, Params
from .blocks import Evaluation, Share, evaluate_share
from .reduce import Node

__all__ = [
    "SERVED_KINDS",
    "BlockServer",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
]

#: The per-block value type of each kind a block server evaluates, to rebuild replies.
RESULT_TYPES: dict[str, type[NamedTuple]] = {
    "sums": BlockSums,
    "metrics": BlockMetrics,
    "report": BlockReport,
    "grid_sums": StackSums,
    "grid_metrics": StackMetrics,
}

#: The parameter types a request may carry, by name; nothing else is built from a request.
PARAMS_TYPES: dict[str, type[NamedTuple]] = {"Params": Params, "Stack": Stack}

#: Kinds of evaluation that block servers answer (the others run as tasks).
SERVED_KINDS = frozenset(RESULT_TYPES)


class BlockServer:
    """Dask actor, one per worker: evaluates blocks that are already in this worker's memory.

    The server only reads blocks in place (``worker.data``); it owns no data.
    """

    #: Read by the client to check that the server still exists while it waits for a reply.
    alive = True

    def __init__(self) -> None:
        self._worker = distributed.get_worker()

    def evaluate(self, request: bytes) -> bytes | None:
        """The reply to one encoded request, or None when one of its blocks is not in memory
        here (moved or lost since the client looked: the client then runs tasks)."""
        evaluation, keys, share = decode_request(request)
        data = self._worker.data
        blocks = []
        for key in keys:
            try:
                blocks.append(data[key])
            except KeyError:
                return None
        return encode_reply(evaluate_share(evaluation, share, blocks))

    async def evaluate_on_loop(self, request: bytes) -> bytes | None:
        """:meth:`evaluate` on the worker's event loop, for evaluations of a few milliseconds."""
        return self.evaluate(request)


def _encode_array(array: np.ndarray | None) -> list | None:
    if array is None:
        return None
    array = np.ascontiguousarray(array)
    # msgpack copies a buffer's bytes into the message itself: no copy of our own before.
    return [array.dtype.str, list(array.shape), memoryview(array.reshape(-1).view(np.uint8))]


def _decode_array(encoded: list | None) -> np.ndarray | None:
    """The array of :func:`_encode_array`: a read-only view of the message's bytes (copying a
    model-sized sum costs as much as adding it)."""
    if encoded is None:
        return None
    dtype, shape, data = encoded
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)


def _encode_params(params: Params | Stack) -> list:
    """``[type name, fields…]``, each field an encoded array or None."""
    return [type(params).__name__, *(_encode_array(field) for field in params)]


def _decode_params(encoded: list) -> Params | Stack:
    name, *fields = encoded
    return PARAMS_TYPES[name](*(_decode_array(field) for field in fields))


def encode_request(evaluation: Evaluation, keys: list[str], share: Share) -> bytes:
    """The arguments of :meth:`BlockServer.evaluate` as one msgpack buffer."""
    return msgpack.packb(
        [
            evaluation.kind,
            _encode_params(evaluation.params),
            _encode_array(evaluation.class_weight),
            evaluation.n_classes,
            list(keys),
            list(share.indices),
            [_encode_array(rows) for rows in share.rows],
            share.n_parts,
            list(share.row_starts),
            None if share.nodes is None else [list(node) for node in share.nodes],
        ],
        use_bin_type=True,
    )


def decode_request(request: bytes) -> tuple[Evaluation, list[str], Share]:
    """The evaluation, block keys and share of an :func:`encode_request` buffer."""
    (
        kind,
        params,
        class_weight,
        n_classes,
        keys,
        indices,
        rows,
        n_parts,
        row_starts,
        nodes,
    ) = msgpack.unpackb(request)
    evaluation = Evaluation(kind, _decode_params(params), _decode_array(class_weight), n_classes)
    share = Share(
        indices,
        [_decode_array(selected) for selected in rows],
        n_parts,
        row_starts,
        None if nodes is None else [(level, index) for level, index in nodes],
    )
    return evaluation, keys, share


def _encode_field(field: Any) -> list | float:
    return _encode_array(field) if isinstance(field, np.ndarray) else float(field)


def encode_reply(pairs: list[tuple[Node, Any]]) -> bytes:
    """A block server's ``(node, value)`` pairs as one msgpack buffer."""
    return msgpack.packb(
        [
            [list(node), [_encode_field(field) for field in value]] for node, value in pairs
        ],
        use_bin_type=True,
    )


def decode_reply(reply: bytes, kind: str) -> list[tuple[Node, Any]]:
    """The ``(node, value)`` pairs of an :func:`encode_reply` buffer for evaluations of
    ``kind``."""
    result_type = RESULT_TYPES[kind]
    return [
        (
            (node[0], node[1]),
            result_type(*(_decode_array(v) if isinstance(v, list) else v for v in fields)),
        )
        for node, fields in msgpack.unpackb(reply)
    ]
