"""The data-parallel engine against the single-machine reference, on real worker processes."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from daskprocs import small_local_cluster
from distributed import Client, LocalCluster

from dsoftmax import kernels
from dsoftmax.engine import DaskEngine, LocalEngine
from dsoftmax.engine.blocks import KINDS, Evaluation, Share, assemble_block, evaluate_share
from dsoftmax.engine.plan import resolve_hold as _resolve_hold
from dsoftmax.engine.reduce import (
    fold_owned,
    node_value,
    owned_nodes,
    reduce_owned,
    tree_reduce,
    tree_root,
)
from dsoftmax.objective import (
    Params,
    add_sums_into,
    block_sums,
    finalize,
    iter_segment_sums,
    loss_and_grad,
    own_sums,
    segment_sums,
    sum_blocks,
)
from dsoftmax.sampling import rows_to_blocks

N_SAMPLES, N_FEATURES, N_CLASSES = 701, 5, 4
UNEVEN_CHUNKS = (200, 1, 150, 99, 100, 51, 100)  # 7 uneven blocks
L2 = 0.03


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(N_SAMPLES, N_FEATURES))
    y = rng.integers(0, N_CLASSES, N_SAMPLES)
    weights = rng.uniform(0.5, 2.0, N_SAMPLES)
    params = Params(rng.normal(size=(N_CLASSES, N_FEATURES)), rng.normal(size=N_CLASSES))
    return X, y, weights, params


def _cluster(n_workers: int, memory_limit: str = "1GiB") -> LocalCluster:
    return small_local_cluster(n_workers, memory_limit)


@pytest.fixture(scope="module", params=[1, 2, 3], ids=lambda n: f"{n}-workers")
def client(request):
    with _cluster(request.param) as cluster, Client(cluster) as client:
        yield client


def _dask_inputs(X, y, weights, chunks):
    return (
        da.from_array(X, chunks=(chunks, -1)),
        da.from_array(y, chunks=(chunks,)),
        None if weights is None else da.from_array(weights, chunks=(chunks,)),
    )


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def _whole_share(selections):
    n = len(selections)
    return Share(list(range(n)), list(selections), n, [0] * n)


def softmax_block_sums(block, params, rows, class_weight):
    """The sums of one block's selected rows, through the workers' evaluation."""
    ((_, sums),) = evaluate_share(
        Evaluation("sums", params, class_weight, 0), _whole_share([rows]), [block]
    )
    return sums


def evaluate_blocks(kind, blocks, params, selections, class_weight):
    """Per block, the values of the workers' evaluation, before any addition."""
    leaves = KINDS[kind].leaves(
        Evaluation(kind, params, class_weight, 0), _whole_share(selections), iter(blocks)
    )
    return [own_sums(value) for value in leaves]


# Results per chunking and worker count, to compare bit for bit across worker counts.
_seen: dict[tuple, tuple] = {}


@pytest.mark.cluster
@pytest.mark.parametrize("chunks", [(N_SAMPLES,), UNEVEN_CHUNKS], ids=["1-chunk", "7-uneven"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_distributed_gradient_equals_reference(client, problem, chunks, weighted):
    X, y, weights, params = problem
    weights = weights if weighted else None
    with DaskEngine(client, *_dask_inputs(X, y, weights, chunks)) as engine:
        loss, grad = finalize(engine.sums(params), params, L2)
        # The placement look-up, a wait for the block servers unless they started while the
        # blocks loaded, then the evaluation.
        first = engine.n_round_trips
        assert first in (2, 3)
        for _ in range(3):
            engine.sums(params)
        assert engine.n_round_trips == first + 3  # then one per evaluation
    expected_loss, expected = loss_and_grad(params, X, y, L2, weights)
    assert abs(loss - expected_loss) / abs(expected_loss) < 1e-10
    assert _relative_error(grad.coef, expected.coef) < 1e-10
    assert _relative_error(grad.intercept, expected.intercept) < 1e-10

    key = (chunks, weighted)
    result = (loss, grad.coef.tobytes(), grad.intercept.tobytes())
    n_workers = len(client.scheduler_info()["workers"])
    if key in _seen:
        assert _seen[key][1] == result, f"differs between {_seen[key][0]} and {n_workers} workers"
    else:
        _seen[key] = (n_workers, result)


@pytest.mark.cluster
def test_minibatch_sums_cover_exactly_the_selected_rows(client, problem):
    X, y, weights, params = problem
    rows = np.random.default_rng(3).choice(N_SAMPLES, size=97, replace=False)
    batch = rows_to_blocks(rows, UNEVEN_CHUNKS)
    with DaskEngine(client, *_dask_inputs(X, y, weights, UNEVEN_CHUNKS)) as engine:
        sums = engine.sums(params, batch)
        metrics = engine.metrics(params, batch)
    expected = block_sums(params, X[np.sort(rows)], y[np.sort(rows)], weights[np.sort(rows)])
    assert sums.weight_sum == pytest.approx(expected.weight_sum, rel=1e-12)
    assert _relative_error(sums.grad_coef_sum, expected.grad_coef_sum) < 1e-10
    assert metrics.loss_sum == pytest.approx(expected.loss_sum, rel=1e-10)


@pytest.mark.cluster
def test_float32_blocks_stay_float32_and_accumulate_in_float64(client, problem):
    X, y, _, params = problem
    X32 = X.astype(np.float32)
    with DaskEngine(client, *_dask_inputs(X32, y, None, UNEVEN_CHUNKS)) as engine:
        sums = engine.sums(params)
    assert sums.grad_coef_sum.dtype == np.float64
    reference = block_sums(params, X, y)
    assert _relative_error(sums.grad_coef_sum, reference.grad_coef_sum) < 1e-5


def test_local_engine_matches_reference_and_reduce_order_is_fixed(problem):
    X, y, weights, params = problem
    engine = LocalEngine(X, y, weights, chunk_rows=64)
    loss, grad = finalize(engine.sums(params), params, L2)
    expected_loss, expected = loss_and_grad(params, X, y, L2, weights)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    assert _relative_error(grad.coef, expected.coef) < 1e-12
    assert len(engine.blocks) == int(np.ceil(N_SAMPLES / 64))


def test_tree_reduce_groups_in_block_order():
    calls = []

    def add_group(group):
        calls.append(list(group))
        return "(" + "+".join(group) + ")"

    result = tree_reduce([str(i) for i in range(6)], add_group)
    assert result == "((0+1+2+3)+(4+5))"
    with pytest.raises(ValueError, match="empty"):
        tree_reduce([], add_group)


@pytest.mark.parametrize("n_parts", [1, 2, 5, 16, 17, 70])
def test_subtrees_added_on_workers_give_the_trees_bits(n_parts):
    rng = np.random.default_rng(n_parts)
    parts = [rng.normal(size=3) * 10.0 ** rng.integers(-8, 8) for _ in range(n_parts)]
    expected = tree_reduce(parts, _add_left_to_right)
    for n_workers in (1, 2, 3):
        # Contiguous runs (as streaming plans them) and scattered blocks (as Dask may place).
        for owner in (
            np.sort(rng.integers(0, n_workers, n_parts)),
            rng.integers(0, n_workers, n_parts),
        ):
            known = {}
            for worker in range(n_workers):
                mine = {p: parts[p] for p in np.flatnonzero(owner == worker).tolist()}
                known.update(reduce_owned(mine, n_parts, _add_left_to_right))
            result = node_value(tree_root(n_parts), known, n_parts, _add_left_to_right)
            assert result.tobytes() == expected.tobytes()


@pytest.mark.parametrize("n_parts", [1, 2, 5, 16, 17, 70])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_folding_segment_sums_one_at_a_time_gives_the_trees_bits(n_parts, dtype):
    rng = np.random.default_rng(n_parts)
    n_classes, n_features = 7, 5
    sizes = rng.integers(1, 6, n_parts)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    X = (rng.normal(size=(bounds[-1], n_features)) * 3).astype(dtype)
    labels = rng.integers(0, n_classes, bounds[-1])
    weights = rng.uniform(0.5, 2.0, bounds[-1]).astype(dtype)
    params = Params(rng.normal(size=(n_classes, n_features)), rng.normal(size=n_classes))
    # A worker holding the parts from `first` on, as a contiguous run of a share.
    first = n_parts // 3
    leaves = segment_sums(params, X, labels, bounds, weights)
    expected = reduce_owned({p: leaves[p] for p in range(first, n_parts)}, n_parts, sum_blocks)
    rows = slice(bounds[first], bounds[-1])
    folded = fold_owned(
        iter_segment_sums(params, X[rows], labels[rows], bounds[first:] - bounds[first],
                          weights[rows]),
        range(first, n_parts), n_parts, own_sums, add_sums_into,
    )  # fmt: skip
    assert [node for node, _ in folded] == [node for node, _ in expected]
    for (_, got), (_, wanted) in zip(folded, expected, strict=True):
        assert got.loss_sum == wanted.loss_sum and got.weight_sum == wanted.weight_sum
        assert got.grad_coef_sum.dtype == np.float64
        assert got.grad_coef_sum.tobytes() == wanted.grad_coef_sum.tobytes()
        assert got.grad_intercept_sum.tobytes() == wanted.grad_intercept_sum.tobytes()


def test_owned_nodes_are_the_largest_whole_subtrees():
    assert owned_nodes(range(16), 16) == [(2, 0)]
    assert owned_nodes(range(8), 16) == [(1, 0), (1, 1)]
    assert owned_nodes([0, 1, 2, 3, 5], 16) == [(1, 0), (0, 5)]
    assert owned_nodes([4], 5) == [(1, 1)]  # a group of one is its own subtree
    assert owned_nodes([], 5) == []


def test_owned_nodes_skip_the_blocks_an_evaluation_leaves_out():
    # Blocks 0-7 on one worker, 8-15 on another; a step selects 1, 2, 6 and 9, 13.
    present = [1, 2, 6, 9, 13]
    assert owned_nodes([1, 2, 6], 16, present) == [(1, 0), (1, 1)]
    assert owned_nodes([9, 13], 16, present) == [(1, 2), (1, 3)]
    # One worker holding every selected block sends the root, as for a pass.
    assert owned_nodes(present, 16, present) == [(2, 0)]
    assert owned_nodes([2], 16, [2, 3]) == [(0, 2)]


@pytest.mark.parametrize("n_parts", [1, 5, 16, 17, 70])
def test_a_selection_of_blocks_adds_the_same_bits_however_they_are_spread(n_parts):
    rng = np.random.default_rng(n_parts)
    parts = [rng.normal(size=3) * 10.0 ** rng.integers(-8, 8) for _ in range(n_parts)]
    present = sorted(rng.choice(n_parts, size=max(1, n_parts // 3), replace=False).tolist())
    leaves = {(0, p): parts[p] for p in present}
    expected = node_value(tree_root(n_parts), leaves, n_parts, _add_left_to_right, present)
    # The tree of the selected blocks' own order is another order: the skipped blocks count.
    ordered = tree_reduce([parts[p] for p in present], _add_left_to_right)
    assert np.allclose(expected, ordered, rtol=1e-6, atol=1e-6 * np.abs(ordered).max())
    for n_workers in (1, 2, 3):
        owner = rng.integers(0, n_workers, len(present))
        known = {}
        for worker in range(n_workers):
            mine = [p for p, o in zip(present, owner, strict=True) if o == worker]
            nodes = owned_nodes(mine, n_parts, present)
            folded = fold_owned(
                iter(parts[p] for p in mine), mine, n_parts, np.copy, np.add, nodes
            )
            assert [node for node, _ in folded] == nodes
            known.update(folded)
        result = node_value(tree_root(n_parts), known, n_parts, _add_left_to_right, present)
        assert result.tobytes() == expected.tobytes()


def _add_left_to_right(group):
    total = group[0]
    for part in group[1:]:
        total = total + part
    return total


def test_engine_refuses_misaligned_chunks(problem):
    X, y, _, _ = problem
    with pytest.raises(ValueError, match="different row chunks"):
        DaskEngine(None, da.from_array(X, chunks=(100, -1)), da.from_array(y, chunks=(50,)))
    with pytest.raises(ValueError, match="chunked by rows only"):
        DaskEngine(None, da.from_array(X, chunks=(100, 2)), da.from_array(y, chunks=(100,)))


# ------------------------------------------------------------------ hold="stream" and "auto"
@pytest.mark.cluster
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_streaming_gives_the_held_engines_sums_bit_for_bit(client, problem, weighted):
    X, y, weights, params = problem
    inputs = _dask_inputs(X, y, weights if weighted else None, UNEVEN_CHUNKS)
    minibatch = rows_to_blocks(np.arange(0, 300, 3), UNEVEN_CHUNKS)  # blocks 0 and 2
    spread = rows_to_blocks(np.arange(3, N_SAMPLES, 5), UNEVEN_CHUNKS)  # every block
    with DaskEngine(client, *inputs, hold="memory") as held:
        expected = [held.sums(params), held.sums(params, minibatch), held.metrics(params, spread)]
    with DaskEngine(client, *inputs, hold="stream") as streamed:
        assert streamed.hold == "stream"
        streamed.window = 4  # fewer blocks than the data has
        # A pass over more blocks than the window reads them and holds none.
        assert _same_sums(streamed.sums(params), expected[0])
        assert streamed.blocks == []
        # A minibatch over a few blocks holds them for the next batches of its group.
        assert _same_sums(streamed.sums(params, minibatch), expected[1])
        assert [block.key for block in streamed.blocks] == [
            streamed._held[index].key for index, _ in minibatch.blocks
        ]
        assert _same_sums(streamed.metrics(params, spread), expected[2])
        assert len(streamed.blocks) == len(minibatch.blocks)


def _same_sums(actual, expected) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(actual, expected, strict=True))


def test_hold_auto_streams_only_data_larger_than_half_the_workers_memory():
    assert _resolve_hold("auto", 100, memory_limit=1000, persisted=False) == "memory"
    assert _resolve_hold("auto", 501, memory_limit=1000, persisted=False) == "stream"
    no_limits = _resolve_hold("auto", 10**12, memory_limit=None, persisted=False)
    assert no_limits == "memory"
    assert _resolve_hold("stream", 1, memory_limit=1000, persisted=False) == "stream"
    # Persisted arrays are in memory already: nothing to stream them from.
    assert _resolve_hold("auto", 501, memory_limit=1000, persisted=True) == "memory"
    with pytest.raises(ValueError, match="persisted in the cluster's memory"):
        _resolve_hold("stream", 1, memory_limit=1000, persisted=True)
    with pytest.raises(ValueError, match=r"hold must be one of .*got 'disk'"):
        DaskEngine(None, *_dask_inputs(*_small(), (10, 10)), hold="disk")


def _small():
    return np.zeros((20, 2)), np.zeros(20, dtype=np.int64), None


@pytest.mark.cluster
def test_auto_streams_a_dataset_larger_than_the_workers_memory():
    # 2 workers × 380 MiB (each holds ~170 MiB of compiled kernel and its compiler); 400,000
    # float64 rows × 128 features take 391 MiB, more than half.
    big_X = da.zeros((400_000, 128), chunks=(25_000, -1))
    big_y = da.zeros(400_000, dtype=np.int64, chunks=25_000)
    with (
        _cluster(2, memory_limit="380MiB") as cluster,
        Client(cluster) as small_client,
        DaskEngine(small_client, big_X, big_y) as engine,
    ):
        assert engine.hold == "stream"
        sums = engine.sums(Params(np.zeros((2, 128)), np.zeros(2)))
        assert sums.weight_sum == 400_000
        assert sums.loss_sum == pytest.approx(400_000 * np.log(2))
        assert engine.blocks == []  # a full pass held nothing


@pytest.mark.cluster
def test_persisted_arrays_are_held_as_they_are(client, problem):
    X, y, weights, params = problem
    inputs = _dask_inputs(X, y, weights, UNEVEN_CHUNKS)
    persisted = client.persist(list(inputs))
    with DaskEngine(client, *inputs) as read, DaskEngine(client, *persisted) as held:
        assert held.hold == "memory"
        assert _same_sums(held.sums(params), read.sums(params))
        batch = rows_to_blocks(np.arange(3, N_SAMPLES, 5), UNEVEN_CHUNKS)
        assert _same_sums(held.metrics(params, batch), read.metrics(params, batch))
    with pytest.raises(ValueError, match="persisted in the cluster's memory"):
        DaskEngine(client, *persisted, hold="stream")


@pytest.mark.cluster
@pytest.mark.parametrize("hold", ["memory", "stream"])
def test_an_evaluation_after_every_worker_died_at_once_reloads_the_blocks(problem, hold):
    import os
    import signal
    from concurrent.futures import ThreadPoolExecutor

    X, y, weights, params = problem
    batch = rows_to_blocks(np.arange(0, N_SAMPLES, 3), UNEVEN_CHUNKS)
    with _cluster(2) as cluster, Client(cluster) as two:
        with DaskEngine(two, *_dask_inputs(X, y, weights, UNEVEN_CHUNKS), hold=hold) as engine:
            expected = engine.sums(params, batch)
            for pid in two.run(os.getpid).values():
                os.kill(pid, signal.SIGKILL)
            # The load tasks are pinned to workers that are all gone; they must not wait for
            # them forever (a task ready while no worker runs is never placed again).
            with ThreadPoolExecutor(1) as pool:
                after = pool.submit(engine.sums, params, batch).result(timeout=120)
            assert _same_sums(after, expected)


@pytest.mark.cluster
def test_evaluations_fall_back_to_tasks_when_a_block_server_is_gone(problem):
    X, y, weights, params = problem
    with _cluster(2) as cluster, Client(cluster) as two:
        with DaskEngine(two, *_dask_inputs(X, y, weights, UNEVEN_CHUNKS)) as engine:
            expected = engine.sums(params)
            assert len(engine._servers) == 2
            # A server lost behind the engine's back (as when its worker restarts): the call
            # fails, that evaluation runs as tasks with the same result, and a new server starts.
            lost = next(iter(engine._servers.values())).key

            def forget_server(dask_worker) -> None:
                dask_worker.state.actors.pop(lost, None)

            two.run(forget_server)
            trips = engine.n_round_trips
            assert _same_sums(engine.sums(params), expected)
            assert engine.n_round_trips > trips + 1  # the failed call, then the tasks
            assert _same_sums(engine.sums(params), expected)  # a new server is started
            trips = engine.n_round_trips
            assert _same_sums(engine.sums(params), expected)
            assert engine.n_round_trips == trips + 1  # the servers answer again


@pytest.mark.cluster
def test_big_evaluations_go_unpacked_to_a_thread_with_the_same_bits(problem, monkeypatch):
    X, y, weights, params = problem
    with _cluster(2) as cluster, Client(cluster) as two:
        with DaskEngine(two, *_dask_inputs(X, y, weights, UNEVEN_CHUNKS)) as engine:
            packed = engine.sums(params)  # small: one pickled buffer, on the event loop
            monkeypatch.setattr("dsoftmax.engine.dask.SMALL_EVALUATION_WORK", 0)
            trips = engine.n_round_trips
            unpacked = engine.sums(params)  # "big": Dask's serialization, in the actor thread
            assert engine.n_round_trips == trips + 1  # answered by the servers, not tasks
    assert _same_sums(unpacked, packed)


def test_block_server_messages_round_trip_without_pickle():
    from dsoftmax.engine.actor import decode_reply, decode_request, encode_reply, encode_request
    from dsoftmax.objective import BlockMetrics

    params = Params(np.arange(6, dtype=np.float32).reshape(2, 3), None)
    share = Share([2, 7], [None, np.array([1, 4], dtype=np.int64)], 9, [10, 40], [(0, 2), (1, 1)])
    evaluation = Evaluation("sums", params, np.array([1.0, 2.0]), 2)
    decoded, keys, got_share = decode_request(
        encode_request(evaluation, ["softmax-block-x-0"], share)
    )
    kind, got, weights = decoded.kind, decoded.params, decoded.class_weight
    assert (got_share.indices, got_share.row_starts, decoded.n_classes) == ([2, 7], [10, 40], 2)
    assert (kind, keys, got_share.nodes, got_share.n_parts) == (
        "sums",
        ["softmax-block-x-0"],
        [(0, 2), (1, 1)],
        9,
    )
    assert got.intercept is None and got.coef.dtype == np.float32
    assert np.array_equal(got.coef, params.coef) and got_share.rows[0] is None
    assert np.array_equal(got_share.rows[1], [1, 4]) and np.array_equal(weights, [1.0, 2.0])
    sums = block_sums(params, np.ones((2, 3), np.float32), np.array([0, 1]))
    ((node, back),) = decode_reply(encode_reply([((1, 2), sums)]), "sums")
    assert node == (1, 2) and _same_sums(back, sums)
    ((_, metrics),) = decode_reply(encode_reply([((0, 0), BlockMetrics(1.5, 2.0, 3.0))]), "metrics")
    assert metrics == BlockMetrics(1.5, 2.0, 3.0)


def test_block_server_messages_send_large_arrays_as_frames_without_copies():
    from dsoftmax.engine.actor import FRAME_MIN_BYTES, decode_reply, encode_reply
    from dsoftmax.objective import BlockSums

    n_features = FRAME_MIN_BYTES // 8  # a (2, n) float64 sum is twice the threshold
    grad_t = np.random.default_rng(0).standard_normal((n_features, 2))
    sums = BlockSums(1.0, grad_t.T, np.zeros(2), 3.0)  # Fortran-ordered, as the sparse kernel's
    reply = encode_reply([((0, 0), sums)])
    assert len(reply) == 2 and isinstance(reply[1], memoryview)
    assert np.shares_memory(np.frombuffer(reply[1], np.float64), grad_t)
    ((node, back),) = decode_reply([bytes(reply[0]), reply[1]], "sums")
    assert node == (0, 0) and back.grad_coef_sum.shape == (2, n_features)
    assert np.array_equal(back.grad_coef_sum, sums.grad_coef_sum)
    assert np.shares_memory(back.grad_coef_sum, grad_t)  # read in place, not copied
    with pytest.raises(ValueError, match="frame 1 of 0"):
        decode_reply(reply[:1], "sums")


def _misaligned(array: np.ndarray) -> np.ndarray:
    """A copy of ``array`` one byte into a buffer, as a chunk can arrive from another worker."""
    buffer = np.empty(array.nbytes + 1, dtype=np.uint8)
    view = np.frombuffer(buffer.data, dtype=array.dtype, count=array.size, offset=1)
    view = view.reshape(array.shape)
    view[...] = array
    return view


def test_assemble_block_aligns_chunks_that_arrive_misaligned():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    weights = rng.random(40)
    block = assemble_block(_misaligned(X), _misaligned(y), _misaligned(weights))
    for array, expected in zip(block, (X, y, weights), strict=True):
        assert array.flags.aligned and array.flags.c_contiguous
        assert np.array_equal(array, expected)
    aligned = assemble_block(X, y, None)
    assert aligned.X is X and aligned.sample_weight is None  # no copy when nothing is wrong


def test_selected_rows_equal_fancy_indexing_and_reject_rows_outside_the_block():
    rng = np.random.default_rng(4)
    block = assemble_block(rng.normal(size=(100, 5)), rng.integers(0, 3, 100), rng.random(100))
    params = Params(rng.normal(size=(3, 5)), rng.normal(size=3))
    for rows in (np.array([3, 7, 7, 99]), np.arange(0, 100, 3), np.array([0])):
        got = softmax_block_sums(block, params, rows, None)
        expected = kernels.block_sums(
            kernels.prepare(params, block.X.dtype),
            block.X[rows],
            block.labels[rows],
            block.sample_weight[rows],
        )
        assert got.loss_sum == expected.loss_sum
        assert np.array_equal(got.grad_coef_sum, expected.grad_coef_sum)
    with pytest.raises(IndexError, match="outside a block of 100 rows"):
        softmax_block_sums(block, params, np.array([5, 100]), None)
    with pytest.raises(IndexError, match="outside a block of 100 rows"):
        softmax_block_sums(block, params, np.array([-1, 5]), None)


@pytest.mark.parametrize("labels_kind", ["ids", "rows"])
@pytest.mark.parametrize("weighted", [False, True])
def test_minibatch_sums_gathered_across_blocks_equal_per_block_sums(labels_kind, weighted):
    rng = np.random.default_rng(5)
    n_classes = 4
    blocks = []
    for n_rows in (300, 120, 300, 7):
        ids = rng.integers(0, n_classes, n_rows)
        labels = ids if labels_kind == "ids" else np.eye(n_classes)[ids]
        weights = rng.random(n_rows) if weighted else None
        blocks.append(
            assemble_block(rng.normal(size=(n_rows, 6)).astype(np.float32), labels, weights)
        )
    params = Params(rng.normal(size=(n_classes, 6)), rng.normal(size=n_classes))
    class_weight = rng.random(n_classes) + 0.5 if weighted else None
    selections = [
        np.array([4, 9, 9, 250]),
        np.array([], dtype=np.int64),
        np.array([17]),
        np.arange(7),
    ]
    together = evaluate_blocks("sums", blocks, params, selections, class_weight)
    for block, rows, got in zip(blocks, selections, together, strict=True):
        alone = softmax_block_sums(block, params, rows, class_weight)
        assert got.loss_sum == alone.loss_sum and got.weight_sum == alone.weight_sum
        assert np.array_equal(got.grad_coef_sum, alone.grad_coef_sum)
        assert np.array_equal(got.grad_intercept_sum, alone.grad_intercept_sum)
    with pytest.raises(IndexError, match="outside a block of 7 rows"):
        evaluate_blocks("sums", blocks, params, [*selections[:3], np.array([7])], None)


# --------------------------------------------------------------------------- hold_data="auto"
def _workers(rss: int, limit: int = 2 * 2**30, n: int = 2) -> list:
    from dsoftmax.engine.plan import WorkerMemory

    return [WorkerMemory(f"tcp://127.0.0.1:{4000 + i}", limit, rss) for i in range(n)]


def test_auto_holds_blocks_that_fit_beside_what_the_workers_already_use():
    from dsoftmax.engine.plan import hold_choice

    blocks = [64 * 2**20] * 8  # 512 MiB on 2 × 2 GiB workers
    hold, reason = hold_choice(
        blocks, _workers(rss=200 * 2**20), work_bytes=2**20, budget_fraction=0.6
    )
    assert hold == "memory"
    assert reason.startswith("512.00 MiB held in worker memory (hold_data='auto'): worker ")
    assert "its budget is 1.02 GiB (60% of its 2.00 GiB limit, less a 15% margin)" in reason


def test_auto_streams_when_unmanaged_memory_leaves_too_little_room_under_half_the_limits():
    from dsoftmax.engine.plan import AUTO_MEMORY_SHARE, hold_choice

    # 1.9 GiB on 2 × 2 GiB workers: under half the limits, yet each worker's 0.95 GiB share,
    # with the 400 MiB it uses already and the kernel's runtime, is over its spill budget.
    blocks = [int(1.9 * 2**30 / 16)] * 16
    assert sum(blocks) <= AUTO_MEMORY_SHARE * 4 * 2**30
    hold, reason = hold_choice(
        blocks, _workers(rss=400 * 2**20), work_bytes=2**20, budget_fraction=0.6
    )
    assert hold == "stream"
    assert reason.startswith("1.90 GiB streamed from the store (hold_data='auto'): worker ")
    assert "needs 1.68 GiB for its 0.95 GiB of blocks, the 400.00 MiB it holds before" in reason
    # The same blocks on idle workers without the margin's pressure fit.
    assert hold_choice(blocks, _workers(rss=0), work_bytes=0, budget_fraction=1.0)[0] == "memory"


def test_auto_streams_beyond_half_the_limits_and_holds_without_limits():
    from dsoftmax.engine.plan import hold_choice

    blocks = [2**30] * 3
    hold, reason = hold_choice(blocks, _workers(rss=0), work_bytes=0, budget_fraction=1.0)
    assert hold == "stream" and "more than 50% of the workers' 4.00 GiB of memory limits" in reason
    unlimited = _workers(rss=0, limit=0)
    assert hold_choice(blocks, unlimited, work_bytes=0, budget_fraction=1.0) == (
        "memory", "3.00 GiB held in worker memory: the workers' memory is not limited"
    )  # fmt: skip


def test_stream_window_holds_what_fits_below_each_workers_pause_budget():
    from dsoftmax.engine.plan import KERNEL_RUNTIME_BYTES, MIN_WINDOW_BLOCKS, window_blocks

    mib = 2**20
    blocks = [8 * mib] * 200
    # 2 × 1 GiB workers at 500 MiB: a budget of 0.8 × 1 GiB = 819 MiB each, less the kernel's
    # runtime, 2 blocks being read and 1 MiB of work arrays: 202 MiB, 25 blocks each.
    room = int(0.8 * 1024 * mib) - 500 * mib - KERNEL_RUNTIME_BYTES - 16 * mib - mib
    window = window_blocks(
        blocks, _workers(rss=500 * mib, limit=1024 * mib), work_bytes=mib, budget_fraction=0.8
    )
    assert window == 2 * (room // (8 * mib)) == 50
    # Busier workers hold fewer; the quarter of the limits caps idle ones; workers with no room
    # left hold none (minibatches are then refused before the fit).
    busier = window_blocks(
        blocks, _workers(rss=600 * mib, limit=1024 * mib), work_bytes=mib, budget_fraction=0.8
    )
    assert MIN_WINDOW_BLOCKS < busier < window
    idle = window_blocks(
        blocks, _workers(rss=0, limit=1024 * mib), work_bytes=0, budget_fraction=1.0
    )
    assert idle == int(0.25 * 2048 * mib) // (8 * mib) == 64
    full = window_blocks(
        blocks, _workers(rss=400 * mib, limit=512 * mib), work_bytes=mib, budget_fraction=0.8
    )
    assert full == 0
    # Without limits every block may be held.
    unlimited = window_blocks(blocks, _workers(rss=0, limit=0), work_bytes=0, budget_fraction=0.8)
    assert unlimited == len(blocks)


@pytest.mark.cluster
def test_auto_logs_its_choice_on_a_real_cluster(caplog):
    import logging

    X = da.from_array(np.ones((2000, 4), dtype=np.float32), chunks=(500, 4))
    y = da.from_array(np.zeros(2000, dtype=np.int32), chunks=500)
    with small_local_cluster(2) as cluster, Client(cluster) as client:
        with caplog.at_level(logging.INFO, logger="dsoftmax"):
            engine = DaskEngine(client, X, y, None, hold="auto", n_classes=3)
        lines = [r.getMessage() for r in caplog.records if "hold_data='auto'" in r.getMessage()]
        assert engine.hold == "memory" and len(lines) == 1, lines
        assert "held in worker memory" in lines[0] and "its budget is" in lines[0]
        engine.close()


def test_parameters_travel_in_the_kernels_dtype_for_the_kinds_it_casts():
    from dsoftmax.engine.blocks import in_kernel_dtype

    params = Params(np.linspace(-1, 1, 6).reshape(2, 3), np.array([0.1, 0.2]))
    sums = in_kernel_dtype(Evaluation("sums", params, None, 2), np.dtype(np.float32))
    assert sums.params.coef.dtype == np.float32 and sums.params.intercept.dtype == np.float32
    np.testing.assert_array_equal(sums.params.coef, params.coef.astype(np.float32))
    metrics = in_kernel_dtype(Evaluation("metrics", params._replace(intercept=None), None, 2),
                              np.dtype(np.float32))  # fmt: skip
    assert metrics.params.coef.dtype == np.float32 and metrics.params.intercept is None
    # predict's logits (reports) use the parameters as they are; float64 data keeps float64.
    report = Evaluation("report", params, None, 2)
    assert in_kernel_dtype(report, np.dtype(np.float32)) is report
    as_is = Evaluation("sums", params, None, 2)
    assert in_kernel_dtype(as_is, np.dtype(np.float64)) is as_is
    assert in_kernel_dtype(as_is, None) is as_is
