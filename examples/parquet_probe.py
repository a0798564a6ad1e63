"""A linear probe on embeddings stored in Parquet, with string labels.

Makes synthetic "embeddings" (vectors around one centroid per class, plus noise) labelled "bird",
"cat", "dog" and "fish", writes them as Parquet files with the embedding as a list column, as
embedding pipelines do, converts them into a Zarr dataset with :func:`dsoftmax.convert_parquet`,
trains on a local cluster and predicts the labels of held-out rows, read from their Parquet files
as they are with :func:`dsoftmax.open_parquet`: strings, as in the files.

    python examples/parquet_probe.py [--n-samples 20000] [--dim 64] [--noise 3.0] [--workdir DIR]

The same conversion from the command line:
``dsoftmax convert 'DIR/train/*.parquet' --out train.zarr --label-column label
--embedding-column embedding``, and the training with the report on the held-out files:
``dsoftmax train train.zarr --model model --test DIR/test --label-column label
--embedding-column embedding``.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from dsoftmax import SoftmaxRegression, convert_parquet, open_parquet
from dsoftmax.cluster import describe, get_client

CLASSES = ["bird", "cat", "dog", "fish"]


def write_embeddings(
    folder: Path, centroids: np.ndarray, n_rows: int, noise: float, seed: int
) -> None:
    """Write ``n_rows`` labelled embeddings around ``centroids`` as two Parquet files."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(len(CLASSES), size=n_rows)
    noise_rows = noise * rng.standard_normal((n_rows, centroids.shape[1]))
    vectors = (centroids[ids] + noise_rows).astype(np.float32)
    frame = pd.DataFrame({"embedding": list(vectors), "label": np.array(CLASSES)[ids]})
    folder.mkdir(parents=True, exist_ok=True)
    half = n_rows // 2
    for part, rows in enumerate((frame[:half], frame[half:])):
        rows.to_parquet(folder / f"part-{part}.parquet", row_group_size=4096, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=20_000, help="training rows")
    parser.add_argument("--dim", type=int, default=64, help="embedding length")
    parser.add_argument("--noise", type=float, default=3.0, help="noise around the centroids")
    parser.add_argument("--workdir", type=Path, help="where to write the files (default: temp)")
    args = parser.parse_args()
    # Absolute: the cluster's workers read and write these paths.
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="dsoftmax-example-"))).resolve()

    client = get_client()  # a local cluster on 127.0.0.1, closed at exit
    print(f"cluster: {describe(client)}")
    centroids = np.random.default_rng(0).standard_normal((len(CLASSES), args.dim))
    write_embeddings(workdir / "train", centroids, args.n_samples, args.noise, seed=1)
    write_embeddings(workdir / "test", centroids, max(2, args.n_samples // 4), args.noise, seed=2)

    # One task per row group; the list column becomes the feature matrix X.
    train = convert_parquet(
        workdir / "train",
        workdir / "train.zarr",
        label_column="label",
        embedding_column="embedding",
        overwrite=True,
    )
    print(f"converted: {train.n_samples} x {train.n_features}, classes {train.classes.tolist()}")

    model = SoftmaxRegression(l2=1e-4, solver="lbfgs").fit(train)

    # Held-out rows read from Parquet as they are, a block per row group (read once: no need
    # to convert them); predictions are the original strings.
    test = open_parquet(workdir / "test", label_column="label", embedding_column="embedding")
    vectors, labels = test.X.compute(), test.classes[test.y.compute()]
    predicted = model.predict(test).compute()
    accuracy = model.score(test)
    # The best any classifier can do here (classes equally likely, isotropic noise): the
    # nearest true centroid.
    distances = ((vectors[:, None, :] - centroids[None]) ** 2).sum(axis=2)
    best = float(np.mean(np.array(CLASSES)[distances.argmin(axis=1)] == labels))
    print(f"first test rows: true {labels[:5].tolist()}, predicted {predicted[:5].tolist()}")
    print(
        f"result: accuracy={accuracy:.4f} nearest_centroid_accuracy={best:.4f} "
        f"classes={','.join(map(str, model.classes_))} predicted_sample={','.join(predicted[:8])}"
    )


if __name__ == "__main__":  # worker processes are spawned and import __main__
    main()
