"""Tests of mnist_course.data.

The downloader is tested against a loopback HTTP server (127.0.0.1, a thread in this process)
serving small synthetic IDX files written here; the expected checksums and sizes are patched to
theirs. No test touches the internet. Tests that need the real MNIST ask for ``mnist_raw``, the
real Fashion-MNIST ``fashion_raw``.

Fashion-MNIST goes through the very same code as MNIST, so the tests of what a person sees (a
download, a tampered cache, a corrupt download, the local mirror variable, torchvision reading
the folder, the messages) run for each dataset (``@each_dataset``, the ``dset`` fixture); the
finer mechanics of the stamps run for MNIST.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mnist_course import CourseError, _atomic, cli, data

N_TRAIN, N_TEST = 12, 5


# --------------------------------------------------------------------------------------------
# Helpers and fixtures
# --------------------------------------------------------------------------------------------

def idx_bytes(arr: np.ndarray, code: int = 0x08, magic: bytes | None = None) -> bytes:
    """Encode ``arr`` as an IDX file (big-endian), optionally with a forged magic number."""
    dt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    head = magic if magic is not None else bytes([0, 0, code, arr.ndim])
    dims = np.asarray(arr.shape, dtype=">u4").tobytes()
    return head + dims + np.asarray(arr, dtype=dt).tobytes()


def synthetic_files(seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST) -> dict:
    """Raw (uncompressed) bytes of four small MNIST-like files, keyed by canonical name."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    return {name: idx_bytes(a) for name, a in arrays.items()}


def expect(monkeypatch, raw: dict, dataset: str = "mnist") -> None:
    """Make the module expect the SHA-256 and sizes of ``raw`` instead of the real MNIST (or the
    real ``dataset``)."""
    spec = data.DATASETS[dataset]
    for name, content in raw.items():
        monkeypatch.setitem(spec.sha256, name, hashlib.sha256(content).hexdigest())
        monkeypatch.setitem(spec.sizes, name, len(content))


def leftovers(folder: Path) -> list[str]:
    """Everything in ``folder`` (temporary files included) but the stamp file of verified files;
    [] when it does not exist."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != data.STAMP_NAME)


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A loopback HTTP server. ``routes[path]`` is a dict with ``body`` and optionally
    ``status``, ``ctype``, ``length`` (a Content-Length to announce) and ``pair`` (wait until
    two clients asked for the path before answering). ``hits[path]`` counts requests."""

    def __init__(self):
        self.routes: dict[str, dict] = {}
        self.hits: dict[str, int] = {}
        self.barriers: dict[str, threading.Barrier] = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with outer.lock:
                    outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                    route = outer.routes.get(self.path)
                    barrier = outer.barriers.setdefault(self.path, threading.Barrier(2))
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                if route.get("pair"):
                    try:
                        barrier.wait(timeout=20)
                    except threading.BrokenBarrierError:
                        pass
                body = route["body"]
                self.send_response(route.get("status", 200))
                self.send_header("Content-Type", route.get("ctype", "application/x-gzip"))
                self.send_header("Content-Length", str(route.get("length", len(body))))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def serve(self, raw: dict, **route) -> None:
        """Serve each file of ``raw`` gzip-compressed under /mnist/<name>.gz."""
        for name, content in raw.items():
            self.routes[f"/mnist/{name}.gz"] = {"body": gzip.compress(content, mtime=0), **route}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own HOME and cache and no mirror or data variables."""
    monkeypatch.delenv("MNIST_COURSE_DATA", raising=False)
    for spec in data.DATASETS.values():
        monkeypatch.delenv(spec.mirrors_variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def synth(monkeypatch):
    """Synthetic files, with the module expecting their checksums and sizes."""
    raw = synthetic_files()
    expect(monkeypatch, raw)
    return raw


@pytest.fixture
def dset(request, monkeypatch):
    """One dataset ("mnist" unless ``@each_dataset`` gives each in turn), expecting the
    checksums of synthetic files: ``.name``, ``.spec`` (its :class:`data.Dataset`), ``.raw``
    (the files' bytes), ``.var`` (its mirror variable) and ``.where`` (its raw folder under
    ``$MNIST_COURSE_DATA``, as messages show it)."""
    spec = data.DATASETS[getattr(request, "param", "mnist")]
    raw = synthetic_files()
    expect(monkeypatch, raw, spec.name)
    return SimpleNamespace(name=spec.name, spec=spec, raw=raw, var=spec.mirrors_variable,
                           where=f"$MNIST_COURSE_DATA/{spec.folder}/raw")


#: Run a test once for MNIST and once for Fashion-MNIST (through the ``dset`` fixture).
each_dataset = pytest.mark.parametrize("dset", list(data.DATASETS), indirect=True)


def fetch_error(root: Path, bad: str = data.FILES[0], dataset: str = "mnist") -> str:
    """Run fetch_mnist, expect a DataError and check the cache is clean: no temporary file,
    nothing under the name of the ``bad`` file (the verified files before it may stay).
    Returns the message."""
    with pytest.raises(data.DataError) as info:
        data.fetch_mnist(root, progress=False, dataset=dataset)
    msg = str(info.value)
    assert "Traceback" not in msg
    assert bad in msg
    kept = leftovers(data.raw_dir(root, dataset=dataset))
    assert kept == sorted(data.FILES[: data.FILES.index(bad)]), kept
    return msg


# --------------------------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("code,dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16),
                                        (0x0C, np.int32), (0x0D, np.float32),
                                        (0x0E, np.float64)])
def test_read_idx_round_trip_every_dtype(tmp_path, code, dtype):
    arr = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    if code == 0x08:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3"
    path.write_bytes(idx_bytes(arr, code))
    out = data.read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_read_idx_reads_gzip_and_raw_alike(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    (tmp_path / "a").write_bytes(idx_bytes(arr))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a"), arr)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a.gz"), arr)
    assert data.read_idx(tmp_path / "a").shape == (10,)


@pytest.mark.parametrize("content,words", [
    (idx_bytes(np.zeros(4, np.uint8), magic=b"\x08\x03\x00\x00"), ["magic", "0x08"]),
    (idx_bytes(np.zeros(4, np.uint8), magic=b"\x00\x00\x07\x01"), ["dtype code", "0x07"]),
    (idx_bytes(np.zeros(4, np.uint8), magic=b"\x00\x00\x08\x00"), ["0 dimensions"]),
    (b"\x00\x00", ["only 2 bytes"]),
    (b"\x00\x00\x08\x03\x00\x00", ["header"]),
    (idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-5], ["bytes", "header", "truncated"]),
    (idx_bytes(np.zeros((3, 28, 28), np.uint8)) + b"\x00", ["2,369 bytes", "2,368"]),
])
def test_read_idx_rejects_bad_files(tmp_path, content, words):
    path = tmp_path / "bad-idx"
    path.write_bytes(content)
    with pytest.raises(data.DataError) as info:
        data.read_idx(path)
    msg = str(info.value)
    assert "bad-idx" in msg and "download it again" in msg
    for w in words:
        assert w in msg


def test_read_idx_missing_and_damaged_gzip(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.read_idx(tmp_path / "nope")
    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:20])
    with pytest.raises(data.DataError, match="damaged gzip"):
        data.read_idx(bad)


# --------------------------------------------------------------------------------------------
# Where the data goes and where it comes from
# --------------------------------------------------------------------------------------------

def test_root_resolution_order(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.data_root() == home / ".cache" / "mnist_course"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.data_root() == tmp_path / "xdg" / "mnist_course"
    monkeypatch.setenv("MNIST_COURSE_DATA", str(tmp_path / "env"))
    assert data.data_root() == tmp_path / "env"
    assert data.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.data_root("~/x") == home / "x"
    assert data.raw_dir(tmp_path / "arg") == tmp_path / "arg" / "MNIST" / "raw"


def test_mirror_list(monkeypatch, tmp_path):
    # torchvision's own order, written out so the test needs no network or torchvision.
    assert data.mirrors() == ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                              "http://yann.lecun.com/exdb/mnist/"]
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", " http://a/x ,https://b/y/\n\tfile:///c  ")
    assert data.mirrors() == ["http://a/x", "https://b/y/", "file:///c"]
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", str(tmp_path))
    assert data.mirrors() == [tmp_path.as_uri()]
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", "  ")
    assert data.mirrors() == list(data.PUBLIC_MIRRORS)


def test_each_dataset_has_its_own_mirror_variable_and_folder(monkeypatch, tmp_path):
    fashion = data.DATASETS["fashion-mnist"]
    assert data.mirrors(dataset="fashion-mnist") == [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", "http://digits/")
    assert data.mirrors(dataset="fashion-mnist") == list(fashion.public_mirrors)
    monkeypatch.setenv("MNIST_COURSE_FASHION_MIRRORS", f"http://clothes/, {tmp_path}")
    assert data.mirrors(dataset="fashion-mnist") == ["http://clothes/", tmp_path.as_uri()]
    assert data.mirrors() == ["http://digits/"]
    assert data.raw_dir(tmp_path, dataset="fashion-mnist") == tmp_path / "FashionMNIST" / "raw"
    assert data.raw_dir(tmp_path) == tmp_path / "MNIST" / "raw"


@pytest.mark.parametrize("call", [
    lambda: data.load_mnist(dataset="kmnist"),
    lambda: data.fetch_mnist(dataset="Fashion-MNIST"),
    lambda: data.normalize(np.zeros((1, 28, 28), np.uint8), dataset="fashion"),
])
def test_an_unknown_dataset_is_named_with_the_choices(call):
    with pytest.raises(data.DataError, match="unknown dataset .*'mnist' or 'fashion-mnist'"):
        call()


@pytest.mark.parametrize("name", list(data.DATASETS))
def test_public_mirrors_and_folder_follow_torchvision(name):
    datasets = pytest.importorskip("torchvision.datasets")
    spec = data.DATASETS[name]
    tv = getattr(datasets, spec.folder)    # torchvision's class is named like its folder
    assert tv.__name__ == spec.folder
    assert list(spec.public_mirrors) == list(tv.mirrors)
    assert list(spec.classes) == [c.split(" - ")[0] for c in tv.classes]
    assert [r[0] for r in tv.resources] == [f"{n}.gz" for n in data.FILES]


def test_display_path_hides_the_machine(tmp_path, monkeypatch):
    home = tmp_path / "home"
    assert data.display_path(home / ".cache" / "m") == "~/.cache/m"
    monkeypatch.setenv("MNIST_COURSE_DATA", str(tmp_path / "d"))
    assert data.display_path(tmp_path / "d" / "MNIST" / "raw") == "$MNIST_COURSE_DATA/MNIST/raw"
    monkeypatch.chdir(tmp_path)
    assert data.display_path(tmp_path / "w" / "x") == "w/x"
    assert not data.display_path("/elsewhere/a/b").startswith("/")


def test_constants_agree():
    assert data.FILES == ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    assert set(data.SHA256) == set(data.FILES) == set(data.SIZES)
    assert all(len(h) == 64 for h in data.SHA256.values())
    assert (data.MEAN, data.STD) == (0.1307, 0.3081)
    assert issubclass(data.DataError, CourseError)
    mnist, fashion = data.DATASETS["mnist"], data.DATASETS["fashion-mnist"]
    assert mnist.sha256 is data.SHA256 and mnist.sizes is data.SIZES  # one table, two names
    assert (mnist.mean, mnist.std, mnist.public_mirrors) == (data.MEAN, data.STD,
                                                             data.PUBLIC_MIRRORS)
    assert set(fashion.sha256) == set(data.FILES) and fashion.sizes == data.SIZES
    assert not set(fashion.sha256.values()) & set(data.SHA256.values())
    assert (fashion.mean, fashion.std) == (0.2860, 0.3530)
    assert data.get_dataset("fashion-mnist") is fashion and data.get_dataset() is mnist


# --------------------------------------------------------------------------------------------
# Fetching: the good paths
# --------------------------------------------------------------------------------------------

@each_dataset
def test_fetch_over_http_then_load(tmp_path, server, dset, monkeypatch, capsys):
    synth = dset.raw
    server.serve(synth)
    monkeypatch.setattr(data, "live_progress", lambda: True)  # as in a terminal
    monkeypatch.setenv(dset.var, server.url)
    folder = data.fetch_mnist(tmp_path / "root", dataset=dset.name)
    assert folder == tmp_path / "root" / dset.spec.folder / "raw"
    assert leftovers(folder) == sorted(data.FILES)  # no temporary file left over
    for name in data.FILES:
        assert (folder / name).read_bytes() == synth[name]
    err = capsys.readouterr().err
    for name in data.FILES:  # one progress bar per file, labelled by the file name only
        assert f"{name}: 100%" in err
    (x, y), (xt, yt) = data.load_mnist(tmp_path / "root", dataset=dset.name)
    assert x.shape == (N_TRAIN, 28, 28) and x.dtype == np.uint8
    assert y.shape == (N_TRAIN,) and y.dtype == np.int64
    assert xt.shape == (N_TEST, 28, 28) and yt.shape == (N_TEST,)
    np.testing.assert_array_equal(x, data.read_idx(folder / data.FILES[0]))


def test_second_fetch_reuses_the_cache_silently(tmp_path, server, synth, monkeypatch, capsys):
    server.serve(synth)
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", server.url)
    folder = data.fetch_mnist(tmp_path)
    hits = dict(server.hits)
    assert sum(hits.values()) == 4
    # (the stamp file is left out: on a coarse clock it may be rewritten once, see _Stamps)
    stamps = {name: (folder / name).stat().st_mtime_ns for name in leftovers(folder)}
    capsys.readouterr()
    for _ in range(2):
        assert data.fetch_mnist(tmp_path) == folder
        data.load_mnist(tmp_path)
    assert server.hits == hits, "a cached file was downloaded again"
    assert {name: (folder / name).stat().st_mtime_ns for name in leftovers(folder)} == stamps
    assert capsys.readouterr() == ("", "")
    assert data.is_cached(tmp_path)


def test_damaged_cached_file_is_downloaded_again(tmp_path, server, synth, monkeypatch):
    server.serve(synth)
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", server.url)
    folder = data.fetch_mnist(tmp_path, progress=False)
    (folder / data.FILES[1]).write_bytes(b"\x00\x00\x08\x01garbage")
    assert not data.is_cached(tmp_path)
    data.fetch_mnist(tmp_path, progress=False)
    assert (folder / data.FILES[1]).read_bytes() == synth[data.FILES[1]]
    assert server.hits[f"/mnist/{data.FILES[1]}.gz"] == 2
    assert server.hits[f"/mnist/{data.FILES[0]}.gz"] == 1


# --------------------------------------------------------------------------------------------
# A cached file that changed after it was verified is never served
# --------------------------------------------------------------------------------------------

LABELS = "t10k-labels-idx1-ubyte"


@pytest.fixture
def mirrored(tmp_path, dset, monkeypatch):
    """The synthetic files of ``dset`` behind a file:// mirror, fetched into $MNIST_COURSE_DATA.
    Returns the raw folder."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, content in dset.raw.items():
        (mirror / f"{name}.gz").write_bytes(gzip.compress(content))
    monkeypatch.setenv(dset.var, mirror.as_uri())
    monkeypatch.setenv("MNIST_COURSE_DATA", str(tmp_path / "cache"))
    folder = data.fetch_mnist(progress=False, dataset=dset.name)
    assert (folder / data.STAMP_NAME).is_file()
    return folder


def flip_last_byte(path: Path, keep_mtime: bool = False) -> bytes:
    """Change the last byte of a file in place (same size: a label or a pixel changes).
    With keep_mtime the modification time is put back, as ``touch -r`` or ``rsync -t`` would."""
    st = path.stat()
    content = bytearray(path.read_bytes())
    content[-1] ^= 0x01
    with open(path, "r+b") as f:
        f.write(content)
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    return bytes(content)


def count_hashes(monkeypatch) -> list[str]:
    """Record the name of every file that the cache check hashes."""
    hashed: list[str] = []
    real = data._sha256_file

    def counting(path):
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(data, "_sha256_file", counting)
    return hashed


def settle(folder: Path) -> None:
    """Date the stamp file a second after its files, as if a moment had passed since it was
    written: on a coarse clock an entry written in the same tick as its file is not trusted."""
    stamp = folder / data.STAMP_NAME
    newest = max((folder / n).stat().st_ctime_ns for n in data.FILES)
    os.utime(stamp, ns=(newest + 10**9, newest + 10**9))


@each_dataset
@pytest.mark.parametrize("keep_mtime", [False, True], ids=["edited", "edited, mtime restored"])
def test_changed_cached_file_is_fetched_again_and_said_so(mirrored, dset, capsys, keep_mtime):
    settle(mirrored)
    flip_last_byte(mirrored / LABELS, keep_mtime=keep_mtime)
    capsys.readouterr()
    _, (_, y_test) = data.load_mnist(dataset=dset.name)
    np.testing.assert_array_equal(y_test, np.frombuffer(dset.raw[LABELS], np.uint8, offset=8))
    err = capsys.readouterr().err
    assert f"{LABELS} in {dset.where} does not match its SHA-256" in err
    assert "downloading it again" in err
    assert (mirrored / LABELS).read_bytes() == dset.raw[LABELS]
    assert leftovers(mirrored) == sorted(data.FILES)
    assert data.is_cached(dataset=dset.name)


@each_dataset
def test_changed_cached_file_is_refused_when_no_mirror_works(mirrored, dset, tmp_path,
                                                              monkeypatch):
    settle(mirrored)
    damaged = flip_last_byte(mirrored / LABELS)
    monkeypatch.setenv(dset.var, (tmp_path / "no-such-mirror").as_uri())
    for load in (lambda: data.load_mnist(dataset=dset.name),
                 lambda: data.load_mnist(download=False, dataset=dset.name),
                 lambda: data.fetch_mnist(dataset=dset.name)):
        with pytest.raises(data.DataError) as info:
            load()
        msg = str(info.value)
        assert f"{LABELS} in {dset.where} does not match its SHA-256" in msg
        assert "not used" in msg and f"`{dset.spec.data_command}`" in msg
        assert "Traceback" not in msg
    assert f"{dset.var}=file://" in msg  # how to point at a copy you have
    assert not data.is_cached(dataset=dset.name)
    assert (mirrored / LABELS).read_bytes() == damaged  # left as it was, but never served
    assert leftovers(mirrored) == sorted(data.FILES)  # no partial file


def test_verified_files_are_not_hashed_again(mirrored, monkeypatch):
    settle(mirrored)
    hashed = count_hashes(monkeypatch)
    data.load_mnist()
    data.load_mnist(download=False)
    assert data.is_cached()
    assert hashed == [], "a file the stamp vouches for was hashed again"
    data.fetch_mnist(rehash=True)  # what `mnist-course data` does
    assert hashed == list(data.FILES)


def test_cache_without_a_stamp_is_hashed_once(mirrored, monkeypatch):
    """A cache filled by an older version (or by hand) has no stamp: each file is hashed once,
    then the stamp is written."""
    (mirrored / data.STAMP_NAME).unlink()
    hashed = count_hashes(monkeypatch)
    assert data.is_cached()
    assert hashed == list(data.FILES)
    assert (mirrored / data.STAMP_NAME).is_file()
    settle(mirrored)
    data.load_mnist(download=False)
    assert hashed == list(data.FILES)


def test_stamp_as_new_as_its_file_is_not_trusted(mirrored, monkeypatch):
    """An entry written in the same clock tick as its file could miss an edit made in that tick,
    so it is hashed again (and then rewritten)."""
    newest = max((mirrored / n).stat().st_ctime_ns for n in data.FILES)
    os.utime(mirrored / data.STAMP_NAME, ns=(newest, newest))
    hashed = count_hashes(monkeypatch)
    assert data.is_cached()
    assert hashed == [data.FILES[-1]]  # the file fetched last, as new as the stamp now
    assert (mirrored / data.STAMP_NAME).stat().st_mtime_ns > newest
    data.is_cached()
    assert hashed == [data.FILES[-1]]


def test_forged_stamp_is_caught_by_rehash(mirrored, monkeypatch):
    """Whoever edits the file and its stamp together defeats the stamp; `mnist-course data`
    hashes every file, and so finds the edit."""
    settle(mirrored)
    flip_last_byte(mirrored / LABELS)
    stamp = mirrored / data.STAMP_NAME
    content = json.loads(stamp.read_text())
    st = (mirrored / LABELS).stat()
    content["files"][LABELS].update(mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)
    stamp.write_text(json.dumps(content))
    settle(mirrored)
    assert data.is_cached(), "the forged stamp should fool the quick check"
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", "file:///no/such/mirror")
    with pytest.raises(data.DataError, match=f"{LABELS} .* does not match its SHA-256"):
        data.fetch_mnist(rehash=True)


@pytest.mark.parametrize("stamp", ["unwritable", "damaged"])
def test_stamp_problems_only_cost_a_hash(mirrored, monkeypatch, stamp):
    """A read-only cache (no stamp can be written) or a damaged stamp still loads, verified."""
    if stamp == "damaged":
        (mirrored / data.STAMP_NAME).write_text('{"files": {"t10k-lab')
    else:
        (mirrored / data.STAMP_NAME).unlink()

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(_atomic.tempfile, "mkstemp", refuse)
    hashed = count_hashes(monkeypatch)
    for _ in range(2):
        data.load_mnist(download=False)
    assert len(hashed) == (8 if stamp == "unwritable" else 4)
    assert leftovers(mirrored) == sorted(data.FILES)


@each_dataset
def test_cli_data_rehashes_and_replaces_a_changed_file(mirrored, dset, capsys):
    settle(mirrored)
    flip_last_byte(mirrored / LABELS)
    assert cli.main(["data", "--dataset", dset.name]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{dset.spec.title} is ready in")
    assert f"{LABELS} in {dset.where} does not match" in err
    assert (mirrored / LABELS).read_bytes() == dset.raw[LABELS]


def test_datasets_never_mix(tmp_path, server, monkeypatch):
    """Both datasets in one root, each from its own mirror variable, each in its own folder with
    its own stamp; Fashion-MNIST's files put in MNIST's folder are refused there."""
    raws = {name: synthetic_files(seed=i) for i, name in enumerate(data.DATASETS)}
    for name, raw in raws.items():
        expect(monkeypatch, raw, name)
        for file, content in raw.items():
            server.routes[f"/{name}/{file}.gz"] = {"body": gzip.compress(content)}
        monkeypatch.setenv(data.DATASETS[name].mirrors_variable,
                           server.url.replace("/mnist/", f"/{name}/"))
    monkeypatch.setenv("MNIST_COURSE_DATA", str(tmp_path))
    for name, raw in raws.items():
        folder = data.fetch_mnist(progress=False, dataset=name)
        assert (folder / data.STAMP_NAME).is_file()
        (x, _), _ = data.load_mnist(download=False, dataset=name)
        np.testing.assert_array_equal(x, np.frombuffer(raw[data.FILES[0]], np.uint8,
                                                       offset=16).reshape(x.shape))
    assert sum(server.hits.values()) == 8   # each file of each dataset once
    mnist, fashion = (data.raw_dir(dataset=n) for n in data.DATASETS)
    (mnist / LABELS).write_bytes((fashion / LABELS).read_bytes())
    with pytest.raises(data.DataError, match=f"{LABELS} in .*/MNIST/raw does not match"):
        data.load_mnist(download=False)
    assert data.is_cached(dataset="fashion-mnist")


def test_default_root_is_the_user_cache(tmp_path, server, synth, monkeypatch):
    server.serve(synth)
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", server.url)
    assert data.fetch_mnist(progress=False) == tmp_path / "xdg" / "mnist_course" / "MNIST" / "raw"
    monkeypatch.setenv("MNIST_COURSE_DATA", str(tmp_path / "env"))
    assert data.fetch_mnist(progress=False) == tmp_path / "env" / "MNIST" / "raw"
    assert leftovers(tmp_path / "env" / "MNIST" / "raw") == sorted(data.FILES)


@each_dataset
@pytest.mark.parametrize("style", ["uri", "plain path"])
def test_file_mirror(tmp_path, dset, monkeypatch, style):
    # A space in a URI is quoted, so it is fine there; a plain path must not contain one.
    mirror = tmp_path / ("mirror dir" if style == "uri" else "mirror")
    mirror.mkdir()
    for name, content in dset.raw.items():
        (mirror / f"{name}.gz").write_bytes(gzip.compress(content))
    monkeypatch.setenv(dset.var, mirror.as_uri() if style == "uri" else str(mirror))
    folder = data.fetch_mnist(tmp_path / "root", progress=False, dataset=dset.name)
    assert folder == tmp_path / "root" / dset.spec.folder / "raw"
    assert all((folder / n).read_bytes() == dset.raw[n] for n in data.FILES)


def test_next_mirror_is_tried_after_a_failure(tmp_path, server, synth, monkeypatch):
    server.serve(synth)
    dead = f"http://127.0.0.1:{unused_port()}/"
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", f"{dead} {server.url}nothing-here/,{server.url}")
    data.fetch_mnist(tmp_path, progress=False)
    assert data.is_cached(tmp_path)
    assert server.hits[f"/mnist/nothing-here/{data.FILES[0]}.gz"] == 1


@each_dataset
def test_torchvision_reads_the_files_we_wrote(tmp_path, server, dset, monkeypatch):
    datasets = pytest.importorskip("torchvision.datasets")
    server.serve(dset.raw)
    monkeypatch.setenv(dset.var, server.url)
    root = data.fetch_mnist(tmp_path, progress=False, dataset=dset.name).parent.parent
    tv = getattr(datasets, dset.spec.folder)     # datasets.MNIST, datasets.FashionMNIST
    train = tv(root, train=True, download=False)
    test = tv(root, train=False, download=False)
    assert (len(train), len(test)) == (N_TRAIN, N_TEST)
    (x, y), _ = data.load_mnist(root, download=False, dataset=dset.name)
    np.testing.assert_array_equal(train.data.numpy(), x)
    np.testing.assert_array_equal(train.targets.numpy(), y)


def test_concurrent_fetches_both_succeed(tmp_path, server, synth):
    """Two processes download the same files at the same moment (the server answers each file
    only once both have asked for it); both succeed and the files are intact."""
    server.serve(synth, pair=True)
    script = (
        "import json, sys\n"
        "from mnist_course import data\n"
        "cfg = json.loads(sys.argv[1])\n"
        "data.SHA256.update(cfg['sha']); data.SIZES.update(cfg['sizes'])\n"
        "data.fetch_mnist(cfg['root'], progress=False)\n"
    )
    cfg = json.dumps({"root": str(tmp_path / "root"),
                      "sha": {n: hashlib.sha256(c).hexdigest() for n, c in synth.items()},
                      "sizes": {n: len(c) for n, c in synth.items()}})
    env = {**os.environ, "MNIST_COURSE_MIRRORS": server.url}
    procs = [subprocess.Popen([sys.executable, "-c", script, cfg], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
    assert all(server.hits[f"/mnist/{n}.gz"] == 2 for n in data.FILES)  # truly concurrent
    folder = tmp_path / "root" / "MNIST" / "raw"
    assert leftovers(folder) == sorted(data.FILES)
    assert all((folder / n).read_bytes() == synth[n] for n in data.FILES)


# --------------------------------------------------------------------------------------------
# Fetching: every bad input ends in a clear DataError and a clean cache
# --------------------------------------------------------------------------------------------

@each_dataset
def test_truncated_gzip(tmp_path, server, dset, monkeypatch):
    server.serve(dset.raw)
    route = server.routes[f"/mnist/{data.FILES[0]}.gz"]
    route["body"] = route["body"][: len(route["body"]) // 2]
    monkeypatch.setenv(dset.var, server.url)
    msg = fetch_error(tmp_path, dataset=dset.name)
    assert data.FILES[0] in msg and "truncated" in msg
    assert f"export {dset.var}=file://" in msg and f"{dset.spec.folder}/raw/" in msg


def test_connection_closed_early(tmp_path, server, synth, monkeypatch):
    server.serve(synth)
    route = server.routes[f"/mnist/{data.FILES[0]}.gz"]
    route["length"] = len(route["body"]) + 1000  # announce more than is sent, then hang up
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", server.url)
    msg = fetch_error(tmp_path)
    assert "truncated" in msg and server.url in msg


def test_not_gzip(tmp_path, server, synth, monkeypatch):
    server.serve(synth)
    server.routes[f"/mnist/{data.FILES[0]}.gz"]["body"] = synth[data.FILES[0]]  # uncompressed
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", server.url)
    assert "not a gzip file" in fetch_error(tmp_path)


@pytest.mark.parametrize("ctype", ["text/html; charset=utf-8", "application/octet-stream"])
def test_html_page_from_a_mirror(tmp_path, server, synth, monkeypatch, ctype):
    server.serve(synth)
    page = b"<!DOCTYPE html>\n<html><body><h1>Sign in to the proxy</h1></body></html>"
    server.routes[f"/mnist/{data.FILES[0]}.gz"] = {"body": page, "ctype": ctype}
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", server.url)
    msg = fetch_error(tmp_path)
    assert "HTML page" in msg and data.FILES[0] in msg


@each_dataset
def test_checksum_mismatch_names_file_and_both_digests(tmp_path, server, dset, monkeypatch):
    name = data.FILES[2]
    bad = bytearray(dset.raw[name])
    bad[-1] ^= 0xFF  # same size, one pixel differs
    server.serve({**dset.raw, name: bytes(bad)})
    monkeypatch.setenv(dset.var, server.url)
    msg = fetch_error(tmp_path, bad=name, dataset=dset.name)
    assert "checksum mismatch" in msg and name in msg
    assert dset.spec.sha256[name] in msg
    assert hashlib.sha256(bytes(bad)).hexdigest() in msg


def test_recompressed_copy_is_accepted(tmp_path, server, synth, monkeypatch):
    """The checksum is of the decompressed bytes, so any gzip of the right content passes."""
    for name, content in synth.items():
        server.routes[f"/mnist/{name}.gz"] = {"body": gzip.compress(content, 1, mtime=12345)}
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", server.url)
    assert data.is_cached(data.fetch_mnist(tmp_path, progress=False).parent.parent)


def test_all_mirrors_unreachable(tmp_path, server, monkeypatch):
    dead = f"http://127.0.0.1:{unused_port()}/mnist/"
    missing = server.url + "gone/"
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", f"{dead},{missing}")
    msg = fetch_error(tmp_path)
    lines = msg.splitlines()
    assert any(dead in line and "refused" in line.lower() for line in lines), msg
    assert any(missing in line and "404" in line for line in lines), msg
    assert "MNIST_COURSE_MIRRORS=file://" in msg and "MNIST_COURSE_DATA" in msg


def test_wrong_magic_even_with_matching_checksum(tmp_path, server, synth, monkeypatch):
    name = data.FILES[1]
    forged = b"\x00\x00\x08\x02" + synth[name][4:]  # claims 2 dimensions
    raw = {**synth, name: forged}
    expect(monkeypatch, raw)
    server.serve(raw)
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", server.url)
    msg = fetch_error(tmp_path, bad=name)
    assert "header" in msg


def test_images_and_labels_disagree(tmp_path, server, monkeypatch):
    raw = synthetic_files()
    raw["train-labels-idx1-ubyte"] = idx_bytes(np.zeros(N_TRAIN - 1, np.uint8))
    expect(monkeypatch, raw)
    server.serve(raw)
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", server.url)
    with pytest.raises(data.DataError) as info:
        data.load_mnist(tmp_path)
    msg = str(info.value)
    assert f"{N_TRAIN} images" in msg and f"{N_TRAIN - 1} labels" in msg
    assert "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg


def test_wrong_image_shape(tmp_path, monkeypatch):
    raw = synthetic_files()
    raw["t10k-images-idx3-ubyte"] = idx_bytes(np.zeros((N_TEST, 14, 14), np.uint8))
    expect(monkeypatch, raw)  # intact files (by their checksums) that hold the wrong shape
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    for name, content in raw.items():
        (folder / name).write_bytes(content)
    with pytest.raises(data.DataError, match=r"\(N, 28, 28\)"):
        data.load_mnist(tmp_path, download=False)


def test_cache_root_is_a_file(tmp_path, server, synth, monkeypatch):
    server.serve(synth)
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", server.url)
    blocker = tmp_path / "root"
    blocker.write_text("not a folder")
    with pytest.raises(data.DataError, match="the MNIST cache in") as info:
        data.fetch_mnist(blocker, progress=False)
    assert "MNIST_COURSE_DATA" in str(info.value)
    assert server.hits == {}


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="file permissions do not bind root")
def test_cache_folder_read_only(tmp_path, server, synth, monkeypatch):
    server.serve(synth)
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", server.url)
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    try:
        with pytest.raises(data.DataError, match="the MNIST cache in"):
            data.fetch_mnist(tmp_path, progress=False)
        assert leftovers(folder) == []
    finally:
        folder.chmod(0o755)


def test_temp_file_cannot_be_created(tmp_path, server, synth, monkeypatch):
    """A folder that exists but refuses new files (as a read-only folder would, even for root)."""
    server.serve(synth)
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", server.url)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_atomic.tempfile, "mkstemp", refuse)
    msg = fetch_error(tmp_path)
    assert "the MNIST cache in" in msg and "Permission denied" in msg


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_interrupted_write_leaves_no_file(tmp_path, server, synth, monkeypatch, where):
    """Ctrl-C (or a full disk) in the middle of writing: no canonical file, no temp file."""
    server.serve(synth)
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", server.url)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data.os, where, boom)
    with pytest.raises(KeyboardInterrupt):
        data.fetch_mnist(tmp_path, progress=False)
    monkeypatch.undo()
    assert leftovers(tmp_path / "MNIST" / "raw") == []


def test_disk_full_leaves_no_file(tmp_path, server, synth, monkeypatch):
    server.serve(synth)
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", server.url)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data.os, "fsync", full)
    msg = fetch_error(tmp_path)
    assert "No space left on device" in msg


@pytest.mark.parametrize("name", list(data.DATASETS))
def test_load_without_download_says_what_to_do(tmp_path, name):
    spec = data.DATASETS[name]
    with pytest.raises(data.DataError) as info:
        data.load_mnist(tmp_path, download=False, dataset=name)
    msg = str(info.value)
    assert msg.startswith(f"{spec.title} is not in ")
    assert f"Run `{spec.data_command}`, or call {spec.download_call}." in msg
    assert not (tmp_path / spec.folder).exists()


# --------------------------------------------------------------------------------------------
# The CLI prints the message, exits 1, shows no traceback
# --------------------------------------------------------------------------------------------

def test_cli_data_error_in_process(tmp_path, server, monkeypatch, capsys):
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", server.url)
    assert cli.main(["data", "--root", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("mnist-course: error: could not get train-images-idx3-ubyte")
    assert "404" in err and "Traceback" not in err and out == ""


def test_cli_data_error_in_subprocess(tmp_path):
    env = {**os.environ, "MNIST_COURSE_MIRRORS": f"http://127.0.0.1:{unused_port()}/",
           "MNIST_COURSE_DATA": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "mnist_course", "data"], env=env, check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "mnist-course: error:" in proc.stderr and "Traceback" not in proc.stderr
    assert "MNIST_COURSE_MIRRORS=file://" in proc.stderr
    assert leftovers(tmp_path / "cache" / "MNIST" / "raw") == []


def test_cli_unwritable_root_in_subprocess(tmp_path):
    (tmp_path / "file").write_text("x")
    env = {**os.environ, "MNIST_COURSE_MIRRORS": f"http://127.0.0.1:{unused_port()}/"}
    proc = subprocess.run([sys.executable, "-m", "mnist_course", "data", "--root",
                           str(tmp_path / "file")], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 1
    assert "the MNIST cache in" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------
# normalize
# --------------------------------------------------------------------------------------------

def test_normalize_shape_dtype_values():
    x = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    out = data.normalize(x)
    assert out.shape == (1, 1, 2, 2) and out.dtype == np.float32
    expected = (x[:, None].astype(np.float64) / 255 - 0.1307) / 0.3081
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert data.normalize(x[:, None]).shape == (1, 1, 2, 2)
    with pytest.raises(ValueError, match="shape"):
        data.normalize(np.zeros((2, 3, 28, 28), np.uint8))
    fashion = data.normalize(x, dataset="fashion-mnist")
    np.testing.assert_allclose(fashion, (x[:, None] / 255 - 0.2860) / 0.3530, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# The real MNIST (from the cache or the local mirror; never the internet)
# --------------------------------------------------------------------------------------------

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_files_match_their_checksums(mnist_raw):
    assert sorted(p.name for p in mnist_raw.iterdir() if not p.name.startswith(".")) \
        == sorted(data.FILES)
    for name in data.FILES:
        content = (mnist_raw / name).read_bytes()
        assert len(content) == data.SIZES[name]
        assert hashlib.sha256(content).hexdigest() == data.SHA256[name], name


def test_real_mnist_shapes_and_label_counts(mnist):
    (x, y), (xt, yt) = mnist
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.int64
    assert xt.shape == (10000, 28, 28) and yt.shape == (10000,)
    assert np.bincount(y).tolist() == TRAIN_COUNTS
    assert np.bincount(yt).tolist() == TEST_COUNTS
    hist = np.bincount(x.ravel(), minlength=256)  # pixel statistics from a histogram: fast
    levels = np.arange(256) / 255
    mean = (hist * levels).sum() / hist.sum()
    std = np.sqrt((hist * (levels - mean) ** 2).sum() / hist.sum())
    assert (round(mean, 4), round(std, 4)) == (data.MEAN, data.STD)


def test_torchvision_reads_the_real_cache(mnist_raw):
    datasets = pytest.importorskip("torchvision.datasets")
    root = mnist_raw.parent.parent
    assert len(datasets.MNIST(root, train=True, download=False)) == 60000
    assert len(datasets.MNIST(root, train=False, download=False)) == 10000


def test_real_fashion_mnist(fashion_raw, capsys):
    """The real Fashion-MNIST (from the cache or MNIST_COURSE_FASHION_MIRRORS): checksums, shapes,
    6,000 training and 1,000 test images of each class, its mean and std, torchvision, the CLI."""
    fashion = data.DATASETS["fashion-mnist"]
    assert fashion_raw.parts[-2:] == ("FashionMNIST", "raw")
    for name in data.FILES:
        content = (fashion_raw / name).read_bytes()
        assert len(content) == fashion.sizes[name]
        assert hashlib.sha256(content).hexdigest() == fashion.sha256[name], name
    root = fashion_raw.parent.parent
    (x, y), (xt, yt) = data.load_mnist(root, download=False, dataset="fashion-mnist")
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [6000] * 10 and np.bincount(yt).tolist() == [1000] * 10
    hist = np.bincount(x.ravel(), minlength=256)
    levels = np.arange(256) / 255
    mean = (hist * levels).sum() / hist.sum()
    std = np.sqrt((hist * (levels - mean) ** 2).sum() / hist.sum())
    assert (round(mean, 4), round(std, 4)) == (fashion.mean, fashion.std)
    datasets = pytest.importorskip("torchvision.datasets")
    assert len(datasets.FashionMNIST(root, train=False, download=False)) == 10000
    assert cli.main(["data", "--dataset", "fashion-mnist", "--root", str(root)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Fashion-MNIST is ready in") and "60,000" in out and err == ""


def test_cli_data_with_the_real_cache(mnist_raw, capsys):
    assert cli.main(["data", "--root", str(mnist_raw.parent.parent)]) == 0
    out, err = capsys.readouterr()
    assert "MNIST is ready in" in out and "60,000" in out and err == ""


def test_stale_temporary_files_are_removed(tmp_path, server, synth, monkeypatch):
    """A process killed mid-download leaves its temporary file; the next download removes it
    once it is an hour old, and leaves a younger one (another download may be running)."""
    server.serve(synth)
    monkeypatch.setenv("MNIST_COURSE_MIRRORS", server.url)
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    old = folder / ".train-images-idx3-ubyte.abc123.part"
    young = folder / ".train-labels-idx1-ubyte.def456.part"
    old.write_bytes(b"half a file")
    young.write_bytes(b"being written")
    os.utime(old, (1_000_000_000, 1_000_000_000))
    data.fetch_mnist(tmp_path, progress=False)
    assert leftovers(folder) == sorted([*data.FILES, young.name])
