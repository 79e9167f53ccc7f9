"""Your code carries forward: the learner's own package ``mine``.

A lesson's exercises are functions and classes you wrote in a notebook. Once an exercise's check
passes, a save cell copies them into a small Python package called ``mine``, in the folder the
notebooks run in (``lessons/mine/`` for you, ``solutions/mine/`` when the solutions run), and
later lessons import them from there, so that the network you train in lesson 03 is built from
your own layers of lessons 01 and 02::

    keep.save(relu_forward, relu_backward)                 # lesson 01, after the check
    keep.save(conv2d_forward=conv2d_forward_fast)          # saved under numpy_cnn's name
    relu_forward, relu_backward = keep.use("relu_forward", "relu_backward",
                                           fallback=numpy_cnn)   # a later lesson

Each saved name becomes one readable file, ``mine/<name>.py``: the source as you wrote it, the
imports it needs, and the helpers of yours that it calls (their source too). ``mine/__init__.py``
lists them all. Files are written atomically, and the package is reloaded after each save, so
running a save cell again takes the new code.

When ``mine`` lacks a name (you skipped a lesson, or a lesson is graded alone in its own folder),
:func:`use` takes the course's reference from ``fallback`` instead and prints one line saying so.
A group of names asked for together (a forward pass and its backward, whose caches only fit each
other) always comes from one place.

Nothing here runs at import time, and the checks never call it: only the save cells write.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import dis
import importlib
import inspect
import json
import linecache
import re
import shutil
import sys
import textwrap
import types
from pathlib import Path

from mnist_course import CourseError
from mnist_course._atomic import atomic_write

__all__ = ["PACKAGE", "KeepError", "build", "main", "save", "saved_names", "use"]

#: The name of the learner's package, and of its folder beside the notebooks.
PACKAGE = "mine"
_STUB = "raise NotImplementedError()"
_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
_HEADER = (
    "# Your code, saved by keep.save from a lesson notebook. Change the notebook, not this file:\n"
    "# running the save cell again overwrites it.\n"
)
#: Values a saved function may read from the notebook's globals, written as literals.
_PLAIN = (bool, int, float, complex, str, bytes, type(None))


class KeepError(CourseError):
    """Something cannot be saved to, or read from, ``mine``; the message says what to do."""


# --------------------------------------------------------------------------------------------
# Source of a function or class defined in a notebook cell
# --------------------------------------------------------------------------------------------

def _functions_of(cls: type) -> list[types.FunctionType]:
    found = []
    for value in vars(cls).values():
        value = getattr(value, "__func__", value)          # staticmethod, classmethod
        value = getattr(value, "fget", value)              # property
        if isinstance(value, types.FunctionType):
            found.append(value)
    return found


def _class_source(cls: type) -> str:
    """A class's source, found through one of its methods (Python 3.11 cannot find a class
    defined in a Jupyter cell by itself: ``__main__`` has no file)."""
    for fn in _functions_of(cls):
        lines = linecache.getlines(fn.__code__.co_filename)
        pattern = re.compile(rf"^(\s*)class\s+{re.escape(cls.__name__)}\b")
        for start in range(min(fn.__code__.co_firstlineno, len(lines)) - 1, -1, -1):
            if pattern.match(lines[start]):
                return "".join(inspect.getblock(lines[start:]))
    raise KeepError(f"cannot find the source of class {cls.__name__}: define it in a notebook "
                    "cell (with at least one method) and run that cell again")


def source_of(obj) -> str:
    """The source text of a function or class as written, dedented."""
    try:
        text = _class_source(obj) if isinstance(obj, type) else inspect.getsource(obj)
    except (OSError, TypeError) as exc:
        raise KeepError(f"cannot read the source of {getattr(obj, '__name__', obj)!r} ({exc}): "
                        "save functions and classes defined in a notebook cell") from None
    lines = [ln for ln in textwrap.dedent(text).rstrip().split("\n")
             if ln.strip() not in _MARKERS]  # the solutions' nbgrader markers
    return "\n".join(lines) + "\n"


def _globals_read(obj) -> list[str]:
    """The global names a function or class reads, in order of first use: LOAD_GLOBAL and
    LOAD_NAME of its code and of every code object nested in it."""
    codes = [f.__code__ for f in _functions_of(obj)] if isinstance(obj, type) else [obj.__code__]
    names: list[str] = []
    while codes:
        code = codes.pop(0)
        for ins in dis.get_instructions(code):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and ins.argval not in names:
                names.append(ins.argval)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    if isinstance(obj, type):
        names += [b.__name__ for b in obj.__bases__ if b is not object and b.__name__ not in names]
    return names


def _namespace(obj) -> dict:
    if isinstance(obj, type):
        fns = _functions_of(obj)
        return fns[0].__globals__ if fns else vars(sys.modules.get(obj.__module__, builtins))
    return obj.__globals__


def _import_line(name: str, value) -> str | None:
    """``import numpy as np`` or ``from mnist_course.numpy_cnn import relu_forward``: how a
    saved file gets a global that comes from a module; None for the notebook's own objects."""
    if isinstance(value, types.ModuleType):
        module = value.__name__
        return f"import {module}" if module == name else f"import {module} as {name}"
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", getattr(value, "__name__", None))
    if module in (None, "__main__", "builtins") or not qualname or "." in qualname:
        return None
    if "<" in module or module.startswith("__"):
        return None
    return f"from {module} import {qualname}" + ("" if qualname == name else f" as {name}")


def _is_stub(text: str) -> bool:
    return any(line.strip() == _STUB for line in text.splitlines())


def module_text(name: str, obj, lesson: str | None = None) -> str:
    """The text of ``mine/<name>.py`` for ``obj``: the imports its source needs, the notebook
    helpers it calls (their source first), then its own source, and ``name = obj`` where the
    saved name differs from the one it was written under."""
    imports: list[str] = []
    constants: list[str] = []
    blocks: list[str] = []
    done: set[int] = set()

    def add(item, as_name: str) -> None:
        if id(item) in done:
            return
        done.add(id(item))
        text = source_of(item)
        if _is_stub(text):
            raise KeepError(f"{as_name} is still a stub (it raises NotImplementedError): finish "
                            "the exercise, run its check, then save it")
        env = _namespace(item)
        for g in _globals_read(item):
            if g == item.__name__ or g not in env:
                continue  # recursion, or a builtin (or a name that does not exist yet)
            value = env[g]
            line = _import_line(g, value)
            if line is not None:
                if line not in imports:
                    imports.append(line)
            elif isinstance(value, (types.FunctionType, type)) and (
                    getattr(value, "__module__", None) == "__main__"):
                if value.__name__ != g:
                    raise KeepError(f"{as_name} calls {g}, which is another name for "
                                    f"{value.__name__}: call it by its own name, then save again")
                add(value, g)
            elif isinstance(value, _PLAIN) or (isinstance(value, tuple) and all(
                    isinstance(v, _PLAIN) for v in value)):
                line = f"{g} = {value!r}"
                if line not in constants:
                    constants.append(line)
            else:
                raise KeepError(
                    f"{as_name} reads the notebook variable {g!r} (a {type(value).__name__}); a "
                    "saved function may use modules, functions and plain constants only: pass "
                    f"{g} as an argument instead, then save again")
        blocks.append(text)

    add(obj, name)
    origin = f"# From lesson {lesson}.\n" if lesson else ""
    parts = [_HEADER + origin, "\n".join(imports), "\n".join(constants), *blocks]
    if obj.__name__ != name:
        parts.append(f"{name} = {obj.__name__}\n")
    return "\n\n".join(p.strip("\n") for p in parts if p.strip()) + "\n"


# --------------------------------------------------------------------------------------------
# The package on disk
# --------------------------------------------------------------------------------------------

def _folder(where) -> Path:
    return Path.cwd() if where is None else Path(where)


def saved_names(where=None) -> list[str]:
    """The names saved in ``mine`` in the folder ``where`` (default: the current folder)."""
    folder = _folder(where) / PACKAGE
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.py")
                  if p.stem.isidentifier() and not p.stem.startswith("_"))


def _write_init(folder: Path) -> None:
    names = saved_names(folder.parent)
    lines = ['"""Your own code, saved from the lessons by keep.save: one file per name."""', ""]
    lines += [f"from .{n} import {n}" for n in names]
    lines += ["", f"__all__ = {names!r}", ""]
    with atomic_write(folder / "__init__.py", "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def _on_path(parent: Path) -> None:
    parent = str(parent.resolve())
    if parent not in [str(Path(p).resolve()) for p in sys.path if p]:
        sys.path.insert(0, parent)


def _forget_package() -> None:
    """Drop ``mine`` and its modules from the import system, so the next import reads the files
    as they are now."""
    for key in [k for k in sys.modules if k == PACKAGE or k.startswith(PACKAGE + ".")]:
        del sys.modules[key]
    importlib.invalidate_caches()


def save(*objects, lesson: str | None = None, where=None, quiet: bool = False, **named) -> None:
    """Save functions or classes into ``mine``: ``save(relu_forward, relu_backward)`` keeps
    their own names, ``save(conv2d_forward=conv2d_forward_fast)`` saves under another one.

    Each name becomes ``mine/<name>.py`` beside the notebooks (``where``, default the current
    folder), written atomically; ``mine/__init__.py`` is rewritten to import them all, and the
    package is reloaded. Raises :class:`KeepError` for a stub, for
    source that cannot be found, or for a notebook variable the code reads.
    """
    items = [(getattr(o, "__name__", None), o) for o in objects] + list(named.items())
    if not items:
        raise KeepError("keep.save needs at least one function or class, e.g. "
                        "keep.save(relu_forward, relu_backward)")
    for name, obj in items:
        if not (isinstance(obj, (types.FunctionType, type)) and name and name.isidentifier()):
            raise KeepError(f"keep.save takes functions and classes, got {obj!r}")
    texts = {name: module_text(name, obj, lesson) for name, obj in items}  # all, before writing
    folder = _folder(where) / PACKAGE
    try:
        folder.mkdir(exist_ok=True)
        for name, text in texts.items():
            with atomic_write(folder / f"{name}.py", "w", encoding="utf-8") as f:
                f.write(text)
        _write_init(folder)
    except OSError as exc:
        raise KeepError(f"cannot write {folder}: {exc.strerror or exc}; run the notebook from "
                        "a folder you can write to") from None
    _forget_package()
    _on_path(folder.parent)
    importlib.import_module(PACKAGE)  # a file that does not import fails here, not later
    if not quiet:
        shown = ", ".join(texts)
        print(f"✓ saved to {PACKAGE}/: {shown}")


def _fallback_of(fallback, name: str):
    if isinstance(fallback, dict):
        return fallback.get(name)
    return getattr(fallback, name, None)


def _where_from(obj) -> str:
    module, qualname = getattr(obj, "__module__", "?"), getattr(obj, "__qualname__", "?")
    return f"{module}.{qualname}"


def use(*names: str, fallback, where=None, quiet: bool = False):
    """Your saved versions of ``names`` from ``mine``, or, if any of them is missing there, all
    of them from ``fallback``, with one printed line saying which. ``fallback`` is a module of
    the course holding the same names (such as ``numpy_cnn``), or a dict from each name to the
    course's counterpart (``{"MyCNN": torch_cnn.CourseCNN}``). Returns one object for one name,
    else a tuple in the order asked."""
    if not names:
        raise KeepError("keep.use needs at least one name")
    folder = _folder(where)
    have = set(saved_names(folder))
    missing = [n for n in names if n not in have]
    if not missing:
        _forget_package()
        _on_path(folder)
        try:
            module = importlib.import_module(PACKAGE)
            found = [getattr(module, n) for n in names]
        except Exception as exc:  # noqa: BLE001 (any error in the learner's saved files)
            missing = list(names)
            reason = f"{PACKAGE}/ does not import ({type(exc).__name__}: {exc})"
    else:
        reason = f"{PACKAGE}/ has no {', '.join(missing)}"
    if missing:
        found = [_fallback_of(fallback, n) for n in names]
        lacking = [n for n, obj in zip(names, found) if obj is None]
        if lacking:
            raise KeepError(f"the course has no fallback for {', '.join(lacking)}")
        if not quiet:
            if isinstance(fallback, dict):
                shown = ", ".join(f"{_where_from(obj)} for {n}" for n, obj in zip(names, found))
            else:
                shown = f"{fallback.__name__} for {', '.join(names)}"
            print(f"{reason}: using the course's {shown}")
    elif not quiet:
        print(f"{', '.join(names)}: yours, from {PACKAGE}/")
    return found[0] if len(found) == 1 else tuple(found)


# --------------------------------------------------------------------------------------------
# Building mine/ from the solution notebooks, without running them whole
# --------------------------------------------------------------------------------------------

_SAVE_CALL = re.compile(r"\bkeep\.(save|use)\s*\(")


def _is_literal(node) -> bool:
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


def _defining_statements(source: str) -> str:
    """The top-level statements of a cell that define what saved code may need, and nothing
    else: imports, functions, classes, assignments of literal constants, and the calls of
    keep.save or keep.use. A cell that also loads data or trains contributes only these."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    lines = source.split("\n")
    kept = []
    for node in tree.body:
        text = "\n".join(lines[node.lineno - 1:node.end_lineno])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            text = "\n".join(lines[min([node.lineno] + [d.lineno for d in
                                                        node.decorator_list]) - 1:node.end_lineno])
            kept.append(text)
        elif (_SAVE_CALL.search(text) or isinstance(node, (ast.Import, ast.ImportFrom))
              or (isinstance(node, ast.Assign) and _is_literal(node.value)
                  and all(isinstance(t, ast.Name) for t in node.targets))):
            kept.append(text)
    return "\n".join(kept)


def _cells_to_run(nb: dict) -> list[str]:
    """What makes a notebook's saved names: its first code cell (imports) and its solution cells
    whole, and from every other code cell its defining statements (:func:`_defining_statements`),
    without IPython magics."""
    out, first = [], True
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "\n".join(ln for ln in "".join(cell["source"]).split("\n")
                           if not ln.lstrip().startswith(("%", "!")))
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if first or meta.get("solution"):
            out.append(source)
        else:
            out.append(_defining_statements(source))
        first = False
    return out


def build(notebooks, where, *, quiet: bool = True) -> list[str]:
    """Make ``where/mine`` afresh from solution notebooks, in their order, by running only the
    cells that define and save the learner's code (see :func:`_cells_to_run`). This is what the
    notebooks themselves save, made in seconds, so that each notebook can be run (and tested)
    alone. Returns the names saved."""
    where = Path(where)
    shutil.rmtree(where / PACKAGE, ignore_errors=True)
    for path in sorted(Path(p) for p in notebooks):
        nb = json.loads(path.read_text(encoding="utf-8"))
        cells = _cells_to_run(nb)
        if not any(re.search(r"\bkeep\.save\s*\(", c) for c in cells):
            continue
        namespace = {"__name__": "__main__"}
        saved = sys.modules.get("__main__")
        module = types.ModuleType("__main__")
        module.__dict__.update(namespace)
        sys.modules["__main__"] = module
        try:
            for i, source in enumerate(cells):
                filename = f"<{path.stem} cell {i}>"
                linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
                exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102
        except Exception as exc:
            raise KeepError(f"{path.name}: building {PACKAGE}/ failed in the cell\n"
                            f"{source[:300]}\n{type(exc).__name__}: {exc}") from exc
        finally:
            sys.modules["__main__"] = saved
    return saved_names(where)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mnist_course.keep",
        description="Build the learner's package mine/ from solution notebooks.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    b = sub.add_parser("build", help="make FOLDER/mine from the notebooks in FOLDER")
    b.add_argument("folder", nargs="?", default="solutions")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    import contextlib
    import io
    import os

    old = Path.cwd()
    try:
        os.chdir(folder)
        with contextlib.redirect_stdout(io.StringIO()):
            names = build(sorted(Path(".").glob("[0-9][0-9]_*.ipynb")), ".")
    except CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        os.chdir(old)
    print(f"✓ {folder / PACKAGE}: {len(names)} names ({', '.join(names)})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
