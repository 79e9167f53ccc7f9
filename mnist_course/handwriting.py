"""From a drawing on a screen to an MNIST digit: the preprocessing MNIST itself went through.

A digit drawn on a canvas is not an MNIST digit. MNIST's digits were written on paper, scanned,
then (LeCun et al.): cropped to their bounding box, scaled to fit a 20x20 box keeping their aspect
ratio (with anti-aliasing, so the ink has grey edges), and placed in a 28x28 image so that their
centre of mass falls on the centre. The network learnt exactly that distribution: light ink on a
black background, about 20 pixels tall, centred by mass. Give it a 280x280 canvas squashed to
28x28, dark ink on white, or a digit drawn in a corner, and it reads noise. This module repeats
MNIST's steps for any image:

- :func:`decode_png` / :func:`decode_data_url`: PNG bytes, or the ``data:image/png;base64,...``
  text that a browser canvas's ``toDataURL()`` gives, to an RGBA array (H, W, 4) uint8.
- :func:`ink`: RGBA (H, W, 4) to ink (H, W) float32 in [0, 1], 1 where the pen went. It copes
  with light ink on dark, dark ink on light, and a transparent background with opaque ink (the
  default of a canvas: unpainted pixels are transparent black).
- :func:`mnist_style`: ink (H, W) of any size to the 28x28 digit MNIST would have made of it.
- :func:`to_input`: that 28x28 digit to the network's input (1, 1, 28, 28), normalised like the
  course's data (``data.normalize``).
- :func:`prepare`: all of the above in one call.
- :func:`render`: the other way round, for tests and lesson 06: an MNIST digit drawn large and
  off-centre on a canvas, in one of the three :data:`STYLES` (:func:`paint`).

Bad input raises :class:`DrawingError` with a message that says what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np

from mnist_course import CourseError

__all__ = [
    "BOX",
    "MAX_SIDE",
    "SIZE",
    "STYLES",
    "DrawingError",
    "center_of_mass",
    "decode_data_url",
    "decode_png",
    "encode_png",
    "ink",
    "mnist_style",
    "paint",
    "prepare",
    "render",
    "to_data_url",
    "to_input",
]

SIZE = 28          #: an MNIST image is SIZE x SIZE pixels
BOX = 20           #: MNIST scaled each digit to fit a BOX x BOX box, keeping its aspect ratio
CENTRE = 14.0      #: where MNIST's centres of mass are, (row, column): 14.0 +- 0.3 on average
MAX_SIDE = 4096    #: images wider or taller than this are refused (a canvas is far smaller)
STYLES = ("light-on-dark", "dark-on-light", "transparent")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EMPTY = 0.05      # a drawing whose strongest ink is below this is empty
_CUT = 0.1         # ink below this (as a share of the strongest) is outside the bounding box


class DrawingError(CourseError, ValueError):
    """The image cannot be read as a drawing of a digit (not a PNG, empty, too large, ...)."""


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------

def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes to an RGBA array (H, W, 4) uint8 (grey, RGB and palette images are converted).

    Raises :class:`DrawingError` when the bytes are not a PNG, are damaged, or the image is
    larger than :data:`MAX_SIDE` on a side (checked before the pixels are decompressed).
    """
    from PIL import Image, UnidentifiedImageError

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DrawingError(f"expected PNG bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(_PNG_SIGNATURE):
        raise DrawingError("the image is not a PNG (it does not start with the PNG signature)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w > MAX_SIDE or h > MAX_SIDE:
                raise DrawingError(f"the image is {w}x{h} pixels; at most {MAX_SIDE} on a side "
                                   "is accepted")
            if w < 1 or h < 1:
                raise DrawingError(f"the image is {w}x{h} pixels: it has no pixels")
            rgba = np.asarray(img.convert("RGBA"), dtype=np.uint8)
    except DrawingError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DrawingError(f"the PNG is damaged or truncated ({exc})") from None
    return rgba


def decode_data_url(url: str) -> np.ndarray:
    """``data:image/png;base64,...`` (what ``canvas.toDataURL()`` returns) to RGBA (H, W, 4).

    Raises :class:`DrawingError` for anything else: not a string, not a data URL, another image
    type, broken base64, or bytes that are not a readable PNG.
    """
    if not isinstance(url, str):
        raise DrawingError(f"'image' must be a string holding a PNG data URL "
                           f"(data:image/png;base64,...), got {type(url).__name__}")
    head, comma, body = url.partition(",")
    if not head.lower().startswith("data:") or not comma:
        raise DrawingError("'image' must be a PNG data URL (data:image/png;base64,...), as "
                           "canvas.toDataURL() returns; got text starting "
                           f"{url[:30]!r}")
    params = [p.strip().lower() for p in head[5:].split(";")]
    if params[0] != "image/png":
        raise DrawingError(f"the data URL holds {params[0] or 'text'!r}, not image/png: send "
                           "canvas.toDataURL() (PNG is its default)")
    if "base64" not in params[1:]:
        raise DrawingError("the data URL is not base64-encoded (expected "
                           "data:image/png;base64,...)")
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise DrawingError("the data URL's base64 text is broken") from None
    return decode_png(raw)


def encode_png(rgba: np.ndarray, compress_level: int = 1) -> bytes:
    """An RGBA (H, W, 4) or grey (H, W) uint8 array to PNG bytes (``compress_level`` 0-9: zlib's
    effort; 1 is fast, and a drawing compresses well at any level)."""
    from PIL import Image

    arr = np.asarray(rgba)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 4):
        raise DrawingError(f"expected a uint8 array (H, W, 4) or (H, W), got {arr.dtype} "
                           f"{arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr, "RGBA" if arr.ndim == 3 else "L").save(buf, format="PNG",
                                                                compress_level=compress_level)
    return buf.getvalue()


def to_data_url(rgba: np.ndarray) -> str:
    """An RGBA (H, W, 4) uint8 array as ``data:image/png;base64,...`` (like ``toDataURL()``)."""
    return "data:image/png;base64," + base64.b64encode(encode_png(rgba)).decode("ascii")


# --------------------------------------------------------------------------------------------
# Ink
# --------------------------------------------------------------------------------------------

def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def ink(rgba: np.ndarray) -> np.ndarray:
    """How much ink each pixel holds: RGBA (H, W, 4) uint8 -> (H, W) float32 in [0, 1].

    The background is what most of the image's border shows:

    - transparent (a canvas's default; the pen's colour does not matter): ink = alpha;
    - opaque and light (dark ink on paper or a white canvas): ink = how much darker a pixel is
      than the background;
    - opaque and dark (MNIST's own look, light ink): ink = how much lighter it is.

    Semi-transparent pixels over an opaque background are composited onto white first.
    """
    arr = np.asarray(rgba)
    if arr.ndim != 3 or arr.shape[2] != 4 or arr.dtype != np.uint8:
        raise DrawingError(f"expected an RGBA image (H, W, 4) uint8, got {arr.dtype} "
                           f"{arr.shape}")
    alpha = arr[..., 3].astype(np.float32) / 255
    if np.median(_border(alpha)) < 0.5:
        return alpha
    rgb = arr[..., :3].astype(np.float32) / 255
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grey = grey * alpha + (1 - alpha)           # over white
    bg = float(np.median(_border(grey)))
    if bg >= 0.5:
        out = (bg - grey) / bg
    else:
        out = (grey - bg) / (1 - bg)
    return np.clip(out, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------------------------
# MNIST's preprocessing
# --------------------------------------------------------------------------------------------

def center_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) of the centre of mass of a non-negative image (H, W): the ink-weighted
    mean of the pixel indices. Raises :class:`DrawingError` for an image without ink."""
    img = np.asarray(image, dtype=np.float64)
    total = img.sum()
    if img.ndim != 2 or not total > 0:
        raise DrawingError("the centre of mass needs a 2-d image with some ink")
    rows = img.sum(axis=1) @ np.arange(img.shape[0]) / total
    cols = img.sum(axis=0) @ np.arange(img.shape[1]) / total
    return float(rows), float(cols)


def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a float image (H, W) to (height, width): area averaging when shrinking (the
    anti-aliasing that gives MNIST its grey edges), bilinear when growing."""
    from PIL import Image

    shrink = height <= img.shape[0] and width <= img.shape[1]
    method = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    pic = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32), mode="F")
    return np.asarray(pic.resize((width, height), method), dtype=np.float32)


def _paste(dst: np.ndarray, src: np.ndarray, top: int, left: int) -> np.ndarray:
    """Copy src (h, w) into dst with its top-left corner at (top, left), cutting off whatever
    falls outside dst; return dst."""
    h, w = src.shape
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + h, dst.shape[0]), min(left + w, dst.shape[1])
    if r1 > r0 and c1 > c0:
        dst[r0:r1, c0:c1] = src[r0 - top:r1 - top, c0 - left:c1 - left]
    return dst


def mnist_style(image: np.ndarray) -> np.ndarray:
    """Turn ink (H, W) in [0, 1], any size, into the digit MNIST would have made of it:
    (28, 28) float32 in [0, 1], light ink on black.

    1. Crop to the bounding box of the ink (pixels above a tenth of the strongest ink).
    2. Scale the crop so that its longer side is 20 pixels, keeping the aspect ratio (a "1"
       stays thin), with area averaging.
    3. Paste it into a 28x28 black image so that its centre of mass lands on (14, 14), where
       MNIST's digits have theirs.
    4. Scale the ink so that the strongest pixel is 1, as in MNIST, whose digits almost all
       reach 255.

    Raises :class:`DrawingError` when the image holds no ink (an empty drawing).
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise DrawingError(f"expected ink of shape (H, W), got {img.shape}")
    img = np.nan_to_num(np.clip(img, 0, 1))
    peak = float(img.max()) if img.size else 0.0
    if peak < _EMPTY:
        raise DrawingError("the drawing is empty: draw a digit first")
    rows = np.flatnonzero((img > _CUT * peak).any(axis=1))
    cols = np.flatnonzero((img > _CUT * peak).any(axis=0))
    crop = img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.clip(_resize(crop, nh, nw), 0, None)
    if not small.max() > 0:                  # a speck that vanished in the averaging
        small = np.full((nh, nw), 1.0, dtype=np.float32)
    cy, cx = center_of_mass(small)
    top, left = round(CENTRE - cy), round(CENTRE - cx)
    # a lopsided digit may reach past the border by a pixel or two: that part is cut off
    out = _paste(np.zeros((SIZE, SIZE), dtype=np.float32), small, top, left)
    return out / out.max()


def to_input(digit: np.ndarray) -> np.ndarray:
    """A 28x28 digit in [0, 1] -> the network's input (1, 1, 28, 28) float32, normalised as
    ``data.normalize`` normalises MNIST: ``(x - MEAN) / STD``."""
    from mnist_course.data import MEAN, STD

    arr = np.asarray(digit, dtype=np.float32)
    if arr.shape != (SIZE, SIZE):
        raise DrawingError(f"expected a 28x28 digit, got shape {arr.shape}")
    return ((arr - np.float32(MEAN)) / np.float32(STD)).reshape(1, 1, SIZE, SIZE)


def prepare(image) -> tuple[np.ndarray, np.ndarray]:
    """A drawing (a PNG data URL, PNG bytes, or an RGBA array (H, W, 4) uint8) to
    ``(digit, x)``: the 28x28 digit in [0, 1] (:func:`mnist_style`) and the network's input
    (1, 1, 28, 28) (:func:`to_input`)."""
    if isinstance(image, str):
        rgba = decode_data_url(image)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        rgba = decode_png(image)
    else:
        rgba = np.asarray(image)
    digit = mnist_style(ink(rgba))
    return digit, to_input(digit)


# --------------------------------------------------------------------------------------------
# The other way: MNIST digits drawn on a canvas
# --------------------------------------------------------------------------------------------

def render(digit: np.ndarray, *, canvas: tuple[int, int] = (280, 280), height: int = 160,
           center: tuple[float, float] | None = None,
           style: str = "transparent") -> np.ndarray:
    """Draw an MNIST digit (28, 28) (uint8, or float in [0, 1]) on a canvas, as someone might
    draw it on a screen: RGBA (canvas height, canvas width, 4) uint8.

    - height: the digit's 28x28 image is scaled to height x height pixels (bilinear);
    - center: (row, column) of the scaled image's centre on the canvas (default: the canvas's
      centre); parts that fall outside the canvas are cut off;
    - style: "light-on-dark" (white ink on black, opaque, like MNIST), "dark-on-light" (black
      ink on white, opaque, like paper) or "transparent" (black ink whose alpha is the ink,
      on a transparent background: what ``canvas.toDataURL()`` gives for strokes on an
      unpainted canvas).
    """
    arr = np.asarray(digit)
    if arr.shape != (SIZE, SIZE):
        raise DrawingError(f"expected a 28x28 digit, got shape {arr.shape}")
    level = arr.astype(np.float32) / (255 if arr.dtype == np.uint8 else 1)
    ch, cw = canvas
    if height < 1 or ch < 1 or cw < 1:
        raise DrawingError("the canvas and the digit need at least one pixel")
    big = np.clip(_resize(level, height, height), 0, 1)
    cy, cx = (ch / 2, cw / 2) if center is None else center
    top, left = round(cy - height / 2), round(cx - height / 2)
    layer = _paste(np.zeros((ch, cw), dtype=np.float32), big, top, left)
    return paint(np.round(layer * 255).astype(np.uint8), style)


def paint(ink_image: np.ndarray, style: str = "transparent") -> np.ndarray:
    """Ink (H, W) uint8 (255 = full ink) as an RGBA canvas image (H, W, 4) uint8 in one of the
    :data:`STYLES` (see :func:`render`). The inverse of :func:`ink`, up to rounding."""
    if style not in STYLES:
        raise DrawingError(f"unknown style {style!r}: choose one of {', '.join(STYLES)}")
    value = np.asarray(ink_image)
    if value.ndim != 2 or value.dtype != np.uint8:
        raise DrawingError(f"expected ink (H, W) uint8, got {value.dtype} {value.shape}")
    out = np.zeros((*value.shape, 4), dtype=np.uint8)
    if style == "light-on-dark":
        out[..., :3] = value[..., None]
        out[..., 3] = 255
    elif style == "dark-on-light":
        out[..., :3] = 255 - value[..., None]
        out[..., 3] = 255
    else:
        out[..., 3] = value
    return out
