"""Classify raw text: hash words into sparse features, convert, train on a local cluster.

Makes a seeded corpus of short documents on four topics (sports, cooking, space, finance:
common words with a share of each topic's words), hashes it with scikit-learn's
``HashingVectorizer`` into 2**18 sparse columns, writes it as an svmlight file, converts that
with ``dsoftmax convert``'s library call into a sparse dataset (row blocks of CSR, never
densified), fits L-BFGS with the blocks held by local worker processes, and evaluates on
held-out documents.

    python examples/text_classifier.py [--n-docs 8000] [--n-features 262144] [--workdir DIR]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import dump_svmlight_file
from sklearn.feature_extraction.text import HashingVectorizer

from dsoftmax import SoftmaxRegression, open_dataset
from dsoftmax.cluster import describe, get_client
from dsoftmax.data.convert import convert_svmlight
from dsoftmax.evaluation import evaluate_model, format_report

TOPICS = {
    "sports": "match goal team coach season league score player win referee stadium cup "
    "final striker keeper tournament",
    "cooking": "recipe oven flour butter sauce garlic simmer bake onion salt pepper dough "
    "kitchen roast taste spoon",
    "space": "orbit rocket planet moon launch telescope galaxy astronaut mission satellite "
    "crater comet gravity probe star",
    "finance": "market stock bond price rate inflation bank invest dividend fund trade "
    "profit loan budget currency",
}
COMMON = (
    "the a of and to in is it that was for on with as at by this from or an be are have "
    "not but had they which one you were all we when there can more if no out so said what "
    "up its about into than them only other new some could time these two may then do first "
    "any my now such like our over man me even most made after also did many before must "
    "through back years where much your way well down should because each just those people"
).split()
#: Share of a document's words drawn from its topic: the rest are common words.
TOPIC_SHARE = 0.15


def make_corpus(n_docs: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``n_docs`` documents of 20 to 60 words and their topic names."""
    rng = np.random.default_rng(seed)
    names = np.array(sorted(TOPICS))
    labels = names[rng.integers(0, len(names), n_docs)]
    docs = []
    for label in labels:
        topic = TOPICS[str(label)].split()
        length = int(rng.integers(20, 61))
        from_topic = rng.random(length) < TOPIC_SHARE
        words = np.where(from_topic, rng.choice(topic, length), rng.choice(COMMON, length))
        docs.append(" ".join(words))
    return docs, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-docs", type=int, default=8000)
    parser.add_argument("--n-features", type=int, default=2**18)
    parser.add_argument("--workdir", type=Path, help="where to write data (default: temp)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dsoftmax-example-"))

    # No address: a local cluster on 127.0.0.1, started once and closed at exit.
    client = get_client()
    print(f"cluster: {describe(client)}")

    docs, labels = make_corpus(args.n_docs, seed=0)
    test_docs, test_labels = make_corpus(max(1, args.n_docs // 4), seed=1)
    vectorizer = HashingVectorizer(n_features=args.n_features, alternate_sign=False)
    names = sorted(TOPICS)
    for name, texts, topics in (("train", docs, labels), ("test", test_docs, test_labels)):
        X = vectorizer.transform(texts)  # scipy.sparse CSR, rows of unit L2 norm
        ids = np.searchsorted(names, topics)
        dump_svmlight_file(X, ids, str(workdir / f"{name}.svm"), zero_based=True)
        convert_svmlight(
            str(workdir / f"{name}.svm"),
            workdir / f"{name}.zarr",
            n_features=args.n_features,
            zero_based=True,
            layout="sparse",
            chunk_rows=max(1, len(texts) // 4),
            overwrite=True,
        )
    train = open_dataset(workdir / "train.zarr")
    test = open_dataset(workdir / "test.zarr")
    dense_gib = train.n_samples * train.n_features * 4 / 2**30
    print(
        f"data: {train.n_samples} documents x {train.n_features} hashed columns, "
        f"{train.n_nonzero} non-zeros ({train.layout}; dense would take {dense_gib:.1f} GiB)"
    )

    started = time.perf_counter()
    model = SoftmaxRegression(l2=1e-5).fit(train)
    print(f"fit: {model.n_iter_} L-BFGS iterations in {time.perf_counter() - started:.2f} s")

    report = evaluate_model(model, test)
    print(format_report(report))
    new = vectorizer.transform(["the striker scored a goal in the cup final"])
    predicted = names[int(model.predict(new)[0])]
    print(f"'the striker scored a goal in the cup final' -> {predicted}")
    print(
        f"result: test_accuracy={report['accuracy']:.4f} layout={train.layout} "
        f"example_topic={predicted}"
    )


if __name__ == "__main__":  # worker processes are spawned and import __main__
    main()
