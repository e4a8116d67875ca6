"""The demo page in a real browser (headless Chromium through selenium, tests/browser.py): load it, find the
named brushes, upload a JPEG-saved mask (snapped, with a warning in the page), type a prompt, generate, read
back the face and the gate map at the run's size, refuse a mask that is not square, load an example."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from PIL import Image

from experiments.app.core import Demo, example_masks
from experiments.runs.io import load_run
from facemogle.evaluators import load_face_parser
from facemogle.face_parts import colorize
from tests.browser import chromium, fetch_image
from tests.golden_samples import export_tiny_run

pytestmark = pytest.mark.slow  # it starts a browser, a page server and a generation
pytest.importorskip("gradio")

TIMEOUT = 120  # seconds for a step the page takes (generation on a busy 2-core machine included)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page(tmp_path_factory, workspace, evaluators):
    """The demo of an exported tiny run (64^2), with the workspace's test split as examples and a small
    parser, served on a free port; -> its URL."""
    from experiments.app.page import launch

    root = tmp_path_factory.mktemp("demo")
    run = load_run(export_tiny_run(root), [f"data.root={workspace / 'data'}", "data.split.protocol=fraction"])
    demo = Demo(run, load_face_parser(evaluators / "parser"))
    port = free_port()
    app = launch(demo, example_masks(run, 4), "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/", root
    app.close()


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def test_a_face_from_an_uploaded_mask_and_a_prompt_in_the_browser(page, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, root = page
    wait = WebDriverWait(browser, TIMEOUT)
    status = lambda: browser.find_element(By.ID, "status").text  # noqa: E731
    browser.get(url)
    wait.until(lambda d: d.find_elements(By.ID, "generate"))

    # gradio draws the editor's toolbar after the page's buttons: wait for it as for any other element
    colour = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#mask-editor button[aria-label='Color']"))
    colour[0].click()
    hair = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#mask-editor button[title='hair']"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#mask-editor button[title]")) >= 19 and hair

    jpeg = tmp_path / "mask.jpg"  # a palette mask as users save them
    Image.open(root / "masks" / "m0.png").convert("RGB").resize((256, 256), Image.NEAREST).save(
        jpeg, quality=90
    )
    browser.find_element(By.CSS_SELECTOR, "#mask-upload input[type=file]").send_keys(str(jpeg))
    wait.until(lambda d: "Warning" in status())
    assert "not exactly CelebAMask-HQ palette colours" in status()

    browser.find_element(By.CSS_SELECTOR, "#prompt textarea").send_keys("She has blond wavy hair.")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: "Generated in" in status() or "Error" in status())
    assert "Generated in" in status() and "Mask regions: " in status()
    face = fetch_image(browser.find_element(By.CSS_SELECTOR, "#face img").get_attribute("src"))
    gate = fetch_image(browser.find_element(By.CSS_SELECTOR, "#gate img").get_attribute("src"))
    assert face.size == (64, 64) and gate.size == (64, 64)
    assert np.asarray(face).std() > 0 and len(np.unique(np.asarray(gate).reshape(-1, 3), axis=0)) > 1
    assert browser.find_element(By.CSS_SELECTOR, "#gate-table img").get_attribute("src")
    assert browser.find_element(By.CSS_SELECTOR, "#parse img").get_attribute("src")
    assert "mIoU of the parse against the mask" in browser.find_element(By.ID, "miou").text

    wide = tmp_path / "wide.png"
    Image.fromarray(colorize(np.zeros((32, 64), dtype=np.uint8))).save(wide)
    browser.find_element(By.CSS_SELECTOR, "#mask-upload input[type=file]").send_keys(str(wide))
    wait.until(lambda d: "refused" in status())
    assert "wide.png is 64x32" in status() and "must be square" in status()

    browser.find_elements(By.CSS_SELECTOR, "#examples button.thumbnail-item")[0].click()
    wait.until(
        lambda d: (
            d.find_element(By.CSS_SELECTOR, "#prompt textarea").get_attribute("value")
            != "She has blond wavy hair."
        )
    )
