"""Prose tells the truth: a number in a markdown cell agrees with the committed outputs.

The convention, for every ``solutions/*.ipynb`` (written answers inside the nbgrader regions
included, since they are prose too):

- A number that reports a measurement of this notebook (an accuracy, a time, a ratio, a loss) is
  written immediately followed by ``<!--out-->``: ``reaches 0.9921<!--out--> on the test set``.
  That exact string, ``0.9921``, must appear as a token in the text output (stream text or
  ``text/plain``; images do not count) of some code cell of the same notebook. A ``%`` or ``×``
  written right after the number belongs to it: ``11.35%<!--out-->`` needs ``11.35%`` in the
  outputs.
- A figure that is not this notebook's measurement (a target, a threshold, a published result, a
  constant, a value derived on paper) is followed by ``<!--not-measured-->`` instead.
- Unmarked numbers that look like measurements fail: accuracy-like decimals (0.9 with at least
  three decimals, e.g. 0.985), decimal percentages (98.5%, 99.25 %), times (12 s, 3.4 ms) and
  ratios (1.2×, 1.2x faster).
- A marker that does not follow a number is an error: ``2.08 s<!--out-->`` must be written
  ``2.08<!--out--> s``.

Code spans and code blocks, LaTeX math, link targets and other HTML comments are not prose and are
not scanned. Numbers written in words ("half a second") are prose and are not caught.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))

OUT, NOT_MEASURED = "<!--out-->", "<!--not-measured-->"
MARKER = re.compile(r"<!--\s*(?P<kind>out|not-measured)\s*-->")

# A number as written in prose: 7, -0.42, 60,000, 0.9921, 1.5e-08. Not part of a word or of a
# longer number (conv2d, float32 and the "2" of "12.5" are not numbers here).
NUMBER = r"(?<![\w.,])[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+−]?\d+)?(?![\d])"
SIGN = r"(?:\s?%|×|x)"  # written right after the number, it belongs to the reported token
MARKED = re.compile(rf"(?P<number>{NUMBER})(?P<sign>{SIGN})?" + MARKER.pattern)
ENDS_WITH_NUMBER = re.compile(rf"(?P<number>{NUMBER})(?P<sign>{SIGN})?$")

# Unmarked numbers that look like measurements: (what it looks like, pattern). Each pattern has
# the groups "number" and, where the token goes on, "sign" (kept before the marker); the rest of
# the match (a unit, "faster") stays after the marker in the suggested fix.
_N = r"(?<![\w.,])(?P<number>\d+(?:\.\d+)?)"
TIME_UNITS = r"(?:ns|µs|μs|us|ms|s|secs?|seconds?|min|mins|minutes?|h|hrs?|hours?)"
SUSPECTS = [
    ("an accuracy", re.compile(r"(?<![\w.,])(?P<number>0\.9\d{2,})(?![\d])")),
    ("a percentage", re.compile(r"(?<![\w.,])(?P<number>\d+\.\d+)(?P<sign>\s?%)")),
    # "12 s", "3.4 ms", "2.08s", "40ms"; not "the 3s" or "(2h)", which are plurals and algebra
    ("a time", re.compile(rf"{_N}(?:\s{TIME_UNITS}|ns|µs|μs|ms|min)(?![\w])")),
    ("a time", re.compile(r"(?<![\w.,])(?P<number>\d+\.\d+)s(?![\w])")),
    ("a ratio", re.compile(rf"{_N}(?P<sign>[×x])(?![\w.]|\s*\d)")),
    ("a ratio", re.compile(rf"{_N}\s*(?:×|x|times)\s+(?:faster|slower|quicker|speed-?up)\b")),
]

# What is not prose. Each is blanked out (same length, newlines kept) before scanning, in order.
NOT_PROSE = [
    re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.DOTALL | re.MULTILINE),  # code blocks
    re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL),                      # code spans
    re.compile(r"<!--(?!\s*(?:out|not-measured)\s*-->).*?-->", re.DOTALL),          # comments
    re.compile(r"(?<!\\)\$\$.+?(?<!\\)\$\$", re.DOTALL),                             # $$ math $$
    re.compile(r"(?<![\\$])\$(?=\S)(?:[^$\\]|\\.)+?(?<=\S)(?<!\\)\$(?!\d)"),        # $math$
    re.compile(r"\\\(.+?\\\)|\\\[.+?\\\]", re.DOTALL),                               # \( \) \[ \]
    re.compile(r"(?<=\])\([^)\s]*(?:\s+\"[^\"]*\")?\)"),                             # link targets
    re.compile(r"<https?://[^>]*>|https?://\S+"),                                    # URLs
]


def blank_non_prose(source: str) -> str:
    """The markdown source with code, math, links and comments replaced by spaces.

    Positions are kept (newlines survive), so what is found in the result can be quoted from the
    source. The markers <!--out--> and <!--not-measured--> are kept.
    """
    for pattern in NOT_PROSE:
        source = pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), source)
    return source


def output_text(nb) -> str:
    """All the text a reader sees under the code cells: streams and text/plain results."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "text/plain" in out.get("data", {}):
                parts.append(out["data"]["text/plain"])
    return "\n".join("".join(p) if isinstance(p, list) else p for p in parts)


def appears_in(token: str, text: str) -> bool:
    """Whether token appears in text as a whole number: 0.99 is not found in 0.9921 or 10.99."""
    token = token.replace("−", "-")
    before = r"(?<![\d.])" + (r"(?<!\d,)" if re.match(r"\d{3}(?!\d)", token) else "")
    after = r"(?!\d)(?!\.\d)(?!,\d{3}(?!\d))(?![eE][-+]?\d)" if token[-1].isdigit() else ""
    return re.search(before + re.escape(token) + after, text) is not None


def _where(name: str, index: int, cell) -> str:
    cell_id = cell.get("id")
    return f"{name}, markdown cell {index}" + (f" (id {cell_id})" if cell_id else "")


def _context(source: str, start: int, end: int) -> str:
    line_start = source.rfind("\n", 0, start) + 1
    line_end = source.find("\n", end)
    line = source[line_start:line_end if line_end >= 0 else len(source)]
    left, right = max(0, start - line_start - 30), min(len(line), end - line_start + 30)
    return ("…" if left else "") + line[left:right].strip() + ("…" if right < len(line) else "")


def prose_problems(nb, name: str) -> list[str]:
    """Every way the markdown of nb disagrees with the convention above, one message each."""
    outputs = output_text(nb)
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        source = cell.source
        text = blank_non_prose(source)
        where = _where(name, index, cell)

        marked_numbers = set()  # start of every number followed by a marker
        for m in MARKED.finditer(text):
            marked_numbers.add(m.start("number"))
            token = m.group("number") + (m.group("sign") or "")
            if m.group("kind") == "out" and not appears_in(token, outputs):
                problems.append(
                    f"{where}: {token}{OUT} («{_context(source, m.start(), m.end())}»): the "
                    f"outputs show no {token}: update the prose or re-execute the notebook")

        for m in MARKER.finditer(text):
            before = ENDS_WITH_NUMBER.search(text[max(0, m.start() - 80):m.start()])
            if before is None:
                marker = m.group()
                problems.append(
                    f"{where}: {marker} («{_context(source, m.start(), m.end())}») does not "
                    f"follow a number: put it right after the number it marks, as in "
                    f"2.08{marker} s or 98.5%{marker}")

        reported = set()
        for kind, pattern in SUSPECTS:
            for m in pattern.finditer(text):
                start = m.start("number")
                if start in marked_numbers or start in reported or MARKER.match(text, m.end()):
                    continue
                reported.add(start)
                seen = source[m.start():m.end()]
                sign = m.group("sign") if "sign" in pattern.groupindex else None
                token = m.group("number") + (sign or "")
                rest = seen[len(token):]
                problems.append(
                    f"{where}: {seen!r} («{_context(source, m.start(), m.end())}») looks like "
                    f"{kind} but is not marked. If this notebook measured it, write "
                    f"{token}{OUT}{rest} and make sure a code cell prints exactly {token}; if it "
                    f"is a target, threshold, constant, published or derived figure, write "
                    f"{token}{NOT_MEASURED}{rest}; or say it without a machine-dependent number")
    return problems


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_numbers_in_the_prose_agree_with_the_outputs(path):
    nb = nbformat.read(path, as_version=4)
    problems = prose_problems(nb, f"solutions/{path.name}")
    assert not problems, (f"{len(problems)} number(s) in the prose of {path.name} do not follow "
                          "the <!--out--> convention (tests/test_prose.py):\n"
                          + "\n".join(problems))


# ------------------------------------------------------------------ the scanner itself

def _nb(markdown: str, *printed: str):
    """A notebook with one markdown cell and one code cell per printed text."""
    cells = [new_markdown_cell(markdown, id="prose")]
    for i, text in enumerate(printed):
        cells.append(new_code_cell(f"print({i})", id=f"code{i}", execution_count=i + 1,
                                   outputs=[new_output("stream", name="stdout", text=text)]))
    return new_notebook(cells=cells)


def test_marked_number_present_in_the_outputs_passes():
    nb = _nb(f"The CNN reaches 0.9921{OUT} on the test set, 12.5{OUT} s per epoch"
             f", 11.35%{OUT} for the baseline and a 3.1×{OUT} speed-up.",
             "epoch 3: test acc 0.9921 (12.5 s)\n", "baseline 11.35%, speed-up 3.1×\n")
    assert prose_problems(nb, "x.ipynb") == []


def test_marked_number_also_found_in_a_text_plain_result():
    nb = _nb(f"loss 0.0123{OUT}")
    nb.cells.append(new_code_cell("loss", execution_count=2, outputs=[new_output(
        "execute_result", data={"text/plain": "0.0123", "image/png": "iVBO"}, execution_count=2)]))
    assert prose_problems(nb, "x.ipynb") == []


def test_a_drifting_number_fails_and_says_what_to_do():
    nb = _nb(f"It reaches 0.9921{OUT} on the test set.", "test acc 0.9918\n")
    problems = prose_problems(nb, "solutions/03_x.ipynb")
    assert len(problems) == 1
    message = problems[0]
    for words in ["solutions/03_x.ipynb", "markdown cell 0", "id prose", "0.9921",
                  "the outputs show no 0.9921", "update the prose or re-execute"]:
        assert words in message


@pytest.mark.parametrize("printed", ["test acc 0.99215\n", "test acc 10.9921\n",
                                     "acc 0.9921e-3\n"])
def test_a_number_must_match_as_a_whole_token(printed):
    assert not appears_in("0.9921", printed)
    assert prose_problems(_nb(f"reaches 0.9921{OUT}", printed), "x.ipynb")


def test_token_boundaries_in_the_outputs():
    assert appears_in("0.9921", "acc=0.9921, loss 0.03")
    assert appears_in("0.9921", "(0.9921)")
    assert appears_in("0.9921", "epoch,acc\n3,0.9921\n")
    assert appears_in("60,000", "60,000 images")
    assert not appears_in("000", "60,000 images")
    assert not appears_in("11.35%", "11.35 of the test set")
    assert appears_in("-0.4242", "range: -0.4242 to 2.8215")
    assert appears_in("−0.4242", "range: -0.4242 to 2.8215")


def test_images_do_not_count_as_outputs():
    nb = _nb(f"reaches 0.9921{OUT}")
    nb.cells.append(new_code_cell("plot", outputs=[new_output(
        "display_data", data={"image/svg+xml": "<text>0.9921</text>"})]))
    assert prose_problems(nb, "x.ipynb")


@pytest.mark.parametrize("prose, kind", [
    ("The CNN reaches 0.9921 on the test set.", "an accuracy"),
    ("The target is 0.985.", "an accuracy"),
    ("| he | 0.9876 |", "an accuracy"),
    ("It reads 98.5% of the digits.", "a percentage"),
    ("It reads 99.25 % of the digits.", "a percentage"),
    ("One epoch takes 12 s here.", "a time"),
    ("A step takes 3.4 ms.", "a time"),
    ("Training took 2.08s.", "a time"),
    ("A step takes 40ms.", "a time"),
    ("about 3 minutes per epoch", "a time"),
    ("The loops are 1.2× slower.", "a ratio"),
    ("PyTorch is 1.2x faster.", "a ratio"),
    ("PyTorch is 3 times faster.", "a ratio"),
])
def test_an_unmarked_measurement_fails(prose, kind):
    problems = prose_problems(_nb(prose, "nothing\n"), "x.ipynb")
    assert len(problems) == 1, problems
    assert f"looks like {kind}" in problems[0] and "not marked" in problems[0]
    assert OUT in problems[0] and NOT_MEASURED in problems[0]


@pytest.mark.parametrize("prose", [
    f"The course asks for 0.985{NOT_MEASURED} and aims at 99.2%{NOT_MEASURED}.",
    f"Momentum makes the step up to 10×{NOT_MEASURED} larger.",
    f"An epoch takes about 20{NOT_MEASURED} s on a laptop.",
    f"Published: 0.9979{NOT_MEASURED} (a committee of networks).",
])
def test_a_not_measured_mark_passes_without_outputs(prose):
    assert prose_problems(_nb(prose), "x.ipynb") == []


@pytest.mark.parametrize("prose", [
    "A 3×3 filter turns 28 × 28 into 26 × 26; 2×2 pooling halves it.",
    "The magic number 0x08 means unsigned bytes; 0xea60 is 60000.",
    "mean 0.1307, std 0.3081; the MLP reaches about 98%; lesson 05; conv2d; float32.",
    "It takes 8 times as much memory, and half a second.",
    "Steps of 10 × lr; errors of 1e-8 or smaller; 93,322 parameters; 1.5e-08.",
    "`print(f'{acc:.4f}')  # 0.9921 in 12 s, 1.2× faster`",
    "```\nepoch 3: test acc 0.9921 (12 s)\n```",
    "$0.9921 = 99.21\\%$ and $$t = 12 s$$; \\(0.995\\)",
    "[the results](https://example.com/0.9921/12s) and <https://example.com/99.5%>",
    "<!-- an editor's note: 0.9921 in 12 s -->",
    "Epochs 1-3, 64x64 images, 5 samples, 3 steps, 2 hyper-parameters.",
    "The two 3s and the real 7s; the change is divided by (2h).",
])
def test_what_is_not_a_measurement_passes(prose):
    assert prose_problems(_nb(prose), "x.ipynb") == []


@pytest.mark.parametrize("prose", [
    f"One epoch takes 2.08 s{OUT}.",
    f"{OUT} at the start of a sentence.",
    f"the MLP{OUT} and lesson05{OUT}",
    f"the `0.9921`{OUT} in code",
])
def test_a_marker_that_follows_no_number_fails(prose):
    problems = [p for p in prose_problems(_nb(prose, "2.08 s\n"), "x.ipynb")
                if "does not follow a number" in p]
    assert problems, prose
    assert "right after the number" in problems[0]


@pytest.mark.parametrize("prose, fixes", [
    ("One epoch takes 12 s.", ["12<!--out--> s", "prints exactly 12;", "12<!--not-measured--> s"]),
    ("It reads 98.5 % of them.", ["98.5 %<!--out-->", "prints exactly 98.5 %;"]),
    ("PyTorch is 1.2x faster.", ["1.2x<!--out-->", "1.2x<!--not-measured-->"]),
    ("PyTorch is 3 times faster.", ["3<!--out--> times faster"]),
    ("The CNN reaches 0.9921.", ["0.9921<!--out-->", "0.9921<!--not-measured-->"]),
])
def test_the_message_shows_the_fix(prose, fixes):
    (problem,) = prose_problems(_nb(prose), "x.ipynb")
    for fix in fixes:
        assert fix in problem, (fix, problem)


def test_answer_regions_are_prose_too():
    nb = _nb("**Question.** How fast?\n\n### BEGIN SOLUTION\nAbout 1.5× faster.\n"
             "### END SOLUTION\n", "speed-up 1.4×\n")
    assert any("looks like a ratio" in p for p in prose_problems(nb, "x.ipynb"))


def test_several_problems_are_all_reported_with_their_cells():
    nb = _nb(f"0.9921{OUT} and 0.9876", "acc 0.9921\n")
    nb.cells.append(new_markdown_cell(f"12 s and 0.5{OUT}", id="second"))
    problems = prose_problems(nb, "n.ipynb")
    assert len(problems) == 3, problems
    assert "markdown cell 0 (id prose)" in problems[0] and "'0.9876'" in problems[0]
    assert all("markdown cell 2 (id second)" in p for p in problems[1:])


# --------------------------------------------------------------------------------------------
# "lesson 07" in prose names a lesson that exists
# --------------------------------------------------------------------------------------------

LESSON_REF = re.compile(r"\b[Ll]essons?\s+(\d{2})(?:\s*(?:[–-]|to|and)\s*(\d{2}))?\b")
LESSON_NUMBERS = {p.name[:2] for p in SOLUTIONS if p.name[:2].isdigit()}


def lesson_reference_problems(text: str, where: str, numbers=None) -> list[str]:
    """Every "lesson NN" (or "lessons NN–MM", "lessons NN and MM") in ``text`` whose number has
    no notebook in solutions/."""
    numbers = LESSON_NUMBERS if numbers is None else numbers
    problems = []
    for m in LESSON_REF.finditer(text):
        for number in filter(None, m.groups()):
            if number not in numbers:
                problems.append(f"{where}: {m.group(0)!r} names no lesson (solutions/ has "
                                f"{', '.join(sorted(numbers))}): renumbered?")
    return problems


def _prose_files():
    for path in SOLUTIONS:
        nb = nbformat.read(path, as_version=4)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "markdown":
                yield f"{path.name}, markdown cell {index}", cell.source
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        yield str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")


def test_every_lesson_named_in_prose_exists():
    problems = [p for where, text in _prose_files() for p in lesson_reference_problems(text, where)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("text, bad", [
    ("Lesson 03 trains it; lessons 00–02 build it.", []),
    ("as lesson 07 showed", ["'lesson 07'"]),
    ("lessons 01 and 09", ["'lessons 01 and 09'"]),
    ("Lessons 02-07", ["'Lessons 02-07'"]),
])
def test_lesson_references_are_checked_against_the_lessons(text, bad):
    problems = lesson_reference_problems(text, "x", numbers={"00", "01", "02", "03"})
    assert len(problems) == len(bad) and all(b in p for b, p in zip(bad, problems))
