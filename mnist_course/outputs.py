"""Cleaning executed outputs so a committed notebook reads well on the web.

A progress bar keeps only its final state, consecutive stream outputs are merged, widget views
and volatile metadata are dropped, and absolute paths in warnings and tracebacks are shortened
(:func:`path_shortener`). :func:`find_machine_paths` finds any machine path left in the
outputs: a notebook that shows one must not be committed.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat

__all__ = ["MACHINE_PATHS", "WIDGET_MIME", "clean_outputs", "clean_stream_text",
           "find_machine_paths", "path_shortener"]

# Output strings that must never reach a committed notebook.
MACHINE_PATHS = ("/work/", "/root/", "/tmp/", "/home/", "../shared")
TEXT_MIME_PREFIXES = ("text/", "application/json", "application/javascript")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


_CURSOR_CODES = re.compile(r"\x1b\[[0-9;?]*[ABCDEFGHJKSTfhlsu]")


def clean_stream_text(text: str) -> str:
    """Terminal text as it finally looks: what a ``\\r`` overwrote is dropped, so a progress bar
    keeps one line, its final state. Cursor-movement escape codes are removed."""
    text = _CURSOR_CODES.sub("", text.replace("\r\n", "\n"))
    lines = []
    for line in text.split("\n"):
        if "\r" in line:
            states = [s for s in line.split("\r") if s.strip()]
            if not states:
                continue
            line = states[-1].rstrip()
        lines.append(line)
    return "\n".join(lines)


_CELL_FILE = re.compile(r"\S*ipykernel_\d+[/\\]\d+\.py")


def path_shortener(notebook_dir: Path):
    """Rewrite absolute paths in warnings and tracebacks: the repository becomes relative, the
    home folder ``~``. (Only stderr and error outputs; elsewhere a machine path is an error.)"""
    repo = notebook_dir.resolve().parent
    pairs = [(str(repo) + os.sep, ""), (str(Path(sys.prefix).resolve()) + os.sep, "<env>/"),
             (str(Path.home()) + os.sep, "~/")]
    pairs = sorted({a: b for a, b in pairs if len(a) > 1}.items(), key=lambda p: -len(p[0]))

    def shorten(text: str) -> str:
        text = _CELL_FILE.sub("<cell>", text)
        for long, short in pairs:
            text = text.replace(long, short)
        return text
    return shorten


def clean_outputs(nb: nbformat.NotebookNode, shorten=None) -> nbformat.NotebookNode:
    """Make executed outputs fit for the web, in place: consecutive stream outputs of the same
    name are merged, ``\\r`` progress bars keep their final line, empty streams and widget
    views are dropped. ``shorten`` (optional) rewrites stderr and tracebacks."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        merged = []
        for out in cell.outputs:
            if (out.output_type == "stream" and merged
                    and merged[-1].output_type == "stream" and merged[-1].name == out.name):
                merged[-1].text += out.text
            else:
                merged.append(out)
        outputs = []
        for out in merged:
            if out.output_type == "stream":
                out.text = clean_stream_text(out.text)
                if shorten and out.name == "stderr":
                    out.text = shorten(out.text)
                if not out.text.strip():
                    continue
            elif out.output_type in ("display_data", "execute_result"):
                out.data.pop(WIDGET_MIME, None)
                out.metadata = nbformat.from_dict(
                    {k: v for k, v in out.get("metadata", {}).items() if k != "widgets"})
                if not out.data:
                    continue
            elif out.output_type == "error" and shorten:
                out.evalue = shorten(out.evalue)
                out.traceback = [shorten(t) for t in out.traceback]
            outputs.append(out)
        cell.outputs = outputs
    return nb


def _output_texts(out):
    if out.output_type == "stream":
        yield out.text
    elif out.output_type == "error":
        yield out.evalue
        yield from out.traceback
    else:
        for mime, value in out.get("data", {}).items():
            if mime.startswith(TEXT_MIME_PREFIXES) or mime.endswith(("+json", "+xml")):
                yield value if isinstance(value, str) else str(value)


def find_machine_paths(nb: nbformat.NotebookNode) -> list[str]:
    """Where a notebook's outputs show an absolute machine path: ``["cell 3: ...", ...]``."""
    found = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            for text in _output_texts(out):
                for line in text.split("\n"):
                    if any(p in line for p in MACHINE_PATHS):
                        found.append(f"cell {index}: {line.strip()[:160]}")
    return found
