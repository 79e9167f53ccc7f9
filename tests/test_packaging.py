"""Packaging: pyproject.toml and environment.yml agree, and the command is installed."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import tomllib  # the course requires Python 3.11+
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What the course needs, by name (issue 2); the versions live in pyproject.toml.
RUNTIME = {"numpy", "pillow", "torch", "torchvision", "matplotlib", "tqdm", "nbformat"}
APP = {"fastapi", "uvicorn"}  # mnist-course draw (issue 15)
DEV = {"pytest", "nbval", "nbclient", "ipykernel", "ruff",
       "nbgrader"}  # plus jupyterlab or notebook


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def name_of(requirement: str) -> str:
    """The normalised project name of a requirement such as ``torch>=2.2; python_version>'3'``."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"cannot read a project name from {requirement!r}"
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def env_pip_entries() -> list[str]:
    """The entries of the ``pip:`` list in environment.yml, read without a YAML library."""
    entries, in_pip, pip_indent = [], False, 0
    for line in (ROOT / "environment.yml").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if stripped == "- pip:":
            in_pip, pip_indent = True, indent
            continue
        if in_pip:
            if indent <= pip_indent:
                in_pip = False
            elif stripped.startswith("- "):
                entries.append(stripped[2:].split(" #")[0].strip())
    return entries


def test_pyproject_declares_what_the_course_needs():
    project = pyproject()["project"]
    runtime = {name_of(r) for r in project["dependencies"]}
    dev = {name_of(r) for r in project["optional-dependencies"]["dev"]}
    assert RUNTIME <= runtime, f"runtime dependencies lack {sorted(RUNTIME - runtime)}"
    assert DEV <= dev, f"the dev extra lacks {sorted(DEV - dev)}"
    assert APP == {name_of(r) for r in project["optional-dependencies"]["app"]}
    assert "mnist-course[app]" in project["optional-dependencies"]["dev"], \
        "the dev extra must include the app extra (the tests serve the draw page)"
    assert dev & {"jupyterlab", "notebook"}, "the dev extra needs jupyterlab or notebook"
    assert project["name"] == "mnist-course"
    # the package and its subpackages (mnist_course.checks) are found by setuptools
    assert pyproject()["tool"]["setuptools"]["packages"]["find"]["include"] == ["mnist_course*"]


def test_environment_yml_agrees_with_pyproject():
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    declared = [r for r in list(project["dependencies"]) + extras["app"] + extras["dev"]
                if not r.startswith("mnist-course[")]
    entries = env_pip_entries()
    editable = [e for e in entries if e.startswith("-e")]
    listed = [e for e in entries if not e.startswith("-")]
    assert editable and ".[dev]" in editable[0], \
        'environment.yml must pip-install the course itself: - -e ".[dev]"'
    by_name = {name_of(r): r.replace(" ", "") for r in declared}
    in_env = {name_of(r): r.replace(" ", "") for r in listed}
    assert set(in_env) == set(by_name), (
        "environment.yml and pyproject.toml disagree on the dependencies: "
        f"only in environment.yml {sorted(set(in_env) - set(by_name))}, "
        f"only in pyproject.toml {sorted(set(by_name) - set(in_env))}"
    )
    for name, req in by_name.items():
        assert in_env[name] == req, f"{name}: environment.yml says {in_env[name]!r}, " \
                                    f"pyproject.toml says {req!r}"
    assert len(listed) == len(in_env), "environment.yml lists a dependency twice"


def test_environment_yml_is_a_conda_env_file():
    text = (ROOT / "environment.yml").read_text()
    pinned = re.search(r"^\s*-\s*python=3\.11\s*$", text, re.MULTILINE)
    assert pinned, "the env must pin python=3.11"
    yaml = pytest.importorskip("yaml")
    env = yaml.safe_load(text)
    assert env["name"] == "mnist-course"
    deps = env["dependencies"]
    assert "pip" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pip == env_pip_entries()
    assert "python=3.11" in deps


def test_requires_python_admits_3_11():
    spec = pyproject()["project"]["requires-python"]
    assert re.fullmatch(r">=\s*3\.(\d+)", spec) and int(spec.split(".")[1]) <= 11, spec


def test_console_script_is_declared_and_installed():
    target = pyproject()["project"]["scripts"]["mnist-course"]
    assert target == "mnist_course.cli:main"
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func))
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert scripts.get("mnist-course") == target, \
        "mnist-course is not installed: run `make test` (or pip install -e '.[dev]')"


def test_python_dash_m_help():
    proc = subprocess.run([sys.executable, "-m", "mnist_course", "--help"], capture_output=True,
                          text=True, timeout=120, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: mnist-course")
    for command in ("data", "train", "demo", "bench", "lessons", "check", "draw"):
        assert command in proc.stdout


def test_live_progress_only_in_a_terminal_or_a_kernel(monkeypatch):
    import io
    import sys

    import mnist_course

    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not mnist_course.live_progress()          # a log file
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    assert mnist_course.live_progress()              # a Jupyter kernel


def test_lower_bounds_are_the_versions_installed_here():
    """The README promises that every declared lower bound was tried: the environment that runs
    the tests must not be newer in a way the bounds hide, nor older than they say."""
    extras = pyproject()["project"]["optional-dependencies"]
    for req in pyproject()["project"]["dependencies"] + extras["app"] + extras["dev"]:
        if req.startswith("mnist-course["):       # dev includes the app extra
            continue
        name, _, rest = req.partition(">=")
        low = rest.split(",")[0].split("#")[0].strip()
        installed = metadata.version(name.strip())
        got = tuple(int(p) for p in re.findall(r"\d+", installed)[:len(low.split("."))])
        want = tuple(int(p) for p in low.split("."))
        assert got >= want, f"{name} {installed} is older than the declared {low}"


def test_make_test_keeps_notebooks_and_shared_fixtures_in_one_unit_of_work():
    """`make test` runs on 2 pytest-xdist workers; the root conftest.py decides what must stay
    together on one worker, in order."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    root_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root_conftest)
    unit = root_conftest.work_unit
    # a notebook's cells share one kernel
    assert unit("solutions/00_data.ipynb::Cell 0") == unit("solutions/00_data.ipynb::Cell 9")
    assert unit("solutions/00_data.ipynb::Cell 0") != unit("solutions/02_numpy_layers.ipynb::Cell 0")
    # lesson 03 reads lesson 01's MLP, lesson 06 lesson 03's CNN
    chained = {unit(f"solutions/{n}.ipynb::Cell 3")
               for n in ("01_numpy_mlp", "03_numpy_cnn", "06_torch_autograd")}
    assert len(chained) == 1
    assert unit("solutions/07_torch_data.ipynb::Cell 1") not in chained
    # test_draw.py trains its networks once; other tests are balanced one by one
    assert unit("tests/test_draw.py::test_a") == unit("tests/test_draw.py::test_b[x]")
    assert unit("tests/test_data.py::test_a") != unit("tests/test_data.py::test_b")


def _package_imports() -> dict[str, set[str]]:
    """Every module of mnist_course -> the modules of mnist_course it imports, anywhere in the
    file (inside functions too). ``mnist_course`` itself (``__init__``) is left out: it is the
    ground floor every module may use."""
    package = ROOT / "mnist_course"
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in package.rglob("*.py")}

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name if name and name != "mnist_course" else None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        names: list[str] = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = module.split(".")[: len(module.split(".")) - node.level
                                              + (path.name == "__init__.py")]
                    base = ".".join([*parts, base] if base else parts)
                names += [f"{base}.{alias.name}" for alias in node.names]
        graph[module] = {o for n in names if n.startswith("mnist_course")
                         and (o := owner(n)) and o != module}
    return graph


def test_no_import_cycles_inside_the_package():
    """Lower rooms never import higher ones (docs/COURSE.md): no module reaches itself again
    through the imports of mnist_course, counting imports inside functions."""
    graph = _package_imports()
    assert "mnist_course.scoreboard" in graph and "mnist_course.schedule" in graph
    state: dict[str, str] = {}  # "open" while on the path, "done" after
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for nxt in sorted(graph[module]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == [], f"import cycles: {cycles}"

