"""Block servers: one Dask actor per worker that evaluates the blocks already in its memory.

A call goes from the client straight to the worker through distributed's public Actor API
(``client.submit(BlockServer, actor=True)``, then methods called on the proxy), with no
scheduler and no task graph in between. The blocks stay ordinary Dask data: when a worker dies,
Dask recomputes them from the store, and the engine runs that evaluation as tasks instead.

Requests and replies travel as messages (:func:`encode_request`, :func:`encode_reply`): a
msgpack header of numbers, strings and small arrays' bytes, followed by one raw frame per large
array (a model-sized parameter or sum). distributed sends and receives such frames without
copying them, and neither side copies them either, so a model-sized sum is written once on the
worker and read in place on the client; nothing in a message can run code. Small evaluations
run on the worker's event loop (an ``async`` method), sparing a hop to a thread and back; larger
ones run in the actor's thread, so that the event loop keeps serving.

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

#: Arrays of at least this many bytes travel as frames of their own; smaller ones in the header.
FRAME_MIN_BYTES = 64 * 1024

#: A request or reply: the msgpack header, then the large arrays' frames.
Message = list[bytes | memoryview]


class BlockServer:
    """Dask actor, one per worker: evaluates blocks that are already in this worker's memory.

    The server only reads blocks in place (``worker.data``); it owns no data.
    """

    #: Read by the client to check that the server still exists while it waits for a reply.
    alive = True

    def __init__(self) -> None:
        self._worker = distributed.get_worker()

    def evaluate(self, header: bytes, *frames: memoryview) -> Message | None:
        """The reply to one encoded request, or None when one of its blocks is not in memory
        here (moved or lost since the client looked: the client then runs tasks)."""
        evaluation, keys, share = decode_request([header, *frames])
        data = self._worker.data
        blocks = []
        for key in keys:
            try:
                blocks.append(data[key])
            except KeyError:
                return None
        return encode_reply(evaluate_share(evaluation, share, blocks))

    async def evaluate_on_loop(self, header: bytes, *frames: memoryview) -> Message | None:
        """:meth:`evaluate` on the worker's event loop, for evaluations of a few milliseconds."""
        return self.evaluate(header, *frames)


class _Packer:
    """Encodes arrays for a message's header, keeping the large ones' bytes as frames."""

    def __init__(self) -> None:
        self.frames: list[memoryview] = []

    def array(self, array: np.ndarray | None) -> list | None:
        """``[dtype, shape, fortran, bytes or frame number]``; None for None. A Fortran-ordered
        array (a sparse block's gradient) travels as its transpose, without a copy."""
        if array is None:
            return None
        fortran = array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous
        data = np.ascontiguousarray(array.T if fortran else array)
        raw = memoryview(data.reshape(-1).view(np.uint8))
        if data.nbytes < FRAME_MIN_BYTES:
            # msgpack copies a small buffer's bytes into the header itself.
            return [array.dtype.str, list(array.shape), fortran, raw]
        self.frames.append(raw)
        return [array.dtype.str, list(array.shape), fortran, len(self.frames)]

    def message(self, header: list) -> Message:
        return [msgpack.packb(header, use_bin_type=True), *self.frames]


def _decode_array(encoded: list | None, message: Message) -> np.ndarray | None:
    """The array of :meth:`_Packer.array`: a read-only view of the message's bytes (copying a
    model-sized sum costs as much as adding it)."""
    if encoded is None:
        return None
    dtype, shape, fortran, data = encoded
    if isinstance(data, int):
        if not 0 < data < len(message):
            raise ValueError(f"a message names frame {data} of {len(message) - 1}")
        data = message[data]
    array = np.frombuffer(data, dtype=np.dtype(dtype))
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


def _encode_params(params: Params | Stack, packer: _Packer) -> list:
    """``[type name, fields…]``, each field an encoded array or None."""
    return [type(params).__name__, *(packer.array(field) for field in params)]


def _decode_params(encoded: list, message: Message) -> Params | Stack:
    name, *fields = encoded
    return PARAMS_TYPES[name](*(_decode_array(field, message) for field in fields))


def encode_request(evaluation: Evaluation, keys: list[str], share: Share) -> Message:
    """The arguments of :meth:`BlockServer.evaluate`: a header and the large arrays' frames."""
    packer = _Packer()
    header = [
        evaluation.kind,
        _encode_params(evaluation.params, packer),
        packer.array(evaluation.class_weight),
        evaluation.n_classes,
        list(keys),
        list(share.indices),
        [packer.array(rows) for rows in share.rows],
        share.n_parts,
        list(share.row_starts),
        None if share.nodes is None else [list(node) for node in share.nodes],
    ]
    return packer.message(header)


def decode_request(request: Message) -> tuple[Evaluation, list[str], Share]:
    """The evaluation, block keys and share of an :func:`encode_request` message."""
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
    ) = msgpack.unpackb(request[0])
    evaluation = Evaluation(
        kind,
        _decode_params(params, request),
        _decode_array(class_weight, request),
        n_classes,
    )
    share = Share(
        indices,
        [_decode_array(selected, request) for selected in rows],
        n_parts,
        row_starts,
        None if nodes is None else [(level, index) for level, index in nodes],
    )
    return evaluation, keys, share


def encode_reply(pairs: list[tuple[Node, Any]]) -> Message:
    """A block server's ``(node, value)`` pairs as a message."""
    packer = _Packer()
    header = [
        [
            list(node),
            [packer.array(field) if isinstance(field, np.ndarray) else float(field)
             for field in value],
        ]
        for node, value in pairs
    ]  # fmt: skip
    return packer.message(header)


def decode_reply(reply: Message, kind: str) -> list[tuple[Node, Any]]:
    """The ``(node, value)`` pairs of an :func:`encode_reply` message for evaluations of
    ``kind``."""
    result_type = RESULT_TYPES[kind]
    return [
        (
            (node[0], node[1]),
            result_type(
                *(_decode_array(v, reply) if isinstance(v, list) else v for v in fields)
            ),
        )
        for node, fields in msgpack.unpackb(reply[0])
    ]
