"""Checks of lesson 06, data: your own IDX reader and the ``Dataset`` built on it.

Both checks write small synthetic IDX files into a temporary folder, which is removed afterwards;
the real MNIST files are never read. The expected arrays are the ones the files were written
from, so no reader (the course's or yours) serves as the reference.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

from mnist_course.checks._core import _Check, _describe, _fmt_shape, _rng
from mnist_course.checks.torch_nn import _own_rng
from mnist_course.data import MEAN, STD

__all__ = ["check_idx_dataset", "check_read_idx"]

# The 3-D file has small dimensions that all differ (a hard-coded 28 x 28 or swapped dims
# show), the 1-D file more than 255 items (a count read from one byte shows).
_IMAGE_DIMS = (3, 5, 7)
_N_LABELS = 300
_HEADER_HOW = ("the header is the magic number (4 bytes: 0x00 0x00, 0x08 for uint8, ndim) and "
               "then ndim sizes, each a big-endian uint32: 4 + 4 * ndim bytes, after which the "
               "data starts")


def _idx_bytes(arr: np.ndarray, magic: str = ">", dims: str = ">") -> bytes:
    """An uint8 array as an IDX file; magic and dims give the byte order of the header fields."""
    head = struct.pack(f"{magic}I", 0x0800 + arr.ndim)
    head += struct.pack(f"{dims}{arr.ndim}I", *arr.shape)
    return head + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def _write(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    if name.endswith(".gz"):
        content = gzip.compress(content, mtime=0)
    path.write_bytes(content)
    return path


def _failure(chk: _Check, *lines: str) -> AssertionError:
    """The failure of the current case, to raise from the learner's exception."""
    return AssertionError("\n  ".join([chk.header(), *lines]))


def _reads_as(fn, path, ref: np.ndarray) -> bool:
    """True when fn(path) runs and returns exactly ref (used to recognise a bug)."""
    try:
        out = fn(path)
    except NotImplementedError:
        raise
    except Exception:  # noqa: BLE001 (any failure means: not this bug)
        return False
    return isinstance(out, np.ndarray) and out.shape == ref.shape and np.array_equal(out, ref)


# --------------------------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------------------------

def _offset_hint(ref: np.ndarray, content: bytes, header: int, exc, out) -> str | None:
    """Sizes or data read from the wrong byte: named from the numbers in the error message or
    in the shape returned."""
    numbers = set()
    if exc is not None:
        numbers = {int(t) for t in re.findall(r"\d+", str(exc))}
    if isinstance(out, np.ndarray):
        numbers |= {int(d) for d in out.shape} | {int(out.size)}
    magic = int.from_bytes(content[:4], "big")
    dims = tuple(int(d) for d in ref.shape)
    fields = [int.from_bytes(content[i:i + 4], "big") for i in range(0, header + 8, 4)]
    if magic in numbers:
        return (f"the sizes are read from byte 0: the first 4 bytes are the magic number "
                f"({magic} = 0x{magic:08x}), and the {ref.ndim} sizes follow it, from byte 4 "
                f"to byte {header}. {_HEADER_HOW.capitalize()}.")
    late = fields[2:2 + ref.ndim]
    if len(late) == ref.ndim and tuple(late) != dims and (
            any(f in numbers and f not in dims and f > 255 for f in late)
            or (isinstance(out, np.ndarray) and tuple(out.shape) == tuple(late))):
        return (f"the sizes are read from byte 8, one field late: they start at byte 4, right "
                f"after the 4-byte magic number. {_HEADER_HOW.capitalize()}.")
    for start in range(1, header + 9):          # 0: the header not skipped, named below
        if start == header or len(content) - start == ref.size \
                or (ref.ndim == 1 and start == 16):  # 16: 3 dims assumed, named below
            continue
        size = len(content) - start
        if size in numbers and size not in dims:
            why = {4 * ref.ndim: "4 * ndim forgets the 4 bytes of the magic number",
                   4 + ref.ndim: "each size takes 4 bytes, not 1",
                   header + 4: "one 4-byte field too many is skipped"}.get(start, "")
            return (f"the data is read from byte {start} ({size} bytes left), but it starts "
                    f"at byte {header} = 4 + 4 * ndim" + (f": {why}" if why else "") + ". "
                    f"{_HEADER_HOW.capitalize()}.")
    return None


def _read_idx_hint(fn, folder: Path, ref: np.ndarray, content: bytes, gz: bool, raw_ok: bool,
                   exc: Exception | None = None, out=None) -> str | None:
    """The likely bug behind a failure on a valid file: exc (raised) or out (returned)."""
    if exc is not None and isinstance(exc, (AttributeError, TypeError)) and gz \
            and re.search(r"Path|endswith|str", str(exc)):
        return ("path may be a str or a pathlib.Path (open() accepts both): test the name with "
                "str(path).endswith('.gz').")
    if gz and raw_ok:
        return ("it reads the raw file but not the same file gzip-compressed: when the name "
                "ends in .gz, open it with gzip.open(path, 'rb') instead of open(path, 'rb').")
    # a little-endian reader reads a file with little-endian fields correctly
    for magic in (">", "<"):
        probe = _write(folder, f"probe-{magic == '<'}-{ref.ndim}", _idx_bytes(ref, magic, "<"))
        if _reads_as(fn, str(probe), ref):
            return ("the sizes are read as little-endian numbers: IDX stores them big-endian "
                    "(most significant byte first): struct.unpack('>I', ...) or "
                    "int.from_bytes(b, 'big'), or np.frombuffer(..., dtype='>u4').")
    header = 4 + 4 * ref.ndim
    found = _offset_hint(ref, content, header, exc, out)
    if found:
        return found
    if exc is not None and re.search(rf"\b{len(content)}\b", str(exc)):
        return (f"the error mentions {len(content)}, the size of the whole file: the header "
                f"is not skipped. {_HEADER_HOW.capitalize()} ({header} bytes here).")
    if isinstance(out, np.ndarray) and out.size:
        flat = out.ravel()
        whole = np.frombuffer(content, dtype=np.uint8)
        if flat.size == whole.size and np.array_equal(flat, whole):
            return (f"the result is the whole file: the header is not skipped. "
                    f"{_HEADER_HOW.capitalize()} ({header} bytes here).")
        for start in range(0, 4 + 4 * 3 + 1, 4):
            if start != header and flat.size <= whole.size - start \
                    and np.array_equal(flat, whole[start:start + flat.size]):
                return (f"the data is read from byte {start}, but it starts at byte {header}: "
                        f"{_HEADER_HOW} (4 + 4 * {ref.ndim} = {header} bytes here).")
    if ref.ndim == 1:
        return (f"the 3-D file is read but not this 1-D one: do not assume 3 dimensions (or a "
                f"16-byte header), ndim is the magic's last byte (1 here: an 8-byte header); "
                f"and each size is a whole 4-byte number ({_N_LABELS} does not fit in one "
                f"byte).")
    return None


def _check_idx_array(chk: _Check, out, ref: np.ndarray, hint) -> None:
    """Check that read_idx returned ref exactly (type, shape, dtype, values).

    hint: function out -> the likely bug (or None), called only on a failure.
    """
    if isinstance(out, torch.Tensor):
        chk.fail("read_idx returned a torch.Tensor; return the NumPy array "
                 "(np.frombuffer(...).reshape(dims)).")
    if not isinstance(out, np.ndarray):
        chk.fail(f"read_idx should return a NumPy array; it returned {_describe(out)}.")
    if out.shape != ref.shape:
        found = hint(out)
        if found is None and out.shape == ref.shape[::-1]:
            found = "the dimensions are reversed: keep them in the order of the header."
        elif found is None and out.size == ref.size:
            found = "reshape with the sizes read from the header, not with fixed numbers."
        chk.fail(f"shape {_fmt_shape(out.shape)}; the header says {_fmt_shape(ref.shape)}.",
                 f"Likely bug: {found}" if found else None)
    if out.dtype != np.uint8:
        chk.fail(f"dtype {out.dtype}; the magic's third byte, 0x08, means uint8.",
                 "Likely bug: read the data with np.frombuffer(data, dtype=np.uint8, "
                 "offset=header_size).")
    if not np.array_equal(out, ref):
        wrong = int(np.count_nonzero(out != ref))
        idx = tuple(int(i) for i in np.argwhere(out != ref)[0])
        found = hint(out)
        chk.fail(f"{wrong} of {ref.size} values differ; the first at index {idx}: got "
                 f"{out[idx]}, expected {ref[idx]}.", f"Likely bug: {found}" if found else None)


def _check_rejected(chk: _Check, fn, path: str, what: str, hint: str) -> None:
    """fn(path) must raise ValueError (a corrupt file)."""
    try:
        out = fn(path)
    except NotImplementedError:
        raise
    except ValueError:
        return
    except Exception as exc:  # the learner's error, with the case it failed on
        raise _failure(chk, f"read_idx raised {type(exc).__name__}: {exc}",
                       f"Likely bug: here {what}: check for it and raise ValueError with a "
                       f"message that says what is wrong (not {type(exc).__name__}).") from exc
    chk.fail(f"read_idx returned {_describe(out)}; expected a ValueError.", f"Likely bug: {hint}")


def check_read_idx(fn) -> None:
    """Check ``read_idx(path) -> np.ndarray``, your IDX reader.

    Reads small synthetic files: a 3-D and a 1-D one, raw and gzip-compressed (the compressed
    ones are given as a ``pathlib.Path``, the raw ones as a ``str``), then three corrupt files
    (a wrong magic number, missing bytes, extra bytes), which must raise ``ValueError``.
    The result must be a uint8 array of the shape in the header, equal to the data written.
    """
    rng = _rng(11)
    images = rng.integers(0, 256, _IMAGE_DIMS, dtype=np.uint8)
    labels = rng.integers(0, 10, _N_LABELS, dtype=np.uint8)
    good = [
        (images, "images-idx3-ubyte", "a 3-D file (3, 5, 7), raw"),
        (labels, "labels-idx1-ubyte", f"a 1-D file ({_N_LABELS},), raw"),
        (images, "images-idx3-ubyte.gz", "the 3-D file gzip-compressed, path a pathlib.Path"),
        (labels, "labels-idx1-ubyte.gz", "the 1-D file gzip-compressed, path a pathlib.Path"),
    ]
    content = _idx_bytes(images)
    bad = [
        ("bad-magic-idx3-ubyte", b"\x00\x00\x0d\x03" + content[4:],
         "a file whose magic number is 0x00000D03 (float64 data) instead of 0x00000803",
         "the magic number is not 0x00000801 or 0x00000803",
         ("the magic number is not checked: raise ValueError unless the first 4 bytes are "
         "0x00000801 or 0x00000803 (uint8 data, 1 or 3 dims).")),
        ("short-idx3-ubyte", content[:-10], "a file with the last 10 bytes missing",
         "the file is shorter than its header says",
         ("the byte count is not checked: the file must hold exactly 4 + 4 * ndim + "
         "prod(dims) bytes; raise ValueError otherwise.")),
        ("long-idx3-ubyte", content + bytes(10), "a file with 10 bytes too many",
         "the file is longer than its header says",
         ("the byte count is not checked: the file must hold exactly 4 + 4 * ndim + "
         "prod(dims) bytes (np.frombuffer(..., count=n) and slicing ignore the extra ones); "
         "raise ValueError otherwise.")),
    ]
    chk = _Check("check_read_idx", len(good) + len(bad))
    ok = {}
    with tempfile.TemporaryDirectory(prefix="mnist_course_check_") as tmp:
        folder = Path(tmp)
        for i, (ref, name, desc) in enumerate(good, 1):
            chk.case(i, desc)
            gz = name.endswith(".gz")
            data = _idx_bytes(ref)
            path = _write(folder, name, data)
            arg = path if gz else str(path)
            raw_ok = ok.get(ref.ndim, False)

            def explain(exc, ref=ref, data=data, gz=gz, raw_ok=raw_ok):
                return _read_idx_hint(fn, folder, ref, data, gz, raw_ok, exc=exc)

            out = chk.call(fn, arg, signature="read_idx(path) -> np.ndarray", explain=explain)
            _check_idx_array(chk, out, ref, lambda got, ref=ref, data=data, gz=gz, raw_ok=raw_ok:
                             _read_idx_hint(fn, folder, ref, data, gz, raw_ok, out=got))
            if not gz:
                ok[ref.ndim] = True
        for i, (name, data, desc, what, hint) in enumerate(bad, len(good) + 1):
            chk.case(i, desc)
            _check_rejected(chk, fn, str(_write(folder, name, data)), what, hint)
    chk.passed(show_error=False)


# --------------------------------------------------------------------------------------------
# IdxDataset
# --------------------------------------------------------------------------------------------

_NORMALISE = f"(x / 255 - {MEAN}) / {STD}"


def _reread_hint(exc: Exception) -> str | None:
    if isinstance(exc, OSError):
        return ("the files are read again after __init__ (the check removed them once the "
                "dataset was built): read both files once in __init__, keep the arrays as "
                "attributes, and only index them in __getitem__.")
    return None


def _check_image(chk: _Check, image, ref: np.ndarray) -> None:
    """image must be a float32 tensor (1, 28, 28) equal to the normalised ref (28, 28)."""
    if isinstance(image, np.ndarray):
        chk.fail(f"the image is a NumPy array ({image.dtype}); return a torch tensor.",
                 "Likely bug: torch.from_numpy(...) on the normalised float32 array.")
    if not isinstance(image, torch.Tensor):
        chk.fail(f"the image should be a torch tensor (1, 28, 28); it is {_describe(image)}.")
    shape = tuple(image.shape)
    if shape != (1, 28, 28):
        hint = {(28, 28): "the channel axis is missing: x[None] or x.unsqueeze(0) makes "
                          "(1, 28, 28), and a batch then has the (B, 1, 28, 28) nn.Conv2d wants.",
                (784,): "the image is flattened: keep it (1, 28, 28) for the convolutions.",
                (1, 1, 28, 28): "one axis too many: the DataLoader adds the batch axis itself."
                }.get(shape)
        chk.fail(f"the image has shape {_fmt_shape(shape)}; expected (1, 28, 28).",
                 f"Likely bug: {hint}" if hint else None)
    if image.dtype != torch.float32:
        if image.dtype == torch.uint8:
            hint = f"the pixels are not converted: turn them into float32, {_NORMALISE}."
        elif image.dtype == torch.float64:
            hint = ("float64 images: nn.Conv2d's weights are float32 and refuse them; use "
                    "np.float32 (or .float()).")
        else:
            hint = f"the images must be float32, {_NORMALISE}."
        chk.fail(f"the image has dtype {image.dtype}; expected torch.float32.",
                 f"Likely bug: {hint}")
    got = image.detach().cpu().numpy()[0]
    x = ref.astype(np.float64)
    want = (x / 255 - MEAN) / STD
    alternatives = [
        (x, f"not normalised: the pixels are still 0-255; {_NORMALISE}."),
        (x / 255, f"scaled to [0, 1] but not normalised: {_NORMALISE}."),
        ((x - MEAN) / STD, f"not divided by 255 first: {_NORMALISE}."),
        ((x / 255 / 255 - MEAN) / STD, f"divided by 255 twice: {_NORMALISE}."),
        (((x / 255 - MEAN) / STD - MEAN) / STD, f"normalised twice: {_NORMALISE}, once."),
        (x / 255 - MEAN / STD, f"the parentheses: {_NORMALISE}, not x / 255 - mean / std."),
        ((x / 255 - 0.5) / 0.5, f"mean and std 0.5: MNIST's are {MEAN} and {STD}."),
    ]
    chk.compare("image", got, want, alternatives=alternatives,
                fallback_hint=f"each image is {_NORMALISE}, pixel by pixel.")


def _check_label(chk: _Check, label, ref: int) -> None:
    """label must be a Python int (or an int64 scalar) equal to ref."""
    if isinstance(label, (torch.Tensor, np.ndarray, np.generic)):
        if tuple(label.shape) != ():
            chk.fail(f"the label is {_describe(label)}; expected one number.",
                     "Likely bug: a (1,) label batches to (B, 1); return int(y[i]).")
        if isinstance(label, torch.Tensor):
            is_int64, is_float = label.dtype == torch.int64, label.is_floating_point()
        else:
            is_int64 = label.dtype == np.int64
            is_float = np.issubdtype(label.dtype, np.floating)
        if not is_int64:
            why = ("F.cross_entropy wants class indices, not floats" if is_float
                   else "F.cross_entropy wants int64 class indices")
            chk.fail(f"the label has dtype {label.dtype}; expected a Python int (or int64).",
                     f"Likely bug: {why}: return int(self.labels[i]).")
        value = label.item()
    elif isinstance(label, bool) or not isinstance(label, int):
        hint = ("F.cross_entropy wants class indices, not floats: return int(self.labels[i])"
                if isinstance(label, float) else "return int(self.labels[i])")
        chk.fail(f"the label is {_describe(label)} ({label!r}); expected a Python int.",
                 f"Likely bug: {hint}.")
    else:
        value = label
    if value != ref:
        chk.fail(f"the label is {value}, expected {ref}.",
                 "Likely bug: image i and label i must come from the same index i.")


@_own_rng
def check_idx_dataset(cls) -> None:
    """Check ``IdxDataset(images_path, labels_path)``, a ``torch.utils.data.Dataset``.

    On 10 synthetic images and labels (IDX files read with your ``read_idx``): ``len`` is 10;
    ``ds[i]`` is ``(image, label)``, image a float32 tensor (1, 28, 28) equal to
    ``(x / 255 - 0.1307) / 0.3081``, label a Python int; a ``DataLoader`` batches it to
    (B, 1, 28, 28) float32 and (B,) int64. The files are deleted once the dataset is built, so
    it must read them only in ``__init__``. Files with 10 images but 9 labels must make
    ``__init__`` raise ``ValueError``.
    """
    n, batch = 10, 4
    rng = _rng(12)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    chk = _Check("check_idx_dataset", 2)
    name = getattr(cls, "__name__", "IdxDataset")
    signature = "IdxDataset(images_path, labels_path)"

    def explain_init(exc):
        return ("the dataset could not be built from valid IDX files: it reads them with your "
                "read_idx; does check_read_idx pass?")

    with tempfile.TemporaryDirectory(prefix="mnist_course_check_") as tmp:
        folder = Path(tmp)
        chk.case(1, f"{name}(images_path, labels_path) on {n} synthetic images and labels "
                    f"(raw IDX files, deleted once the dataset is built)")
        img_path = _write(folder, "images-idx3-ubyte", _idx_bytes(images))
        lbl_path = _write(folder, "labels-idx1-ubyte", _idx_bytes(labels))
        ds = chk.call(cls, str(img_path), str(lbl_path), signature=signature,
                      explain=explain_init)
        os.remove(img_path)
        os.remove(lbl_path)
        if not isinstance(ds, torch.utils.data.Dataset):
            chk.fail(f"{name}(...) built {_describe(ds)}, not a torch.utils.data.Dataset.",
                     "Likely bug: class IdxDataset(torch.utils.data.Dataset): ...")
        size = chk.call(len, ds, explain=_reread_hint)
        if size != n:
            hint = ("off by one: return len(self.labels), the number of items."
                    if abs(size - n) == 1 else
                    "return the number of images, len(self.labels) (not the number of pixels).")
            chk.fail(f"len(dataset) is {size}; the files hold {n} items.", f"Likely bug: {hint}")
        for i in (0, 3, n - 1):
            item = chk.call(ds.__getitem__, i, explain=_reread_hint)
            if not isinstance(item, tuple) or len(item) != 2:
                chk.fail(f"dataset[{i}] is {_describe(item)}; expected a tuple (image, label).")
            try:
                _check_image(chk, item[0], images[i])
                _check_label(chk, item[1], int(labels[i]))
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n  (item {i})") from None
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=False)

        def iterate(loader):
            return list(loader)

        iterate.__name__ = "iterating a DataLoader over the dataset"
        batches = chk.call(iterate, loader, explain=_reread_hint)
        sizes = [len(b[0]) for b in batches]
        if sizes != [4, 4, 2]:
            chk.fail(f"a DataLoader with batch_size={batch} gave batches of {sizes} images; "
                     f"expected [4, 4, 2].")
        x, y = batches[0]
        if tuple(x.shape) != (batch, 1, 28, 28) or x.dtype != torch.float32:
            chk.fail(f"a batch of images is {tuple(x.shape)} {x.dtype}; expected "
                     f"({batch}, 1, 28, 28) torch.float32.")
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (batch,) \
                or y.dtype != torch.int64:
            chk.fail(f"a batch of labels is {_describe(y)} ({getattr(y, 'dtype', '')}); "
                     f"expected ({batch},) torch.int64, what F.cross_entropy wants.")
        got_y = torch.cat([b[1] for b in batches]).numpy()
        if not np.array_equal(got_y, labels):
            chk.fail(f"the DataLoader's labels are {got_y.tolist()}; expected "
                     f"{labels.tolist()}.")

        chk.case(2, f"{n} images but {n - 1} labels")
        img_path = _write(folder, "images-idx3-ubyte", _idx_bytes(images))
        lbl_path = _write(folder, "labels-idx1-ubyte", _idx_bytes(labels[:-1]))
        try:
            ds = cls(str(img_path), str(lbl_path))
        except NotImplementedError:
            raise
        except ValueError:
            pass
        except Exception as exc:  # the learner's error, with the case it failed on
            raise _failure(chk, f"{name}(...) raised {type(exc).__name__}: {exc}",
                           "Likely bug: compare the two lengths in __init__ and raise "
                           "ValueError with a message that gives both.") from exc
        else:
            chk.fail(f"{name}(...) accepted {n} images with {n - 1} labels; expected a "
                     f"ValueError.", "Likely bug: images and labels mismatched in length are "
                     "not detected: compare len(images) and len(labels) in __init__ and raise "
                     "ValueError if they differ.")
    chk.passed(show_error=False)
