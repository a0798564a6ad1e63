"""The column-ordered sparse kernel: the row kernel's bits, from a block's column form."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from dask.sizeof import sizeof
from test_kernels_sparse import assert_sums_identical
from test_kernels_sparse import make_problem as unsorted_problem

from dsoftmax import kernels
from dsoftmax.engine import LocalEngine
from dsoftmax.engine.blocks import assemble_block, with_column_form
from dsoftmax.kernels import sparse
from dsoftmax.kernels.sparse_columns import ColumnForm, column_form, column_sums
from dsoftmax.objective import Params


def make_problem(**options):
    """The sparse tests' problem with columns 50 to 79 and the last one unused, its rows'
    indices sorted (as every stored block has them)."""
    params, X, *rest = unsorted_problem(**options)
    used = np.ones(X.shape[1], dtype=X.dtype)
    used[50:80] = used[-1] = 0
    X = (X @ scipy.sparse.diags(used)).tocsr()
    X.eliminate_zeros()
    X.sort_indices()
    return (params, X, *rest)


def with_duplicates(X):
    """``X`` with every third row's non-zeros each stored twice (sorted, duplicates adjacent)."""
    rows = []
    for i in range(X.shape[0]):
        row = X[i]
        if i % 3 == 0 and row.nnz:
            indices = np.repeat(row.indices, 2)
            data = np.repeat(row.data, 2) * np.tile([1.0, -0.5], row.nnz)
            row = scipy.sparse.csr_matrix(
                (data.astype(X.dtype), indices, [0, len(indices)]), shape=row.shape
            )
        rows.append(row)
    return scipy.sparse.vstack(rows, format="csr")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("labels_kind", ["ids", "rows"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("intercept", [True, False])
def test_column_sums_have_the_row_kernels_bits(dtype, labels_kind, weighted, intercept):
    params, X, ids, probabilities, weights = make_problem(dtype=dtype, seed=3)
    if not intercept:
        params = Params(params.coef, None)
    labels = ids if labels_kind == "ids" else probabilities
    sample_weight = weights if weighted else None
    prepared = kernels.prepare_for(params, X)
    columns = column_form(X)
    assert columns is not None and columns.rows.dtype == np.int32
    # Row 3 is empty and some columns are never used: both still give their zeros.
    assert len(columns.columns) < X.shape[1]
    expected = sparse.block_sums(prepared, X, labels, sample_weight)
    got = column_sums(prepared, X, columns, labels, sample_weight)
    assert_sums_identical(got, expected)
    assert got.grad_coef_sum.shape == params.coef.shape
    # Through the entry point, into work arrays that held other numbers.
    out = (np.full(params.coef.size, np.nan), np.full(params.coef.shape[0], np.nan))
    through = kernels.block_sums(prepared, X, labels, sample_weight, out=out, columns=columns)
    assert_sums_identical(through, expected)


def test_repeated_indices_keep_their_order_and_the_bits():
    params, X, ids, _, _ = make_problem(n_rows=200, seed=5)
    X = with_duplicates(X)
    assert X.has_sorted_indices and not X.has_canonical_format
    prepared = kernels.prepare_for(params, X)
    columns = column_form(X)
    assert columns is not None and columns.rows.shape == (X.nnz,)
    expected = sparse.block_sums(prepared, X, ids)
    assert_sums_identical(column_sums(prepared, X, columns, ids), expected)


def test_the_form_lists_each_columns_rows_in_order():
    X = scipy.sparse.csr_matrix(
        np.array([[0, 2, 0, 1], [3, 0, 0, 4], [0, 5, 0, 0]], dtype=np.float32)
    )
    columns = column_form(X)
    np.testing.assert_array_equal(columns.columns, [0, 1, 3])
    np.testing.assert_array_equal(columns.starts, [0, 1, 3, 5])
    np.testing.assert_array_equal(columns.rows, [1, 0, 2, 0, 1])
    np.testing.assert_array_equal(columns.values, [3, 2, 5, 1, 4])
    assert columns.shape == (3, 4)


def test_unsorted_or_malformed_rows_have_no_column_form():
    params, X, ids, _, _ = make_problem(n_rows=60, seed=7)
    unsorted = X.copy()
    first = next(i for i in range(X.shape[0]) if X.indptr[i + 1] - X.indptr[i] >= 2)
    span = slice(X.indptr[first], X.indptr[first + 1])
    unsorted.indices[span] = unsorted.indices[span][::-1]
    unsorted.has_sorted_indices = False
    assert column_form(unsorted) is None
    for tamper in (
        lambda M: M.indices.__setitem__(5, M.shape[1]),
        lambda M: M.indices.__setitem__(5, -1),
        lambda M: M.indptr.__setitem__(-1, M.nnz + 10),
    ):
        bad = X.copy()
        tamper(bad)
        assert column_form(bad) is None
        # A held block keeps no form, and the row kernel names the damage.
        block = assemble_block(bad, ids, None, column_order=True)
        assert block.columns is None
        with pytest.raises(ValueError, match=r"column index|pointers"):
            kernels.block_sums(kernels.prepare_for(params, bad), block.X, ids)


def test_a_form_that_is_not_the_blocks_is_refused():
    params, X, ids, _, _ = make_problem(seed=9)
    prepared = kernels.prepare_for(params, X)
    columns = column_form(X)
    other = column_form(X[:-1])
    with pytest.raises(ValueError, match="not that of a block"):
        column_sums(prepared, X, other, ids)
    broken = columns._replace(rows=columns.rows.copy())
    broken.rows[0] = X.shape[0]
    with pytest.raises(ValueError, match="outside its block"):
        column_sums(prepared, X, broken, ids)
    with pytest.raises(TypeError, match="ColumnForm"):
        column_sums(prepared, X, tuple(columns), ids)


def test_held_blocks_keep_the_form_and_dask_counts_it():
    _, X, ids, _, _ = make_problem(seed=11)
    block = assemble_block(X, ids, None, column_order=True)
    assert isinstance(block.columns, ColumnForm)
    assert assemble_block(X, ids, None).columns is None
    assert with_column_form(assemble_block(X, ids, None)).columns is not None
    plain = sizeof(assemble_block(X, ids, None))
    assert sizeof(block) == plain + block.columns.nbytes
    dense = assemble_block(X.toarray(), ids, None, column_order=True)
    assert dense.columns is None


def test_an_engine_holding_sparse_blocks_gives_the_streamed_bits():
    params, X, ids, _, weights = make_problem(n_rows=900, seed=13)
    held = LocalEngine(X, ids, weights, chunk_rows=200, hold="memory", n_threads=2)
    streamed = LocalEngine(X, ids, weights, chunk_rows=200, hold="stream", n_threads=2)
    assert all(block.columns is not None for block in held.blocks)
    assert_sums_identical(held.sums(params), streamed.sums(params))


def test_int64_indices_give_the_same_form_and_bits():
    params, X, ids, _, weights = make_problem(seed=15)
    wide = X.copy()
    wide.indices, wide.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    narrow_form, wide_form = column_form(X), column_form(wide)
    for left, right in zip(narrow_form[:4], wide_form[:4], strict=True):
        np.testing.assert_array_equal(left, right)
    prepared = kernels.prepare_for(params, X)
    expected = sparse.block_sums(prepared, X, ids, weights)
    assert_sums_identical(sparse.block_sums(prepared, wide, ids, weights), expected)
    assert_sums_identical(column_sums(prepared, wide, wide_form, ids, weights), expected)


@pytest.mark.cluster
def test_workers_holding_a_sparse_store_give_the_bits_of_streaming_it(tmp_path):
    from distributed import Client, LocalCluster

    from dsoftmax.data import make_bag_of_words, write_dataset
    from dsoftmax.engine import DaskEngine

    X, y = make_bag_of_words(1200, 2**10, 5, nnz_per_row=20, seed=2, dtype="float32")
    dataset = write_dataset(tmp_path / "bag.zarr", X, y, chunk_rows=250)
    rng = np.random.default_rng(0)
    params = Params(rng.normal(scale=0.3, size=(5, 2**10)), rng.normal(size=5))
    in_process = LocalEngine(X, y, chunk_rows=250).sums(params)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
        memory_limit="1GiB",
    ) as cluster, Client(cluster, set_as_default=False) as client:  # fmt: skip
        with DaskEngine(client, dataset.X, dataset.y, hold="memory") as held:
            held_sums = held.sums(params)
            # Twice the CSR bytes: the blocks' column forms are counted with them.
            assert sum(held.block_bytes) > 2 * (X.data.nbytes + X.indices.nbytes)
            forms = client.run(_held_column_forms)
        with DaskEngine(client, dataset.X, dataset.y, hold="stream") as streamed:
            streamed_sums = streamed.sums(params)
    assert sum(forms.values()) == dataset.X.numblocks[0]
    assert_sums_identical(held_sums, streamed_sums)
    assert_sums_identical(held_sums, in_process)


def _held_column_forms(dask_worker) -> int:
    """How many blocks this worker holds with a column form."""
    from dsoftmax.engine.blocks import Block

    return sum(
        isinstance(value, Block) and value.columns is not None
        for value in dask_worker.data.values()
    )


@pytest.mark.parametrize("weighted", [False, True])
def test_a_selection_of_rows_gives_the_bits_of_rows_sums(weighted):
    params, X, ids, _, weights = make_problem(seed=17)
    prepared = kernels.prepare_for(params, X)
    columns = column_form(X)
    rows = np.flatnonzero(np.random.default_rng(1).random(X.shape[0]) < 0.7)
    sample_weight = weights[rows] if weighted else None
    expected = sparse.rows_sums(prepared, X, ids[rows], sample_weight, rows)
    got = column_sums(prepared, X, columns, ids[rows], sample_weight, rows=rows)
    assert_sums_identical(got, expected)
    for bad in (rows[::-1], np.array([0, 0]), np.array([X.shape[0]])):
        with pytest.raises(ValueError, match="strictly increasing"):
            column_sums(prepared, X, columns, ids[: len(bad)], None, rows=bad)


def test_a_sparse_grids_models_through_the_column_form_have_their_bits():
    from dsoftmax.kernels.stacked import ROLE_HELD_OUT, ROLE_TRAIN, Stack
    from dsoftmax.kernels.stacked_sparse import prepare_sparse_stack, sparse_stack_sums

    params, X, ids, _, weights = make_problem(seed=19)
    rng = np.random.default_rng(2)
    coef = np.stack([params.coef * scale for scale in (0.5, 1.0, 2.0)])
    intercept = np.stack([params.intercept] * 3)
    roles = np.array([[ROLE_TRAIN, ROLE_HELD_OUT], [ROLE_HELD_OUT, ROLE_TRAIN]], dtype=np.uint8)
    stack = Stack(coef, intercept, np.array([0, 1, -1]), roles)
    codes = rng.integers(0, 2, X.shape[0])
    prepared = prepare_sparse_stack(stack, X.dtype)
    rows_kernel = sparse_stack_sums(prepared, X, ids, weights, codes)
    through_columns = sparse_stack_sums(prepared, X, ids, weights, codes, columns=column_form(X))
    for left, right in zip(through_columns, rows_kernel, strict=True):
        np.testing.assert_array_equal(left, right)


def test_a_block_of_far_more_features_than_values_is_sorted_to_the_same_form(monkeypatch):
    from dsoftmax.kernels import sparse_columns

    _, X, _, _, _ = make_problem(seed=21)
    X = with_duplicates(X)
    counted = column_form(X)
    monkeypatch.setattr(sparse_columns, "COUNTING_SORT_BYTES", 0)
    X.indptr, X.indices = X.indptr.astype(np.int64), X.indices.astype(np.int64)
    X.indices *= 2**20  # 300 · 2^20 features over a few thousand values: sorted, not counted
    wide = scipy.sparse.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], 300 * 2**20))
    sorted_form = column_form(wide)
    np.testing.assert_array_equal(sorted_form.columns, counted.columns * 2**20)
    for left, right in zip(sorted_form[1:4], counted[1:4], strict=True):
        np.testing.assert_array_equal(left, right)
        assert left.dtype == right.dtype
    empty = scipy.sparse.csr_matrix((3, 300 * 2**20), dtype=np.float32)
    assert column_form(empty).rows.shape == (0,)
