"""End to end: the web page in headless Debian chromium (Playwright for Python), a fake webcam playing a
y4m file made from a face photo, a real uvicorn server on a free localhost port.  These tests drive the page's
server engine (``?engine=server``: frames over the WebSocket, photos posted); tests/test_browser_pipeline.py
drives its on-device engine (the default) and reuses the fixtures here.

Needs /usr/bin/chromium (``make test`` installs it with apt; Playwright never downloads a browser here).
Without it the test fails in CI (``CI`` set) and is skipped elsewhere.  Screenshots go to the test's
tmp_path and to ``test-output/`` in the repository root.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers_images import face_photo
from helpers_models import make_exported_tiny_model, serve_in_thread

from ferlab.labels import FER2013_CLASSES

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
OUT_DIR = ROOT / "test-output"

pytestmark = pytest.mark.browser


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI: `make test` must provide it: `make browser` apt-installs chromium, the "
                    "[dev] extra installs playwright)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def playwright_sync():
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} missing: install Debian's chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is missing (pip install -e '.[dev]')")
    with sync_playwright() as p:
        yield p


# ---------------------------------------------------------------------------------------- test assets
def webcam_frames(photo: np.ndarray, n: int = 12, size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    """``n`` 640x480 frames: the photo fitted on a dark background, drifting a few pixels (a live feel)."""
    import cv2

    w, h = size
    s = min(w / photo.shape[1], h / photo.shape[0]) * 0.95
    img = cv2.resize(photo, (int(photo.shape[1] * s), int(photo.shape[0] * s)), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        frame = np.full((h, w, 3), 30, np.uint8)
        dx = (w - img.shape[1]) // 2 + int(round(6 * np.sin(2 * np.pi * i / n)))
        dy = (h - img.shape[0]) // 2
        frame[dy:dy + img.shape[0], dx:dx + img.shape[1]] = img
        frames.append(frame)
    return frames


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 15) -> Path:
    """YUV4MPEG2 file (4:2:0 planar, what chromium's fake capture device plays) from BGR frames."""
    import cv2

    h, w = frames[0].shape[:2]
    if w % 2 or h % 2:
        raise ValueError("y4m 4:2:0 needs even frame sizes")
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for frame in frames:
            i420 = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)  # Y plane, then U, then V
            assert i420.shape == (h * 3 // 2, w)
            f.write(b"FRAME\n")
            f.write(i420.tobytes())
    return path


# ------------------------------------------------------------------------------------------- server
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real uvicorn on a free 127.0.0.1 port: the bundled models (if any) and a tiny random model."""
    pytest.importorskip("fastapi")

    from ferlab.commands.serve import websocket_support

    if not websocket_support():
        _unavailable("uvicorn has no WebSocket library for /v1/stream: pip install websockets")

    from ferlab.serving import create_app
    from ferlab.zoo import bundled_names

    models = tmp_path_factory.mktemp("browser_models")
    make_exported_tiny_model(models)
    bundled = bundled_names()
    app = create_app([*bundled, models], "default" if "default" in bundled else "tiny", workers=2, threads=1,
                     preload=True)
    with serve_in_thread(app) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    import cv2

    folder = tmp_path_factory.mktemp("browser_assets")
    photo = face_photo()
    y4m = write_y4m(folder / "webcam.y4m", webcam_frames(photo))
    jpg = folder / "face.jpg"
    cv2.imwrite(str(jpg), photo)
    bad = folder / "broken.png"
    bad.write_bytes(b"this is not really a png")
    return {"y4m": y4m, "photo": jpg, "bad": bad}


@pytest.fixture(scope="module")
def browser(playwright_sync, assets):
    b = playwright_sync.chromium.launch(
        executable_path=str(CHROMIUM), headless=True,
        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              f"--use-file-for-fake-video-capture={assets['y4m']}"])
    yield b
    b.close()


def shoot(page, tmp_path: Path, name: str) -> None:
    OUT_DIR.mkdir(exist_ok=True)
    page.screenshot(path=str(tmp_path / name), full_page=True)
    shutil.copy(tmp_path / name, OUT_DIR / name)


#: counts the frames the page sends and how many are awaiting an answer at most (must be 1: no queueing)
COUNT_FRAMES = """
window.__framesSent = 0; window.__inFlight = 0; window.__maxInFlight = 0;
const originalSend = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  if (typeof data !== "string") {
    if (!this.__counted) {
      this.__counted = true;
      this.addEventListener("message", (ev) => {
        const m = JSON.parse(ev.data);
        if (m.type === "result" || (m.type === "error" && m.frame !== undefined)) window.__inFlight -= 1;
      });
    }
    window.__framesSent += 1;
    window.__inFlight += 1;
    window.__maxInFlight = Math.max(window.__maxInFlight, window.__inFlight);
  }
  return originalSend.call(this, data);
};
"""


def open_page(browser, server, problems: list[str], query: str = "?engine=server", **context_options):
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, **context_options)
    ctx.add_init_script(COUNT_FRAMES)
    page = ctx.new_page()
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(server + "/" + query)
    page.wait_for_function("() => { const s = document.querySelector('#model'); "
                           "return s.options.length > 0 && s.value && !s.value.includes('loading'); }")
    return ctx, page


# -------------------------------------------------------------------------------------------- tests
def test_live_mode_shows_tracked_face(browser, server, tmp_path):
    problems: list[str] = []
    ctx, page = open_page(browser, server, problems)
    try:
        models = [o.get_attribute("value") for o in page.query_selector_all("#model option")]
        assert "tiny" in models
        assert "never stored" in page.inner_text(".privacy")
        page.click("#start")
        page.wait_for_selector("#live-result[data-faces='1']", state="attached", timeout=90_000)
        # let a few frames through, then read the latest result the page exposes
        page.wait_for_function("() => Number(document.querySelector('#live-result').dataset.frames) >= 4",
                               timeout=90_000)
        result = page.eval_on_selector("#live-result", "e => ({...e.dataset})")
        assert result["label"] in FER2013_CLASSES, result
        assert result["track"].isdigit(), result
        x, y, w, h = (int(v) for v in result["box"].split(","))
        assert w > 40 and h > 40
        assert page.inner_text("#fps") not in ("", "–")
        assert page.locator("#live-faces .face").count() == 1
        assert page.locator("#live-faces .bar-row").count() == len(FER2013_CLASSES)
        # the overlay has drawn something (the box): some non-transparent pixels
        drawn = page.evaluate("""() => { const c = document.querySelector('#overlay');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }""")
        assert drawn > 500
        # switching the model mid-stream keeps the stream going
        page.select_option("#model", "tiny")
        frames = int(result["frames"])
        page.wait_for_function(f"() => Number(document.querySelector('#live-result').dataset.frames) > {frames + 2}",
                               timeout=60_000)
        shoot(page, tmp_path, "live.png")
        sent, max_in_flight = page.evaluate("() => [window.__framesSent, window.__maxInFlight]")
        assert sent >= frames + 2 and max_in_flight == 1, (sent, max_in_flight)  # frames dropped, not queued
        page.click("#stop")
        assert page.get_attribute("body", "data-camera") == "off"
    finally:
        ctx.close()
    assert not problems, problems


def test_photo_mode_upload_and_errors(browser, server, assets, tmp_path):
    problems: list[str] = []
    ctx, page = open_page(browser, server, problems)
    try:
        page.click("#tab-photo")
        assert page.is_visible("#dropzone")
        page.set_input_files("#file", str(assets["photo"]))
        page.wait_for_selector("#photo-result[data-status='done']", state="attached", timeout=60_000)
        result = page.eval_on_selector("#photo-result", "e => ({...e.dataset})")
        assert result["faces"] == "1" and result["label"] in FER2013_CLASSES, result
        assert page.locator("#photo-faces .face").count() == 1
        assert "1 face" in page.inner_text("#photo-stats")
        shoot(page, tmp_path, "photo.png")
        # a broken file: a clear message from the server, and the page keeps working
        page.click("#photo-another")
        page.set_input_files("#file", str(assets["bad"]))
        page.wait_for_selector("#photo-result[data-status='error']", state="attached", timeout=30_000)
        msg = page.inner_text("#photo-message")
        assert "broken.png" in msg and "not an image" in msg
        shoot(page, tmp_path, "photo_error.png")
        # the page keeps working: drag and drop a photo onto the drop zone (shown again after the error)
        assert page.is_visible("#dropzone")
        payload = base64.b64encode(assets["photo"].read_bytes()).decode()
        page.evaluate("""(b64) => {
            const bin = atob(b64), bytes = new Uint8Array(bin.length);
            for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "dropped.jpg", { type: "image/jpeg" }));
            document.querySelector("#dropzone").dispatchEvent(
                new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
        }""", payload)
        page.wait_for_selector("#photo-result[data-status='done']", state="attached", timeout=60_000)
        assert page.eval_on_selector("#photo-result", "e => e.dataset.faces") == "1"
    finally:
        ctx.close()
    # the 415 answer to the broken upload is the one expected console error
    assert all("415" in p for p in problems), problems


@pytest.mark.parametrize("error, expected", [("NotAllowedError", "denied"), ("NotFoundError", "No camera")])
def test_camera_denied_or_absent_message(browser, server, tmp_path, error, expected):
    problems: list[str] = []
    # the second case also renders the dark colour scheme
    ctx = browser.new_context(viewport={"width": 1280, "height": 860},
                              color_scheme="dark" if error == "NotFoundError" else "light")
    ctx.add_init_script(f"""navigator.mediaDevices.getUserMedia = () =>
        Promise.reject(new DOMException("simulated", "{error}"));""")
    page = ctx.new_page()
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    try:
        page.goto(server + "/")
        page.click("#start")
        page.wait_for_selector("#live-message:not([hidden])", timeout=20_000)
        assert expected in page.inner_text("#live-message")
        assert page.is_enabled("#start")
        shoot(page, tmp_path, f"camera_{error}.png")
    finally:
        ctx.close()
    assert not problems, problems


def test_layout_fits_laptop_and_phone_and_arrow_keys_switch_tabs(browser, server, tmp_path):
    problems: list[str] = []
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    try:
        page.goto(server + "/")
        page.wait_for_function("() => document.querySelector('#model').options.length > 0")
        box = page.locator("#start").bounding_box()
        assert box["y"] + box["height"] <= 800, box  # "Start camera" above the fold at 1280x800
        # keyboard: arrows move between the tabs (and wrap), Home / End go to the ends
        page.focus("#tab-live")
        page.keyboard.press("ArrowRight")
        assert page.get_attribute("#tab-photo", "aria-selected") == "true" and page.is_visible("#dropzone")
        assert page.evaluate("() => document.activeElement.id") == "tab-photo"
        page.keyboard.press("ArrowRight")
        assert page.get_attribute("#tab-live", "aria-selected") == "true" and page.is_hidden("#panel-photo")
        page.keyboard.press("End")
        assert page.get_attribute("#tab-photo", "aria-selected") == "true"
        page.keyboard.press("ArrowLeft")
        assert page.get_attribute("#tab-live", "aria-selected") == "true"
        assert page.get_attribute("#tab-photo", "tabindex") == "-1"
        shoot(page, tmp_path, "laptop_1280x800.png")
    finally:
        ctx.close()
    phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                has_touch=True)
    page = phone.new_page()
    try:
        page.goto(server + "/")
        page.wait_for_function("() => document.querySelector('#model').options.length > 1 || "
                               "!document.querySelector('#model').value.includes('loading')")
        widths = page.evaluate("""() => ({doc: document.documentElement.scrollWidth,
            picker: document.querySelector('.model-picker').getBoundingClientRect().right,
            select: document.querySelector('#model').getBoundingClientRect().right})""")
        assert widths["doc"] <= 390 and widths["picker"] <= 390 and widths["select"] <= 390, widths
        shoot(page, tmp_path, "phone_390.png")
    finally:
        phone.close()
    assert not problems, problems


def test_photo_without_a_face_says_so(browser, server, tmp_path):
    problems: list[str] = []
    ctx, page = open_page(browser, server, problems)
    try:
        page.click("#tab-photo")
        page.set_input_files("#file", str(ROOT / "examples" / "no_face.png"))
        page.wait_for_selector("#photo-result[data-status='done']", state="attached", timeout=60_000)
        result = page.eval_on_selector("#photo-result", "e => ({...e.dataset})")
        assert result["faces"] == "0" and result["label"] == "" and result["noface"] == "true", result
        assert page.locator("#photo-faces .face").count() == 0  # no "Sad 44%" card
        assert "No face found" in page.inner_text("#photo-faces")
        assert page.inner_text("#photo-stats").startswith("No face found")
        shoot(page, tmp_path, "photo_no_face.png")
    finally:
        ctx.close()
    assert not problems, problems
