"""The client's wait for a block server's reply: probes, and no garbage left behind."""

from __future__ import annotations

import gc
import types

import dask.array as da
import numpy as np
import pytest
from daskprocs import small_local_cluster
from distributed import Client

import dsoftmax.engine.dask as dask_engine
from dsoftmax.engine import DaskEngine, LocalEngine
from dsoftmax.objective import Params


def _left_behind() -> list[str]:
    """What a full collection frees that an evaluation could have made: arrays and buffers (a
    reply's data), dsoftmax's own objects, functions and frames. distributed's background work
    (heartbeats, comms) runs meanwhile in the same process and may leave cycles of its own, of
    other kinds, which are not counted."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = [_describe(thing) for thing in gc.garbage if _ours_or_data(thing)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()  # what DEBUG_SAVEALL kept is garbage again: free it now
    return found


def _ours_or_data(thing: object) -> bool:
    data = (np.ndarray, bytes, bytearray, memoryview)
    if isinstance(thing, data) or any(isinstance(held, data) for held in gc.get_referents(thing)):
        return True
    if isinstance(thing, types.FrameType):
        return "dsoftmax" in thing.f_code.co_filename
    module = getattr(thing, "__module__", None)
    return isinstance(module, str) and module.startswith("dsoftmax")


def _describe(thing: object) -> str:
    return f"{type(thing).__name__} {getattr(thing, '__qualname__', '')}".strip()


@pytest.fixture(scope="module")
def client():
    with small_local_cluster(2, "1GiB") as cluster, Client(cluster) as client:
        yield client


def test_replies_awaited_past_the_probe_interval_match_and_leave_no_reference_cycles(
    client, monkeypatch
):
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(600, 8)), rng.integers(0, 5, 600)
    params = Params(rng.normal(size=(5, 8)), rng.normal(size=5))
    expected = LocalEngine(X, y, chunk_rows=100).sums(params)
    X_dask, y_dask = da.from_array(X, chunks=(100, -1)), da.from_array(y, chunks=100)
    with DaskEngine(client, X_dask, y_dask) as engine:
        engine.sums(params)  # the load, and the servers started
        # Every reply now takes longer than the probe interval: the server is probed while
        # the reply is awaited, and the timed waits' reference cycles are freed at once.
        monkeypatch.setattr(dask_engine, "SERVER_PROBE_SECONDS", 1e-6)
        gc.collect()
        gc.disable()
        try:
            sums = engine.sums(params)
            left_behind = _left_behind()
        finally:
            gc.enable()
    assert sums.loss_sum == expected.loss_sum and sums.weight_sum == expected.weight_sum
    np.testing.assert_array_equal(sums.grad_coef_sum, expected.grad_coef_sum)
    assert left_behind == []


def test_an_evaluation_leaves_no_reply_in_a_reference_cycle(client):
    # A wide model's replies are megabytes each: left to the collector's next full pass, the
    # steps of a fit pile them up in the client's memory.
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(600, 8)), rng.integers(0, 5, 600)
    params = Params(rng.normal(size=(5, 8)), rng.normal(size=5))
    X_dask, y_dask = da.from_array(X, chunks=(100, -1)), da.from_array(y, chunks=100)
    with DaskEngine(client, X_dask, y_dask) as engine:
        engine.sums(params)  # the load, and the servers started
        gc.collect()
        gc.disable()
        try:
            for _ in range(3):
                engine.sums(params)
            left_behind = _left_behind()
        finally:
            gc.enable()
    assert left_behind == []
