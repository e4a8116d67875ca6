"""A headless Chromium driven through selenium for the browser tests: Debian's chromium and chromium-driver
(installed with apt-get when missing and the tests run as root; tests/debian.py)."""

from __future__ import annotations

import io
import os
import shutil
import urllib.request

import pytest
from PIL import Image

from tests.debian import debian_install_reason

PACKAGES = ("chromium", "chromium-driver")
BINARIES = ("chromium", "chromedriver")
# set by .ci/run: CI must run the browser test, so a missing browser fails it instead of skipping it
REQUIRED = "FACEMOGLE_BROWSER_REQUIRED"


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None]


def chromium(width: int = 1400, height: int = 1100):
    """A headless Chromium (webdriver.Chrome); the test is skipped when there is none and none can be
    installed, and fails then where REQUIRED is set."""
    reason = debian_install_reason("Chromium", PACKAGES, missing_binaries)
    if reason is not None:
        if os.environ.get(REQUIRED):
            pytest.fail(f"{REQUIRED} is set but {reason}")
        pytest.skip(reason)
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    # the driver named explicitly: selenium would otherwise look for one on the network
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def fetch_image(url: str) -> Image.Image:
    """An image the page shows, fetched from the page's own server."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return Image.open(io.BytesIO(response.read())).convert("RGB")
