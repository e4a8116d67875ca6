"""Screenshots and response times of a running demo (python -m experiments.demo), for docs/demo.md:

    python -m tests.demo_screenshots URL OUT_DIR [--runs 5]

Loads an example mask and its caption, generates `--runs` faces (seeds 0, 1, ...) and reports the page's
round trip (click to face shown) and the server's time per face; saves OUT_DIR/demo.png (the page with a
face), then draws a hair stroke with the named brush over a JPEG-saved mask and saves OUT_DIR/demo_draw.png
(the swatches open, the snapping warning). PNGs are reduced to 256 colours to stay small."""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import chromium


def shot(driver, path: Path) -> None:
    """The whole page, from the top."""
    driver.set_window_size(1400, 1350)  # gradio scrolls an inner container: the page's height says nothing
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)


def face_changed(driver, before: str | None) -> bool:
    shown = driver.find_elements(By.CSS_SELECTOR, "#face img")
    return bool(shown) and shown[0].get_attribute("src") != before


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.demo_screenshots")
    p.add_argument("url")
    p.add_argument("out")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--mask", default="data/synthetic/mask/0.png", help="a mask to save as JPEG and upload")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d = chromium(1400, 1000)
    wait = WebDriverWait(d, 120)
    status = lambda: d.find_element(By.ID, "status").text  # noqa: E731
    d.get(args.url)
    wait.until(lambda d: d.find_elements(By.ID, "generate"))
    d.find_elements(By.CSS_SELECTOR, "#examples button.thumbnail-item")[0].click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#prompt textarea").get_attribute("value"))
    trips, server = [], []
    for seed in range(args.runs):
        box = d.find_element(By.CSS_SELECTOR, "#seed input")
        box.clear()
        box.send_keys(str(seed))
        shown = d.find_elements(By.CSS_SELECTOR, "#face img")
        before = shown[0].get_attribute("src") if shown else None
        start = time.perf_counter()
        d.find_element(By.ID, "generate").click()
        wait.until(lambda d, before=before: face_changed(d, before) and "Generated" in status())
        trips.append(time.perf_counter() - start)
        server.append(float(re.search(r"Generated in ([0-9.]+) s", status()).group(1)))
    for name, times in (("round trip (click to face shown)", trips), ("server, per face", server)):
        print(f"{name}: {', '.join(f'{t:.2f}' for t in times)} s; median {statistics.median(times):.2f} s")
    shot(d, out / "demo.png")
    with tempfile.TemporaryDirectory() as tmp:
        jpeg = Path(tmp) / "mask.jpg"
        Image.open(args.mask).convert("RGB").resize((512, 512), Image.NEAREST).save(jpeg, quality=90)
        d.find_element(By.CSS_SELECTOR, "#mask-upload input[type=file]").send_keys(str(jpeg))
        wait.until(lambda d: "Warning" in status())
    editor = d.find_element(By.ID, "mask-editor")
    editor.find_element(By.CSS_SELECTOR, "button[aria-label='Color']").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#mask-editor button[title='hair']"))[0].click()
    canvas = editor.find_elements(By.TAG_NAME, "canvas")[-1]
    strokes = ActionChains(d).move_to_element_with_offset(canvas, -40, -110).click_and_hold()
    for _ in range(8):
        strokes.move_by_offset(10, 0)
    strokes.release().perform()
    editor.find_element(By.CSS_SELECTOR, "button[aria-label='Color']").click()
    d.find_element(By.ID, "generate").click()
    wait.until(lambda d: "Generated" in status())
    shot(d, out / "demo_draw.png")
    d.quit()


if __name__ == "__main__":
    main(sys.argv[1:])
