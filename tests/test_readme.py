"""The README stays a front page, and nothing it and docs/ say drifts from the course.

- README.md is at most 10,000 characters: what the course is, the two commands, the course map and
  where to go next. Reference goes to docs/*.md, which the README links to.
- Every relative link and image in README.md and docs/*.md points to a file that exists, and an
  anchor (``page.md#section``) to a heading of that page.
- Every docs page opens by saying what it is and linking back to the README, and is linked from
  the README or from another page, so none is lost.
- The course maps (the README's and docs/lessons.md's) have one row per solution notebook; their
  exercise counts are what ``python -m mnist_course.grading summary`` counts; an accuracy with its
  threshold, ``0.9797 (≥ 0.975)``, is printed by that notebook and asserted there; the learner's
  total time is the sum of the rows.
- The points quoted in the README and docs/instructors.md are the grading summary's.
- docs/cli.md names every command and option of ``mnist-course``.
- The README's test command is what ``.ci/run`` runs.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import nbformat
import pytest
from test_prose import appears_in, output_text

from mnist_course import grading
from mnist_course.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
MAX_README_CHARS = 10_000

_CODE = [
    re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.DOTALL | re.MULTILINE),  # code blocks
    re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL),                      # code spans
    re.compile(r"<!--.*?-->", re.DOTALL),                                            # comments
]
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def without_code(text: str) -> str:
    """The markdown with code blocks, code spans and comments blanked (lengths kept)."""
    for pattern in _CODE:
        text = pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)
    return text


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown page, with GitHub's -1, -2 for repeated headings."""
    source = path.read_text(encoding="utf-8")
    seen: dict[str, int] = {}
    found = set()
    # blanking keeps the lines, so a heading found outside code is read from the source
    for line, blanked in zip(source.splitlines(), without_code(source).splitlines()):
        if not re.match(r" {0,3}#{1,6}\s", blanked):
            continue
        base = slug(re.sub(r"^ {0,3}#{1,6}\s+", "", line).rstrip("# "))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    """The targets of the links and images of a page that point inside the repository."""
    text = without_code(path.read_text(encoding="utf-8"))
    return [m.group("target") for m in LINK.finditer(text)
            if not re.match(r"[a-z][a-z0-9+.-]*:", m.group("target"))]


# ------------------------------------------------------------------ size, links, pages

def test_readme_fits_on_a_few_screens():
    size = len(README.read_text(encoding="utf-8"))
    assert size <= MAX_README_CHARS, (
        f"README.md has {size:,} characters, more than {MAX_README_CHARS:,}: keep it to what a "
        "newcomer needs (what the course is, the two commands, the course map, where to go next) "
        "and move reference into a docs/ page that the README links to")


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_relative_links_point_to_what_exists(page):
    problems = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            shown = _rel(linked) if linked.is_relative_to(ROOT) else linked
            problems.append(f"{target}: no file {shown}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{target}: {_rel(linked)} has no heading whose anchor is #{anchor} "
                            f"(its anchors: {', '.join(sorted(anchors(linked)))})")
    assert not problems, (f"{_rel(page)} links to what does not exist; fix the link or the "
                          "heading:\n  " + "\n  ".join(problems))


def test_the_readme_links_to_docs():
    assert any(t.startswith("docs/") for t in relative_links(README)), \
        "README.md links to no docs/ page"


@pytest.mark.parametrize("page", DOCS, ids=_rel)
def test_each_docs_page_says_what_it_is_and_links_back(page):
    text = page.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines and lines[0].startswith("# "), f"{_rel(page)}: start with a '# Title' line"
    opening = text.split("\n\n")[1] if "\n\n" in text else ""
    assert "../README.md" in opening, (
        f"{_rel(page)}: the paragraph under the title says what the page is and links back to "
        "the [README](../README.md)")


@pytest.mark.parametrize("page", DOCS, ids=_rel)
def test_each_docs_page_is_linked_from_another_page(page):
    linking = [other for other in PAGES if other != page and any(
        (other.parent / t.partition("#")[0]).resolve() == page
        for t in relative_links(other) if t.partition("#")[0])]
    assert linking, (f"{_rel(page)} is linked from nowhere: link it from the README's 'Where to "
                     "go next' or from the page it belongs with")


# ------------------------------------------------------------------ the course maps

def course_map(page: Path) -> list[dict[str, str]]:
    """The rows of a page's course map (the table whose header has "exercises"), by column."""
    lines = page.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and "exercises" in cells:
            header = cells
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                values = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]
                assert len(values) == len(header), f"{_rel(page)}: row with {len(values)} " \
                    f"cells under a header of {len(header)}: {row}"
                rows.append(dict(zip(header, values)))
            return rows
    raise AssertionError(f"{_rel(page)} has no course map (a table with an 'exercises' column)")


MAPS = [README, ROOT / "docs" / "lessons.md"]


def _lesson(row: dict[str, str]) -> str:
    cell = row.get("lesson", row.get("notebook", ""))
    m = re.search(r"`([^`]+?)(?:\.ipynb)?`", cell)
    assert m, f"course map row {row}: the lesson column names no notebook in `backticks`"
    return m.group(1)


def _summaries() -> dict[str, dict]:
    return {p.stem: grading.summary(nbformat.read(p, as_version=4), str(p)) for p in SOLUTIONS}


@pytest.mark.parametrize("page", MAPS, ids=_rel)
def test_the_course_map_has_one_row_per_lesson(page):
    lessons = [_lesson(row) for row in course_map(page)]
    assert lessons == [p.stem for p in SOLUTIONS], (
        f"{_rel(page)}: the course map lists {lessons}, solutions/ holds "
        f"{[p.stem for p in SOLUTIONS]}: add, remove or reorder rows")
    for name in lessons:
        assert (ROOT / "lessons" / f"{name}.ipynb").exists(), f"lessons/{name}.ipynb is missing"


@pytest.mark.parametrize("page", MAPS, ids=_rel)
def test_the_course_map_counts_the_exercises_grading_counts(page):
    summaries = _summaries()
    problems = []
    for row in course_map(page):
        name = _lesson(row)
        m = re.match(r"(\d+)(?:\s*\+\s*(\d+)\s+written)?", row["exercises"])
        assert m, f"{_rel(page)}, {name}: exercises {row['exercises']!r} should read 'N' or " \
                  "'N + M written'"
        got = (int(m.group(1)), int(m.group(2) or 0))
        want = (summaries[name]["solution"], summaries[name]["answer"])
        if got != want:
            problems.append(f"{name}: {row['exercises']!r}, but grading counts {want[0]} code "
                            f"exercise(s) and {want[1]} written answer(s)")
    assert not problems, (f"{_rel(page)}: the exercises column disagrees with `python -m "
                          "mnist_course.grading summary solutions/*.ipynb`:\n  "
                          + "\n  ".join(problems))


@pytest.mark.parametrize("page", MAPS, ids=_rel)
def test_each_quoted_accuracy_is_printed_and_asserted_by_its_notebook(page):
    problems, quoted = [], 0
    for row in course_map(page):
        name = _lesson(row)
        cell = next(v for k, v in row.items() if k.startswith("accuracy"))
        m = re.search(r"(?P<value>0\.\d{3,})\s*\(≥\s*(?P<bar>0\.\d+)", cell)
        if not m:
            continue
        quoted += 1
        nb = nbformat.read(ROOT / "solutions" / f"{name}.ipynb", as_version=4)
        if not appears_in(m["value"], output_text(nb)):
            problems.append(f"{name}: {m['value']} is not in the committed outputs")
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        if not re.search(rf"assert\s.*>=\s*{re.escape(m['bar'])}(?!\d)", code):
            problems.append(f"{name}: no `assert ... >= {m['bar']}` in the notebook")
    assert quoted, f"{_rel(page)}: no accuracy of the form '0.9797 (≥ 0.975)' found"
    assert not problems, (f"{_rel(page)}: the course map's accuracies drifted from the "
                          "notebooks; update the table from the outputs:\n  "
                          + "\n  ".join(problems))


def _hours(cell: str) -> tuple[float, float]:
    """'30–45 min' -> (0.5, 0.75); '2–3 h' -> (2, 3); '45 min' -> (0.75, 0.75)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(?:\s*[–-]\s*(\d+(?:\.\d+)?))?\s*(min|h)", cell.strip())
    assert m, f"'your time' cell {cell!r}: write '30–45 min' or '2–3 h'"
    scale = 1 / 60 if m.group(3) == "min" else 1
    low = float(m.group(1)) * scale
    return low, float(m.group(2)) * scale if m.group(2) else low


def test_the_learners_total_time_is_the_sum_of_the_rows():
    rows = course_map(README)
    low = sum(_hours(row["your time"])[0] for row in rows)
    high = sum(_hours(row["your time"])[1] for row in rows)
    text = re.sub(r"\s+", " ", README.read_text(encoding="utf-8"))
    m = re.search(r"about (\d+)[–-](\d+) hours in all", text)
    assert m, "README.md: say the learner's total time as 'about A–B hours in all'"
    want = (math.floor(low), math.ceil(high))
    assert (int(m.group(1)), int(m.group(2))) == want, (
        f"README.md says about {m.group(1)}–{m.group(2)} hours in all; the 'your time' column "
        f"adds up to {low:g}–{high:g} h: write about {want[0]}–{want[1]} hours")


def test_the_points_quoted_are_the_grading_summarys():
    summaries = _summaries().values()
    points = sum(s["points"] for s in summaries)
    auto = sum(s["autograded_points"] for s in summaries)
    quotes = [
        (README, r"(?P<points>\d+) points \((?P<auto>\d+) autograded"),
        (ROOT / "docs" / "instructors.md",
         r"(?P<points>\d+) points over (?P<lessons>\d+) lessons, (?P<auto>\d+) of them autograded"),
    ]
    for page, pattern in quotes:
        m = re.search(pattern, re.sub(r"\s+", " ", page.read_text(encoding="utf-8")))
        assert m, f"{_rel(page)}: no sentence matching {pattern!r}"
        assert (int(m["points"]), int(m["auto"])) == (points, auto), (
            f"{_rel(page)} quotes {m['points']} points, {m['auto']} autograded; `python -m "
            f"mnist_course.grading summary solutions/*.ipynb` counts {points}, {auto} autograded")
        if "lessons" in m.groupdict():
            assert int(m["lessons"]) == len(SOLUTIONS), f"{_rel(page)}: {len(SOLUTIONS)} lessons"


# ------------------------------------------------------------------ command line, test command

def test_docs_cli_names_every_command_and_option():
    """Each command has a row in docs/cli.md's command table, and its row names every option."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    missing = [o for a in parser._actions for o in a.option_strings
               if o not in ("-h", "--help") and o not in text]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        rows = [line for line in text.splitlines() if line.startswith(f"| `mnist-course {name}")]
        if not rows:
            missing.append(f"mnist-course {name} (no row)")
            continue
        for action in command._actions:
            if action.help == argparse.SUPPRESS:
                continue
            missing += [f"{name} {o}" for o in action.option_strings
                        if o not in ("-h", "--help")
                        and not re.search(rf"{re.escape(o)}(?![\w-])", rows[0])]
    assert not missing, ("docs/cli.md does not document: " + ", ".join(missing)
                         + " (add them to the command table, one row per command)")


def test_ci_runs_the_readmes_test_command():
    readme = README.read_text(encoding="utf-8")
    assert "`make test` is the course's test command" in readme
    commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == "make test", ".ci/run must end by running the README's test command"


# ------------------------------------------------------------------ the helpers themselves

@pytest.mark.parametrize("heading, anchor", [
    ("Course map", "course-map"),
    ("More than one process, or machine", "more-than-one-process-or-machine"),
    ("One training step: `mnist-course bench`", "one-training-step-mnist-course-bench"),
    ("With conda instead of `make`", "with-conda-instead-of-make"),
    ("Offline, or behind a proxy", "offline-or-behind-a-proxy"),
])
def test_slug_is_githubs_anchor(heading, anchor):
    assert slug(heading) == anchor


def test_links_in_code_are_not_links(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# P\n\n[a](a.md) `[b](b.md)` <!-- [c](c.md) -->\n\n```\n[d](d.md)\n```\n"
                    "[e](https://example.com) ![f](f.png#x)\n", encoding="utf-8")
    assert relative_links(page) == ["a.md", "f.png#x"]


@pytest.mark.parametrize("cell, hours", [("30–45 min", (0.5, 0.75)), ("2–3 h", (2, 3)),
                                         ("45 min", (0.75, 0.75)), ("1–1.5 h", (1, 1.5))])
def test_hours_read_from_the_time_column(cell, hours):
    assert _hours(cell) == pytest.approx(hours)
