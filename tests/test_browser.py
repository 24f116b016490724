"""The draw-a-digit page in a real browser: headless Chromium (Debian's) driven by Selenium.

Strokes are drawn on the canvas with a mouse, a finger (touch) and a pen;
the test checks that the answer, the bars, the 28 x 28 and the network's
activity appear and change, that clicking a unit shows its weights, that a
random test digit and an uploaded photo are read, that a screenshot of
the page is not blank, and that a number written in "Read a number" mode is
read digit by digit with its boxes and bars. Selenium uses /usr/bin/chromedriver: it downloads nothing.
"""

from __future__ import annotations

import io
import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from digit_images import font_paths, glyph, trained_model
from PIL import Image
from test_web import start, stop

from digitnet import modelfile

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.actions import interaction  # noqa: E402
from selenium.webdriver.common.actions.action_builder import ActionBuilder  # noqa: E402
from selenium.webdriver.common.actions.pointer_input import PointerInput  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def page(mnist, tmp_path_factory):
    """``(driver, url, classifier)``: the page of a served MNIST model, open in headless Chromium."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium is not installed: run scripts/system-packages.sh (chromium, chromium-driver)")
    model = trained_model(mnist)
    proc, host, port = start(model, "--workers", "1")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1200,1100",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ]:
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        url = f"http://{host}:{port}/"
        driver.get(url)
        wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        yield driver, url, modelfile.load(model)
    finally:
        driver.quit()
        stop(proc)


def wait(driver, condition, timeout=20):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def predictions(driver) -> int:
    return int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-predictions"))


def settled(driver, before: int):
    """Wait until a prediction newer than ``before`` arrived and no request is in flight."""
    wait(
        driver,
        lambda d: (
            predictions(d) > before and d.find_element(By.TAG_NAME, "body").get_attribute("data-busy") == "0"
        ),
    )


def answer(driver) -> dict:
    bars = driver.find_elements(By.CSS_SELECTOR, "#bars li")
    return {
        "digit": driver.find_element(By.ID, "prediction").text,
        "p": [float(li.get_attribute("data-p")) for li in bars],
        "widths": [li.find_element(By.CSS_SELECTOR, ".fill").value_of_css_property("width") for li in bars],
        "top": [li.get_attribute("data-class") for li in bars if "top" in li.get_attribute("class").split()],
    }


def stroke(driver, points, kind="mouse", pressure=0.5):
    """Draw one stroke through ``points`` (pad pixels, 0-280) with a mouse, a finger or a pen."""
    pad = driver.find_element(By.ID, "pad")
    scale = pad.size["width"] / 280
    dense = []
    for (x0, y0), (x1, y1) in pairwise(points):
        steps = max(1, int(max(abs(x1 - x0), abs(y1 - y0)) // 8))
        dense += [(x0 + (x1 - x0) * t / steps, y0 + (y1 - y0) * t / steps) for t in range(steps)]
    dense.append(points[-1])
    offsets = [(int((x - 140) * scale), int((y - 140) * scale)) for x, y in dense]  # from the pad's centre
    if kind == "mouse":
        chain = ActionChains(driver, duration=10)
        chain.move_to_element_with_offset(pad, *offsets[0]).click_and_hold()
        for (ax, ay), (bx, by) in pairwise(offsets):
            chain.move_by_offset(bx - ax, by - ay)
        chain.release().perform()
        return
    pointer = PointerInput(interaction.POINTER_TOUCH if kind == "touch" else interaction.POINTER_PEN, kind)
    actions = ActionBuilder(driver, mouse=pointer, duration=10)
    actions.pointer_action.move_to(pad, *offsets[0])
    actions.pointer_action.pointer_down(pressure=pressure)
    for x, y in offsets[1:]:
        actions.pointer_action.move_to(pad, x, y, pressure=pressure)
    actions.pointer_action.pointer_up()
    actions.perform()


def canvas_pixels(driver, element_id) -> np.ndarray:
    """The RGBA pixels of a canvas, read in the page: shape (h, w, 4)."""
    data = driver.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];",
        element_id,
    )
    return np.array(data[2], np.uint8).reshape(data[1], data[0], 4)


ONE = [(150, 40), (140, 250)]
ZERO = [(140 + 70 * np.sin(t), 140 - 100 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 40)]
SEVEN = [(60, 50), (215, 50), (115, 245)]


def test_drawing_with_mouse_touch_and_pen_updates_the_answer_bars_and_activity(page, tmp_path):
    driver, url, clf = page
    assert "784-128-64-10" in driver.find_element(By.ID, "model-line").text
    assert answer(driver)["digit"] == "–" and len(answer(driver)["p"]) == 10

    before = predictions(driver)
    stroke(driver, ONE, "mouse")
    settled(driver, before)
    one = answer(driver)
    assert one["digit"] == "1" and one["top"] == ["1"]
    assert sum(one["p"]) == pytest.approx(1, abs=1e-4) and one["p"][1] > 0.5
    assert float(one["widths"][1].rstrip("px")) > float(one["widths"][0].rstrip("px"))
    # The 28 x 28 on the page is what the server said the network saw, and it holds the stroke.
    seen = canvas_pixels(driver, "seen")[..., 0]
    server_seen = np.array(driver.execute_script("return state.last.pixels"), np.uint8).reshape(28, 28)
    assert np.array_equal(seen, server_seen) and seen.max() == 255
    columns = server_seen.sum(axis=0)
    assert columns[9:19].sum() > 0.9 * columns.sum()  # a near-vertical stroke down the middle
    network = canvas_pixels(driver, "network")
    assert (network[..., 3] > 0).mean() > 0.02  # units and paths were drawn

    driver.find_element(By.ID, "clear").click()
    assert answer(driver)["digit"] == "–" and answer(driver)["p"] == [0.0] * 10
    assert canvas_pixels(driver, "pad")[..., 0].max() == 0

    before = predictions(driver)
    stroke(driver, ZERO, "touch")
    settled(driver, before)
    zero = answer(driver)
    assert zero["digit"] == "0" and zero["p"] != one["p"]

    driver.find_element(By.ID, "clear").click()
    before = predictions(driver)
    stroke(driver, SEVEN, "pen", pressure=0.8)
    settled(driver, before)
    assert answer(driver)["digit"] == "7"

    png = driver.get_screenshot_as_png()
    (tmp_path / "page.png").write_bytes(png)
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert shot.std() > 20  # not one flat colour
    amber = (shot[..., 0] > 200) & (shot[..., 1] > 130) & (shot[..., 1] < 200) & (shot[..., 2] < 80)
    assert amber.sum() > 500  # the answer, its bar and the paths


def test_clicking_a_unit_shows_its_incoming_weights(page, tmp_path):
    driver, url, clf = page
    if predictions(driver) == 0 or driver.find_element(By.ID, "prediction").text == "–":
        before = predictions(driver)
        stroke(driver, SEVEN, "mouse")
        settled(driver, before)
    unit = driver.execute_script("return state.units.find(u => u.layer === 1 && u.unit === 5)")
    net = driver.find_element(By.ID, "network")
    k = net.size["width"] / 960
    x, y = (
        (unit["x"] + unit["size"] / 2) * k - net.size["width"] / 2,
        (unit["y"] + unit["size"] / 2) * k - net.size["height"] / 2,
    )
    ActionChains(driver).move_to_element_with_offset(net, int(x), int(y)).click().perform()
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-unit") == "1/5")
    assert driver.find_element(By.ID, "unit-panel").is_displayed()
    assert driver.find_element(By.ID, "unit-title").text == "Weights into hidden layer 1, unit 5"
    weights = canvas_pixels(driver, "unit-weights")
    assert weights.shape[:2] == (140, 140)
    # Amber where the weight is positive, blue where negative: the picture is the weights themselves.
    w = clf.model.layers[0].weight.data[:, 5].reshape(28, 28)
    centre = weights[2::5, 2::5]  # one sample per weight
    strong = np.abs(w) > 0.3 * np.abs(w).max()
    assert ((centre[..., 0] > centre[..., 2]) == (w > 0))[strong].all()


def test_random_test_digit_and_upload(page, tmp_path):
    driver, url, clf = page
    before = predictions(driver)
    driver.find_element(By.ID, "random").click()
    settled(driver, before)
    status = driver.find_element(By.ID, "status").text
    assert status.startswith("Test image #") and "labelled" in status
    pixels = np.array(driver.execute_script("return state.last.pixels"))
    assert driver.find_element(By.ID, "prediction").text == str(clf.predict(pixels[None, :])[0])
    assert canvas_pixels(driver, "pad")[..., 0].max() > 200  # shown on the pad, to draw over
    # Upload a photo-like file: a dark 4 on light paper, off-centre on a wide page.
    fonts = font_paths()
    if not fonts:
        pytest.skip("no fonts on this machine: run scripts/system-packages.sh")
    ink = glyph(4, fonts[0])
    page_im = Image.new("L", (600, 300), 235)
    page_im.paste(Image.new("L", ink.size, 20), (400, 80), ink)
    path = tmp_path / "four.jpg"
    page_im.convert("RGB").save(path, quality=85)
    before = predictions(driver)
    driver.find_element(By.ID, "upload").send_keys(str(path))
    settled(driver, before)
    assert driver.find_element(By.ID, "prediction").text == "4"
    assert driver.find_element(By.ID, "status").text == "Read from four.jpg."
    assert json.loads(json.dumps(driver.execute_script("return state.last.inverted"))) is True


def test_a_drawn_number_is_read_digit_by_digit(page):
    """With "Read a number" on, the pad widens; 1, 7 and 0 written side by side are read as 170, each
    digit's box is drawn over the pad around its own strokes, and each digit has its 28x28 and ten bars;
    clicking a digit shows its probabilities in the big bars."""
    driver, url, clf = page
    driver.find_element(By.ID, "number-mode").click()
    pad = driver.find_element(By.ID, "pad")
    wait(driver, lambda d: int(pad.get_attribute("width")) == 560)
    k = pad.size["width"] / 560
    strokes = [
        [(90, 40), (80, 250)],  # 1
        [(180, 50), (300, 50), (225, 245)],  # 7
        [(440 + 55 * np.sin(t), 140 - 100 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 40)],  # 0
    ]
    for points in strokes:
        before = predictions(driver)
        chain = ActionChains(driver, duration=10)
        offsets = [(int((x - 280) * k), int((y - 140) * k)) for x, y in points]
        chain.move_to_element_with_offset(pad, *offsets[0]).click_and_hold()
        for (ax, ay), (bx, by) in pairwise(offsets):
            chain.move_by_offset(bx - ax, by - ay)
        chain.release().perform()
        settled(driver, before)
    wait(driver, lambda d: d.find_element(By.ID, "prediction").text == "170")
    cards = driver.find_elements(By.CSS_SELECTOR, "#digits li")
    assert [c.get_attribute("data-digit") for c in cards] == ["1", "7", "0"]
    boxes = [list(map(int, c.get_attribute("data-box").split(","))) for c in cards]
    for (x, y, w, h), points in zip(boxes, strokes, strict=True):
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        assert x - 15 <= min(xs) and max(xs) <= x + w + 15 and y - 15 <= min(ys) and max(ys) <= y + h + 15
    assert all(len(c.find_elements(By.CSS_SELECTOR, ".mini span")) == 10 for c in cards)
    overlay = canvas_pixels(driver, "boxes")
    amber = (overlay[..., 0] > 200) & (overlay[..., 1] > 130) & (overlay[..., 3] > 0)
    x, y, w, h = boxes[1]
    assert amber[y, x : x + w].mean() > 0.8  # the 7's box, along its top edge
    server = driver.execute_script("return state.last")
    assert server["number"] == "170" and len(server["digits"]) == 3
    cards[2].click()
    zero = server["digits"][2]["probabilities"]
    assert answer(driver)["p"] == pytest.approx(zero, abs=1e-5) and answer(driver)["top"] == ["0"]
    seen = canvas_pixels(driver, "seen")[..., 0]
    assert np.array_equal(seen.ravel(), np.array(server["digits"][2]["pixels"], np.uint8))
    driver.find_element(By.ID, "number-mode").click()  # back to one digit for the other tests
    wait(driver, lambda d: int(pad.get_attribute("width")) == 280)
