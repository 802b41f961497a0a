"""The app in a real browser: `python app.py` in a subprocess, headless Chromium driven by Selenium.

Types a prompt, clicks Generate, waits until the grid video can play, opens the attention
view and clicks a patch, visits every other view, and runs a Sora task (connect two clips), taking a
screenshot of each (into
tmp_path; with TINY_DIT_SCREENSHOTS=1 also into assets/screenshots/, the pictures of docs/app.md):

    TINY_DIT_SCREENSHOTS=1 .venv/bin/python -m pytest -q tests/test_browser.py

The app runs on the pipeline folder named by TINY_DIT_MODEL if set, else on the bundled model
assets/tiny-dit-shapes when it is there, else on a tiny random pipeline (passed to the app
through TINY_DIT_MODEL). Needs Debian's `chromium` and `chromium-driver`
(apt-get install -y chromium chromium-driver); skipped without them (`pytest -rs` prints why),
or, with TINY_DIT_REQUIRE_BROWSER=1, an error instead of a skip.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tiny_dit, however pytest was started
BUNDLED = ROOT / "assets" / "tiny-dit-shapes"
SCREENSHOT_ENV = "TINY_DIT_SCREENSHOTS"
PROMPT = "a blue star moving left on a black background"
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1200",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio"]


def find_browser() -> tuple[str | None, str | None]:
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    return browser, shutil.which("chromedriver")


BROWSER, DRIVER = find_browser()
MISSING = ("needs headless Chromium and its driver: apt-get install -y chromium chromium-driver "
           f"(found browser={BROWSER}, chromedriver={DRIVER})")
if (BROWSER is None or DRIVER is None) and os.environ.get("TINY_DIT_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"TINY_DIT_REQUIRE_BROWSER=1, but the browser test {MISSING}")  # fail, never skip
pytestmark = pytest.mark.skipif(BROWSER is None or DRIVER is None, reason=MISSING)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    chosen = os.environ.get("TINY_DIT_MODEL")
    if chosen and (Path(chosen) / "model_index.json").is_file():
        return Path(chosen).resolve()
    if (BUNDLED / "model_index.json").is_file():
        return BUNDLED
    sys.path.insert(0, str(ROOT / "tests"))
    from test_pipeline import tiny_pipeline

    folder = tmp_path_factory.mktemp("standin") / "pipeline"
    tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """`python app.py` on a free port; yields its URL."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "OMP_NUM_THREADS": "1", "TINY_DIT_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("TINY_DIT_MODEL", None)
    if model_dir != BUNDLED:
        env["TINY_DIT_MODEL"] = str(model_dir)
    log_path = tmp_path_factory.mktemp("server") / "app.log"
    log = open(log_path, "w")
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"app.py exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"app.py did not answer on {url} within 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        while url not in log_path.read_text():  # it prints its local URL (just after it starts answering)
            if time.time() > deadline:
                pytest.fail(f"app.py did not print its URL {url}:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def wait_for(driver, script: str, timeout: float = 240, what: str = ""):
    """Poll a JavaScript expression until it returns something truthy."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        errors = driver.execute_script(
            "return [...document.querySelectorAll('.toast-body')].map(e => e.innerText).join(' | ')")
        if errors and "error" in errors.lower():
            pytest.fail(f"the page shows an error while waiting for {what}: {errors}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def playable(selector: str) -> str:
    return (f"const v = document.querySelector('{selector} video');"
            "return v && v.src && !v.error && v.readyState >= 2 ? [v.readyState, v.src, v.videoWidth] : null;")


def image_loaded(selector: str) -> str:
    return (f"const i = document.querySelector('{selector} img');"
            "return i && i.complete && i.naturalWidth > 0 ? [i.naturalWidth, i.naturalHeight] : null;")


class Screenshots:
    """Element screenshots, shrunk to small PNGs, into tmp_path (and assets/screenshots/ if asked)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.publish = ROOT / "assets" / "screenshots" if os.environ.get(SCREENSHOT_ENV) else None
        self.taken = []

    def take(self, element, name: str, max_width: int = 1100) -> Path:
        from PIL import Image

        path = self.folder / f"{name}.png"
        element.screenshot(str(path))
        image = Image.open(path).convert("RGB")
        if image.width > max_width:
            image = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if self.publish is not None:
            self.publish.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.publish / path.name)
        self.taken.append(path)
        return path


def open_tab(driver, name: str):
    from selenium.webdriver.common.by import By

    # Two tab sets (Generate / Sora tasks above, the views below): the clicked one must be selected in its set.
    # On a loaded machine a click can land while the page is still busy and be lost: click again, up to 3 times.
    selected = ("return [...document.querySelectorAll('[role=tab][aria-selected=true]')].some("
                f"e => e.innerText.trim() === '{name}')")
    for attempt in range(3):
        tab = next(e for e in driver.find_elements(By.CSS_SELECTOR, "[role=tab]") if e.text.strip() == name)
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", tab)
        tab.click()
        try:
            wait_for(driver, selected, 20, f"the {name} tab")
            return
        except pytest.fail.Exception:
            if attempt == 2:
                raise


def click_patch(driver, selector: str, natural_xy: tuple[int, int]):
    """Click an image where the given pixel of the picture (natural size) is shown."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    img = driver.find_element(By.CSS_SELECTOR, f"{selector} img")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", img)
    nw, nh, w, h = driver.execute_script(
        "const i = arguments[0], r = i.getBoundingClientRect(); return [i.naturalWidth, i.naturalHeight, "
        "r.width, r.height];", img)
    scale = min(w / nw, h / nh, 1)  # how Gradio maps a click back to picture pixels (object-fit: contain)
    x = (w - nw * scale) / 2 + natural_xy[0] * scale
    y = (h - nh * scale) / 2 + natural_xy[1] * scale
    ActionChains(driver).move_to_element_with_offset(img, round(x - w / 2), round(y - h / 2)).click().perform()


def test_generate_and_look_inside_in_a_real_browser(server, browser, model_dir, tmp_path):
    from selenium.webdriver.common.by import By

    from tiny_dit.inside.geometry import ModelGeometry
    from tiny_dit.pipeline import TinyDiTPipeline
    from tiny_dit.inside.views.attention import slot_layout

    shots = Screenshots(tmp_path)
    driver = browser
    driver.get(server)
    wait_for(driver, "return document.querySelector('#prompt textarea, #prompt input')", 120, "the page")

    # Generate: type a prompt, click, wait for a playable looping video.
    box = driver.find_element(By.CSS_SELECTOR, "#prompt textarea, #prompt input")
    box.clear()
    box.send_keys(PROMPT)
    driver.find_element(By.CSS_SELECTOR, "#generate").click()
    wait_for(driver, image_loaded("#preview"), 240, "the live preview")
    state = wait_for(driver, playable("#grid-video"), 300, "a playable grid video")
    assert state[2] > 0  # decoded frames
    loop, autoplay = driver.execute_script(
        "const v = document.querySelector('#grid-video video'); return [v.loop, v.autoplay];")
    assert loop and autoplay
    info = wait_for(driver, "const e = document.querySelector('#run-info'); return e && e.innerText.includes("
                            "'clips in') && e.innerText", 60, "the run's timings")
    assert "iterations" in info
    wait_for(driver, "return document.querySelectorAll('#clips img, #clips video').length >= 1", 60,
             "the individual clips")
    shots.take(driver.find_element(By.CSS_SELECTOR, "#generate-panel"), "generate")

    # Attention: the views were filled from the run; click a patch and see the heatmap follow.
    open_tab(driver, "Attention maps")
    wait_for(driver, image_loaded("#attention-picker"), 60, "the attention picker")
    wait_for(driver, image_loaded("#attention-matrix"), 60, "the attention matrix")
    pipe = TinyDiTPipeline.from_pretrained(str(model_dir))
    geometry = ModelGeometry.of(pipe)
    tg, hg, wg = geometry.grid
    token = (tg - 1, hg // 2 - 1, wg - 2)
    click_patch(driver, "#attention-picker", slot_layout(geometry).centre(token))
    expected = f"row {token[1] + 1}, column {token[2] + 1} of time slot {token[0] + 1}"
    wait_for(driver, f"return document.querySelector('#attention-info').innerText.includes('{expected}')", 60,
             f"the heatmap of the clicked patch ({expected})")
    shots.take(driver.find_element(By.CSS_SELECTOR, "#views"), "attention")

    # The other views of the run.
    for tab, name, selector in [("Patch grid", "patch-grid", "#tab-patch"),
                                ("Denoising trajectory", "trajectory", "#tab-trajectory"),
                                ("Text path", "text-path", "#tab-text"),
                                ("adaLN-Zero", "adaln", "#tab-adaln"),
                                ("Forward process", "forward-process", "#tab-forward"),
                                ("Word attention", "word-attention", "#word-heatmap")]:
        open_tab(driver, tab)
        wait_for(driver, image_loaded(selector), 60, f"the {tab} view")
        shots.take(driver.find_element(By.CSS_SELECTOR, "#views"), name)

    # How it learned: the model folder's training samples and loss curve (or a note on what is missing).
    open_tab(driver, "How it learned")
    wait_for(driver, "const e = document.querySelector('#training-info'); return e && e.innerText.trim().length > 20",
             60, "the training history")
    shots.take(driver.find_element(By.CSS_SELECTOR, "#views"), "how-it-learned")

    # Guidance side by side runs its own sampling.
    open_tab(driver, "Guidance side by side")
    next(b for b in driver.find_elements(By.CSS_SELECTOR, "#tab-guidance button") if b.text == "Compare").click()
    wait_for(driver, playable("#tab-guidance"), 300, "the guidance comparison video")
    shots.take(driver.find_element(By.CSS_SELECTOR, "#views"), "guidance")

    # Sora tasks: pick the "connect two clips" example, generate, see the result with its given frames marked.
    open_tab(driver, "Sora tasks")
    examples = driver.find_elements(By.CSS_SELECTOR, "#tab-sora .gallery-item, #tab-sora tbody tr")
    assert len(examples) >= 5, "the Sora tasks examples"
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", examples[4])
    examples[4].click()  # connect two clips (rows: image, animate, extend forwards, backwards, connect)
    wait_for(driver, "return document.querySelectorAll('#sora-clip video, #sora-clip-b video').length === 2", 60,
             "the example clips")
    driver.find_element(By.CSS_SELECTOR, "#sora-generate").click()
    wait_for(driver, playable("#sora-video"), 300, "the Sora task's result video")
    wait_for(driver, image_loaded("#sora-strip"), 60, "the frames with the given ones marked")
    text = wait_for(driver, "const e = document.querySelector('#sora-info'); return e && e.innerText.includes("
                            "'were given') && e.innerText", 60, "the Sora task's description")
    assert "Connect two clips" in text
    result = driver.find_element(By.CSS_SELECTOR, "#sora-result")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", result)
    shots.take(result, "sora-tasks")

    assert len(shots.taken) == 11
    for path in shots.taken:
        assert path.stat().st_size < 600_000, f"{path.name} is {path.stat().st_size} bytes"
