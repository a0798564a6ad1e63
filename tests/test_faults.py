"""Faults of the store met while reading: damaged chunks are named, transient I/O errors are
retried, on local disk, on a real S3 API (moto) and through a fit on worker processes.

Transient errors come from a real fsspec filesystem: a local filesystem registered under the
protocol ``dsoftmaxflaky`` whose chunk reads fail a planned number of times per key. Zarr reads
it through its own fsspec store, exactly as it reads ``s3://`` URLs.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import dask
import fsspec
import numpy as np
import pytest
from distributed import Client, LocalCluster
from fsspec.implementations.local import LocalFileSystem

from dsoftmax import SoftmaxRegression
from dsoftmax.data import (
    DEFAULT_READ_RETRIES,
    ChunkReadError,
    check_values,
    open_dataset,
    write_dataset,
)

N_SAMPLES = 120
CHUNK_ROWS = 40
GARBAGE = b"these bytes are not a zstd frame " * 4
DAMAGED_FIX = r"The store is damaged: rewrite it, e\.g\. with dsoftmax\.data\.write_dataset"
FLAKY_PROTOCOL = "dsoftmaxflaky"


def features() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N_SAMPLES, 3)).astype(np.float32)


def labels() -> np.ndarray:
    return np.arange(N_SAMPLES) % 3


def weights() -> np.ndarray:
    return np.linspace(0.5, 2.0, N_SAMPLES)


def write_small_dataset(url: str, storage_options: dict | None = None) -> None:
    """Three chunks of 40 rows: X, y and sample_weight, every one compressed with zstd."""
    write_dataset(
        url,
        features(),
        labels(),
        sample_weight=weights(),
        chunk_rows=CHUNK_ROWS,
        codec="zstd",
        storage_options=storage_options,
    )


def chunk_error(array: str, key: str, url_pattern: str, cause: str) -> str:
    """The message expected for chunk 1 (rows 40 to 79) of ``array``."""
    return (
        rf"cannot read chunk 1 of {array} in '{url_pattern}' \(rows 40 to 79, store key "
        rf"'{re.escape(key)}'\)(?s:.*){cause}"
    )


@pytest.fixture(scope="module")
def process_client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="1GiB",
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


# ---------------------------------------------------------------------------------------------
# damaged chunks on local disk
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "key"), [("X", "X/c/1/0"), ("y", "y/c/1"), ("sample_weight", "sample_weight/c/1")]
)
def test_a_damaged_local_chunk_is_named_by_every_read(tmp_path, array, key):
    path = tmp_path / "train.zarr"
    write_small_dataset(str(path))
    (path / key).write_bytes(GARBAGE)
    dataset = open_dataset(path)  # the structure is intact: only reading finds the damage
    expected = chunk_error(array, key, r".*train\.zarr", "RuntimeError: Zstd decompression error")

    with pytest.raises(ChunkReadError, match=expected) as raised:
        getattr(dataset, array).compute()
    assert re.search(DAMAGED_FIX, str(raised.value))
    error = raised.value
    assert isinstance(error, ValueError)
    assert (error.array, error.chunk_index, error.rows, error.key) == (array, 1, (40, 80), key)
    assert error.url == str(path)
    with pytest.raises(ChunkReadError, match=expected):
        check_values(dataset)
    # Chunks around the damaged one still read, with their stored values.
    np.testing.assert_array_equal(dataset.X[:CHUNK_ROWS].compute(), features()[:CHUNK_ROWS])
    np.testing.assert_array_equal(dataset.y[2 * CHUNK_ROWS :].compute(), labels()[80:])


def test_a_truncated_uncompressed_chunk_is_named(tmp_path):
    path = tmp_path / "raw.zarr"
    write_dataset(path, features(), labels(), chunk_rows=CHUNK_ROWS, codec="none")
    (path / "X/c/1/0").write_bytes(GARBAGE[:7])
    dataset = open_dataset(path)
    with pytest.raises(ChunkReadError, match=chunk_error("X", "X/c/1/0", r".*raw\.zarr", "")):
        dataset.X.compute()


@pytest.mark.cluster
def test_a_fit_on_worker_processes_names_the_damaged_chunk(tmp_path, process_client):
    path = tmp_path / "train.zarr"
    write_small_dataset(str(path))
    (path / "X/c/1/0").write_bytes(GARBAGE)
    model = SoftmaxRegression(max_iter=5, client=process_client)
    expected = chunk_error("X", "X/c/1/0", r".*train\.zarr", "Zstd decompression error")
    with pytest.raises(ChunkReadError, match=expected):
        model.fit(open_dataset(path))


# ---------------------------------------------------------------------------------------------
# damaged chunks on S3 (a deleted chunk object is refused at open: see test_data.py)
# ---------------------------------------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.cluster
def test_a_damaged_s3_chunk_is_named_by_reads_and_fits(s3_storage_options, process_client):
    import s3fs

    base, options = s3_storage_options
    url = f"{base}/train.zarr"
    write_small_dataset(url, options)
    s3fs.S3FileSystem(**options, skip_instance_cache=True).pipe(f"{url}/X/c/1/0", GARBAGE)
    dataset = open_dataset(url, storage_options=options)
    expected = chunk_error(
        "X", "X/c/1/0", r"s3://.*/train\.zarr", "RuntimeError: Zstd decompression error"
    )

    with pytest.raises(ChunkReadError, match=expected):
        dataset.X.compute()
    with pytest.raises(ChunkReadError, match=expected):
        check_values(dataset)
    with pytest.raises(ChunkReadError, match=expected):
        SoftmaxRegression(max_iter=5, client=process_client).fit(dataset)
    np.testing.assert_array_equal(dataset.y.compute(), labels())


# ---------------------------------------------------------------------------------------------
# transient errors, through a real fsspec filesystem that fails on purpose
# ---------------------------------------------------------------------------------------------


class FailurePlan:
    """The first ``failures`` reads of each chunk key raise ``make_error()``; ``reads`` counts
    the reads of each chunk key (metadata reads never fail)."""

    def __init__(self, failures: int, make_error: Callable[[], Exception]) -> None:
        self.failures = failures
        self.make_error = make_error
        self.reads: collections.Counter[str] = collections.Counter()


class FlakyFileSystem(LocalFileSystem):
    """The local filesystem, under its own protocol, with chunk reads that fail per a plan."""

    protocol = (FLAKY_PROTOCOL,)
    # Each open gets its own instance, hence its own plan.
    cachable = False

    def __init__(self, plan: FailurePlan, **kwargs) -> None:
        super().__init__(**kwargs)
        self.plan = plan

    def cat_file(self, path, start=None, end=None, **kwargs):
        path = self._strip_protocol(path)
        chunk_key = re.search(r"/(\w+/c/[\d/]+)$", path)
        if chunk_key is not None:
            key = chunk_key.group(1)
            self.plan.reads[key] += 1
            if self.plan.reads[key] <= self.plan.failures:
                raise self.plan.make_error()
        return super().cat_file(path, start=start, end=end, **kwargs)


@pytest.fixture
def flaky_url(tmp_path) -> str:
    fsspec.register_implementation(FLAKY_PROTOCOL, FlakyFileSystem, clobber=True)
    path = tmp_path / "flaky.zarr"
    write_small_dataset(str(path))
    return f"{FLAKY_PROTOCOL}://{path}"


def open_flaky(url: str, plan: FailurePlan, **kwargs):
    return open_dataset(url, storage_options={"plan": plan}, **kwargs)


def connection_reset() -> OSError:
    return OSError("connection reset")


def test_open_keeps_read_retries_and_refuses_bad_values(tmp_path):
    path = tmp_path / "train.zarr"
    write_small_dataset(str(path))
    assert DEFAULT_READ_RETRIES == 3
    assert open_dataset(path).read_retries == DEFAULT_READ_RETRIES
    assert open_dataset(path, read_retries=0).read_retries == 0
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match=r"read_retries must be an int >= 0 .* got "):
            open_dataset(path, read_retries=bad)


@pytest.mark.parametrize("failures", [1, DEFAULT_READ_RETRIES])
def test_transient_errors_within_the_retries_give_the_stored_values(flaky_url, failures):
    plan = FailurePlan(failures, connection_reset)
    dataset = open_flaky(flaky_url, plan)
    assert dataset.read_retries == DEFAULT_READ_RETRIES
    # One thread per chunk, so the pauses before the retries overlap.
    X, y, sample_weight = dask.compute(
        dataset.X, dataset.y, dataset.sample_weight, scheduler="threads", num_workers=9
    )
    np.testing.assert_array_equal(X, features())
    np.testing.assert_array_equal(y, labels())
    np.testing.assert_array_equal(sample_weight, weights())
    assert len(plan.reads) == 9
    assert set(plan.reads.values()) == {failures + 1}  # every chunk: its failures, then success


def test_transient_errors_beyond_the_retries_name_the_chunk(flaky_url):
    plan = FailurePlan(3, connection_reset)
    dataset = open_flaky(flaky_url, plan, read_retries=2)
    expected = (
        r"cannot read chunk (\d) of X in 'dsoftmaxflaky://.*flaky\.zarr' \(rows \d+ to \d+, "
        r"store key 'X/c/\1/0'\) after 3 tries \(read_retries=2\): OSError: connection reset\. "
        r"Check that the store is reachable .* or open the dataset with a larger read_retries"
    )
    with pytest.raises(ChunkReadError, match=expected) as raised:
        dataset.X.compute(scheduler="sync")
    assert plan.reads[raised.value.key] == 3


def test_no_retries_when_read_retries_is_zero(flaky_url):
    plan = FailurePlan(1, connection_reset)
    dataset = open_flaky(flaky_url, plan, read_retries=0)
    expected = (
        r"chunk \d of y .* after 1 try \(read_retries=0\): OSError: connection reset\. Check "
        r"that the store is reachable"
    )
    with pytest.raises(ChunkReadError, match=expected):
        dataset.y.compute(scheduler="sync")
    assert list(plan.reads.values()) == [1]  # the first chunk read failed, and stopped all


def _botocore_connection_error() -> Exception:
    botocore_exceptions = pytest.importorskip("botocore.exceptions")
    return botocore_exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")


def _aiohttp_disconnect() -> Exception:
    aiohttp = pytest.importorskip("aiohttp")
    return aiohttp.ServerDisconnectedError()


@pytest.mark.parametrize(
    "make_error",
    [
        connection_reset,
        lambda: TimeoutError("read timed out"),
        lambda: ConnectionRefusedError("connection refused"),
        _botocore_connection_error,
        _aiohttp_disconnect,
    ],
    ids=["OSError", "TimeoutError", "ConnectionRefusedError", "botocore", "aiohttp"],
)
def test_io_errors_are_retried(flaky_url, make_error):
    make_error()  # skips here, before any read, when the library is missing
    plan = FailurePlan(1, make_error)
    dataset = open_flaky(flaky_url, plan, read_retries=1)
    np.testing.assert_array_equal(dataset.X.compute(scheduler="sync"), features())
    assert plan.reads == {"X/c/0/0": 2, "X/c/1/0": 2, "X/c/2/0": 2}


def _botocore_no_credentials() -> Exception:
    botocore_exceptions = pytest.importorskip("botocore.exceptions")
    return botocore_exceptions.NoCredentialsError()


REFUSED_FIX = r"The workers read the chunks themselves.*The store itself is probably intact"


@pytest.mark.parametrize(
    ("make_error", "expected"),
    [
        (lambda: RuntimeError("Zstd decompression error"),
         rf"RuntimeError: Zstd decompression error\. {DAMAGED_FIX}"),
        (lambda: PermissionError("access denied"),
         rf"access refused \(PermissionError: access denied\)\. {REFUSED_FIX}"),
        (_botocore_no_credentials,
         rf"access refused \(NoCredentialsError: Unable to locate credentials\)\. {REFUSED_FIX}"),
    ],
    ids=["decode", "permission", "no-credentials"],
)  # fmt: skip
def test_lasting_errors_are_not_retried(flaky_url, make_error, expected):
    make_error()  # skips here, before any read, when the library is missing
    plan = FailurePlan(1, make_error)
    dataset = open_flaky(flaky_url, plan, read_retries=3)
    with pytest.raises(ChunkReadError, match=rf"chunk \d of X .*: {expected}"):
        dataset.X.compute(scheduler="sync")
    assert list(plan.reads.values()) == [1]


def test_a_damaged_chunk_is_read_once_not_retried(flaky_url):
    path = Path(flaky_url.removeprefix(f"{FLAKY_PROTOCOL}://"))
    (path / "y/c/2").write_bytes(GARBAGE)
    plan = FailurePlan(0, connection_reset)
    dataset = open_flaky(flaky_url, plan)
    expected = r"chunk 2 of y .* \(rows 80 to 119, store key 'y/c/2'\): RuntimeError: Zstd"
    with pytest.raises(ChunkReadError, match=expected):
        dataset.y.compute(scheduler="sync")
    assert plan.reads["y/c/2"] == 1


def test_the_cli_opens_datasets_with_its_read_retries(tmp_path, capsys):
    from dsoftmax import cli

    path = tmp_path / "train.zarr"
    write_small_dataset(str(path))
    assert cli.DEFAULT_READ_RETRIES == DEFAULT_READ_RETRIES
    commands = {
        "train": [str(path), "--model", "model"],
        "evaluate": ["model", str(path)],
        "predict": ["model", str(path), "--out", "labels.zarr"],
    }
    for command, arguments in commands.items():
        for options, expected in (([], DEFAULT_READ_RETRIES), (["--read-retries", "0"], 0)):
            args = cli.build_parser().parse_args([command, *arguments, *options])
            assert cli._open(args.data, args).read_retries == expected
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["train", *commands["train"], "--read-retries", "-1"])
    assert exited.value.code == 2
    assert "--read-retries: must be an integer in [0, inf), got '-1'" in capsys.readouterr().err
