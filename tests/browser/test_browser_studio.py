"""The studio's tools in a real headless Chromium against the real server: the colour key follows invert,
log and CLAHE; the compare slider moves by keyboard and by dragging; every download link gives a file
that parses back with the right size and values; the 3D preview draws the mesh (WebGL through
SwiftShader, Chromium's software renderer) and turns with the keyboard. No CSP violation on the way.

With SCREENSHOT_DIR set, saves studio-compare.jpg, studio-3d.jpg and studio-stereo.jpg (the docs'
screenshots).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Iterator

import av
import numpy as np
import pytest
import requests
from PIL import Image
from plyfile import PlyData
from pygltflib import GLTF2

from app.imaging.exports import read_pfm
from support.browser import make_driver, save_screenshot, skip_without_browser, upload, wait_settled
from support.images import photo_size
from support.samples import SAMPLES

skip_without_browser()

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

# share of the canvas's pixels that differ from the background, and their spread: a drawn mesh has both
CANVAS_STATS = """
const c = document.getElementById('viewer-canvas');
const probe = document.createElement('canvas');
probe.width = c.width; probe.height = c.height;
const ctx = probe.getContext('2d'); ctx.drawImage(c, 0, 0);
const d = ctx.getImageData(0, 0, probe.width, probe.height).data;
let drawn = 0, n = 0, sum = 0, sum2 = 0, hash = 0;
for (let i = 0; i < d.length; i += 16) {
  n++;
  const bg = Math.abs(d[i] - 0x20) + Math.abs(d[i + 1] - 0x20) + Math.abs(d[i + 2] - 0x28);
  if (bg > 12) drawn++;
  const l = d[i] + d[i + 1] + d[i + 2]; sum += l; sum2 += l * l;
  hash = (Math.imul(hash, 31) + d[i] + d[i + 1] * 3) | 0;
}
return {drawn: drawn / n, std: Math.sqrt(sum2 / n - (sum / n) ** 2), hash, w: c.width, h: c.height};
"""


@pytest.fixture(scope="module")
def driver(server_url) -> Iterator[webdriver.Chrome]:
    """This module's own: with WebGL, taller, and the page already showing a result."""
    d = make_driver(1400, 1100, webgl=True)
    d.get(server_url + "/")
    upload(d, SAMPLES["chelsea"])
    wait_settled(d)
    yield d
    d.quit()


def by_id(driver, name: str):
    return driver.find_element(By.ID, name)


def legend_state(driver) -> dict:
    return driver.execute_script("""
      const ticks = [...document.querySelectorAll('#legend-ticks .legend-tick')];
      return {left: document.getElementById('legend-left').textContent,
              right: document.getElementById('legend-right').textContent,
              local: document.getElementById('legend').dataset.local,
              note: document.getElementById('legend-note').textContent,
              bar: document.getElementById('legend-bar').style.background,
              ticks: ticks.map(t => [t.textContent, parseFloat(t.style.left)])};""")


def wait_legend(driver, check) -> dict:
    WebDriverWait(driver, 30).until(lambda d: check(legend_state(d)))
    return legend_state(driver)


def test_legend_shows_near_and_far_and_follows_invert_log_and_clahe(driver) -> None:
    assert by_id(driver, "legend").is_displayed()
    plain = wait_legend(driver, lambda s: len(s["ticks"]) == 5)
    assert (plain["left"], plain["right"]) == ("far", "near")
    save_screenshot(by_id(driver, "results"), "studio-result.jpg")
    assert "not metres" in plain["note"] and "gradient" in plain["bar"]
    assert [p for _, p in plain["ticks"]] == pytest.approx([0, 25, 50, 75, 100])
    assert plain["ticks"][0][0].startswith("≤") and plain["ticks"][-1][0].startswith("≥")  # 1 % clipped

    by_id(driver, "f-invert").click()
    inverted = wait_legend(driver, lambda s: s["left"] == "near")
    assert inverted["right"] == "far" and inverted["ticks"][-1][1] == pytest.approx(0)
    by_id(driver, "f-invert").click()
    wait_legend(driver, lambda s: s["right"] == "near")

    by_id(driver, "f-log").click()
    logged = wait_legend(driver, lambda s: len(s["ticks"]) == 5 and s["ticks"][2][1] != 50)
    assert logged["ticks"][2][1] > 50  # evenly spaced values bunch toward the far end of a log bar
    by_id(driver, "f-log").click()

    Select(by_id(driver, "f-colormap")).select_by_value("viridis")
    assert "(viridis)" in WebDriverWait(driver, 30).until(
        lambda d: by_id(d, "legend-map").text if "viridis" in by_id(d, "legend-map").text else None)
    by_id(driver, "f-clahe").click()
    local = wait_legend(driver, lambda s: s["local"] == "true")
    assert local["ticks"] == [] and "CLAHE" in local["note"] and local["right"] == "near"
    by_id(driver, "f-clahe").click()
    wait_legend(driver, lambda s: s["local"] == "false" and len(s["ticks"]) == 5)
    wait_settled(driver)


def compare_state(driver) -> dict:
    """The compare slider; ``same``: its depth view, drawn in the page, has the pixels of the grid's."""
    return driver.execute_script("""
      const r = document.getElementById('compare-pos'), stage = document.getElementById('compare-stage');
      const before = document.getElementById('compare-before');
      const canvas = document.getElementById('compare-after-live');
      const live = stage.classList.contains('live');
      const grid = document.querySelector(`#grid figure.live[data-view="${stage.dataset.view}"] canvas`);
      return {value: Number(r.value), clip: before.style.clipPath, live, view: stage.dataset.view,
              before: before.getAttribute('src'),
              same: live && canvas.width > 0 && !!grid && canvas.toDataURL() === grid.toDataURL(),
              loaded: before.complete && before.naturalWidth > 0 && canvas.width > 0,
              label: r.getAttribute('aria-valuetext'), focused: document.activeElement === r};""")


def test_compare_slider_by_keyboard_and_drag(driver) -> None:
    section = by_id(driver, "compare")
    driver.execute_script("arguments[0].scrollIntoView()", section)
    WebDriverWait(driver, 30).until(lambda d: compare_state(d)["loaded"])
    state = compare_state(driver)
    # the photo from the server; the depth view drawn in the page, as the grid shows it now (viridis)
    assert "/photo.png" in state["before"] and state["live"] and state["view"] == "heatmap"
    assert state["same"]
    assert state["value"] == 50 and state["clip"] == "inset(0px 50% 0px 0px)"

    # keyboard: the range input is labelled and takes the usual keys
    slider = by_id(driver, "compare-pos")
    assert driver.find_element(By.CSS_SELECTOR, "label[for=compare-pos]").text.startswith("Divider")
    slider.send_keys(Keys.END)
    assert compare_state(driver)["clip"] == "inset(0px 0% 0px 0px)"  # all photo
    slider.send_keys(Keys.HOME)
    state = compare_state(driver)
    assert state["clip"] == "inset(0px 100% 0px 0px)" and state["label"].startswith("0% photo")
    slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    assert compare_state(driver)["value"] == 3

    # dragging anywhere on the picture moves the divider there
    stage = by_id(driver, "compare-stage")
    width = stage.size["width"]
    (ActionChains(driver).move_to_element_with_offset(stage, -width // 2 + 10, 0).click_and_hold()
     .move_by_offset(width // 2, 0).release().perform())  # from 10 px to the middle + 10 px
    state = compare_state(driver)
    assert abs(state["value"] - (50 + 100 * 10 / width)) <= 2 and state["focused"]

    for view in ("gray", "heatmap"):
        Select(by_id(driver, "compare-view")).select_by_value(view)
        WebDriverWait(driver, 30).until(
            lambda d, v=view: compare_state(d)["view"] == v and compare_state(d)["same"])
    if section.screenshot_as_png:
        save_screenshot(section, "studio-compare.jpg")


def readout(driver) -> str:
    return by_id(driver, "measure-readout").text


def test_measure_hover_and_calibrate_to_metres(driver, server_url) -> None:
    section = by_id(driver, "measure")
    driver.execute_script("arguments[0].scrollIntoView()", section)
    WebDriverWait(driver, 30).until(lambda d: section.get_attribute("data-ready"))
    depth_id = section.get_attribute("data-ready")
    probe = np.load(io.BytesIO(requests.get(f"{server_url}/api/v1/depth/{depth_id}/preview.npy?max_side=512",
                                            timeout=30).content))
    full = np.load(io.BytesIO(requests.get(f"{server_url}/api/v1/depth/{depth_id}.npy", timeout=30).content))
    stage = by_id(driver, "measure-stage")
    width, height = stage.size["width"], stage.size["height"]

    def at(u: float, v: float) -> float:
        h, w = probe.shape
        return float(probe[min(h - 1, int(v * h)), min(w - 1, int(u * w))])

    def relative_shown() -> float:
        return float(readout(driver).split()[-1].rstrip(")"))

    ActionChains(driver).move_to_element_with_offset(stage, 0, 0).perform()  # the middle
    WebDriverWait(driver, 10).until(lambda d: readout(d).startswith("relative depth"))
    u, v = float(by_id(driver, "measure-readout").get_attribute("data-u")), float(
        by_id(driver, "measure-readout").get_attribute("data-v"))
    assert abs(u - 0.5) < 0.02 and abs(v - 0.5) < 0.02
    assert relative_shown() == pytest.approx(at(u, v), rel=2e-3)

    # calibrate with distances made from a known scale and shift, at two clicked points
    scale, shift = 1.0 / (2.0 * float(full.max())), 0.05
    by_id(driver, "calib-toggle").click()
    assert by_id(driver, "calib-toggle").get_attribute("aria-pressed") == "true"
    for dx, dy in ((-width // 3, -height // 4), (width // 3, height // 4)):
        ActionChains(driver).move_to_element_with_offset(stage, dx, dy).click().perform()
    inputs = driver.find_elements(By.CSS_SELECTOR, "#calib-points input")
    assert len(inputs) == 2 and by_id(driver, "calib-fit").get_attribute("disabled")
    # each point's distance from the same model the fit must recover (the server samples full size)
    for item, box in zip(inputs, driver.find_elements(By.CSS_SELECTOR, ".calib-marker"), strict=True):
        left = float(box.value_of_css_property("left").rstrip("px")) / width
        top = float(box.value_of_css_property("top").rstrip("px")) / height
        h, w = full.shape
        y, x = int(top * h), int(left * w)
        d = float(np.median(full[max(0, y - 2):y + 3, max(0, x - 2):x + 3]))
        label = driver.find_element(By.CSS_SELECTOR, f"label[for={item.get_attribute('id')}]").text
        assert "distance in metres" in label
        item.send_keys(f"{1.0 / (scale * d + shift):.6f}")
    by_id(driver, "calib-fit").click()
    WebDriverWait(driver, 30).until(lambda d: section.get_attribute("data-fitted") == "true")
    assert "RMSE 0.000 m" in by_id(driver, "calib-result").text
    # hover now reads metres: the same model at the probe's value
    ActionChains(driver).move_to_element_with_offset(stage, width // 5, 0).perform()
    WebDriverWait(driver, 10).until(lambda d: readout(d).startswith("≈"))
    u = float(by_id(driver, "measure-readout").get_attribute("data-u"))
    v = float(by_id(driver, "measure-readout").get_attribute("data-v"))
    metres = float(readout(driver).split()[1])
    assert metres == pytest.approx(1.0 / (scale * at(u, v) + shift), abs=0.011)
    # keyboard: the cross moves and Enter adds a third point
    stage.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    assert by_id(driver, "measure-cross").is_displayed()
    stage.send_keys(Keys.ENTER)
    assert len(driver.find_elements(By.CSS_SELECTOR, "#calib-points input")) == 3
    link = by_id(driver, "metric-npy")
    assert link.is_displayed()
    metric = np.load(io.BytesIO(requests.get(link.get_attribute("href"), timeout=30).content))
    assert metric.shape == full.shape
    np.testing.assert_allclose(metric, 1.0 / (scale * full.astype(np.float64) + shift), rtol=1e-3)
    save_screenshot(section, "studio-measure.jpg")
    by_id(driver, "calib-clear").click()
    by_id(driver, "calib-toggle").click()


def href(driver, name: str) -> str:
    return by_id(driver, name).get_attribute("href")


def test_every_download_gives_a_valid_file(driver) -> None:
    width, height = photo_size(SAMPLES["chelsea"])
    # a deeper relief and a narrower lens for the 3D files, set on the page
    scale = by_id(driver, "s-depth_scale")
    driver.execute_script("arguments[0].scrollIntoView()", scale)
    for _ in range(20):
        scale.send_keys(Keys.ARROW_RIGHT)  # 1 -> 2
    scale.send_keys(Keys.TAB)  # "change" fires when the range loses focus after keyboard input
    Select(by_id(driver, "s-grid")).select_by_value("256")
    WebDriverWait(driver, 10).until(
        lambda d: "depth_scale=2" in href(d, "x-ply") and "grid=256" in href(d, "x-glb"))

    r = requests.get(href(driver, "x-png16"), timeout=60)
    with Image.open(io.BytesIO(r.content)) as im:
        levels = np.asarray(im)
        assert im.size == (width, height) and levels.min() == 0 and levels.max() == 65535
        assert float(im.text["depth_max"]) > float(im.text["depth_min"])
    pfm = read_pfm(requests.get(href(driver, "x-pfm"), timeout=60).content)
    assert pfm.shape == (height, width) and pfm.dtype == np.float32 and np.isfinite(pfm).all()
    exr = requests.get(href(driver, "x-exr"), timeout=60)
    assert exr.headers["Content-Type"] == "image/x-exr"
    assert "chelsea.depth.exr" in exr.headers["Content-Disposition"]
    with av.open(io.BytesIO(exr.content)) as container:  # FFmpeg's EXR decoder: the same float32 depth
        assert np.array_equal(next(container.decode(video=0)).to_ndarray(), pfm)
    ply = PlyData.read(io.BytesIO(requests.get(href(driver, "x-ply"), timeout=60).content))
    z = np.asarray(ply["vertex"]["z"])
    assert ply["vertex"].count == 256 * round(256 * height / width)
    assert z.max() == pytest.approx(-1, abs=1e-3) and z.min() == pytest.approx(-3, abs=1e-3)  # scale 2
    gltf = GLTF2.load_from_bytes(requests.get(href(driver, "x-glb"), timeout=60).content)
    assert gltf.accessors[gltf.meshes[0].primitives[0].attributes.POSITION].count == ply["vertex"].count
    zipped = requests.get(href(driver, "x-zip"), timeout=120)
    zf = zipfile.ZipFile(io.BytesIO(zipped.content))
    assert len(zf.namelist()) == 12 and zf.testzip() is None
    info = json.loads(zf.read(next(n for n in zf.namelist() if n.endswith("options.json"))))
    # the zip carries what the page shows: the colormap chosen above and the 3D settings
    assert info["options"]["colormap"] == "viridis" and info["scene"]["depth_scale"] == 2.0
    with Image.open(io.BytesIO(zf.read(next(n for n in zf.namelist() if n.endswith("/heatmap.png"))))) as im:
        assert im.size == (width, height)


def test_3d_preview_draws_the_mesh_and_turns_with_the_keyboard(driver) -> None:
    button = by_id(driver, "viewer-open")
    driver.execute_script("arguments[0].scrollIntoView()", button)
    button.click()
    WebDriverWait(driver, 60).until(lambda d: by_id(d, "viewer").get_attribute("data-ready")
                                    or "could not" in by_id(d, "viewer-status").text)
    assert by_id(driver, "viewer-status").text == "3D view ready."
    assert "depth_scale=2" in by_id(driver, "viewer").get_attribute("data-ready")
    first = driver.execute_script(CANVAS_STATS)
    assert first["w"] > 300 and first["h"] > 150
    assert first["drawn"] > 0.3 and first["std"] > 10  # not blank, not one flat colour
    canvas = by_id(driver, "viewer-canvas")
    canvas.send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT, Keys.ARROW_LEFT, Keys.ARROW_LEFT, Keys.ARROW_UP)
    turned = driver.execute_script(CANVAS_STATS)
    assert turned["hash"] != first["hash"] and turned["drawn"] > 0.2
    save_screenshot(by_id(driver, "viewer"), "studio-3d.jpg")
    canvas.send_keys("0")  # back to the photo's own viewpoint
    assert driver.execute_script(CANVAS_STATS)["hash"] == first["hash"]


def natural_size(driver, name: str) -> tuple:
    return tuple(driver.execute_script(
        "const i = document.getElementById(arguments[0]);"
        "return i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : [0, 0];", name))


def test_stereo_and_normal_map_follow_their_controls_and_download(driver) -> None:
    width, height = photo_size(SAMPLES["chelsea"])  # under the 800 px preview: shown at full size
    section = by_id(driver, "stereo")
    driver.execute_script("arguments[0].scrollIntoView()", section)
    assert section.is_displayed() and by_id(driver, "stereo-controls").is_displayed()
    WebDriverWait(driver, 60).until(lambda d: natural_size(d, "stereo-img") == (2 * width, height))
    Select(by_id(driver, "st-layout")).select_by_value("anaglyph-dubois")
    WebDriverWait(driver, 60).until(
        lambda d: "layout=anaglyph-dubois" in by_id(d, "stereo-img").get_attribute("src")
        and natural_size(d, "stereo-img") == (width, height))
    divergence = by_id(driver, "st-divergence")
    for _ in range(4):
        divergence.send_keys(Keys.ARROW_RIGHT)  # 2 -> 3, in steps of 0.25
    WebDriverWait(driver, 10).until(lambda d: "divergence=3" in href(d, "stereo-download"))
    assert by_id(driver, "o-divergence").text == "3"
    r = requests.get(href(driver, "stereo-download"), timeout=60)
    assert r.status_code == 200 and "chelsea.anaglyph-dubois.png" in r.headers["Content-Disposition"]
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.size == (width, height)
    Select(by_id(driver, "st-normal_convention")).select_by_value("controlnet")
    WebDriverWait(driver, 10).until(lambda d: "normal_convention=controlnet" in href(d, "normals-download"))
    WebDriverWait(driver, 60).until(lambda d: natural_size(d, "normals-img") == (width, height))
    with Image.open(io.BytesIO(requests.get(href(driver, "normals-download"), timeout=60).content)) as im:
        normals = np.asarray(im)
        assert im.size == (width, height)
        assert float(normals[..., 2].mean()) > 200  # blue: mostly facing the viewer
    save_screenshot(section, "studio-stereo.jpg")


def test_api_reference_page_sends_real_requests(driver, server_url) -> None:
    driver.get(server_url + "/docs")
    WebDriverWait(driver, 30).until(lambda d: "operations" in by_id(d, "apidocs-status").text)
    ops = driver.find_elements(By.CSS_SELECTOR, "details.op")
    labels = [" ".join(op.find_element(By.TAG_NAME, "summary").text.split()) for op in ops]
    assert any(label.startswith("POST /api/v1/depth ") for label in labels), labels
    assert any(label.startswith("GET /api/v1/depth/{depth_id}.glb") for label in labels)
    upload_op = ops[[i for i, label in enumerate(labels) if label.startswith("POST /api/v1/depth ")][0]]
    upload_op.find_element(By.TAG_NAME, "summary").click()
    # the form is built from the document: a file field and every option, each labelled
    file_input = upload_op.find_element(By.CSS_SELECTOR, "input[type=file][data-name=image]")
    file_input.send_keys(str(SAMPLES["rocket"]))
    colormap = upload_op.find_element(By.CSS_SELECTOR, "select[data-name=colormap]")
    label = upload_op.find_element(By.CSS_SELECTOR, f"label[for={colormap.get_attribute('id')}]")
    assert "colormap" in label.text
    Select(colormap).select_by_value("cividis")
    upload_op.find_element(By.CSS_SELECTOR, "input[data-name=views]").send_keys("gray")
    upload_op.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    answer = upload_op.find_element(By.CSS_SELECTOR, ".answer")
    WebDriverWait(driver, 60).until(lambda d: "200" in answer.text)
    body = json.loads(answer.find_element(By.TAG_NAME, "pre").text)
    assert len(body["depth_id"]) == 32 and body["options"]["colormap"] == "cividis"
    assert list(body["views"]) == ["gray"]
    # a bad option: the documented error shape
    Select(colormap).select_by_index(0)
    upload_op.find_element(By.CSS_SELECTOR, "input[data-name=contrast]").send_keys("9")
    upload_op.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, 60).until(lambda d: "422" in answer.text)
    assert json.loads(answer.find_element(By.TAG_NAME, "pre").text)["error"] == "bad_option"


def test_batch_of_three_photos_with_progress_and_one_zip(driver, server_url) -> None:
    driver.get(server_url + "/")
    Select(by_id(driver, "f-colormap")).select_by_value("magma")
    files = [SAMPLES["rocket"], SAMPLES["coffee"], SAMPLES["chelsea"]]
    by_id(driver, "batch-files").send_keys("\n".join(str(f) for f in files))
    WebDriverWait(driver, 120).until(lambda d: "3 of 3" in by_id(d, "batch-summary").text)
    items = driver.find_elements(By.CSS_SELECTOR, "#batch-list li")
    assert [i.find_element(By.CLASS_NAME, "batch-name").text for i in items] == [f.name for f in files]
    for item in items:
        assert item.find_element(By.TAG_NAME, "progress").get_attribute("value") == "100"
        assert item.find_element(By.CLASS_NAME, "batch-state").text.startswith("done in")
        thumb = item.find_element(By.TAG_NAME, "img")
        assert driver.execute_script("return arguments[0].naturalWidth", thumb) > 0
    link = by_id(driver, "batch-zip")
    assert link.is_displayed() and "colormap=magma" in link.get_attribute("href")
    zf = zipfile.ZipFile(io.BytesIO(requests.get(link.get_attribute("href"), timeout=120).content))
    report = json.loads(zf.read("results.json"))
    assert [r["name"] for r in report["results"]] == [f.stem for f in files]
    assert report["options"]["colormap"] == "magma"
    for f in files:
        with Image.open(io.BytesIO(zf.read(f"{f.stem}/heatmap.png"))) as im:
            assert im.size == photo_size(f)
    # each item opens its result in the studio
    items[0].find_element(By.LINK_TEXT, "open").click()
    wait_settled(driver)
    assert items and "depth_id=" in driver.current_url


def html_lang(driver) -> str:
    return driver.find_element(By.TAG_NAME, "html").get_attribute("lang")


def test_language_switch_is_remembered_and_translates_the_scripts_too(driver, server_url) -> None:
    driver.get(server_url + "/")
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"  # Chromium asks for en-US
    driver.find_element(By.CSS_SELECTOR, "nav.languages a[hreflang=zh-Hans]").click()
    WebDriverWait(driver, 30).until(lambda d: html_lang(d) == "zh-Hans")
    assert driver.find_element(By.CSS_SELECTOR, "button[type=submit]").text == "生成深度图"
    assert "（色盲友好）" in by_id(driver, "f-colormap").text
    upload(driver, SAMPLES["coffee"])
    wait_settled(driver)
    status = by_id(driver, "status").text  # strings of studio.js (from cache if the batch test ran)
    assert status.startswith(("深度图来自缓存 · 显示用时", "深度图用时")) and status.endswith("毫秒")
    wait_legend(driver, lambda s: s["right"] == "近" and s["left"] == "远")
    wait_settled(driver)
    # (Chinese text needs a CJK font for this picture, e.g. Debian's fonts-wqy-microhei)
    save_screenshot(driver, "studio-zh.jpg")
    driver.get(server_url + "/")  # remembered: a new visit stays Chinese
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-Hans"
    cookie = driver.get_cookie("lang")
    assert cookie["value"] == "zh_Hans" and cookie["sameSite"] == "Lax"
    driver.find_element(By.CSS_SELECTOR, "nav.languages a[hreflang=en]").click()
    WebDriverWait(driver, 30).until(lambda d: html_lang(d) == "en")


def test_no_content_security_policy_violation(driver) -> None:
    logs = driver.get_log("browser")
    assert not [e["message"] for e in logs if "Content Security Policy" in e["message"]]
    # the only console errors allowed are the failed answers the API page asked for on purpose (422)
    assert not [e["message"] for e in logs if e["level"] == "SEVERE" and "422" not in e["message"]]
