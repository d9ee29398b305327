"""The views the page draws itself (static/live.js) against the server's PNGs of the same options, in a
real headless Chromium: every colormap and each class of display option, within one 8-bit level per
channel. Skipped, visibly, where Chromium is not installed (required in CI)."""

from __future__ import annotations

import base64
import io
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests
from PIL import Image

from support.browser import skip_without_browser, upload, wait_settled
from support.samples import SAMPLES

skip_without_browser()

from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from app.options import COLORMAPS  # noqa: E402
from app.imaging.pipeline import shrink  # noqa: E402

# the form back to its defaults plus ``arguments[0]``, then one change event (as a control move sends)
SET_OPTIONS = """
const form = document.getElementById('studio-form');
const values = Object.assign(JSON.parse(form.dataset.defaults), arguments[0]);
for (const [name, value] of Object.entries(values)) {
  const el = form.elements[name];
  if (!el) continue;
  if (el.type === 'checkbox') el.checked = value; else el.value = String(value);
}
form.elements.views.value = 'all';
form.elements.colormap.dispatchEvent(new Event('change', {bubbles: true}));
"""
# the studio:result events' details from here on (the last one: what the page shows now)
LISTEN = """
window.shownResult = null;
document.addEventListener('studio:result', (ev) => { window.shownResult = ev.detail; });
"""
# the colour key the page works out itself for arguments[0] (static/live.js), for the shown result
LOCAL_LEGEND = """
const r = window.shownResult;
return r && r.live ? window.depthLive.legend(r.live.depth, arguments[0], r.live.options) : null;
"""
CANVAS = """
const c = document.querySelector(`figure[data-view="${arguments[0]}"].live canvas`);
return c ? c.toDataURL('image/png') : null;
"""
DEPTH_VIEWS = ("heatmap", "overlay", "gray")
CASES = [{"colormap": name} for name in COLORMAPS] + [
    {"log": True}, {"clip": 0}, {"clip": 7.5}, {"contrast": 2.7}, {"contrast": 0.4},
    {"brightness": 0.3}, {"brightness": -0.45}, {"invert": True}, {"alpha": 0.2}, {"alpha": 1.0},
    {"contrast": 0.0},  # one level everywhere
    {"colormap": "turbo", "log": True, "clip": 3, "contrast": 1.6, "brightness": -0.1, "invert": True,
     "alpha": 0.7},
]


def _png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def _query(case: dict) -> dict:
    """The case's options as the server's query reads them."""
    return {k: ("on" if v else "off") if isinstance(v, bool) else v for k, v in case.items()}


@pytest.fixture(scope="module")
def big_photo(tmp_path_factory) -> str:
    """A photo larger than the page's 1600 px previews: the page draws the shrunk depth."""
    with Image.open(SAMPLES["rocket"]) as im:
        big = im.convert("RGB").resize((2400, 1600), Image.Resampling.BICUBIC)
    path = tmp_path_factory.mktemp("big") / "rocket-big.jpg"
    big.save(path, quality=90)
    return str(path)


def _show(driver, server_url: str, photo) -> str:
    driver.get(server_url + "/")
    driver.execute_script(LISTEN)
    upload(driver, photo)
    wait_settled(driver)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(CANVAS, "heatmap"))
    return parse_qs(urlsplit(driver.current_url).query)["depth_id"][0]


def _compare(driver, server_url: str, depth_id: str, case: dict, exact: bool = True) -> None:
    paints = driver.find_element("id", "grid").get_attribute("data-paints")
    driver.execute_script(SET_OPTIONS, case)
    WebDriverWait(driver, 30).until(lambda d: d.find_element("id", "grid").get_attribute("data-paints")
                                    != paints)
    wait_settled(driver)
    for view in DEPTH_VIEWS:
        drawn = driver.execute_script(CANVAS, view)
        assert drawn, f"{view} not drawn in the page for {case}"
        page = _png(base64.b64decode(drawn.split(",", 1)[1]))
        r = requests.get(f"{server_url}/api/v1/depth/{depth_id}/{view}.png",
                         params={"max_side": 1600, **_query(case)}, timeout=60)
        assert r.status_code == 200
        server = _png(r.content)
        assert page.shape == server.shape, (view, case)
        diff = np.abs(page - server)
        assert diff.max() <= 1, (view, case, int(diff.max()), float((diff > 1).mean()))
    for view in ("heatmap", "gray"):
        _compare_legend(driver, server_url, depth_id, case, view, exact)


def _compare_legend(driver, server_url: str, depth_id: str, case: dict, view: str, exact: bool) -> None:
    """The colour key the page works out against the server's legend.json of the same options. The
    server's key is of the whole depth, the page's of the preview it draws (as the server's previews
    are): the same for a photo within the preview size; for a larger one, the ranges of the two maps
    differ slightly (its min, max and percentiles), so the ticks agree to 0.2 % of the bar."""
    page = driver.execute_script(LOCAL_LEGEND, view)
    assert page, f"no colour key worked out in the page for {case}"
    r = requests.get(f"{server_url}/api/v1/depth/{depth_id}/legend.json",
                     params={"view": view, **_query(case)}, timeout=60)
    assert r.status_code == 200
    server = r.json()
    for key in ("colormap", "stops", "near", "local", "saturated"):
        assert page[key] == server[key], (view, case, key)
    assert len(page["ticks"]) == len(server["ticks"]), (view, case)
    values = [t["value"] for t in server["ticks"]]
    span = max(values) - min(values)
    value_tol, pos_tol = (1e-6 * span, 1e-4) if exact else (2e-3 * span, 2e-3)
    for mine, theirs in zip(page["ticks"], server["ticks"], strict=True):
        assert mine["value"] == pytest.approx(theirs["value"], abs=value_tol), (view, case)
        assert mine["pos"] == pytest.approx(theirs["pos"], abs=pos_tol), (view, case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_page_draws_what_the_server_renders(driver, server_url, case) -> None:
    """Each colormap with the other options at their defaults (clip 1 %: the percentile path), then
    each option class alone, then all together."""
    if not driver.current_url.startswith(server_url) or "depth_id=" not in driver.current_url:
        _show(driver, server_url, SAMPLES["coffee"])
    depth_id = parse_qs(urlsplit(driver.current_url).query)["depth_id"][0]
    _compare(driver, server_url, depth_id, case)


@pytest.mark.parametrize("case", [{}, {"log": True, "clip": 2, "contrast": 1.3, "alpha": 0.35}],
                         ids=["defaults", "log-clip-contrast-alpha"])
def test_page_draws_the_preview_of_a_large_photo(driver, server_url, big_photo, case) -> None:
    """Longer than 1600 px: the page draws the same shrunk depth the server's previews are made from."""
    depth_id = _show(driver, server_url, big_photo)
    size = driver.execute_script("const c = document.querySelector('figure.live canvas'); "
                                 "return [c.height, c.width]")
    assert tuple(size) == shrink(np.zeros((1600, 2400), np.float32), 1600).shape
    _compare(driver, server_url, depth_id, case, exact=False)

