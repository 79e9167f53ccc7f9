"""`mnist-course draw`: the preprocessing (mnist_course.handwriting), the weights, the JSON API,
the command, and the page in a real headless browser.

The networks here are trained for one epoch on 6,000 images (about 0.93 test accuracy, a few
seconds), once per test run: under ``make test`` this file is one unit of work for pytest-xdist (see
``work_unit`` in the root conftest.py), and the weights are a session fixture.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from mnist_course import cli, data, numpy_cnn, torch_cnn
from mnist_course import handwriting as hw
from mnist_course.draw import (
    LINGER_BYTES,
    MAX_BODY,
    WEIGHT_FILES,
    create_app,
    lingering_close,
    load_readers,
)

PIL = pytest.importorskip("PIL", reason="Pillow is a dependency of the course: pip install -e .")
from PIL import Image, ImageDraw

SEVEN = [(40, 60), (150, 60), (260, 60), (220, 150), (180, 240), (140, 330)]


def strokes(points, canvas=(400, 300), width=22, offset=(0, 0), scale=1.0) -> np.ndarray:
    """Ink (H, W) uint8 of a polyline drawn with a round pen, like the page's strokes."""
    pic = Image.new("L", (canvas[1], canvas[0]), 0)
    pen = ImageDraw.Draw(pic)
    pts = [(offset[1] + scale * x, offset[0] + scale * y) for x, y in points]
    pen.line(pts, fill=255, width=round(width * scale), joint="curve")
    r = width * scale / 2
    for x, y in pts:
        pen.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return np.asarray(pic, dtype=np.uint8)


def bbox(img: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(img.max(axis=1) > 0.1)
    cols = np.flatnonzero(img.max(axis=0) > 0.1)
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


# --------------------------------------------------------------------------------------------
# The preprocessing
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("style", hw.STYLES)
def test_a_drawn_seven_becomes_an_mnist_sized_digit(style):
    rgba = hw.paint(strokes(SEVEN, canvas=(500, 640), offset=(90, 300)), style)
    digit, x = hw.prepare(hw.to_data_url(rgba))
    assert digit.shape == (28, 28) and digit.dtype == np.float32
    assert digit.min() == 0 and digit.max() == 1
    assert max(bbox(digit)) == hw.BOX                       # the longer side is 20 pixels
    cy, cx = hw.center_of_mass(digit)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5, (cy, cx)   # centred by mass
    assert x.shape == (1, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], (digit - data.MEAN) / data.STD, rtol=1e-6)


def test_the_aspect_ratio_is_kept():
    bar = np.zeros((400, 400), np.uint8)
    bar[50:350, 180:220] = 255                            # 300 tall, 40 wide: a "1"
    h, w = bbox(hw.mnist_style(bar / 255))
    assert h == 20 and w in (2, 3, 4), (h, w)              # 40 * 20/300 = 2.7, not 20


def test_light_dark_and_transparent_drawings_give_the_same_digit():
    ink = strokes(SEVEN)
    digits = {style: hw.mnist_style(hw.ink(hw.paint(ink, style))) for style in hw.STYLES}
    for style in hw.STYLES[1:]:
        np.testing.assert_allclose(digits[style], digits[hw.STYLES[0]], atol=0.01)
    # a coloured pen on a transparent canvas reads the same as a black one
    red = hw.paint(ink, "transparent")
    red[..., 0] = 220
    np.testing.assert_allclose(hw.mnist_style(hw.ink(red)), digits["transparent"], atol=1e-6)


def test_where_and_how_large_the_digit_is_drawn_does_not_matter():
    small = hw.mnist_style(strokes(SEVEN, canvas=(600, 600), scale=0.5, offset=(20, 330)) / 255)
    large = hw.mnist_style(strokes(SEVEN, canvas=(600, 600), scale=1.5, offset=(40, 10)) / 255)
    assert np.abs(small - large).mean() < 0.03


def test_mnist_digits_come_through_almost_unchanged(mnist):
    _, (x_test, _) = mnist
    digits = x_test[:200] / 255
    diff = np.array([np.abs(hw.mnist_style(d) - d).mean() for d in digits])
    assert np.median(diff) < 1e-3 and diff.mean() < 0.005, (np.median(diff), diff.mean())


@pytest.mark.parametrize("rgba", [
    np.zeros((280, 280, 4), np.uint8),                                   # an untouched canvas
    np.full((280, 280, 4), 255, np.uint8),                               # white paper
    np.dstack([np.zeros((50, 80, 3), np.uint8), np.full((50, 80), 255, np.uint8)]),  # black
], ids=["transparent", "white", "black"])
def test_an_empty_drawing_is_refused(rgba):
    with pytest.raises(hw.DrawingError, match="empty: draw a digit first"):
        hw.prepare(hw.to_data_url(rgba))


def _png(width, height) -> bytes:
    return hw.encode_png(np.zeros((height, width, 4), np.uint8))


@pytest.mark.parametrize("image, words", [
    (b"GIF89a...", "not a PNG"),
    ("hello", "must be a PNG data URL"),
    ("data:image/jpeg;base64,AAAA", "'image/jpeg', not image/png"),
    ("data:image/png,rawtext", "not base64-encoded"),
    ("data:image/png;base64,***", "base64 text is broken"),
    (_png(30, 30)[:-30], "damaged or truncated"),
    (_png(hw.MAX_SIDE + 1, 1), f"at most {hw.MAX_SIDE} on a side"),
], ids=["gif", "text", "jpeg", "not-base64", "broken-base64", "truncated", "too-wide"])
def test_images_that_cannot_be_read_are_refused_with_the_reason(image, words):
    with pytest.raises(hw.DrawingError, match=re.escape(words)):
        hw.prepare(image)


def test_render_draws_a_digit_where_asked(mnist):
    _, (x_test, _) = mnist
    rgba = hw.render(x_test[0], canvas=(300, 400), height=120, center=(80, 320),
                     style="dark-on-light")
    assert rgba.shape == (300, 400, 4) and rgba.dtype == np.uint8
    ink = hw.ink(rgba)
    cy, cx = hw.center_of_mass(ink)
    assert abs(cy - 80) < 15 and abs(cx - 320) < 15
    with pytest.raises(hw.DrawingError, match="unknown style"):
        hw.render(x_test[0], style="sepia")


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

def _train_both(x: np.ndarray, y: np.ndarray, folder) -> None:
    """One epoch of Adam(1e-3), batches of 64, from ``init_cnn(0)``: the NumPy network by its
    own fused forward and backward, the PyTorch one by autograd; saved as `make demo` saves them.
    (``training.run`` would also score the whole test set, which these tests do not need.)"""
    params, adam = numpy_cnn.init_cnn(0), numpy_cnn.Adam(1e-3)
    model = torch_cnn.load_numpy_params(torch_cnn.CourseCNN(), numpy_cnn.init_cnn(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    for i in range(0, len(x), 64):
        _, grads = numpy_cnn.fused_loss_and_grads(params, x[i:i + 64], y[i:i + 64])
        adam.step(params, grads)
        loss = torch.nn.functional.cross_entropy(model(xt[i:i + 64]), yt[i:i + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    numpy_cnn.save_params(folder / WEIGHT_FILES["numpy"], params)
    torch.save(model.state_dict(), folder / WEIGHT_FILES["torch"])


@pytest.fixture(scope="session")
def weights(tmp_path_factory, mnist):
    """A folder with both networks, each trained by its own implementation for one epoch on
    6,000 images (about 0.93 test accuracy), as `make demo` leaves them in results/. Session
    scope: built once, however the tests of this file are interleaved with others."""
    (x_train, y_train), _ = mnist
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    _train_both(data.normalize(x_train[:6000]), y_train[:6000], folder)
    return folder


@pytest.fixture(scope="session")
def readers(weights):
    return load_readers(weights, log=pytest.fail)


def test_each_network_reads_with_its_own_saved_weights(readers, weights):
    assert readers.sources == {impl: data.display_path(weights / name)
                               for impl, name in WEIGHT_FILES.items()}
    saved = torch_cnn.load_state(weights / "torch_cnn.pt", torch_cnn.CourseCNN())
    for key, value in torch_cnn.numpy_params(saved).items():
        assert not np.array_equal(value, readers.numpy_params[key]), key  # two trainings


def test_without_weights_the_torch_network_is_trained_and_shared(tmp_path, mnist_raw):
    said = []
    folder = tmp_path / "new" / "weights"
    readers = load_readers(folder, limit=640, progress=False, log=said.append)
    assert "No saved weights" in said[0] and "one epoch" in said[0]
    assert (folder / "torch_cnn.pt").is_file() and not (folder / "numpy_cnn.npz").exists()
    assert "transferred" in readers.sources["numpy"]
    digit = hw.render(np.eye(28, dtype=np.uint8) * 255, style="light-on-dark")
    reading = readers.predict(digit)
    np.testing.assert_allclose(reading["numpy"]["probs"], reading["torch"]["probs"], atol=1e-5)
    # the next start reads what was saved, without training
    again = load_readers(folder, log=pytest.fail)
    assert again.sources["torch"] == data.display_path(folder / "torch_cnn.pt")


def test_numpy_weights_alone_are_shared_with_torch(tmp_path):
    numpy_cnn.save_params(tmp_path / "numpy_cnn.npz", numpy_cnn.init_cnn(3))
    readers = load_readers(tmp_path, log=pytest.fail)
    assert "transferred" in readers.sources["torch"]
    reading = readers.predict(hw.paint(strokes(SEVEN), "transparent"))
    np.testing.assert_allclose(reading["numpy"]["probs"], reading["torch"]["probs"], atol=1e-5)


def test_a_damaged_weights_file_is_named(tmp_path):
    (tmp_path / "torch_cnn.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(numpy_cnn.WeightsFileError, match=r"torch_cnn\.pt.*make demo"):
        load_readers(tmp_path, log=pytest.fail)
    with pytest.raises(cli.CourseError, match="that is a file"):
        load_readers(tmp_path / "torch_cnn.pt", log=pytest.fail)


# --------------------------------------------------------------------------------------------
# The API, in-process
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def client(readers):
    from fastapi.testclient import TestClient

    return TestClient(create_app(readers, max_body=200_000))


def test_the_page_keeps_its_contract_and_needs_no_internet(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element in ('<canvas id="pad"', 'id="numpy-digit"', 'id="torch-digit"',
                    '<button id="clear"'):
        assert element in page.text, element
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)
    assert "@import" not in page.text
    info = client.get("/api/info").json()
    assert set(info["weights"]) == {"numpy", "torch"}


def test_both_networks_read_large_off_centre_digits_at_their_test_accuracy(client, readers,
                                                                            mnist):
    """100 test digits, drawn 120-220 pixels tall anywhere on a 320x320 canvas, in each of the
    three renderings a browser may send, through the API: each network reads them about as
    well as the same digits straight from MNIST."""
    _, (x_test, y_test) = mnist
    n = 100
    x, y = data.normalize(x_test[:n]), y_test[:n]
    with torch.no_grad():
        plain = {"numpy": (numpy_cnn.predict(readers.numpy_params, x) == y).mean(),
                 "torch": (readers.torch_model(torch.from_numpy(x)).argmax(1).numpy()
                           == y).mean()}
    rng = np.random.default_rng(0)
    for style in hw.STYLES:
        read = {"numpy": [], "torch": []}
        for i in range(n):
            height = int(rng.integers(120, 221))
            center = rng.uniform(height / 2, 320 - height / 2, size=2)
            rgba = hw.render(x_test[i], canvas=(320, 320), height=height, center=tuple(center),
                             style=style)
            answer = client.post("/api/predict", json={"image": hw.to_data_url(rgba)})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert np.shape(body["input28"]) == (28, 28)
            for impl, digits in read.items():
                probs = body[impl]["probs"]
                assert len(probs) == 10 and abs(sum(probs) - 1) < 1e-6
                assert body[impl]["digit"] == int(np.argmax(probs))
                digits.append(body[impl]["digit"])
        for impl, digits in read.items():
            acc = (np.array(digits) == y).mean()
            assert acc >= plain[impl] - 0.04, \
                f"{impl}, {style}: {acc:.2f} through the API, {plain[impl]:.2f} from MNIST"


BAD_BODIES = [
    (b"not json", 400, "not JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"\xff\xfe", 400, "not JSON"),
    (b'{"picture": "x"}', 422, 'no "image"'),
    (b'{"image": 7}', 422, "must be a string"),
    (b'{"image": "data:text/plain;base64,aGk="}', 422, "not image/png"),
    (json.dumps({"image": "data:image/png;base64," + "A" * 100}).encode(), 422, "not a PNG"),
    (json.dumps({"image": hw.to_data_url(np.zeros((280, 280, 4), np.uint8))}).encode(), 422,
     "empty"),
    (b'{"image": "' + b"A" * 250_000 + b'"}', 413, "at most 200,000"),
]


@pytest.mark.parametrize("body, status, words", BAD_BODIES,
                         ids=["text", "list", "binary", "no-image", "number", "text-url",
                              "not-png", "empty", "too-large"])
def test_bad_bodies_get_a_4xx_json_error_and_the_server_goes_on(client, body, status, words):
    answer = client.post("/api/predict", content=body,
                         headers={"content-type": "application/json"})
    assert answer.status_code == status
    assert words in answer.json()["error"]
    good = client.post("/api/predict", json={"image": hw.to_data_url(
        hw.paint(strokes(SEVEN), "transparent"))})
    assert good.status_code == 200


def test_a_large_body_without_a_declared_length_is_cut_off(client):
    def chunks():                              # sent chunked: no content-length to trust
        for _ in range(30):
            yield b"A" * 10_000

    answer = client.post("/api/predict", content=chunks())
    assert answer.status_code == 413 and "over 200,000 bytes" in answer.json()["error"]
    assert answer.headers["connection"] == "close"      # the rest of the body is not read


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/api/predict", 405), ("GET", "/nowhere", 404), ("POST", "/", 405)])
def test_wrong_paths_and_methods_answer_json(client, method, path, status):
    answer = client.request(method, path)
    assert answer.status_code == status and "POST /api/predict" in answer.json()["error"]


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------

def test_a_taken_port_is_a_one_line_error(weights, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = cli.main(["draw", "--no-browser", "--port", str(port), "--weights", str(weights)])
    assert code == 1
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err and "--port" in err


def test_without_the_app_extra_draw_says_what_to_install(weights, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)          # import uvicorn fails
    assert cli.main(["draw", "--no-browser", "--weights", str(weights)]) == 1
    assert 'pip install -e ".[app]"' in capsys.readouterr().err


def test_bad_arguments(capsys):
    assert cli.main(["draw", "--train-limit", "0"]) == 2
    assert cli.main(["draw", "--port", "70000", "--no-browser"]) == 1
    assert "--port must be between 0 and 65535" in capsys.readouterr().err


@pytest.fixture(scope="session")
def server(weights):
    """`mnist-course draw --no-browser --port 0` in its own process; yields the page's URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnist_course", "draw", "--no-browser", "--port", "0",
         "--weights", str(weights)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    said = []
    try:
        while True:
            try:
                line = lines.get(timeout=120)
            except queue.Empty:
                pytest.fail("mnist-course draw did not start within 120 s:\n" + "".join(said))
            said.append(line)
            found = re.search(r"Draw a digit at (http://\S+)", line)
            if found:
                break
            if proc.poll() is not None:
                pytest.fail("mnist-course draw stopped:\n" + "".join(said))
        yield found.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _post(url: str, body: dict) -> dict:
    import urllib.request

    request = urllib.request.Request(url + "api/predict", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def test_the_command_serves_the_api_on_a_real_port(server, mnist):
    assert server.startswith("http://127.0.0.1:")
    _, (x_test, _y_test) = mnist
    rgba = hw.render(x_test[1], canvas=(280, 280), height=200, style="transparent")
    answer = _post(server, {"image": hw.to_data_url(rgba)})
    assert set(answer) == {"input28", "numpy", "torch"}


# --------------------------------------------------------------------------------------------
# Oversized bodies over a real socket: the 413 reaches a client still sending
# --------------------------------------------------------------------------------------------

def _connect(url: str) -> socket.socket:
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()
    return socket.create_connection((host, int(port)), timeout=30)


def _read_to_end(sock: socket.socket) -> tuple[int, dict, dict]:
    """Status, headers (lower-case names) and JSON body of the answer, read until the server
    ends the stream."""
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def _info(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url + "api/info", timeout=30) as answer:
        return json.load(answer)


EIGHT_MB = 8_000_000


def test_a_blocking_client_sending_an_oversized_body_receives_the_413(server):
    """urllib.request sends its whole body before it reads: it gets the 413's JSON, not a
    connection reset; so does a bare socket that sends 8 MB (no Connection: close) first."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(server + "api/predict", data=b"A" * EIGHT_MB,
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert "8,000,000 bytes; at most 2,000,000" in json.load(refused.value)["error"]

    with _connect(server) as sock:
        sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: draw\r\nContent-Type: "
                     b"application/json\r\nContent-Length: %d\r\n\r\n" % EIGHT_MB)
        sock.sendall(b"A" * EIGHT_MB)
        status, headers, body = _read_to_end(sock)
    assert status == 413 and headers["connection"] == "close"
    assert "8,000,000 bytes; at most 2,000,000" in body["error"]
    assert set(_info(server)["weights"]) == {"numpy", "torch"}


def test_an_endless_chunked_body_is_cut_off_and_the_server_goes_on(server):
    """A body sent chunked without end: the server reads MAX_BODY, answers 413, throws away
    LINGER_BYTES more and closes; the client's next send fails. Then the server answers."""
    chunk = b"10000\r\n" + b"A" * 0x10000 + b"\r\n"
    sent, safety = 0, 30_000 * len(chunk)          # about 2 GB, a few seconds on loopback
    with _connect(server) as sock:
        sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: draw\r\nContent-Type: "
                     b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            while sent < safety:
                sock.sendall(chunk)
                sent += len(chunk)
    # what the server read, plus what the two sockets' buffers held
    assert sent < 2 * (MAX_BODY + LINGER_BYTES), f"{sent:,} bytes sent before the cut"
    assert set(_info(server)["weights"]) == {"numpy", "torch"}


@pytest.fixture
def quick_server(readers):
    """The app under uvicorn in a thread of this process, lingering at most 0.5 s; yields the
    URL."""
    import uvicorn

    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(readers), log_level="warning",
                                           lifespan="off", http=lingering_close(seconds=0.5)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started or not thread.is_alive():
                break
            thread.join(0.05)
        assert server.started, "uvicorn did not start within 30 s"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_a_client_trickling_its_body_is_cut_off_after_the_linger_time(quick_server):
    """A client that reads while it sends gets the 413 and the end of the answer at once; if it
    goes on sending, slowly, the connection is closed when the linger time is over, and other
    clients are served meanwhile."""
    with _connect(quick_server) as sock:
        sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: draw\r\nContent-Length: %d\r\n\r\n"
                     % EIGHT_MB + b"A" * 1000)
        status, headers, body = _read_to_end(sock)
        assert status == 413 and headers["connection"] == "close"
        assert "at most 2,000,000" in body["error"]
        assert set(_info(quick_server)["weights"]) == {"numpy", "torch"}   # meanwhile
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(3000):                       # 1,000 bytes every 10 ms, 30 s at most
                sock.sendall(b"A" * 1000)
                threading.Event().wait(0.01)
    assert set(_info(quick_server)["weights"]) == {"numpy", "torch"}


# --------------------------------------------------------------------------------------------
# A real browser
# --------------------------------------------------------------------------------------------

NO_BROWSER = ("no headless browser for the browser test: it drives Debian's chromium through "
              "chromedriver (apt-get install chromium chromium-driver, as .ci/run does) with "
              "Selenium (pip install -e '.[dev]')")


@pytest.fixture(scope="session")
def browser():
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                 "google-chrome"))), None)
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        found = None
    if not (found and driver_path):
        if os.environ.get("MNIST_COURSE_REQUIRE_BROWSER"):
            pytest.fail(NO_BROWSER + "; MNIST_COURSE_REQUIRE_BROWSER is set, so this fails")
        pytest.skip(NO_BROWSER)
    options = webdriver.ChromeOptions()
    options.binary_location = found
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=960,600"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    yield driver
    driver.quit()


def _stroke(driver, pad, points, kind):
    """One stroke through ``points`` (offsets from the canvas's centre, CSS pixels) with a
    mouse, a pen or a finger: W3C actions, which the browser turns into pointer events."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    kinds = {"mouse": interaction.POINTER_MOUSE, "pen": interaction.POINTER_PEN,
             "touch": interaction.POINTER_TOUCH}
    actions = ActionBuilder(driver, mouse=PointerInput(kinds[kind], kind))
    box = pad.rect
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    actions.pointer_action.move_to_location(round(cx + points[0][0]), round(cy + points[0][1]))
    actions.pointer_action.pointer_down()
    for x, y in points[1:]:
        actions.pointer_action.move_to_location(round(cx + x), round(cy + y))
    actions.pointer_action.pointer_up()
    actions.perform()


def _readings(driver, before=("?", "?")):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def now(d):
        got = (d.find_element(By.ID, "numpy-digit").text, d.find_element(By.ID, "torch-digit").text)
        return got if "?" not in got and got != before else False

    return WebDriverWait(driver, 20, poll_frequency=0.05).until(now)


def test_a_browser_draws_and_both_networks_read_it(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(server)
    pad = browser.find_element(By.ID, "pad")
    _stroke(browser, pad, [(0, y) for y in range(-95, 96, 19)], "mouse")
    assert _readings(browser) == ("1", "1")
    seen = browser.execute_script(
        "return Array.from(document.getElementById('input28').getContext('2d')"
        ".getImageData(0, 0, 28, 28).data).filter((v, i) => i % 4 == 0).reduce((a, b) => a + b)")
    assert seen > 0                                # the 28x28 input is shown

    browser.find_element(By.ID, "clear").click()
    assert (browser.find_element(By.ID, "numpy-digit").text,
            browser.find_element(By.ID, "torch-digit").text) == ("?", "?")
    blank = hw.decode_data_url(browser.execute_script(
        "return document.getElementById('pad').toDataURL()"))
    assert blank[..., 3].max() == 0

    seven = [(-70, -90), (0, -90), (70, -90), (45, -30), (20, 30), (-5, 95)]
    _stroke(browser, pad, seven, "pen")
    page = _readings(browser)
    drawn = browser.execute_script("return document.getElementById('pad').toDataURL()")
    api = _post(server, {"image": drawn})
    assert page == (str(api["numpy"]["digit"]), str(api["torch"]["digit"]))
    assert page == ("7", "7")

    browser.find_element(By.ID, "clear").click()
    _stroke(browser, pad, [(10, y) for y in range(-100, 101, 25)], "touch")
    assert _readings(browser) == ("1", "1")


# --------------------------------------------------------------------------------------------
# Weights trained on Fashion-MNIST are refused (issue 24)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["torch", "numpy"])
def test_a_network_trained_on_fashion_mnist_is_refused_in_one_line(tmp_path, capsys, impl):
    """`train --dataset fashion-mnist --save` records the dataset in the file (here written the
    way training.run writes it, without training); draw reads digits, so it refuses the file
    with one line naming it and saying what to do, before serving anything."""
    path = tmp_path / WEIGHT_FILES[impl]
    if impl == "torch":
        torch_cnn.save_state(path, torch_cnn.CourseCNN(), dataset="fashion-mnist")
    else:
        numpy_cnn.save_params(path, numpy_cnn.init_cnn(0), dataset="fashion-mnist")
    with pytest.raises(numpy_cnn.WeightsFileError, match="trained on Fashion-MNIST"):
        load_readers(tmp_path, log=pytest.fail)
    pytest.importorskip("fastapi", reason="the app extra: pip install -e '.[app]'")
    code = cli.main(["draw", "--no-browser", "--port", "0", "--weights", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    line = err.rstrip("\n")
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"mnist-course: error: {path} holds a network trained on "
                           "Fashion-MNIST")
    assert "--weights" in line and "make demo" in line
