"""Fetch, verify and load MNIST, and Fashion-MNIST the same way.

The four MNIST files live uncompressed under ``<root>/MNIST/raw/`` with their canonical names,
the folder layout torchvision uses, so ``torchvision.datasets.MNIST(root, download=False)`` reads
the very files this module wrote.

Fashion-MNIST (Zalando's 28 x 28 grey images of ten kinds of clothing, MIT licence) has four
files with the same names and shapes; every function below serves it with
``dataset="fashion-mnist"`` (the default is ``"mnist"``). Its files live under
``<root>/FashionMNIST/raw/`` (what ``torchvision.datasets.FashionMNIST(root, download=False)``
reads), its local mirrors come from ``$MNIST_COURSE_FASHION_MIRRORS``, and everything said
below holds for it alike: :data:`DATASETS` is the one table the code reads.

- The data root is the ``root`` argument, else ``$MNIST_COURSE_DATA``, else
  ``$XDG_CACHE_HOME/mnist_course``, else ``~/.cache/mnist_course``.
- Mirrors come from ``$MNIST_COURSE_MIRRORS`` (base URLs separated by whitespace or commas;
  ``file://`` and ``http(s)://``), else the public mirrors, in torchvision's order
  (Fashion-MNIST: ``$MNIST_COURSE_FASHION_MIRRORS``, else torchvision's mirror for it).
- Each file is downloaded as ``<base>/<name>.gz``, decompressed, and verified by the SHA-256 of
  its decompressed bytes. It is written to a temporary file in the same folder and renamed onto
  its canonical name only once it is complete and verified, so an interrupted download never
  leaves a half-written file behind, and two processes fetching at once both end with intact
  files.
- A file in the cache is checked before it is used: it must have the right size, and the right
  SHA-256 unless it provably has not changed since it was last verified. Each verification
  (a download, or hashing a cached file) is recorded in a stamp file in the same folder,
  ``.mnist_course-verified.json`` (written atomically): the file's size, ``mtime_ns``,
  ``ctime_ns`` and digest. Later calls only ``stat`` the files; a file whose size or timestamps
  differ from its entry, or that is not older than the stamp file (an edit within the same
  clock tick), is hashed again. Any edit moves ``ctime`` (``os.utime`` can put ``mtime`` back,
  not ``ctime``), so a damaged file is caught without reading 55 MB on every load. Only
  someone who edits a file and forges its stamp evades this quick check; ``mnist-course data``
  (``fetch_mnist(rehash=True)``) hashes every file regardless. A stamp that is missing (a cache
  from an older version), damaged, or that cannot be written (a read-only cache) only costs a
  re-hash.
- A cached file that fails its check is never served. :func:`fetch_mnist` (and so
  :func:`load_mnist`) says so on stderr and downloads it again; when no mirror can provide it,
  or with ``load_mnist(download=False)``, it raises :class:`DataError` naming the file and
  what to do. The bad file is left where it is, unused.

Every problem a person can fix is raised as :class:`DataError`, with a message that says what to do.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import re
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_course import CourseError, __version__, live_progress
from mnist_course._atomic import atomic_write

__all__ = [
    "DATASETS",
    "FILES",
    "MEAN",
    "PUBLIC_MIRRORS",
    "SHA256",
    "SIZES",
    "STAMP_NAME",
    "STD",
    "DataError",
    "Dataset",
    "data_root",
    "display_path",
    "fetch_mnist",
    "get_dataset",
    "is_cached",
    "load_mnist",
    "mirrors",
    "normalize",
    "raw_dir",
    "read_idx",
    "train_val_split",
]

#: The four MNIST files, by their canonical (uncompressed) names (Fashion-MNIST's are the same).
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

#: SHA-256 of the decompressed bytes of each file (a re-compressed copy is accepted).
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: Size in bytes of each decompressed file: the first, cheapest check of a cached copy.
SIZES = {
    "train-images-idx3-ubyte": 16 + 60_000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60_000,
    "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10_000,
}

#: Public mirrors, in the order torchvision tries them.
PUBLIC_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

#: Mean and standard deviation of the training pixels scaled to [0, 1].
MEAN = 0.1307
STD = 0.3081


@dataclass(frozen=True)
class Dataset:
    """One dataset this module serves: where it comes from, how it is checked, where it is kept.

    name: the ``dataset=`` keyword and the ``--dataset`` value ("mnist", "fashion-mnist");
    title: how messages call it; folder: ``<root>/<folder>/raw``, torchvision's class name;
    sha256 and sizes: of each decompressed file in :data:`FILES`; public_mirrors: in
    torchvision's order; mirrors_variable: the environment variable that replaces them; mean and
    std: of the training pixels scaled to [0, 1] (what :func:`normalize` uses); classes: the
    names of labels 0 to 9.
    """

    name: str
    title: str
    folder: str
    sha256: dict
    sizes: dict
    public_mirrors: tuple
    mirrors_variable: str
    mean: float
    std: float
    classes: tuple

    @property
    def data_command(self) -> str:
        """The command that fetches this dataset again: ``mnist-course data [--dataset ...]``."""
        return "mnist-course data" + ("" if self.name == "mnist" else f" --dataset {self.name}")

    @property
    def download_call(self) -> str:
        """The Python call that fetches it while loading."""
        extra = "" if self.name == "mnist" else f", dataset={self.name!r}"
        return f"load_mnist(download=True{extra})"


#: Every dataset served, by the name the ``dataset=`` keyword and ``--dataset`` take.
DATASETS = {
    "mnist": Dataset(
        name="mnist", title="MNIST", folder="MNIST", sha256=SHA256, sizes=SIZES,
        public_mirrors=PUBLIC_MIRRORS, mirrors_variable="MNIST_COURSE_MIRRORS",
        mean=MEAN, std=STD, classes=tuple(str(d) for d in range(10))),
    "fashion-mnist": Dataset(
        name="fashion-mnist", title="Fashion-MNIST", folder="FashionMNIST",
        sha256={
            "train-images-idx3-ubyte":
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte":
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte":
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte":
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        sizes=dict(SIZES),
        public_mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        mirrors_variable="MNIST_COURSE_FASHION_MIRRORS",
        mean=0.2860, std=0.3530,
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot")),
}
_MNIST = DATASETS["mnist"]


def get_dataset(name: str = "mnist") -> Dataset:
    """The :class:`Dataset` called ``name`` ("mnist" or "fashion-mnist"); :class:`DataError`
    for any other name."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        choices = " or ".join(repr(n) for n in DATASETS)
        raise DataError(f"unknown dataset {name!r}: choose {choices}") from None


#: Seconds to wait for a mirror to answer.
TIMEOUT = 30

#: The stamp file in the raw folder: what each verified file looked like when it was verified.
STAMP_NAME = ".mnist_course-verified.json"

_CHUNK = 1 << 16

# IDX dtype codes: code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}



def _local_mirror_help(ds: Dataset) -> str:
    of = "" if ds is _MNIST else f" of {ds.title}"
    return (
        f"To use a copy you already have, point {ds.mirrors_variable} at the folder that holds "
        f"the four .gz files{of}, e.g.\n"
        f"    export {ds.mirrors_variable}=file:///path/to/{ds.name}\n"
        "(several mirrors may be given, separated by spaces or commas), or set MNIST_COURSE_DATA "
        f"to a folder whose {ds.folder}/raw/ already holds the four uncompressed files."
    )


class DataError(CourseError):
    """MNIST (or Fashion-MNIST) could not be fetched, verified or read; the message says what
    to do."""


# --------------------------------------------------------------------------------------------
# Where things are
# --------------------------------------------------------------------------------------------

def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root``, else ``$MNIST_COURSE_DATA``, else the user cache folder."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get("MNIST_COURSE_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    cache = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return cache / "mnist_course"


def raw_dir(root: str | os.PathLike | None = None, *, dataset: str = "mnist") -> Path:
    """The folder ``<root>/MNIST/raw`` that holds the four uncompressed files
    (``<root>/FashionMNIST/raw`` for ``dataset="fashion-mnist"``)."""
    return data_root(root) / get_dataset(dataset).folder / "raw"


def mirrors(*, dataset: str = "mnist") -> list[str]:
    """Base URLs to try, in order: ``$MNIST_COURSE_MIRRORS`` if set, else :data:`PUBLIC_MIRRORS`
    (for ``dataset="fashion-mnist"``: ``$MNIST_COURSE_FASHION_MIRRORS``, else its public mirror).

    A plain folder path in the variable is accepted too and read as a ``file://`` URL.
    """
    ds = get_dataset(dataset)
    env = os.environ.get(ds.mirrors_variable, "")
    items = [s for s in re.split(r"[\s,]+", env) if s]
    if not items:
        return list(ds.public_mirrors)
    out = []
    for item in items:
        if "://" not in item:
            item = Path(item).expanduser().absolute().as_uri()
        out.append(item)
    return out


def display_path(path: str | os.PathLike) -> str:
    """A path to show a person without revealing the machine's layout.

    Under the home folder it reads ``~/...``; under ``$MNIST_COURSE_DATA`` it reads
    ``$MNIST_COURSE_DATA/...``; under the current folder it is relative; otherwise only its
    last two parts are shown after ``.../``.
    """
    p = Path(path).expanduser().absolute()
    env = os.environ.get("MNIST_COURSE_DATA", "").strip()
    bases = []
    if env:
        bases.append((Path(env).expanduser().absolute(), "$MNIST_COURSE_DATA"))
    bases.append((Path.home().absolute(), "~"))
    for base, label in bases:
        try:
            rel = p.relative_to(base)
        except ValueError:
            continue
        return label if str(rel) == "." else f"{label}/{rel.as_posix()}"
    try:
        return p.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return ".../" + "/".join(p.parts[-2:])


# --------------------------------------------------------------------------------------------
# Reading IDX files
# --------------------------------------------------------------------------------------------

def _parse_idx_header(buf: bytes, name: str, ds: Dataset = _MNIST
                      ) -> tuple[np.dtype, tuple[int, ...], int]:
    """Validate an IDX header against the buffer size. Returns (dtype, dims, header_bytes)."""
    redo = f"Delete it and run `{ds.data_command}` to download it again."
    if len(buf) < 4:
        raise DataError(f"{name} is not an IDX file: only {len(buf)} bytes long. {redo}")
    if buf[0] != 0 or buf[1] != 0:
        raise DataError(
            f"{name} is not an IDX file: its magic number starts with bytes "
            f"{buf[0]:#04x} {buf[1]:#04x}, expected 0x00 0x00. {redo}"
        )
    code, ndim = buf[2], buf[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"{c:#04x}" for c in _IDX_DTYPES)
        raise DataError(f"{name} has an unknown IDX dtype code {code:#04x} (known: {known}). "
                        f"{redo}")
    if ndim == 0:
        raise DataError(f"{name} has an IDX header with 0 dimensions. {redo}")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{name} is truncated: {len(buf)} bytes, shorter than its own "
                        f"{header}-byte header. {redo}")
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(buf) != expected:
        shape = " x ".join(map(str, dims))
        raise DataError(
            f"{name} has {len(buf):,} bytes but its header ({shape} of {dtype.name}) says "
            f"{expected:,}: the file is truncated or corrupt. {redo}"
        )
    return dtype, dims, header


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or ``.gz``) into an array of the shape its header gives.

    The magic number (two zero bytes, a dtype code and the number of dimensions), the dtype code,
    the dimensions and the byte count are all checked; any problem raises :class:`DataError`.
    MNIST images come back as uint8 (N, 28, 28), labels as uint8 (N,).
    """
    return _read_idx(Path(path), _MNIST)


def _read_idx(path: Path, ds: Dataset) -> np.ndarray:
    """:func:`read_idx`, with messages that name the command that fetches ``ds`` again."""
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except FileNotFoundError:
        raise DataError(f"{_where(path)} does not exist. Run `{ds.data_command}` to "
                        f"download {ds.title}.") from None
    except OSError as exc:
        raise DataError(f"cannot read {_where(path)}: {exc.strerror or exc}") from None
    if buf[:2] == b"\x1f\x8b":
        try:
            buf = gzip.decompress(buf)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path.name} is a damaged gzip file ({exc}). Delete it and "
                            "download it again.") from None
    dtype, dims, header = _parse_idx_header(buf, path.name, ds)
    arr = np.frombuffer(buf, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


# --------------------------------------------------------------------------------------------
# Verifying the cache: sizes, digests, and stamps that spare the digests
# --------------------------------------------------------------------------------------------

_MISSING = "is missing"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class _Stamps:
    """The stamp file of one raw folder: ``{name: {size, mtime_ns, ctime_ns, sha256}}``;
    ``sha256`` is the expected digest of each file (its dataset's).

    An entry vouches for a file only while the file's size and both timestamps are the ones
    recorded, the recorded digest is the one expected, and the file is older than the stamp file
    itself (an edit in the same clock tick as the stamp would otherwise go unseen: the "racy"
    case, which is hashed again). Reading and writing are best effort: a missing, damaged or
    unwritable stamp file only means that files are hashed again.
    """

    def __init__(self, folder: Path, sha256: dict[str, str]):
        self.folder = folder
        self.sha256 = sha256
        self.entries: dict[str, dict] = {}
        self.written_ns: int | None = None
        try:
            with open(folder / STAMP_NAME, "rb") as f:
                self.written_ns = os.fstat(f.fileno()).st_mtime_ns
                content = json.loads(f.read())
            files = content.get("files") if isinstance(content, dict) else None
            if isinstance(files, dict):
                self.entries = {k: v for k, v in files.items() if isinstance(v, dict)}
        except (OSError, ValueError):
            self.written_ns = None
        self.changed = False

    @staticmethod
    def entry(st: os.stat_result, digest: str) -> dict:
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
                "sha256": digest}

    def vouches_for(self, name: str, st: os.stat_result) -> bool:
        return (self.written_ns is not None
                and self.entries.get(name) == self.entry(st, self.sha256[name])
                and max(st.st_mtime_ns, st.st_ctime_ns) < self.written_ns)

    def record(self, name: str, st: os.stat_result) -> None:
        """Remember that the file ``st`` describes was verified (rewritten unless it vouches
        already, so that a racy entry becomes a trusted one once the clock has moved on)."""
        if not self.vouches_for(name, st):
            self.entries[name] = self.entry(st, self.sha256[name])
            self.changed = True

    def forget(self, name: str) -> None:
        if self.entries.pop(name, None) is not None:
            self.changed = True

    def save(self) -> None:
        """Write the stamp file atomically if an entry changed; give up quietly on any error."""
        if not self.changed:
            return
        text = json.dumps({"files": dict(sorted(self.entries.items()))}, indent=1) + "\n"
        try:
            with atomic_write(self.folder / STAMP_NAME, "w", encoding="utf-8") as f:
                f.write(text)
            self.changed = False
        except OSError:
            pass


def _check_cached(folder: Path, stamps: _Stamps, ds: Dataset,
                  rehash: bool = False) -> dict[str, str | None]:
    """Verify each cached file: None when it is good, else why not (:data:`_MISSING`, or a
    reason that completes "<name> in <folder> ..."). Good digests are recorded in ``stamps``,
    which the caller saves."""
    problems: dict[str, str | None] = {}
    for name in FILES:
        path = folder / name
        try:
            st = path.stat()
        except OSError:
            problems[name] = _MISSING
            continue
        if not stat.S_ISREG(st.st_mode):
            problems[name] = "is not a regular file"
            continue
        want = ds.sizes.get(name)
        if want is not None and st.st_size != want:
            problems[name] = (f"has {st.st_size:,} bytes instead of {want:,} (it is truncated "
                              "or damaged)")
            stamps.forget(name)
            continue
        if not rehash and stamps.vouches_for(name, st):
            problems[name] = None
            continue
        try:
            digest = _sha256_file(path)
        except OSError as exc:
            problems[name] = f"cannot be read ({exc.strerror or exc})"
            continue
        if digest != ds.sha256[name]:
            problems[name] = "does not match its SHA-256 checksum (it was changed or damaged)"
            stamps.forget(name)
        else:
            problems[name] = None
            stamps.record(name, st)  # the stat from before hashing: a later edit is seen
    return problems


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------

class _MirrorError(Exception):
    """One mirror failed for one file; the reason is kept and the next mirror is tried."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        r = exc.reason
        if isinstance(r, OSError) and r.strerror:
            return r.strerror
        return str(r)
    if isinstance(exc, http.client.IncompleteRead):
        return (f"connection closed after {len(exc.partial):,} bytes "
                f"({exc.expected:,} more expected): truncated download")
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT} s"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, OSError) else text


def _download(url: str, name: str, progress: bool) -> bytes:
    """Return the bytes at ``url``; raise :class:`_MirrorError` with a reason on any failure."""
    from tqdm import tqdm

    req = urllib.request.Request(url, headers={"User-Agent": f"mnist-course/{__version__}"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            ctype = resp.headers.get("Content-Type", "") or ""
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            chunks = []
            with tqdm(total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                      leave=True, ncols=80, mininterval=0.5, file=sys.stderr,
                      disable=not (progress and live_progress())) as bar:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    bar.update(len(chunk))
            body = b"".join(chunks)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise _MirrorError(_reason(exc)) from None
    if total is not None and len(body) != total:
        raise _MirrorError(f"got {len(body):,} of {total:,} bytes: truncated download")
    head = body[:512].lstrip().lower()
    looks_html = "html" in ctype.lower() or head.startswith(b"<")
    if body[:2] != b"\x1f\x8b" and looks_html:
        raise _MirrorError("served an HTML page, not a gzip file (an error or login page? "
                           "check the URL, or your proxy)")
    return body


def _decompress(body: bytes, name: str) -> bytes:
    if body[:2] != b"\x1f\x8b":
        raise _MirrorError(f"{name}.gz is not a gzip file (it starts with {body[:8]!r})")
    try:
        return gzip.decompress(body)
    except EOFError:
        raise _MirrorError(f"{name}.gz is truncated: the gzip stream ends early") from None
    except (OSError, zlib.error) as exc:
        raise _MirrorError(f"{name}.gz is a damaged gzip file ({exc})") from None


def _verify(raw: bytes, name: str, ds: Dataset) -> None:
    digest = hashlib.sha256(raw).hexdigest()
    want = ds.sha256[name]
    if digest != want:
        raise _MirrorError(f"checksum mismatch for {name}: expected SHA-256 {want}, "
                           f"got {digest}")
    try:
        _parse_idx_header(raw, name, ds)
    except DataError as exc:
        raise _MirrorError(str(exc)) from None


def _write_atomic(folder: Path, name: str, raw: bytes, ds: Dataset) -> None:
    """Write ``raw`` to ``folder/name`` via a temporary file, fsync and an atomic rename."""
    try:
        with atomic_write(folder / name) as f:
            f.write(raw)
    except OSError as exc:
        raise _not_writable(folder, exc, ds, name) from None
    try:  # make the rename itself durable; not every platform can open a folder
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _where(path: Path) -> str:
    """How an error message shows a path: short where that is unambiguous, else in full."""
    shown = display_path(path)
    return shown if shown.startswith(("~", "$")) else str(Path(path).absolute())


def _not_writable(folder: Path, exc: OSError, ds: Dataset,
                  name: str | None = None) -> DataError:
    what = f"{name} into " if name else ""
    return DataError(
        f"cannot write {what}the {ds.title} cache in {_where(folder)}: {exc.strerror or exc}.\n"
        "Choose a folder you can write: pass --root DIR (or root=...), or set MNIST_COURSE_DATA."
    )


def _fetch_one(folder: Path, name: str, bases: list[str], progress: bool, ds: Dataset,
               damaged: str | None = None) -> None:
    """Download, verify and write one file; DataError if no mirror gives a good copy.
    ``damaged`` says what is wrong with the copy in the cache, when there is one."""
    failures = []
    for base in bases:
        url = base.rstrip("/") + "/" + name + ".gz"
        try:
            raw = _decompress(_download(url, name, progress), name)
            _verify(raw, name, ds)
        except _MirrorError as exc:
            failures.append((url, str(exc)))
            continue
        _write_atomic(folder, name, raw, ds)
        return
    lines = "\n".join(f"  - {url}: {why}" for url, why in failures)
    if damaged is None:
        raise DataError(f"could not get {name} from any mirror:\n{lines}\n"
                        f"{_local_mirror_help(ds)}")
    raise DataError(f"{damaged}, so it is not used, and no mirror could replace it:\n{lines}\n"
                    f"{_local_mirror_help(ds)}\nThen run `{ds.data_command}` again: it downloads "
                    "a good copy over the damaged one.")


def _remove_stale_parts(folder: Path, max_age: float = 3600.0) -> None:
    """Delete temporary files that a killed process left behind more than an hour ago.

    Younger ones may belong to a download still running in another process, so they stay.
    """
    now = time.time()
    for part in folder.glob(".*.part"):
        try:
            if now - part.stat().st_mtime > max_age:
                part.unlink()
        except OSError:
            pass


def is_cached(root: str | os.PathLike | None = None, *, dataset: str = "mnist") -> bool:
    """True when the four files are in ``<root>/MNIST/raw`` and verified (nothing is downloaded);
    ``dataset="fashion-mnist"``: in ``<root>/FashionMNIST/raw``.

    Each file must have the right size and, unless the stamp file shows it unchanged since it
    was last verified, the right SHA-256 (see the module docstring). A file that had to be
    hashed and passed is recorded in the stamp, so the next call is cheap.
    """
    ds = get_dataset(dataset)
    folder = raw_dir(root, dataset=ds.name)
    stamps = _Stamps(folder, ds.sha256)
    problems = _check_cached(folder, stamps, ds)
    stamps.save()
    return not any(problems.values())


def fetch_mnist(root: str | os.PathLike | None = None, *, progress: bool = True,
                rehash: bool = False, dataset: str = "mnist") -> Path:
    """Make sure the four verified MNIST files are in ``<root>/MNIST/raw`` and return that folder
    (``dataset="fashion-mnist"``: Fashion-MNIST's, in ``<root>/FashionMNIST/raw``).

    Files already there are checked as :func:`is_cached` checks them (``rehash=True`` hashes
    every file even when its stamp vouches for it). Missing files are downloaded from the
    mirrors (see :func:`mirrors`), with a progress bar on stderr, verified by SHA-256 and renamed
    into place atomically. A cached file that fails its check is reported on stderr and
    downloaded again; if no mirror can replace it, :class:`DataError` names it and says what to
    do, and it is left unused. When every file is good nothing is printed or downloaded (at
    most the stamp file is updated).
    """
    ds = get_dataset(dataset)
    folder = raw_dir(root, dataset=ds.name)
    stamps = _Stamps(folder, ds.sha256)
    problems = _check_cached(folder, stamps, ds, rehash=rehash)
    todo = [name for name in FILES if problems[name]]
    if not todo:
        stamps.save()
        return folder
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _not_writable(folder, exc, ds) from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise _not_writable(folder, PermissionError(13, "permission denied"), ds)
        _remove_stale_parts(folder)
        bases = mirrors(dataset=ds.name)
        for name in todo:
            damaged = None
            if problems[name] != _MISSING:
                damaged = f"{name} in {_where(folder)} {problems[name]}"
                print(f"{damaged}: downloading it again", file=sys.stderr, flush=True)
            _fetch_one(folder, name, bases, progress, ds, damaged)
            stamps.record(name, (folder / name).stat())
    finally:
        stamps.save()
    return folder


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def _load_pair(folder: Path, images: str, labels: str,
               ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    x = _read_idx(folder / images, ds)
    y = _read_idx(folder / labels, ds)
    again = f"run `{ds.data_command}` again."
    if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
        raise DataError(f"{images} holds {x.dtype} images of shape {x.shape}, expected uint8 "
                        f"(N, 28, 28). Delete it and {again}")
    if y.ndim != 1:
        raise DataError(f"{labels} holds labels of shape {y.shape}, expected (N,). Delete it "
                        f"and {again}")
    if len(x) != len(y):
        raise DataError(f"{images} holds {len(x):,} images but {labels} holds {len(y):,} "
                        f"labels. Delete both and {again}")
    return x, y.astype(np.int64)


def load_mnist(root: str | os.PathLike | None = None, download: bool = True, *,
               dataset: str = "mnist"):
    """Load MNIST as ``(x_train, y_train), (x_test, y_test)``; Fashion-MNIST with
    ``dataset="fashion-mnist"`` (labels 0-9 are then ``DATASETS["fashion-mnist"].classes``).

    Images are uint8 arrays of shape (N, 28, 28), labels int64 arrays of shape (N,):
    60,000 training and 10,000 test examples. The cached files are verified first (see
    :func:`fetch_mnist`); a damaged one is downloaded again, or, with ``download=False``, refused
    with a :class:`DataError`: the files must then already be in the cache, and intact.
    """
    ds = get_dataset(dataset)
    if download:
        folder = fetch_mnist(root, dataset=ds.name)
    else:
        folder = raw_dir(root, dataset=ds.name)
        absent = [n for n in FILES if not (folder / n).is_file()]
        if absent:
            raise DataError(f"{ds.title} is not in {_where(folder)} (missing: "
                            f"{', '.join(absent)}). Run `{ds.data_command}`, or call "
                            f"{ds.download_call}.")
        stamps = _Stamps(folder, ds.sha256)
        problems = _check_cached(folder, stamps, ds)
        stamps.save()
        bad = {name: why for name, why in problems.items() if why}
        if bad:
            if len(bad) == 1:
                [(name, why)] = bad.items()
                what = f"{name} in {_where(folder)} {why}, so it is not used. "
            else:
                lines = "\n".join(f"  - {name} {why}" for name, why in bad.items())
                what = f"these files in {_where(folder)} are not used:\n{lines}\n"
            raise DataError(f"{what}Run `{ds.data_command}`, or call "
                            f"{ds.download_call}, to download a good copy.")
    train = _load_pair(folder, FILES[0], FILES[1], ds)
    test = _load_pair(folder, FILES[2], FILES[3], ds)
    return train, test


def normalize(images, *, dataset: str = "mnist") -> np.ndarray:
    """Scale uint8 images to float32 of shape (N, 1, 28, 28): ``(x / 255 - MEAN) / STD``, with
    the mean and std of ``dataset``'s training pixels (MNIST: 0.1307 and 0.3081; Fashion-MNIST:
    0.2860 and 0.3530).

    images: (N, 28, 28) or (N, 1, 28, 28). The result has mean about 0 and std about 1 on that
    dataset's training set.
    """
    ds = get_dataset(dataset)
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected images of shape (N, 28, 28) or (N, 1, 28, 28), got {x.shape}")
    out = x.astype(np.float32) / np.float32(255.0)
    out -= np.float32(ds.mean)
    out /= np.float32(ds.std)
    return out


def train_val_split(x, y, n_val: int = 5000, seed: int = 0):
    """The course's validation split, lesson 00's exercise: a seeded random permutation of the
    N examples; its first ``n_val`` indices validate, the rest train.

    x: (N, ...) array; y: (N,) array. Returns ``(x_tr, y_tr, x_val, y_val)`` with N - n_val and
    n_val examples. Lessons use the learner's own version from ``mine`` and fall back to this
    one (see :mod:`mnist_course.keep`).
    """
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} and {len(y)}")
    if not 0 <= n_val <= len(x):
        raise ValueError(f"n_val must be between 0 and {len(x)}, got {n_val}")
    order = np.random.default_rng(seed).permutation(len(x))
    val, tr = order[:n_val], order[n_val:]
    return x[tr], y[tr], x[val], y[val]
