"""The documentation agrees with the code: the CLI reference is generated from the real parser,
every estimator parameter is documented, links lead somewhere, and the examples run."""

from __future__ import annotations

import inspect
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dsoftmax import SoftmaxRegression
from dsoftmax.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
USER_GUIDE = DOCS / "user-guide.md"
PAGES = [*sorted(DOCS.glob("*.md")), REPO / "README.md"]
#: Seconds for the user guide's Python examples, cluster start-ups included, on a busy 2-core
#: machine.
GUIDE_TIMEOUT = 240
#: A Python block preceded by this line shows code that needs what a test does not have.
NOT_RUN = "<!-- not run"

FENCED_BLOCK = re.compile(r"^```(?P<lang>[^\n]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(?P<title>.+?)[ \t]*#*[ \t]*$", re.M)


def relative(path: Path) -> str:
    return str(path.relative_to(REPO))


def without_code(markdown: str) -> str:
    """The text outside fenced blocks and inline code, where links and headings live."""
    return INLINE_CODE.sub("", FENCED_BLOCK.sub("", markdown))


def github_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for match in HEADING.finditer(without_code(page.read_text(encoding="utf-8"))):
        anchor = base = github_anchor(match.group("title"))
        count = 0
        while anchor in found:  # repeated headings get -1, -2, ...
            count += 1
            anchor = f"{base}-{count}"
        found.add(anchor)
    return found


def code_blocks(page: Path, language: str) -> list[tuple[str, str]]:
    """``(line before the fence, body)`` of every fenced block in ``language``."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in FENCED_BLOCK.finditer(text):
        if match.group("lang").strip() == language:
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            blocks.append((before, match.group("body")))
    return blocks


# ------------------------------------------------------------------------------ CLI reference
def test_cli_reference_is_generated_from_the_current_parser() -> None:
    checked = subprocess.run(
        [sys.executable, str(DOCS / "gen_cli_reference.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, (
        f"docs/cli.md is stale; regenerate it with "
        f"`python docs/gen_cli_reference.py > docs/cli.md`.\n{checked.stderr[-4000:]}"
    )


def test_cli_reference_holds_the_help_of_every_command() -> None:
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    commands = ["make-data", "convert", "train", "evaluate", "predict", "demo", "plot"]
    for command in commands:
        assert f"## dsoftmax {command}\n" in page
        assert f"usage: dsoftmax {command} [-h]" in page
    assert "--hold-data {auto,memory,stream}" in page


def test_cli_reference_generator_reports_a_stale_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # render() sets its own width; restored after the test
    sys.path.insert(0, str(DOCS))
    try:
        import gen_cli_reference
    finally:
        sys.path.remove(str(DOCS))
    stale = tmp_path / "cli.md"
    stale.write_text("# Command-line reference\n\nout of date\n", encoding="utf-8")
    assert gen_cli_reference.check(stale) == 1
    stale.write_text(gen_cli_reference.render(), encoding="utf-8")
    assert gen_cli_reference.check(stale) == 0


# ------------------------------------------------------------------------------- user guide
def test_every_estimator_parameter_is_documented_in_the_user_guide() -> None:
    guide = USER_GUIDE.read_text(encoding="utf-8")
    parameters = [
        name for name in inspect.signature(SoftmaxRegression.__init__).parameters if name != "self"
    ]
    assert "hold_data" in parameters
    missing = [name for name in parameters if f"| `{name}` |" not in guide]
    assert not missing, f"docs/user-guide.md's table of training options lacks {missing}"


def test_every_cli_command_shown_in_the_docs_parses() -> None:
    parser = build_parser()
    shown = 0
    for page in PAGES:
        for _, body in code_blocks(page, "bash"):
            for line in body.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                # A shell variable or an ellipsis stands for text the reader fills in.
                if not words or words[0] != "dsoftmax" or "$" in line or "…" in line:
                    continue
                shown += 1
                try:
                    parser.parse_args(words[1:])
                except SystemExit:
                    pytest.fail(f"{relative(page)}: `{line.strip()}` does not parse")
    assert shown >= 20  # the pages do show commands: the extraction works


def test_user_guide_marks_only_examples_that_need_a_remote_cluster_as_not_run() -> None:
    blocks = code_blocks(USER_GUIDE, "python")
    skipped = [body for before, body in blocks if before.startswith(NOT_RUN)]
    assert len(blocks) >= 10
    assert all("tls://" in body for body in skipped), skipped


@pytest.mark.slow
@pytest.mark.cluster
def test_user_guide_python_examples_run_top_to_bottom(tmp_path: Path) -> None:
    """The guide's examples build on each other (train.zarr, then model, ...): run them in order
    in one fresh interpreter, in an empty directory, as a reader would."""
    blocks = [
        body for before, body in code_blocks(USER_GUIDE, "python") if not before.startswith(NOT_RUN)
    ]
    body = "\n\n".join(f"print('--- example {i}', flush=True)\n{b}" for i, b in enumerate(blocks))
    # Inside main(): the local cluster's spawned workers import this script.
    script = tmp_path / "user_guide_examples.py"
    script.write_text(
        "def main():\n" + textwrap.indent(body, "    ") + "\n\n\n"
        "if __name__ == '__main__':\n    main()\n",
        encoding="utf-8",
    )
    completed = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=GUIDE_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, (
        f"--- stdout ---\n{completed.stdout[-4000:]}\n--- stderr ---\n{completed.stderr[-4000:]}"
    )
    assert f"--- example {len(blocks) - 1}" in completed.stdout
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert SoftmaxRegression.load(str(tmp_path / "model")).n_features_in_ == 32


# ------------------------------------------------------------------------------------ links
def test_relative_links_lead_to_existing_files_and_headings() -> None:
    broken = []
    for page in PAGES:
        for match in LINK.finditer(without_code(page.read_text(encoding="utf-8"))):
            target = match.group("target")
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path_text, _, anchor = target.partition("#")
            path = (page.parent / path_text).resolve() if path_text else page
            if not path.exists():
                broken.append(f"{relative(page)}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{relative(page)}: {target} (no heading #{anchor})")
    assert not broken, "\n".join(broken)


def test_link_checker_finds_links_and_headings() -> None:
    assert github_anchor("8. scikit-learn and Spark, checked against their sources") == (
        "8-scikit-learn-and-spark-checked-against-their-sources"
    )
    assert github_anchor("Regularization: scikit-learn's C and Spark's regParam") == (
        "regularization-scikit-learns-c-and-sparks-regparam"
    )
    assert github_anchor("`dsoftmax train`") == "dsoftmax-train"
    text = "[a](x.md) `[b](y.md)` ![c](img.png)\n```\n[d](z.md)\n```\n"
    assert [m.group("target") for m in LINK.finditer(without_code(text))] == ["x.md", "img.png"]
