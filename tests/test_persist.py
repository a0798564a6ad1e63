"""Hostile model files: each is refused with a ModelFileError that names the problem, quickly and
at bounded memory, and nothing in a file chooses where code connects."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from hostile import edit_manifest, npy_bytes, replace_array_file
from sklearn.exceptions import ConvergenceWarning

from dsoftmax import SoftmaxRegression
from dsoftmax.persist import (
    LOADABLE_HYPER_PARAMETERS,
    UNSAVED_HYPER_PARAMETERS,
    ModelFileError,
)
from dsoftmax.persist.manifest import MAX_MANIFEST_BYTES


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "model"
    SoftmaxRegression(l2=1e-3).fit(np.eye(4), [0, 1, 0, 1]).save(str(path))
    return path


#: A hostile file is refused in well under a second, with at most a few MB allocated.
REFUSAL_SECONDS = 0.5
REFUSAL_BYTES = 8 * 2**20


def _refusal_cost(path: Path, match: str) -> tuple[float, int]:
    """Load ``path``, which must raise a ModelFileError matching ``match``; return the seconds
    it took and the peak bytes Python allocated meanwhile."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ModelFileError, match=match):
            SoftmaxRegression.load(str(path))
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return elapsed, peak


# ------------------------------------------------------------------ what a file may set
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("client", "tcp://127.0.0.1:{port}"),
        ("storage_options", {"client_kwargs": {"endpoint_url": "http://127.0.0.1:{port}"}}),
        ("checkpoint_dir", "/tmp/somewhere-else"),
    ],
)
def test_a_model_file_cannot_choose_where_later_fits_connect(model_dir, name, value):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        planted = json.loads(json.dumps(value).replace("{port}", str(port)))
        edit_manifest(model_dir, lambda manifest: manifest["params"].update({name: planted}))
        with pytest.raises(ModelFileError, match=rf"sets '{name}', which a model file may never"):
            SoftmaxRegression.load(str(model_dir))
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected to the address the file chose


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("l2", "0.1", r"hyper-parameter 'l2' of .* must be a number, not a string '0\.1'"),
        ("l2", -1.0, r"holds a refused setting: l2 must be in \[0, inf\)"),
        ("solver", "newton", r"holds a refused setting: solver must be one of"),
        ("max_iter", True, r"'max_iter' of .* must be an integer, not true or false True"),
        ("fit_intercept", 1, r"'fit_intercept' of .* must be true or false, not an integer 1"),
        ("class_weight", {"0": 2.0}, r"'class_weight' of .* must be null or a string"),
        ("hold_data", "disk", r"holds a refused setting: hold_data must be one of"),
        ("chunk_rows", "all", r"holds a refused setting: chunk_rows must be 'auto' or"),
        ("n_jobs", 4, r"sets 'n_jobs', which is not a hyper-parameter a model file may set"),
    ],
)
def test_hyper_parameters_in_a_model_file_are_typed_and_checked(model_dir, name, value, message):
    edit_manifest(model_dir, lambda manifest: manifest["params"].update({name: value}))
    with pytest.raises(ModelFileError, match=message):
        SoftmaxRegression.load(str(model_dir))


def test_every_constructor_parameter_is_either_loadable_or_never_saved(tmp_path):
    names = set(SoftmaxRegression().get_params())
    assert not set(LOADABLE_HYPER_PARAMETERS) & set(UNSAVED_HYPER_PARAMETERS)
    assert names == set(LOADABLE_HYPER_PARAMETERS) | set(UNSAVED_HYPER_PARAMETERS)

    settings = dict(
        l2=0.5, fit_intercept=False, solver="adam", batch_size=7, learning_rate=0.2,
        lr_schedule="cosine", momentum=0.5, nesterov=True, max_iter=3, tol=0.01,
        early_stopping=True, validation_fraction=0.3, n_iter_no_change=2,
        class_weight="balanced", random_state=4, shuffle_window=50, warm_start=True, chunk_rows=99,
        hold_data="stream", checkpoint_every=5, keep_checkpoints=2, verbose=0,
    )  # fmt: skip
    assert set(settings) == set(LOADABLE_HYPER_PARAMETERS)
    model = SoftmaxRegression(**settings, checkpoint_dir=str(tmp_path / "ckpt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(np.eye(6), [0, 1, 2, 0, 1, 2])
    model.save(str(tmp_path / "model"))
    loaded = SoftmaxRegression.load(str(tmp_path / "model"))
    assert loaded.get_params() == {
        **settings,
        "client": None,
        "storage_options": None,
        "checkpoint_dir": None,
    }


# ------------------------------------------------------------- what loading never follows
def test_an_array_file_linked_to_a_file_outside_the_model_is_refused(model_dir, tmp_path):
    outside = tmp_path / "elsewhere.npy"
    outside.write_bytes(npy_bytes(np.full((2, 4), 7.0)))
    (model_dir / "coef.npy").unlink()
    (model_dir / "coef.npy").symlink_to(outside)
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    edit_manifest(model_dir, lambda manifest: manifest["arrays"]["coef"].update(sha256=digest))
    with pytest.raises(ModelFileError, match=r"coef\.npy in '.*model' is a symbolic link"):
        SoftmaxRegression.load(str(model_dir))


def test_a_users_own_link_to_a_model_directory_is_followed(tmp_path):
    real = tmp_path / "models" / "v1"
    link = tmp_path / "latest"
    first = SoftmaxRegression().fit(np.eye(4), [0, 1, 0, 1])
    first.save(str(real))
    link.symlink_to(real, target_is_directory=True)
    np.testing.assert_array_equal(SoftmaxRegression.load(str(link)).coef_, first.coef_)

    second = SoftmaxRegression(l2=1.0).fit(np.eye(4), [0, 1, 1, 0])
    second.save(str(link))  # replaces the directory the link points to; the link stays
    assert link.is_symlink()
    np.testing.assert_array_equal(SoftmaxRegression.load(str(real)).coef_, second.coef_)
    assert sorted(os.listdir(real.parent)) == ["v1"]


def _make_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _link_to_dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def _make_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _grow_to_2_gib(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(2 * 2**30)  # sparse: no disk used


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("file_name", "hazard", "message"),
    [
        ("manifest.json", _link_to_dev_zero, r"manifest\.json in .* is a symbolic link"),
        ("coef.npy", _link_to_dev_zero, r"coef\.npy in .* is a symbolic link"),
        ("manifest.json", _make_fifo, r"manifest\.json in .* is a FIFO \(named pipe\)"),
        ("coef.npy", _make_fifo, r"coef\.npy in .* is a FIFO \(named pipe\)"),
        ("coef.npy", _make_directory, r"coef\.npy in .* is a directory, not a regular file"),
        (
            "manifest.json",
            _grow_to_2_gib,
            rf"manifest\.json in .* holds 2147483648 bytes, more than the {MAX_MANIFEST_BYTES}",
        ),
        ("coef.npy", _grow_to_2_gib, r"coef\.npy in .* holds 2147483648 bytes, more than the"),
    ],
    ids=[
        "manifest-zero",
        "coef-zero",
        "manifest-fifo",
        "coef-fifo",
        "coef-dir",
        "manifest-2GiB",
        "coef-2GiB",
    ],
)
def test_files_that_would_hang_or_read_forever_are_refused_at_once(
    model_dir, file_name, hazard, message
):
    hazard(model_dir / file_name)
    elapsed, peak = _refusal_cost(model_dir, message)
    assert elapsed < REFUSAL_SECONDS, elapsed
    assert peak < REFUSAL_BYTES, peak


@pytest.mark.parametrize("manifest_too", [False, True], ids=["header-only", "with-manifest"])
def test_an_npy_header_claiming_728_tib_is_refused_before_any_allocation(model_dir, manifest_too):
    huge = (10_000_000, 10_000_000)  # 8e14 bytes of float64, 728 TiB
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        stream, {"descr": "<f8", "fortran_order": False, "shape": huge}
    )
    data = stream.getvalue() + np.zeros(8).tobytes()
    entry = {"shape": list(huge)} if manifest_too else {}
    replace_array_file(model_dir, "coef", data, **entry)
    message = (
        r"holds 64 bytes of data after its header, which declares 800000000000000"
        if manifest_too
        else r"has shape \(10000000, 10000000\), manifest says \[2, 4\]"
    )
    elapsed, peak = _refusal_cost(model_dir, message)
    assert elapsed < REFUSAL_SECONDS, elapsed
    assert peak < REFUSAL_BYTES, peak


@pytest.mark.parametrize("depth", [40, 200_000])
def test_a_deeply_nested_manifest_is_refused(model_dir, depth):
    (model_dir / "manifest.json").write_text('{"a": ' * depth + "1" + "}" * depth)
    elapsed, peak = _refusal_cost(model_dir, r"nests objects and lists deeper than 32 levels")
    assert elapsed < REFUSAL_SECONDS, elapsed
    assert peak < REFUSAL_BYTES, peak


# ------------------------------------------------ every damage is a ModelFileError, by name
def _set_array_entry(**entry):
    return lambda manifest: manifest["arrays"]["coef"].update(entry)


def _set(key, value):
    return lambda manifest: manifest.update({key: value})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set_array_entry(file=""), r"array 'coef' of .* names another file than its own: ''"),
        (_set_array_entry(file="coef\x00.npy"), r"names another file than its own"),
        (_set_array_entry(file="../coef.npy"), r"names a file outside the model: '\.\./coef"),
        (_set_array_entry(file="intercept.npy"), r"names another file than its own"),
        (_set_array_entry(shape="2x4"), r"'shape' in the entry of array 'coef' .* a list"),
        (_set_array_entry(shape=[2, -4]), r"each dimension .* non-negative integer, not -4"),
        (_set_array_entry(dtype=5), r"'dtype' in the entry of array 'coef' .* must be a string"),
        (_set_array_entry(dtype="|O"), r"has dtype '\|O'; a model file holds plain numbers"),
        (_set_array_entry(dtype="<f8,<i4"), r"a model file holds plain numbers only"),
        (_set_array_entry(sha256=None), r"'sha256' in the entry .* must be a string, not null"),
        (_set("arrays", []), r"'arrays' in the manifest of .* must be an object, not a list"),
        (_set("classes", 5), r"'classes' in the manifest .* must be a list, not an integer 5"),
        (_set("classes", [[0], [1]]), r"a class in the manifest .* must be a string or"),
        (_set("classes_dtype", "|O8"), r"'classes_dtype' in the manifest .* not a label dtype"),
        (_set("n_features_in", "4"), r"'n_features_in' in the manifest .* must be an integer"),
        (_set("n_features_in", 5), r"coef has shape \(2, 4\) .* manifest says 2 classes and 5"),
        (_set("params", []), r"'params' in the manifest .* must be an object, not a list"),
        (_set("loss_curve", ["low"]), r"a loss in the manifest .* must be a number"),
        (_set("version", True), r"has model format version True"),
        (_set("format", None), r"is not a dsoftmax model \(its format is not"),
        (lambda manifest: manifest.pop("classes_dtype"), r"has no 'classes_dtype'"),
        (lambda manifest: manifest["arrays"].pop("intercept"), r"a model holds 'coef' and"),
    ],
)
def test_damaged_manifests_raise_model_file_errors(model_dir, change, message):
    edit_manifest(model_dir, change)
    with pytest.raises(ModelFileError, match=message):
        SoftmaxRegression.load(str(model_dir))


def test_an_npz_disguised_as_npy_and_a_non_object_manifest_are_model_file_errors(model_dir):
    buffer = io.BytesIO()
    np.savez(buffer, coef=np.zeros((2, 4)))
    replace_array_file(model_dir, "coef", buffer.getvalue())
    with pytest.raises(ModelFileError, match=r"not a plain numeric array: .*magic string"):
        SoftmaxRegression.load(str(model_dir))
    (model_dir / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ModelFileError, match=r"the manifest of .* is a list \[1, 2\], not an"):
        SoftmaxRegression.load(str(model_dir))
    (model_dir / "manifest.json").write_bytes(b'{"format": "\xff"}')
    with pytest.raises(ModelFileError, match=r"is not valid JSON: 'utf-8' codec"):
        SoftmaxRegression.load(str(model_dir))


def test_a_missing_model_or_array_file_is_named(model_dir, tmp_path):
    with pytest.raises(ModelFileError, match=r"'.*nowhere' is not a dsoftmax model: manifest"):
        SoftmaxRegression.load(str(tmp_path / "nowhere"))
    (model_dir / "intercept.npy").unlink()
    with pytest.raises(ModelFileError, match=r"array 'intercept' of .*: intercept\.npy is miss"):
        SoftmaxRegression.load(str(model_dir))


# ------------------------------------------------------------------------- object stores
@pytest.mark.s3
def test_object_store_reads_are_bounded_by_the_listed_sizes(s3_storage_options):
    import fsspec

    base, storage_options = s3_storage_options
    url = f"{base}/model"
    model = SoftmaxRegression().fit(np.eye(4), [0, 1, 0, 1])
    model.save(url, storage_options=storage_options)
    fs, root = fsspec.url_to_fs(url, **storage_options)
    manifest = fs.cat_file(f"{root}/manifest.json")

    fs.pipe_file(f"{root}/manifest.json", b" " * (MAX_MANIFEST_BYTES + 1))
    started = time.perf_counter()
    with pytest.raises(ModelFileError, match=r"manifest\.json in .* holds 16777217 bytes, more"):
        SoftmaxRegression.load(url, storage_options=storage_options)
    assert time.perf_counter() - started < 1.0

    fs.pipe_file(f"{root}/manifest.json", manifest)
    fs.pipe_file(f"{root}/coef.npy", b"\0" * 2**20)
    with pytest.raises(ModelFileError, match=r"coef\.npy in .* holds 1048576 bytes, more than"):
        SoftmaxRegression.load(url, storage_options=storage_options)
    fs.pipe_file(f"{root}/coef.npy", b"")
    fs.invalidate_cache()
    with pytest.raises(ModelFileError, match=r"array 'coef' of .* fails its checksum"):
        SoftmaxRegression.load(url, storage_options=storage_options)
