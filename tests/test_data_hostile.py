"""Hostile stores are refused fast and with bounded memory: metadata declaring far more rows than
stored, decompression bombs, links into other stores, special files, codecs the reader does not
decode. Every store is a real one on disk, written by dsoftmax or zarr and then tampered with."""

from __future__ import annotations

import functools
import json
import os
import re
import resource
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numcodecs.zstd
import numpy as np
import pytest
import zarr
import zarr.codecs
from daskprocs import dask_processes
from distributed import Client

from dsoftmax import cli
from dsoftmax.data import ChunkReadError, check_values, open_dataset, write_dataset

N_SAMPLES = 120
CHUNK_ROWS = 40
N_FEATURES = 200
#: Bytes of one chunk of X: 40 rows x 200 float32, about the size a 24 KB bomb replaces.
X_CHUNK_BYTES = CHUNK_ROWS * N_FEATURES * 4
#: What the bombs inflate to.
BOMB_BYTES = 768 * 2**20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_BLOCK = 128 * 1024


def features() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N_SAMPLES, N_FEATURES)).astype(np.float32)


def write_store(path: Path, codec: str = "zstd") -> Path:
    write_dataset(path, features(), np.arange(N_SAMPLES) % 3, chunk_rows=CHUNK_ROWS, codec=codec)
    return path


def zstd_rle_frame(n_bytes: int, *, declare_size: bool) -> bytes:
    """A zstd frame (RFC 8878) of RLE blocks that inflates to ``n_bytes`` zero bytes: 4 bytes
    per 128 KiB block, so 768 MiB fit in 24 KB."""
    if declare_size:
        # Single segment, 8-byte Frame_Content_Size.
        header = bytes([0b1110_0000]) + n_bytes.to_bytes(8, "little")
    else:
        # No Frame_Content_Size; a Window_Descriptor of 128 KiB (exponent 7).
        header = bytes([0b0000_0000, 7 << 3])
    blocks = []
    for start in range(0, n_bytes, ZSTD_BLOCK):
        size = min(ZSTD_BLOCK, n_bytes - start)
        last = int(start + size >= n_bytes)
        block_header = last | (1 << 1) | (size << 3)  # Block_Type 1: RLE
        blocks.append(block_header.to_bytes(3, "little") + b"\x00")
    return ZSTD_MAGIC + header + b"".join(blocks)


# ---------------------------------------------------------------------------------------------
# metadata declaring 10^12 rows
# ---------------------------------------------------------------------------------------------


def declare_rows(path: Path, n_rows: int) -> None:
    for name in ("X", "y"):
        metadata_path = path / name / "zarr.json"
        metadata = json.loads(metadata_path.read_text())
        metadata["shape"][0] = n_rows
        metadata_path.write_text(json.dumps(metadata))


def test_a_store_declaring_a_trillion_rows_is_refused_at_once(tmp_path):
    path = write_store(tmp_path / "huge.zarr")
    declare_rows(path, 10**12)
    n_chunks = 10**12 // CHUNK_ROWS
    expected = (
        rf"X in '.*huge\.zarr' is missing {n_chunks - 3} of its {n_chunks} chunks \(chunk indices "
        r"3 \(rows 120 to 159\), 4 \(rows 160 to 199\), 5 \(rows 200 to 239\), 6 \(rows 240 to "
        rf"279\), 7 \(rows 280 to 319\) and {n_chunks - 8} more\); Zarr would read them as zeros"
    )
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=expected):
            open_dataset(path)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 20 * 2**20


def test_the_cli_refuses_a_store_declaring_a_trillion_rows(tmp_path, capsys):
    path = write_store(tmp_path / "huge.zarr")
    declare_rows(path, 10**12)
    started = time.perf_counter()
    code = cli.main(["train", str(path), "--model", str(tmp_path / "model")])
    assert time.perf_counter() - started < 5.0
    assert code == cli.EXIT_FAILURE
    missing = r"X in '.*huge\.zarr' is missing \d+ of its \d+ chunks"
    assert re.search(missing, capsys.readouterr().err)
    assert not (tmp_path / "model").exists()


# ---------------------------------------------------------------------------------------------
# decompression bombs
# ---------------------------------------------------------------------------------------------

#: Reads chunk 1 of X of the store in argv[1] in a fresh process and prints, as JSON, the error,
#: the seconds the read took and how much the peak resident memory grew meanwhile.
READ_ONE_CHUNK = textwrap.dedent(
    """
    import json, resource, sys, time
    from dsoftmax.data import open_dataset
    dataset = open_dataset(sys.argv[1])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        dataset.X[40:80].compute(scheduler="sync")
        error = None
    except Exception as caught:
        error = f"{type(caught).__name__}: {caught}"
    seconds = time.perf_counter() - started
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    print(json.dumps({"error": error, "seconds": seconds, "grown": grown}))
    """
)


def read_chunk_in_a_fresh_process(path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", READ_ONE_CHUNK, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def chunk_error(cause: str) -> str:
    return (
        r"ChunkReadError: cannot read chunk 1 of X in '.*bomb\.zarr' \(rows 40 to 79, store key "
        rf"'X/c/1/0'\): {cause}(?s:.*)The store is damaged"
    )


@pytest.mark.parametrize(
    ("bomb", "cause"),
    [
        (
            zstd_rle_frame(BOMB_BYTES, declare_size=True),
            rf"ValueError: the stored chunk declares \(zstd frame header\) {BOMB_BYTES} bytes, "
            rf"but one chunk of this array is {X_CHUNK_BYTES} bytes",
        ),
        (
            zstd_rle_frame(BOMB_BYTES, declare_size=False),
            r"ValueError: the stored chunk's zstd frame does not declare its content size",
        ),
        (
            # A valid first frame, then a bomb that the first frame's size does not announce.
            numcodecs.zstd.compress(bytes(X_CHUNK_BYTES))
            + zstd_rle_frame(BOMB_BYTES, declare_size=True),
            r"ValueError: destination buffer too small",
        ),
    ],
    ids=["declared", "undeclared", "second-frame"],
)
def test_a_zstd_bomb_is_refused_fast_with_bounded_memory(tmp_path, bomb, cause):
    assert len(bomb) < 30_000
    path = write_store(tmp_path / "bomb.zarr")
    (path / "X/c/1/0").write_bytes(bomb)
    result = read_chunk_in_a_fresh_process(path)
    assert re.search(chunk_error(cause), result["error"]), result["error"]
    assert result["seconds"] < 1.0
    assert result["grown"] < 100 * 2**20


def blosc_header_declaring_a_bomb(chunk: bytes) -> bytes:
    return chunk[:4] + BOMB_BYTES.to_bytes(4, "little") + chunk[8:]  # bytes 4-8: decoded size


@pytest.mark.parametrize(
    ("codec", "tamper", "cause"),
    [
        ("lz4", blosc_header_declaring_a_bomb,
         rf"ValueError: the stored chunk declares \(Blosc header\) {BOMB_BYTES} bytes"),
        ("none", lambda chunk: bytes(64 * 2**20),
         r"ValueError: the stored chunk is over \d+ bytes"),
    ],
    ids=["blosc-header", "huge-object"],
)  # fmt: skip
def test_other_oversized_chunks_are_refused_with_bounded_memory(tmp_path, codec, tamper, cause):
    path = write_store(tmp_path / "bomb.zarr", codec=codec)
    (path / "X/c/1/0").write_bytes(tamper((path / "X/c/1/0").read_bytes()))
    result = read_chunk_in_a_fresh_process(path)
    assert re.search(chunk_error(cause), result["error"]), result["error"]
    assert result["grown"] < 32 * 2**20


def test_an_uncompressed_chunk_of_the_wrong_size_is_refused(tmp_path):
    path = write_store(tmp_path / "bomb.zarr", codec="none")
    (path / "X/c/1/0").write_bytes(bytes(X_CHUNK_BYTES + 4))
    with pytest.raises(ChunkReadError, match=rf"holds {X_CHUNK_BYTES + 4} bytes, but one chunk"):
        open_dataset(path).X.compute(scheduler="sync")


def workers_peak_rss(client: Client) -> dict[str, int]:
    """Bytes of each worker's peak resident memory so far."""
    # A standard-library callable: the workers cannot import this test module.
    usage = client.run(functools.partial(resource.getrusage, resource.RUSAGE_SELF))
    return {worker: found.ru_maxrss * 1024 for worker, found in usage.items()}


@pytest.mark.cluster
def test_workers_refuse_a_bomb_too(tmp_path):
    path = write_store(tmp_path / "bomb.zarr")
    (path / "X/c/1/0").write_bytes(zstd_rle_frame(BOMB_BYTES, declare_size=True))
    with (
        dask_processes(n_workers=2, memory_limit="512MiB") as procs,
        Client(procs.address, set_as_default=False) as client,
    ):
        # A first pass over an intact store imports the readers on the workers.
        check_values(open_dataset(write_store(tmp_path / "intact.zarr")), client=client)
        before = workers_peak_rss(client)
        with pytest.raises(ChunkReadError, match=r"chunk 1 of X .*declares \(zstd frame header\)"):
            check_values(open_dataset(path), client=client)
        after = workers_peak_rss(client)
    assert max(after[worker] - before[worker] for worker in after) < 100 * 2**20


def test_chunks_of_every_supported_codec_still_read(tmp_path):
    for codec in ("zstd", "lz4", "none"):
        dataset = open_dataset(write_store(tmp_path / f"{codec}.zarr", codec=codec))
        np.testing.assert_array_equal(dataset.X.compute(scheduler="sync"), features())
        assert dataset.X.blocks[0].compute(scheduler="sync").flags.writeable


def test_big_endian_and_checksummed_chunks_read(tmp_path):
    path = tmp_path / "raw.zarr"
    write_store(path)
    group = zarr.open_group(str(path), mode="r+")
    X = features().astype(">f4")
    del group["X"]
    stored = group.create_array(
        "X",
        shape=X.shape,
        dtype=X.dtype,
        chunks=(CHUNK_ROWS, N_FEATURES),
        serializer=zarr.codecs.BytesCodec(endian="big"),
        compressors=(zarr.codecs.ZstdCodec(level=3, checksum=True),),
    )
    stored[...] = X
    read = open_dataset(path).X.compute(scheduler="sync")
    np.testing.assert_array_equal(read, features())
    assert read.dtype.isnative


# ---------------------------------------------------------------------------------------------
# links and special files
# ---------------------------------------------------------------------------------------------


def test_a_chunk_linked_from_another_store_is_refused(tmp_path):
    victim = write_store(tmp_path / "victim.zarr")
    other = write_store(tmp_path / "other.zarr")
    (victim / "X/c/1/0").unlink()
    (victim / "X/c/1/0").symlink_to(other / "X/c/1/0")
    expected = r"'.*victim\.zarr' holds a symbolic link 'X/c/1/0' \(to '.*other\.zarr/X/c/1/0'\)"
    with pytest.raises(ValueError, match=expected):
        open_dataset(victim)


def test_a_linked_directory_or_metadata_file_is_refused(tmp_path):
    victim = write_store(tmp_path / "victim.zarr")
    other = write_store(tmp_path / "other.zarr")
    (victim / "y").rename(tmp_path / "y-away")
    (victim / "y").symlink_to(other / "y", target_is_directory=True)
    with pytest.raises(ValueError, match=r"holds a symbolic link 'y' "):
        open_dataset(victim)
    (victim / "y").unlink()
    (tmp_path / "y-away").rename(victim / "y")
    (victim / "zarr.json").rename(tmp_path / "zarr.json")
    (victim / "zarr.json").symlink_to(tmp_path / "zarr.json")
    with pytest.raises(ValueError, match=r"holds a symbolic link 'zarr.json' "):
        open_dataset(victim)


def test_a_special_file_in_a_store_is_refused(tmp_path):
    path = write_store(tmp_path / "fifo.zarr")
    (path / "X/c/1/0").unlink()
    os.mkfifo(path / "X/c/1/0")
    with pytest.raises(ValueError, match=r"holds 'X/c/1/0', which is neither a regular file"):
        open_dataset(path)


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_a_chunk_swapped_after_the_open_is_refused_by_the_read(tmp_path, kind):
    path = write_store(tmp_path / "swapped.zarr", codec="none")
    other = write_store(tmp_path / "other.zarr", codec="none")
    dataset = open_dataset(path)
    (path / "X/c/1/0").unlink()
    if kind == "link":
        (path / "X/c/1/0").symlink_to(other / "X/c/1/0")
    else:
        os.mkfifo(path / "X/c/1/0")  # opening it to read would wait for a writer
    cause = "is a symbolic link" if kind == "link" else "is not a regular file"
    with pytest.raises(ChunkReadError, match=rf"chunk 1 of X .*ValueError: .*{cause}"):
        dataset.X.compute(scheduler="sync")


def test_a_linked_store_root_is_fine(tmp_path):
    path = write_store(tmp_path / "real.zarr")
    (tmp_path / "alias.zarr").symlink_to(path, target_is_directory=True)
    dataset = open_dataset(tmp_path / "alias.zarr")
    np.testing.assert_array_equal(dataset.X.compute(scheduler="sync"), features())


# ---------------------------------------------------------------------------------------------
# codecs and layouts the reader does not decode
# ---------------------------------------------------------------------------------------------


def rewrite_features(path: Path, **options) -> None:
    group = zarr.open_group(str(path), mode="r+")
    del group["X"]
    group.create_array("X", data=features(), config={"write_empty_chunks": True}, **options)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"chunks": (CHUNK_ROWS, N_FEATURES), "compressors": (zarr.codecs.GzipCodec(),)},
         r"X in '.*' is compressed with GzipCodec.*dsoftmax reads zstd, Blosc, LZ4 or "
         r"uncompressed chunks"),
        ({"chunks": (CHUNK_ROWS, N_FEATURES),
          "compressors": (zarr.codecs.Crc32cCodec(), zarr.codecs.ZstdCodec())},
         r"X in '.*' uses the codecs .*Crc32cCodec"),
        ({"chunks": (CHUNK_ROWS // 2, N_FEATURES), "shards": (CHUNK_ROWS, N_FEATURES)},
         r"X in '.*' is sharded \(shards \(40, 200\)\)"),
    ],
    ids=["gzip", "two-compressors", "sharded"],
)  # fmt: skip
def test_codecs_the_reader_does_not_decode_are_refused_at_open(tmp_path, options, match):
    path = write_store(tmp_path / "codec.zarr")
    rewrite_features(path, **options)
    with pytest.raises(ValueError, match=match):
        open_dataset(path)


def test_a_zarr_v2_group_is_refused(tmp_path):
    path = tmp_path / "v2.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("X", data=features(), chunks=(CHUNK_ROWS, N_FEATURES))
    group.create_array("y", data=np.arange(N_SAMPLES, dtype=np.int32) % 3, chunks=(CHUNK_ROWS,))
    group.attrs.update(
        {"dsoftmax_format": 1, "classes": [0, 1, 2], "n_classes": 3,
         "dsoftmax_content_sha256": "0" * 64}
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"X in '.*v2\.zarr' is a Zarr v2 array"):
        open_dataset(path)
