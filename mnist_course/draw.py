"""``mnist-course draw``: a local web page where both networks read your handwriting.

The page (``mnist_course/static/draw.html``: one file, no assets from the internet) has a canvas
to draw on with a mouse, pen or finger. After each stroke it posts the canvas as a PNG data URL
to ``POST /api/predict``, which answers::

    {"input28": [[28 x 28 floats in [0, 1]]],        # what the networks were given
     "numpy": {"digit": d, "probs": [10 floats]},    # the hand-written NumPy network
     "torch": {"digit": d, "probs": [10 floats]}}    # the PyTorch network

``input28`` is the drawing after :func:`mnist_course.handwriting.mnist_style` (light ink on
black, 20 pixels tall, centred by mass); the networks receive it normalised like MNIST
(``handwriting.to_input``). A body that is not JSON, has no ``image``, holds no readable PNG, an
empty drawing, or is larger than :data:`MAX_BODY` bytes gets a 4xx answer
``{"error": "..."}``; the server goes on serving. ``GET /api/info`` says which weights each
network reads with.

A body over the limit is answered 413 as soon as that is known, with ``Connection: close``. A
client that is still sending (a blocking one such as ``urllib.request`` reads only once its whole
body is sent) must still receive that answer, so connections are closed the way nginx closes
them, a *lingering close* (:func:`lingering_close`): the server ends its side (the client reads
the answer, then the end), then goes on reading and throwing away what the client sends, until
the client closes, or :data:`LINGER_BYTES` more bytes came, or :data:`LINGER_SECONDS` passed,
whichever is first. A huge or endless body therefore costs at most that much; a plain close with
unread data would make the client's system answer with a connection reset instead of the 413.

Weights come from a folder (default ``results/``, where ``make demo`` keeps them):
``numpy_cnn.npz`` (``numpy_cnn.save_params``, as ``mnist-course train numpy --save`` writes)
and ``torch_cnn.pt`` (a ``CourseCNN`` state_dict, as ``mnist-course train torch --save``
writes). When only one exists, the other network gets the same weights (the course's weight
transfer). When neither exists, the PyTorch network is trained for one epoch first and saved
there, so the next start is immediate.

The web framework (FastAPI, served by uvicorn) is the optional ``app`` extra; this module imports
it only when a server is built, so :data:`WEIGHT_FILES` and :func:`load_readers` work without it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mnist_course import CourseError
from mnist_course.data import display_path

__all__ = [
    "DEFAULT_WEIGHTS",
    "LINGER_BYTES",
    "LINGER_SECONDS",
    "MAX_BODY",
    "WEIGHT_FILES",
    "Readers",
    "create_app",
    "lingering_close",
    "load_readers",
    "main",
    "page",
]

#: The files ``draw`` reads in its weights folder, and ``make demo`` writes.
WEIGHT_FILES = {"numpy": "numpy_cnn.npz", "torch": "torch_cnn.pt"}
DEFAULT_WEIGHTS = "results"
#: The largest request body accepted, in bytes (a 280x280 drawing is about 10 KB; a full-screen
#: canvas on a high-density display a few hundred).
MAX_BODY = 2_000_000
#: After the server closes a connection (after a 413, say), at most this many more bytes are read
#: and thrown away, and for at most this many seconds, so that a client still sending its body
#: receives the answer (:func:`lingering_close`). Well past what a browser would send the page.
LINGER_BYTES = 16_000_000
LINGER_SECONDS = 5.0

_NAMES = {"numpy": "NumPy (by hand)", "torch": "PyTorch (autograd)"}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max()
    e = np.exp(z)
    return e / e.sum()


class Readers:
    """The two networks, each ready to read one digit.

    numpy_params: the NumPy network's parameter dict (``numpy_cnn.init_cnn`` layout);
    torch_model: a ``CourseCNN`` on the CPU; sources: {"numpy": text, "torch": text}, where each
    network's weights came from.
    """

    def __init__(self, numpy_params: dict, torch_model, sources: dict[str, str]) -> None:
        import torch

        self.numpy_params = numpy_params
        self.torch_model = torch_model.eval()
        self.sources = dict(sources)
        self._torch = torch
        self._lock = threading.Lock()   # one forward pass at a time: requests come from threads

    def read(self, x: np.ndarray) -> dict:
        """Both readings of one input x (1, 1, 28, 28), normalised:
        {"numpy": {"digit", "probs"}, "torch": {"digit", "probs"}}."""
        from mnist_course import numpy_cnn

        with self._lock:
            np_logits = numpy_cnn.fused_forward(self.numpy_params, x)[0].astype(np.float64)
            with self._torch.no_grad():
                t_logits = self.torch_model(self._torch.from_numpy(x)).double().numpy()[0]
        out = {}
        for impl, logits in (("numpy", np_logits), ("torch", t_logits)):
            probs = _softmax(logits)
            out[impl] = {"digit": int(probs.argmax()), "probs": [float(p) for p in probs]}
        return out

    def predict(self, image) -> dict:
        """The API's answer for a drawing (a PNG data URL, PNG bytes or RGBA array):
        {"input28": 28 lists of 28 floats, "numpy": {...}, "torch": {...}}. Raises
        :class:`mnist_course.handwriting.DrawingError` for a drawing that cannot be read."""
        from mnist_course import handwriting

        digit, x = handwriting.prepare(image)
        return {"input28": np.round(digit.astype(np.float64), 4).tolist(), **self.read(x)}


def load_readers(folder: str | os.PathLike = DEFAULT_WEIGHTS, *, limit: int | None = None,
                 progress: bool = True, log: Callable[[str], None] = print) -> Readers:
    """Both networks with the weights in ``folder`` (see the module's docstring).

    When the folder holds neither file, says so through ``log``, trains the PyTorch network for
    one epoch (on the first ``limit`` training images when given; a progress bar when
    ``progress``) and saves it as ``folder/torch_cnn.pt`` (the folder is created). Raises
    ``numpy_cnn.WeightsFileError`` naming the file when a weights file is damaged or does not
    fit the course CNN or was trained on another dataset (Fashion-MNIST), and
    :class:`CourseError` when the folder cannot be used.
    """
    from mnist_course import numpy_cnn, torch_cnn

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CourseError(f"--weights {folder}: that is a file; give the folder that holds "
                          f"{' and '.join(WEIGHT_FILES.values())}")
    paths = {impl: folder / name for impl, name in WEIGHT_FILES.items()}
    found = {impl: p for impl, p in paths.items() if p.is_file()}
    if not found:
        _train_torch(folder, paths["torch"], limit, progress, log)
        found = {"torch": paths["torch"]}
    model = torch_cnn.CourseCNN()
    remedy = ("Delete it and run `make demo` (or `mnist-course train torch --save "
              f"{paths['torch']}`) to write it again.")
    sources = {}
    if "torch" in found:
        torch_cnn.load_state(found["torch"], model, remedy=remedy)
        _refuse_other_dataset(found["torch"], torch_cnn.saved_dataset(found["torch"]), remedy)
        sources["torch"] = display_path(found["torch"])
    if "numpy" in found:
        np_remedy = remedy.replace("torch", "numpy").replace(".pt", ".npz")
        params = numpy_cnn.load_params(found["numpy"], remedy=np_remedy)
        _refuse_other_dataset(found["numpy"], numpy_cnn.saved_dataset(found["numpy"]),
                              np_remedy)
        sources["numpy"] = display_path(found["numpy"])
    else:
        params = torch_cnn.numpy_params(model)
        sources["numpy"] = f"the PyTorch weights ({sources['torch']}), transferred"
    if "torch" not in found:
        torch_cnn.load_numpy_params(model, params)
        sources["torch"] = f"the NumPy weights ({sources['numpy']}), transferred"
    return Readers(params, model, sources)


def _refuse_other_dataset(path: Path, dataset: str, remedy: str) -> None:
    """The page reads handwritten digits: a network trained on another dataset (recorded in its
    file, see ``training.run``'s ``save``) is refused with a one-line error."""
    if dataset == "mnist":
        return
    from mnist_course.data import DATASETS
    from mnist_course.numpy_cnn import WeightsFileError

    title = DATASETS[dataset].title if dataset in DATASETS else dataset
    raise WeightsFileError(f"{path} holds a network trained on {title}, not on MNIST's "
                           f"handwritten digits, so `draw` cannot use it. Give --weights "
                           f"another folder, or {remedy[:1].lower()}{remedy[1:]}")


def _train_torch(folder: Path, path: Path, limit: int | None, progress: bool,
                 log: Callable[[str], None]) -> None:
    from mnist_course import training
    from mnist_course.history import format_epoch

    images = "60,000" if limit is None else f"{min(limit, 60_000):,}"
    log(f"No saved weights in {display_path(folder)} (looked for {' and '.join(WEIGHT_FILES.values())};"
        " `make demo` writes both). Training the PyTorch network for one epoch on "
        f"{images} images first (about half a minute on 2 cores); the NumPy network gets the "
        "same weights.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CourseError(f"cannot create the weights folder {folder}: {exc.strerror}. Choose "
                          "another with --weights DIR.") from None
    result = training.run("torch", epochs=1, limit=limit, progress=progress, save=path,
                          on_epoch=lambda row: log(format_epoch(row, 1)))
    log(f"Saved to {display_path(path)} (test accuracy {result['test_accuracy']:.4f}); the next start "
        "reads it.")


# --------------------------------------------------------------------------------------------
# The web app
# --------------------------------------------------------------------------------------------

def page() -> str:
    """The HTML of the drawing page (``mnist_course/static/draw.html``)."""
    return (Path(__file__).parent / "static" / "draw.html").read_text(encoding="utf-8")


def _need_app_extra() -> CourseError:
    return CourseError("mnist-course draw needs a web framework that is not installed: "
                       "pip install -e \".[app]\" (FastAPI and uvicorn), then try again.")


def create_app(readers: Readers, max_body: int = MAX_BODY):
    """The FastAPI application: ``GET /`` (the page), ``GET /api/info``, ``POST /api/predict``.

    Every error, including unknown paths and wrong methods, is answered as JSON
    ``{"error": "..."}`` with a 4xx status (500 for a bug in the server)."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import HTMLResponse, JSONResponse
        from starlette.concurrency import run_in_threadpool
        from starlette.exceptions import HTTPException
    except ImportError:
        raise _need_app_extra() from None
    from mnist_course.handwriting import DrawingError

    # No interactive docs: their pages load scripts from a CDN, and the app must work offline.
    app = FastAPI(title="mnist-course draw", docs_url=None, redoc_url=None, openapi_url=None)
    html = page()

    def error(status: int, message: str) -> JSONResponse:
        # After a 413 the rest of the body is not read: the connection cannot carry another
        # request, so it is closed (lingering, see lingering_close) once the answer is sent.
        headers = {"Connection": "close"} if status == 413 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc):   # 404, 405, ... as JSON with "error"
        return error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path} "
                     "(the API is POST /api/predict and GET /api/info)")

    @app.exception_handler(Exception)
    async def _bug(request, exc):
        return error(500, f"internal error ({type(exc).__name__}: {exc}); the server goes on")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return html

    @app.get("/api/info")
    def info() -> dict:
        return {"weights": readers.sources, "max_body": max_body}

    async def predict(request):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body:
            return error(413, f"the body is {int(declared):,} bytes; at most {max_body:,} are "
                              "accepted (draw on a smaller canvas)")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                return error(413, f"the body is over {max_body:,} bytes, the most accepted "
                                  "(draw on a smaller canvas)")
        try:
            payload = json.loads(bytes(body))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return error(400, f"the body is not JSON ({exc}); send "
                              '{"image": "data:image/png;base64,..."}')
        if not isinstance(payload, dict):
            return error(400, 'the body must be a JSON object: {"image": '
                              '"data:image/png;base64,..."}')
        if "image" not in payload:
            return error(422, 'the JSON has no "image": send {"image": canvas.toDataURL()}')
        if not isinstance(payload["image"], str):
            return error(422, f'"image" must be a string, a PNG data URL '
                              f'(data:image/png;base64,...), not {type(payload["image"]).__name__}')
        try:
            return await run_in_threadpool(readers.predict, payload["image"])
        except DrawingError as exc:
            return error(422, str(exc))

    # The annotation FastAPI reads to pass the request in (this module's `from __future__ import
    # annotations` would leave it as a string that FastAPI cannot resolve here).
    predict.__annotations__["request"] = Request
    app.post("/api/predict")(predict)
    return app


# --------------------------------------------------------------------------------------------
# Closing connections: a lingering close
# --------------------------------------------------------------------------------------------

def lingering_close(protocol: type | None = None, *, max_bytes: int = LINGER_BYTES,
                    seconds: float = LINGER_SECONDS) -> type:
    """An HTTP protocol class for ``uvicorn.Config(http=...)`` whose connections close lingering.

    ``protocol`` is the uvicorn HTTP protocol that does the work (default: uvicorn's choice,
    httptools or h11). When it closes a connection, the server's side is ended first (the client
    receives everything written, then the end of the stream), and what the client goes on sending
    is read and thrown away until it closes too, or ``max_bytes`` more bytes came, or
    ``seconds`` passed; then the connection is closed. Meanwhile the connection counts among the
    server's open ones (a server that stops closes it at once), and every other connection is
    served as usual.
    """
    if protocol is None:
        try:
            from uvicorn.protocols.http.auto import AutoHTTPProtocol
        except ImportError:
            raise _need_app_extra() from None
        protocol = AutoHTTPProtocol
    if max_bytes < 0 or seconds < 0:
        raise ValueError(f"max_bytes and seconds must be >= 0, got {max_bytes} and {seconds}")
    return type(f"Lingering{protocol.__name__}", (_LingeringClose,),
                {"inner_class": protocol, "max_bytes": max_bytes, "seconds": seconds})


class _LingeringClose(asyncio.Protocol):
    """Stands between a connection's transport and the HTTP protocol (``inner_class``), which
    sees a :class:`_Transport` whose ``close()`` starts the lingering close."""

    inner_class: type
    max_bytes: int
    seconds: float

    def __init__(self, config, server_state, app_state, _loop=None) -> None:
        self.inner = self.inner_class(config=config, server_state=server_state,
                                      app_state=app_state, _loop=_loop)
        self.loop = _loop or asyncio.get_running_loop()
        self.connections = server_state.connections
        self.transport: asyncio.Transport | None = None
        self.lingering = False     # the HTTP protocol closed: reading and throwing away
        self.lost = False          # the connection is closed
        self.discarded = 0
        self.timer: asyncio.TimerHandle | None = None

    # the asyncio protocol, passed on to the HTTP protocol until it closes
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.inner.connection_made(_Transport(self, transport))

    def data_received(self, data: bytes) -> None:
        if not self.lingering:
            self.inner.data_received(data)
            return
        self.discarded += len(data)
        if self.discarded > self.max_bytes:
            self.transport.close()

    def eof_received(self) -> bool | None:
        if self.lingering:
            return False                         # the client closed too: close
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        if not self.lingering:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self.lingering:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.timer is not None:
            self.timer.cancel()
        if self.lingering:
            self.connections.discard(self)
        else:
            self.inner.connection_lost(exc)

    def shutdown(self) -> None:
        """The server stops (it calls this on each open connection): no more lingering."""
        self.transport.close()

    def linger(self) -> None:
        """The HTTP protocol closed the connection: end our side, then read until the client
        closes, or ``max_bytes`` more came, or ``seconds`` passed."""
        if self.lingering or self.lost:
            return
        self.lingering = True
        transport = self.transport
        # The HTTP protocol takes its leave the way asyncio tells it a connection closed, on the
        # loop's next turn; from now on the connection is this object's to close.
        self.connections.add(self)
        self.loop.call_soon(self.inner.connection_lost, None)
        if transport.is_closing():
            return
        if not transport.can_write_eof():     # TLS: no half-close; the answer's length tells
            transport.close()
            return
        transport.write_eof()                 # after what is written so far
        transport.resume_reading()            # the HTTP protocol may have paused it
        self.timer = self.loop.call_later(self.seconds, transport.close)


class _Transport:
    """The transport as the HTTP protocol sees it: ``close()`` lingers, and after that nothing
    it does reaches the connection."""

    def __init__(self, owner: _LingeringClose, transport) -> None:
        self._owner = owner
        self._transport = transport

    def __getattr__(self, name):              # get_extra_info, get_write_buffer_size, ...
        return getattr(self._transport, name)

    def close(self) -> None:
        self._owner.linger()

    def is_closing(self) -> bool:
        return self._owner.lingering or self._transport.is_closing()

    def write(self, data) -> None:
        if not self.is_closing():
            self._transport.write(data)

    def writelines(self, lines) -> None:
        if not self.is_closing():
            self._transport.writelines(lines)

    def pause_reading(self) -> None:
        if not self.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.is_closing():
            self._transport.resume_reading()


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), or a CourseError that says what to do."""
    if not 0 <= port <= 65535:
        raise CourseError(f"--port must be between 0 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CourseError(f"--host {host}: not an address of this machine ({exc.strerror}); "
                          "the default is 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48, 10048):   # EADDRINUSE on Linux, macOS, Windows
            raise CourseError(f"port {port} on {host} is already in use (another draw page?): "
                              "stop that program, or choose another port with --port") from None
        raise CourseError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def main(*, host: str = "127.0.0.1", port: int = 8000, open_browser: bool = True,
         weights: str | os.PathLike = DEFAULT_WEIGHTS, train_limit: int | None = None) -> int:
    """Serve the page until Ctrl+C; return the exit code."""
    try:
        import fastapi  # noqa: F401  (fail before training, not after)
        import uvicorn
    except ImportError:
        raise _need_app_extra() from None
    from mnist_course import live_progress

    sock = _bind(host, port)           # a taken port fails now, before any training
    try:
        readers = load_readers(weights, limit=train_limit, progress=live_progress(),
                               log=lambda s: print(s, flush=True))
        app = create_app(readers)
        bound_port = sock.getsockname()[1]
        shown_host = f"[{host}]" if ":" in host else host
        url = f"http://{shown_host}:{bound_port}/"
        for impl in ("numpy", "torch"):
            print(f"{_NAMES[impl]} reads with {readers.sources[impl]}", flush=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"Listening on {host}: other machines on your network can open this page.",
                  flush=True)
        print(f"Draw a digit at {url}  (Ctrl+C stops the server)", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                               http=lingering_close()))
        if open_browser:
            threading.Thread(target=_open_when_started, args=(server, url), daemon=True).start()
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _open_when_started(server, url: str) -> None:
    import time
    import webbrowser

    for _ in range(200):
        if server.started:
            if not webbrowser.open(url):
                print(f"(no browser found: open {url} yourself)", file=sys.stderr, flush=True)
            return
        time.sleep(0.05)
