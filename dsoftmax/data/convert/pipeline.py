"""One streaming pass from source pieces to Zarr chunks, in parallel, with bounded memory.

A source is cut into *pieces* (a Parquet row group, a block of CSV bytes), each read and
converted by one task: on the workers of a Dask cluster, or on threads of this process when
there is none. The task that converts a piece writes the chunks of ``X`` that lie inside it,
with their digests and value checks; the rows at its edges, which share a chunk with the next
or previous piece, are kept as *fragments* until every piece of that chunk is converted, and a
small task then joins and writes that chunk. Labels are kept as ids into each piece's own
sorted labels (a few bytes a row); once every piece is read, the classes of the whole source
are known and ``y`` is written chunk by chunk. Nothing else stays in memory, and at most
:attr:`~dsoftmax.data.convert.runner.Runner.slots` ``+ 1`` pieces are converted at a time, so
a worker holds about two pieces at most, whatever the size of the source.

The chunks, their bytes and their digests are those :func:`dsoftmax.data.write_dataset` writes
for the same rows: chunks of ``min(chunk_rows, n_rows)`` rows, ``y`` as int32 class ids into
the sorted labels. The store is created first and removed when anything fails; a store it
replaces (``overwrite=True``) is swapped in only once every check passed.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..format import Dataset, content_digest, dataset_attrs
from ..labels import check_classes, encode_labels
from ..open import open_dataset
from ..values import BlockStats, RangeOverflow, block_stats, combine_stats, overflow_problem
from ..write import (
    check_chunk_rows,
    codec_for_features,
    compressors,
    create_row_array,
    write_row_block,
)
from .common import LabelSummary, check_label_values, classes_from, classes_from_text
from .output import StagedOutput
from .runner import Runner, default_client

__all__ = [
    "ConversionPlan",
    "Piece",
    "PieceRows",
    "converted_line",
    "run_conversion",
]

logger = logging.getLogger("dsoftmax")


# ---------------------------------------------------------------------------------------------
# What a source gives and what a piece task returns
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """One unit of a source, read by one task.

    Attributes
    ----------
    path : str
        The file it comes from (for the progress bar's file count).
    n_rows : int or None
        Its rows when known before reading (Parquet footers), else None.
    n_bytes : int
        Its share of the file's bytes (for the progress bar).
    spec : object
        What the source's reader needs to read it (a row group number, a block of bytes).
    """

    path: str
    n_rows: int | None
    n_bytes: int
    spec: Any


@dataclass(frozen=True, eq=False)
class PieceRows:
    """What a source's reader returns for one piece.

    Attributes
    ----------
    X : ndarray of shape (n_rows, n_features)
        In the dataset's feature dtype.
    labels : ndarray of shape (n_rows - n_missing,)
        The labels of the rows that have one.
    n_missing : int
        Rows without a label.
    first_missing : int or None
        Row (within the piece) of the first one.
    where : str
        How messages name the piece.
    label_values : ndarray of shape (n_values,) or None
        When given, ``labels`` are int ids into it: for a reader that factorizes its labels
        faster than :func:`numpy.unique` sorts them (strings).
    overflow : RangeOverflow or None
        Finite source values that ``X``'s dtype cannot hold (infinite in ``X``), rows counted
        within the piece (:func:`~dsoftmax.data.values.cast_features`).
    """

    X: np.ndarray
    labels: np.ndarray
    n_missing: int = 0
    first_missing: int | None = None
    where: str = "the source"
    label_values: np.ndarray | None = None
    overflow: RangeOverflow | None = None


@dataclass(frozen=True, eq=False)
class _ReadPiece:
    """A piece read and converted, not written yet (its first row may not be known)."""

    X: np.ndarray
    summary: LabelSummary
    label_ids: np.ndarray  # ids into summary.unique; empty when labels are missing
    overflow: RangeOverflow | None = None

    @property
    def n_rows(self) -> int:
        return self.summary.n_rows


@dataclass(frozen=True, eq=False)
class _ChunkResult:
    """A chunk of X written: its digest and the value checks of its rows."""

    index: int
    digest: str
    stats: BlockStats


@dataclass(frozen=True, eq=False)
class _PieceSummary:
    """What the client learns of a written piece."""

    summary: LabelSummary
    written: tuple[_ChunkResult, ...]
    overflow: RangeOverflow | None = None


@dataclass(frozen=True, eq=False)
class _PieceOutput:
    """A written piece, left where it was converted: its summary, the rows it shares with
    other pieces' chunks, and its label ids."""

    summary: _PieceSummary
    fragments: dict[int, np.ndarray]
    label_ids: np.ndarray


@dataclass(frozen=True)
class ConversionPlan:
    """How one source is written.

    Attributes
    ----------
    label_column : str
    n_features : int
    dtype : numpy.dtype
        Feature dtype.
    feature_names : list of str
    source : str
        How messages name the source.
    chunk_rows : int
    codec : str
    text_labels : bool
        Whether the labels are read as text (CSV): the classes are then ints when every label
        of the source is a canonical decimal integer, else strings
        (:func:`~dsoftmax.data.convert.common.classes_from_text`).
    """

    label_column: str
    n_features: int
    dtype: np.dtype
    feature_names: list[str]
    source: str
    chunk_rows: int
    codec: str
    text_labels: bool = False


# ---------------------------------------------------------------------------------------------
# Worker tasks (their names show on the Dask dashboard)
# ---------------------------------------------------------------------------------------------


def read_piece(
    reader: Callable[[Piece], PieceRows], piece: Piece, label_column: str
) -> _ReadPiece:
    """Worker task: read and convert one piece; labels become ids into its sorted labels."""
    rows = reader(piece)
    if rows.label_values is None:
        labels = check_label_values(rows.labels, label_column, rows.where)
        unique, inverse = np.unique(labels, return_inverse=True)
    else:
        values = check_label_values(rows.label_values, label_column, rows.where)
        codes, inverse = np.unique(rows.labels, return_inverse=True)
        unique = values[codes]
    n_rows = rows.X.shape[0]
    summary = LabelSummary(n_rows, unique, rows.first_missing, rows.n_missing)
    ids = np.empty(0, np.int32) if rows.n_missing else inverse.astype(np.int32).reshape(-1)
    return _ReadPiece(rows.X, summary, ids, rows.overflow)


def _chunk_stats(X_chunk: np.ndarray, index: int, row_start: int) -> BlockStats:
    # Class ids are made from the labels by the conversion itself: only X can be wrong.
    no_labels = np.zeros(X_chunk.shape[0], dtype=np.int32)
    return block_stats(X_chunk, no_labels, None, 1, index, row_start)


def _write_chunk(target: Any, X_chunk: np.ndarray, index: int, row_start: int) -> _ChunkResult:
    digest = write_row_block({"X": target}, {"X": X_chunk}, row_start)["X"]
    return _ChunkResult(index, digest, _chunk_stats(X_chunk, index, row_start))


def write_piece(
    piece: _ReadPiece, target: Any, row_start: int, chunk_rows: int, n_total: int | None
) -> _PieceOutput:
    """Worker task: write the chunks of X that lie inside the piece, and keep its edges.

    ``n_total`` is the dataset's row count when known; without it, the chunk holding the last
    rows of the piece is kept as a fragment, since it may be the dataset's last.
    """
    n_rows = piece.n_rows
    end = row_start + n_rows
    written, fragments = [], {}
    for index in range(row_start // chunk_rows, -(-end // chunk_rows)):
        chunk_start = index * chunk_rows
        chunk_end = chunk_start + chunk_rows
        if n_total is not None:
            chunk_end = min(chunk_end, n_total)
        lo, hi = max(chunk_start, row_start), min(chunk_end, end)
        rows = piece.X[lo - row_start : hi - row_start]
        if lo == chunk_start and hi == chunk_end:
            written.append(_write_chunk(target, rows, index, chunk_start))
        else:
            # Copied: a view would hold on to the piece's whole buffer until the chunk is full.
            fragments[index] = np.array(rows)
    summary = _PieceSummary(piece.summary, tuple(written), piece.overflow)
    return _PieceOutput(summary, fragments, piece.label_ids)


def convert_piece(
    reader: Callable[[Piece], PieceRows],
    piece: Piece,
    label_column: str,
    target: Any,
    row_start: int,
    chunk_rows: int,
    n_total: int | None,
) -> _PieceOutput:
    """Worker task: read, convert and write one piece whose first row is known."""
    read = read_piece(reader, piece, label_column)
    return write_piece(read, target, row_start, chunk_rows, n_total)


def write_joined_chunk(
    target: Any, index: int, row_start: int, *fragments: np.ndarray
) -> _ChunkResult:
    """Worker task: one chunk of X from the fragments of the pieces it spans, in row order."""
    return _write_chunk(target, np.concatenate(fragments), index, row_start)


def write_label_chunk(
    target: Any, row_start: int, *parts: tuple[np.ndarray, np.ndarray]
) -> str:
    """Worker task: one chunk of y from ``(ids of a piece's rows, class id of each of its
    labels)`` pairs, in row order; returns its digest."""
    ids = np.concatenate([class_ids[local] for local, class_ids in parts])
    return write_row_block({"y": target}, {"y": ids}, row_start)["y"]


def piece_summary(output: _PieceOutput) -> _PieceSummary:
    return output.summary


def piece_fragment(output: _PieceOutput, index: int) -> np.ndarray:
    return output.fragments[index]


def piece_label_ids(output: _PieceOutput) -> np.ndarray:
    return output.label_ids


def read_row_count(piece: _ReadPiece) -> int:
    return piece.n_rows


def first_rows(piece: _ReadPiece, n_rows: int) -> np.ndarray:
    """The piece's first rows of X, which ``codec="auto"`` decides from."""
    return np.array(piece.X[:n_rows])


def _identity(value: Any) -> Any:
    return value


# ---------------------------------------------------------------------------------------------
# The pass
# ---------------------------------------------------------------------------------------------


@dataclass
class _Progress:
    """The progress bar of a conversion: input bytes, with files and rows done."""

    pieces: Sequence[Piece]
    show: bool
    started: float = field(default_factory=time.perf_counter)
    rows: int = 0

    def __post_init__(self) -> None:
        from tqdm.auto import tqdm

        self._left = defaultdict(int)
        for piece in self.pieces:
            self._left[piece.path] += 1
        self.n_files = len(self._left)
        self.files_done = 0
        self.n_bytes = sum(piece.n_bytes for piece in self.pieces)
        self.bar = tqdm(
            total=self.n_bytes,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="converting",
            leave=False,
            disable=None if self.show else True,
            file=sys.stderr,
        )

    def piece_done(self, piece: Piece, n_rows: int) -> None:
        self.rows += n_rows
        self._left[piece.path] -= 1
        self.files_done += self._left[piece.path] == 0
        self.bar.set_postfix_str(
            f"files {self.files_done}/{self.n_files}, {self.rows:,} rows", refresh=False
        )
        self.bar.update(piece.n_bytes)

    def close(self, what: str) -> None:
        shown = not self.bar.disable
        self.bar.close()
        line = converted_line(self.rows, self.n_bytes, self.n_files, what, self.started)
        if shown:
            print(line, file=sys.stderr)
        else:
            logger.info("%s", line)


def converted_line(n_rows: int, n_bytes: int, n_files: int, what: str, started: float) -> str:
    """The closing line of a conversion that started at ``time.perf_counter()`` ``started``:
    rows, input bytes and files, where it ran (``what``), and the rates."""
    from dask.utils import format_bytes

    elapsed = max(time.perf_counter() - started, 1e-9)
    return (
        f"dsoftmax: converted {n_rows:,} rows ({format_bytes(n_bytes)} in "
        f"{n_files} file{'s' if n_files > 1 else ''}) {what} in {elapsed:.1f} s: "
        f"{n_rows / elapsed:,.0f} rows/s, {format_bytes(int(n_bytes / elapsed))}/s"
    )


class _Pass:
    """The coordinator of one conversion: submits the pieces in order, a few at a time, joins
    the chunks they share, then writes the labels."""

    def __init__(
        self,
        runner: Runner,
        reader: Callable[[Piece], PieceRows],
        pieces: Sequence[Piece],
        plan: ConversionPlan,
        output: StagedOutput,
        progress: _Progress,
    ) -> None:
        self.runner, self.reader, self.pieces, self.plan = runner, reader, pieces, plan
        self.output, self.progress = output, progress
        self.known = all(piece.n_rows is not None for piece in pieces)
        self.rows: list[int | None] = [piece.n_rows for piece in pieces]
        self.starts: list[int] = []  # first rows of a prefix of the pieces
        if self.known:
            self.starts = [int(s) for s in np.cumsum([0, *self.rows[:-1]])]
        self.chunk_rows = 0
        self.group: Any = None
        self.X: Any = None
        self.running: dict[Any, tuple[str, int]] = {}  # handle → (task kind, piece or chunk)
        self.reads: dict[int, Any] = {}  # pieces read, not written yet
        self.label_ids: dict[int, Any] = {}  # piece → its label ids, where it was converted
        self.summaries: dict[int, _PieceSummary] = {}
        self.chunks: dict[int, _ChunkResult] = {}  # chunks of X written
        self.fragments: dict[int, list[tuple[int, Any]]] = defaultdict(list)  # chunk → parts
        self.covered: dict[int, int] = defaultdict(int)  # chunk → its rows in fragments

    # -- rows and chunks ------------------------------------------------------------------

    @property
    def all_written(self) -> bool:
        return len(self.summaries) == len(self.pieces)

    def _known_rows(self) -> int:
        if not self.starts:
            return 0
        last = len(self.starts) - 1
        return self.starts[last] + self.rows[last]

    def _chunk_size(self, chunk: int) -> int:
        """Rows of ``chunk``; a full chunk's worth until the dataset's end is known."""
        if self.known or self.all_written:
            return min(self.chunk_rows, self._known_rows() - chunk * self.chunk_rows)
        return self.chunk_rows

    def _create_features(self, n_rows: int) -> None:
        """Create X with chunks of ``min(chunk_rows, n_rows)`` rows, as
        :func:`~dsoftmax.data.write_dataset` makes them: for a source of unknown length,
        once a chunk's worth of rows is read, or every row; with ``codec="auto"``, once the
        first piece that has rows is read."""
        if n_rows == 0:
            raise ValueError(f"{self.plan.source} has no rows; there is nothing to convert.")
        self.chunk_rows = min(self.plan.chunk_rows, n_rows)
        self.group = self.output.group()
        self.X = create_row_array(
            self.group, "X", (n_rows, self.plan.n_features), self.plan.dtype, self.chunk_rows,
            compressors(self._features_codec()),
        )  # fmt: skip

    def _first_piece_with_rows(self) -> int | None:
        """The first piece that has rows, when every piece before it is known to have none."""
        for index, n_rows in enumerate(self.rows):
            if n_rows is None:
                return None
            if n_rows:
                return index
        return None

    def _sample_read(self) -> bool:
        """Whether X's codec can be chosen: it is given, or the first piece with rows is read."""
        if self.plan.codec != "auto":
            return True
        return self._first_piece_with_rows() in self.reads

    def _features_codec(self) -> str:
        def sample(n_rows: int) -> np.ndarray:  # up to n_rows of the first piece with rows
            piece = self.reads[self._first_piece_with_rows()]
            return self.runner.fetch(first_rows, piece, n_rows)

        shape = (self._known_rows(), self.plan.n_features)
        return codec_for_features(self.plan.codec, shape, self.plan.dtype.itemsize, sample)

    # -- submitting -----------------------------------------------------------------------

    def _busy(self) -> int:
        """Pieces in memory or being converted. Pieces read without rows hold nothing, and
        pieces of a source of unknown length read before X exists hold less than a chunk's
        worth of rows in all: they are left out."""
        converting = sum(kind != "join" for kind, _ in self.running.values())
        if self.X is None and not self.known:
            return converting
        return converting + sum(1 for index in self.reads if self.rows[index])

    def _submit_piece(self, index: int) -> None:
        piece = self.pieces[index]
        if self.known and self.X is not None:
            handle = self.runner.submit(
                convert_piece, self.reader, piece, self.plan.label_column, self.X,
                self.starts[index], self.chunk_rows, self._known_rows(),
            )  # fmt: skip
            self.running[handle] = ("piece", index)
        else:
            handle = self.runner.submit(read_piece, self.reader, piece, self.plan.label_column)
            self.running[handle] = ("read", index)

    def _write_reads(self, all_read: bool) -> None:
        """Write the pieces read whose first row is known (every earlier piece is read)."""
        while len(self.starts) < len(self.pieces) and self.rows[len(self.starts)] is not None:
            self.starts.append(self._known_rows())
        if self.X is None:
            enough = self.known or all_read or self._known_rows() >= self.plan.chunk_rows
            if not (enough and (self._known_rows() == 0 or self._sample_read())):
                return
            self._create_features(self._known_rows())
        if self.X.shape[0] < self._known_rows():
            self.X.resize((self._known_rows(), self.plan.n_features))
        n_total = self._known_rows() if all_read or self.known else None
        for index in sorted(i for i in self.reads if i < len(self.starts)):
            read = self.reads.pop(index)
            handle = self.runner.submit(
                write_piece, read, self.X, self.starts[index], self.chunk_rows, n_total
            )
            self.running[handle] = ("piece", index)
            self.runner.release([read])

    def _join_ready_chunks(self) -> None:
        """Write every chunk whose rows are all in fragments of written pieces."""
        for chunk in sorted(self.fragments):
            if self.covered[chunk] < self._chunk_size(chunk):
                continue
            parts = [handle for _, handle in sorted(self.fragments.pop(chunk))]
            start = chunk * self.chunk_rows
            handle = self.runner.submit(write_joined_chunk, self.X, chunk, start, *parts)
            self.running[handle] = ("join", chunk)
            self.runner.release(parts)

    # -- the pass ---------------------------------------------------------------------------

    def run(self) -> tuple[list[dict[str, str]], np.ndarray]:
        """Convert every piece; return the chunks' digests and the classes."""
        if self.known and (self.plan.codec != "auto" or self._known_rows() == 0):
            self._create_features(self._known_rows())
        window = self.runner.slots + 1
        next_piece = 0
        while next_piece < len(self.pieces) or self.running or self.reads:
            while next_piece < len(self.pieces) and self._busy() < window:
                self._submit_piece(next_piece)
                next_piece += 1
            for handle in self.runner.wait_any(list(self.running)):
                self._finished(handle)
            if self.reads or self.X is None:
                reading = any(kind == "read" for kind, _ in self.running.values())
                self._write_reads(all_read=next_piece == len(self.pieces) and not reading)
            self._join_ready_chunks()
        return self._finish()

    def _finished(self, handle: Any) -> None:
        kind, index = self.running.pop(handle)
        if kind == "read":
            if self.rows[index] is None:
                self.rows[index] = self.runner.fetch(read_row_count, handle)
            self.reads[index] = handle
        elif kind == "piece":
            summary = self.runner.fetch(piece_summary, handle)
            self._refuse_overflow(index, summary.overflow)
            self.summaries[index] = summary
            for chunk in summary.written:
                self.chunks[chunk.index] = chunk
            self._note_fragments(index, handle)
            self.label_ids[index] = self.runner.derive(piece_label_ids, handle)
            # The piece's output goes; its fragments and label ids stay, as results of their own.
            self.runner.release([handle])
            self.progress.piece_done(self.pieces[index], summary.summary.n_rows)
        else:
            self.chunks[index] = self.runner.fetch(_identity, handle)
            self.runner.release([handle])

    def _refuse_overflow(self, index: int, overflow: RangeOverflow | None) -> None:
        """Refuse finite source values beyond the feature dtype's range once a piece shows some."""
        if overflow is not None:
            moved = overflow.moved(rows=self.starts[index])
            problem = overflow_problem(moved, self.plan.dtype, self.plan.feature_names)
            raise ValueError(f"cannot convert {self.plan.source}: X in the input {problem}")

    def _note_fragments(self, index: int, output: Any) -> None:
        start, n_rows = self.starts[index], self.rows[index]
        if n_rows == 0:
            return
        for chunk in range(start // self.chunk_rows, (start + n_rows - 1) // self.chunk_rows + 1):
            if chunk in self.chunks:
                continue
            lo = max(start, chunk * self.chunk_rows)
            hi = min(start + n_rows, (chunk + 1) * self.chunk_rows)
            part = self.runner.derive(piece_fragment, output, chunk)
            self.fragments[chunk].append((index, part))
            self.covered[chunk] += hi - lo

    def _pieces_of_chunk(self, chunk: int) -> list[tuple[int, int, int]]:
        """``(piece, first row, end row)`` within each piece of ``chunk``'s rows."""
        lo = chunk * self.chunk_rows
        hi = lo + self._chunk_size(chunk)
        found = []
        for index, (start, n_rows) in enumerate(zip(self.starts, self.rows, strict=True)):
            if n_rows and start < hi and start + n_rows > lo:
                found.append((index, max(lo, start) - start, min(hi, start + n_rows) - start))
        return found

    def _finish(self) -> tuple[list[dict[str, str]], np.ndarray]:
        ordered = [self.summaries[i].summary for i in range(len(self.pieces))]
        classes = classes_from(ordered, self.plan.label_column, self.plan.source)
        if self.plan.text_labels:
            classes = classes_from_text(classes)
        n_chunks = -(-self._known_rows() // self.chunk_rows)
        try:
            classes = check_classes(np.asarray(classes), "classes")
            combine_stats([self.chunks[i].stats for i in range(n_chunks)], "the input")
        except ValueError as error:
            raise ValueError(f"cannot convert {self.plan.source}: {error}") from error
        label_digests = self._write_labels(classes, n_chunks)
        digests = [{"X": self.chunks[i].digest, "y": label_digests[i]} for i in range(n_chunks)]
        return digests, classes

    def _write_labels(self, classes: np.ndarray, n_chunks: int) -> list[str]:
        y = create_row_array(
            self.group, "y", (self._known_rows(),), np.dtype(np.int32), self.chunk_rows,
            compressors(self.plan.codec),
        )  # fmt: skip
        class_ids = {
            index: encode_labels(self._class_values(summary.summary.unique, classes), classes)
            for index, summary in self.summaries.items()
        }
        handles = []
        for chunk in range(n_chunks):
            parts = [
                self.runner.derive(_label_part, self.label_ids[i], lo, hi, class_ids[i])
                for i, lo, hi in self._pieces_of_chunk(chunk)
            ]
            handles.append(
                self.runner.submit(write_label_chunk, y, chunk * self.chunk_rows, *parts)
            )
        return [self.runner.fetch(_identity, handle) for handle in handles]

    def _class_values(self, unique: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """A piece's labels as the classes hold them: text labels read as ints when the
        classes are ints."""
        if self.plan.text_labels and classes.dtype.kind == "i":
            return unique.astype(np.int64)
        return unique

    def cancel(self) -> None:
        """Let every result go."""
        parts = [handle for chunk in self.fragments.values() for _, handle in chunk]
        self.runner.cancel([*self.running, *self.reads.values(), *self.label_ids.values(), *parts])


def _label_part(
    label_ids: np.ndarray, lo: int, hi: int, class_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``lo:hi`` of a piece's label ids, with the class id of each of its labels."""
    return label_ids[lo:hi], class_ids


def run_conversion(
    reader: Callable[[Piece], PieceRows],
    pieces: Sequence[Piece],
    plan: ConversionPlan,
    url: str,
    *,
    storage_options: dict | None,
    overwrite: bool,
    client: Any = None,
    progress: bool = False,
) -> Dataset:
    """Convert ``pieces`` of a source into the dataset at ``url`` in one streaming pass.

    Parameters
    ----------
    reader : callable
        ``reader(piece) -> PieceRows``; a module-level function (or a partial of one), as it
        travels to the workers.
    pieces : sequence of Piece
        In row order; empty pieces are allowed.
    plan : ConversionPlan
    url : str
    storage_options : dict or None
    overwrite : bool
    client : distributed.Client, optional
        Convert on this cluster; default: the Dask default scheduler's client when it is one,
        else threads of this process.
    progress : bool
        A progress bar (input bytes, files, rows) on stderr when it is a terminal, and a
        closing line with the rate.

    Returns
    -------
    Dataset
    """
    check_chunk_rows(plan.chunk_rows)
    compressors(plan.codec)
    output = StagedOutput(url, storage_options, overwrite)
    runner = Runner(client if client is not None else default_client())
    logger.info(
        "dsoftmax: converting %s (%d pieces) on %s", plan.source, len(pieces), runner.where
    )
    bar = _Progress(pieces, progress)
    conversion = _Pass(runner, reader, pieces, plan, output, bar)
    try:
        digests, classes = conversion.run()
        conversion.group.attrs.update(dataset_attrs(classes, content_digest(digests)))
        # Outside the fingerprint: naming the columns does not change the data.
        conversion.group.attrs["feature_names"] = plan.feature_names
        conversion.cancel()
        output.commit()
    except BaseException:
        conversion.cancel()
        bar.bar.close()
        runner.close()
        output.discard()
        raise
    runner.close()
    bar.close(f"on {runner.where}")
    return open_dataset(url, storage_options=storage_options)
