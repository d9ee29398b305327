"""The browser tests' Chromium: Debian's ``chromium`` + ``chromium-driver``, headless, via Selenium; waiting
for the studio page to settle, uploading, and the documentation's screenshots."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

# the page is idle: a result is shown, every shown image has loaded (or been drawn in the page, by
# static/live.js), nothing is in flight
SETTLED = """
const figs = [...document.querySelectorAll('#grid figure:not([hidden])')];
return !document.getElementById('results').hidden && figs.length > 0 &&
  figs.every(f => { const i = f.querySelector('img');
                    const drawn = f.classList.contains('live');
                    return (drawn || (i.getAttribute('src') && i.complete && i.naturalWidth > 0)) &&
                           !f.classList.contains('loading'); }) &&
  !document.getElementById('status').classList.contains('busy');
"""


def skip_without_browser() -> None:
    """Called first thing in a browser test module: skips the module, visibly, where Chromium is not
    installed; fails instead where DEPTHMAP_REQUIRE_BROWSER is set (CI)."""
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        if os.environ.get("DEPTHMAP_REQUIRE_BROWSER"):
            raise RuntimeError("DEPTHMAP_REQUIRE_BROWSER is set but chromium/chromedriver are missing")
        pytest.skip("no Chromium here: apt install chromium chromium-driver to run the browser tests",
                    allow_module_level=True)


def make_driver(width: int = 1400, height: int = 1000, phone: bool = False, webgl: bool = False):
    """A headless Chromium. ``phone``: a phone's screen and touch; ``webgl``: headless Chromium has no
    GPU here, so it renders WebGL with SwiftShader, which recent Chromium enables only when asked."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    gpu = (("--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist") if webgl
           else ("--disable-gpu",))
    # these flags keep Chromium from reaching out to Google's services, which this network refuses
    for flag in ("--headless=new", "--no-sandbox", *gpu, "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", f"--window-size={width},{height}",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"):
        opts.add_argument(flag)
    if phone:
        opts.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2, "touch": True}})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console, for CSP violations
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver


def wait_settled(driver, timeout: float = 60) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(SETTLED))


def upload(driver, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "f-image").send_keys(str(path))


def save_screenshot(shown, name: str) -> None:
    """With SCREENSHOT_DIR set, saves a screenshot there: of the window (``shown`` a driver) or of one
    element of the page. JPEG keeps the README's pictures small; the page itself is what is being shown."""
    from selenium.webdriver.remote.webelement import WebElement

    out = os.environ.get("SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        png = shown.screenshot_as_png if isinstance(shown, WebElement) else shown.get_screenshot_as_png()
        with Image.open(io.BytesIO(png)) as shot:
            shot.convert("RGB").save(Path(out) / name, quality=85)
