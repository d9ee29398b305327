"""The studio in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, via Selenium)
against the real gunicorn server: upload, switch colormap and mode, see the images change.

Skipped, visibly, where Chromium is not installed; CI sets DEPTHMAP_REQUIRE_BROWSER=1 so that it fails
there instead. With SCREENSHOT_DIR set, the result page is saved there as studio.jpg and studio-phone.jpg
(README's screenshots come from this test).
"""

from __future__ import annotations

import io
from urllib.parse import parse_qs, urlsplit

from support.browser import make_driver, save_screenshot, skip_without_browser, upload, wait_settled
from support.images import photo_size
from support.samples import SAMPLES

skip_without_browser()

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

# a hash of a shown view's pixels: the page's own drawing (static/live.js), or the server's image read
# back through a canvas
PIXELS = """
const fig = document.querySelector(`figure[data-view="${arguments[0]}"]`);
const img = fig.querySelector('img');
let c = fig.querySelector('canvas');
if (!fig.classList.contains('live')) {
  c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  c.getContext('2d').drawImage(img, 0, 0);
}
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let h = 0; for (let i = 0; i < d.length; i += 7) h = (Math.imul(h, 31) + d[i]) | 0;
return h;
"""
GRID_SOURCES = "return [...document.querySelectorAll('#grid img')].map(i => i.getAttribute('src'))"
# how many times the page asked the server for an inference
POSTS = """
return performance.getEntriesByType('resource').filter(e => e.initiatorType === 'fetch')
  .map(e => new URL(e.name).pathname);
"""


def depth_id(driver) -> str:
    return parse_qs(urlsplit(driver.current_url).query)["depth_id"][0]


def shown(driver) -> list:
    return [f.get_attribute("data-view") for f in driver.find_elements(By.CSS_SELECTOR, "#grid figure")
            if f.is_displayed()]


def test_upload_shows_the_photo_and_three_views(driver, server_url) -> None:
    driver.get(server_url + "/")
    assert driver.find_element(By.ID, "results").is_displayed() is False
    upload(driver, SAMPLES["chelsea"])
    wait_settled(driver)
    width, height = photo_size(SAMPLES["chelsea"])
    assert shown(driver) == ["photo", "heatmap", "overlay", "gray"]
    # the photo from the server, the depth views drawn in the page, all at the photo's size
    assert live(driver) == ["heatmap", "overlay", "gray"]
    sizes = driver.execute_script("""return [...document.querySelectorAll('#grid figure')].map(f => {
        const c = f.querySelector('canvas'), i = f.querySelector('img');
        return f.classList.contains('live') ? [c.width, c.height] : [i.naturalWidth, i.naturalHeight]; })""")
    assert sizes == [[width, height]] * 4
    assert "Depth map in" in driver.find_element(By.ID, "status").text
    assert len(depth_id(driver)) == 32
    assert driver.execute_script(POSTS).count("/api/v1/depth") == 1


# each view the page draws: its repaint time in the last update ("0": not repainted, it had not changed)
PAINT_MS = """return Object.fromEntries([...document.querySelectorAll('#grid figure.live:not([hidden])')]
  .map(f => [f.dataset.view, f.dataset.paintMs]));"""


def live(driver) -> list:
    """The shown views the page draws itself."""
    return [f.get_attribute("data-view") for f in driver.find_elements(By.CSS_SELECTOR, "#grid figure.live")
            if f.is_displayed()]


def repainted(driver, before: str) -> None:
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "grid").get_attribute("data-paints")
                                    != before)
    wait_settled(driver)


def test_colormap_and_mode_rerender_without_a_request(driver, server_url) -> None:
    """Drawn in the page: a control move asks the server for nothing (no inference, no image)."""
    before = {v: driver.execute_script(PIXELS, v) for v in ("photo", "heatmap", "gray")}
    first_id = depth_id(driver)
    requests_before = driver.execute_script("return performance.getEntriesByType('resource').length")
    grid_before = driver.execute_script(GRID_SOURCES)
    paints = driver.find_element(By.ID, "grid").get_attribute("data-paints")

    Select(driver.find_element(By.ID, "f-colormap")).select_by_value("viridis")
    repainted(driver, paints)
    assert driver.execute_script(PIXELS, "heatmap") != before["heatmap"]
    assert driver.execute_script(PIXELS, "photo") == before["photo"]
    assert driver.execute_script(PIXELS, "gray") == before["gray"]  # gray has no colormap
    # and the page did not repaint it (its time is "0"); the two coloured views it did
    ms = driver.execute_script(PAINT_MS)
    assert ms.keys() == {"heatmap", "overlay", "gray"} and ms["gray"] == "0"
    assert ms["heatmap"] != "0" and ms["overlay"] != "0"

    Select(driver.find_element(By.ID, "f-views")).select_by_value("overlay")
    wait_settled(driver)
    assert shown(driver) == ["photo", "overlay"]
    overlay = driver.execute_script(PIXELS, "overlay")
    slider = driver.find_element(By.ID, "f-alpha")
    paints = driver.find_element(By.ID, "grid").get_attribute("data-paints")
    slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)  # 0.5 -> 0.6
    repainted(driver, paints)
    WebDriverWait(driver, 30).until(lambda d: "alpha=0.6" in d.current_url)
    assert driver.execute_script(PIXELS, "overlay") != overlay
    ms = driver.execute_script(PAINT_MS)
    assert list(ms) == ["overlay"] and ms["overlay"] != "0"
    assert "Re-rendered from cache in" in driver.find_element(By.ID, "status").text
    assert "alpha=0.6" in driver.find_element(
        By.CSS_SELECTOR, 'figure[data-view="overlay"] a.download').get_attribute("href")

    # nothing was asked for: the shown views' images kept their first sources, and the colour key
    # (static/legend.js) and the compare slider (static/compare.js) were drawn in the page too
    assert driver.execute_script(GRID_SOURCES) == grid_before
    fetched = driver.execute_script("""return performance.getEntriesByType('resource').slice(arguments[0])
        .map(e => new URL(e.name).pathname)""", requests_before)
    assert fetched == []
    assert depth_id(driver) == first_id and "colormap=viridis" in driver.current_url


def test_clahe_is_rendered_by_the_server(driver, server_url) -> None:
    clahe = driver.find_element(By.ID, "f-clahe")
    driver.execute_script("arguments[0].click()", clahe)
    WebDriverWait(driver, 30).until(lambda d: "clahe=on" in d.find_element(
        By.CSS_SELECTOR, 'figure[data-view="overlay"] img').get_attribute("src"))
    wait_settled(driver)
    assert live(driver) == []
    driver.execute_script("arguments[0].click()", clahe)
    WebDriverWait(driver, 30).until(lambda d: live(d) == ["overlay"])
    wait_settled(driver)


def test_size_change_reinfers_the_same_upload(driver, server_url) -> None:
    first_id = depth_id(driver)
    Select(driver.find_element(By.ID, "f-size")).select_by_value("384")
    WebDriverWait(driver, 60).until(lambda d: depth_id(d) != first_id)
    wait_settled(driver)
    assert driver.execute_script(POSTS).count("/api/v1/render") == 1
    # an upsampling method also makes a new depth, from the server's cached network output
    second_id = depth_id(driver)
    Select(driver.find_element(By.ID, "f-upsample")).select_by_value("guided")
    WebDriverWait(driver, 60).until(lambda d: depth_id(d) != second_id)
    wait_settled(driver)
    posts = driver.execute_script(POSTS)
    assert posts.count("/api/v1/render") == 2 and posts.count("/api/v1/depth") == 1
    assert "upsample=guided" in driver.current_url


def test_download_links_point_at_the_shown_images(driver, server_url) -> None:
    import requests

    Select(driver.find_element(By.ID, "f-views")).select_by_value("all")
    wait_settled(driver)
    link = driver.find_element(By.CSS_SELECTOR, 'figure[data-view="heatmap"] a.download')
    r = requests.get(link.get_attribute("href"), timeout=30)
    assert r.status_code == 200 and "attachment" in r.headers["Content-Disposition"]
    npy = requests.get(driver.find_element(By.ID, "npy").get_attribute("href"), timeout=30)
    assert npy.status_code == 200 and npy.content.startswith(b"\x93NUMPY")


def test_bad_file_shows_a_plain_error_next_to_the_form(driver, server_url, tmp_path) -> None:
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is not a photo")
    upload(driver, fake)
    error = driver.find_element(By.ID, "error")
    WebDriverWait(driver, 30).until(lambda d: error.is_displayed())
    assert "not an image" in error.text
    # the form is still usable: a good photo replaces the error with a result
    upload(driver, SAMPLES["rocket"])
    wait_settled(driver)
    assert not error.is_displayed()


def test_screenshots_desktop_and_phone(driver, server_url) -> None:
    driver.get(server_url + "/")
    upload(driver, SAMPLES["coffee"])  # not uploaded before: the status shows a real inference
    wait_settled(driver)
    save_screenshot(driver, "studio.jpg")
    phone = make_driver(phone=True)
    try:
        phone.get(driver.current_url)  # the result page, rendered by the server
        wait_settled(phone)
        # on a phone nothing overflows sideways and the result comes before the controls
        assert phone.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        results_top = phone.find_element(By.ID, "results").location["y"]
        assert results_top < phone.find_element(By.ID, "f-colormap").location["y"]
        save_screenshot(phone, "studio-phone.jpg")
    finally:
        phone.quit()


def test_the_strict_content_security_policy_blocks_nothing_the_studio_needs(driver) -> None:
    # everything the tests above did ran under the server's CSP; a violation is logged to the console
    logs = driver.get_log("browser")
    assert driver.execute_script("return document.querySelectorAll('#grid img').length") > 0
    assert not [e["message"] for e in logs if "Content Security Policy" in e["message"]]


def submit(d) -> None:
    """Clicks the form's submit button, scrolled to the middle of the window first: the controls column
    is taller than the window, and Chromium may report the bottom edge as covered."""
    button = d.find_element(By.CSS_SELECTOR, "button[type=submit]")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()


def test_works_without_javascript(server_url) -> None:
    d = make_driver()
    try:
        d.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
        d.get(server_url + "/")
        upload(d, SAMPLES["coffee"])
        submit(d)
        WebDriverWait(d, 60).until(lambda d: "depth_id=" in d.current_url)
        wait_settled(d)
        assert shown(d) == ["photo", "heatmap", "overlay", "gray"]
        heat = d.find_element(By.CSS_SELECTOR, 'figure[data-view="heatmap"] img').get_attribute("src")
        Select(d.find_element(By.ID, "f-colormap")).select_by_value("turbo")
        Select(d.find_element(By.ID, "f-views")).select_by_value("heatmap")
        submit(d)
        WebDriverWait(d, 60).until(lambda d: "colormap=turbo" in d.current_url)
        wait_settled(d)
        assert shown(d) == ["photo", "heatmap"]
        new_heat = d.find_element(By.CSS_SELECTOR, 'figure[data-view="heatmap"] img').get_attribute("src")
        assert new_heat != heat and "colormap=turbo" in new_heat
        size = photo_size(SAMPLES["coffee"])
        import requests

        png = requests.get(new_heat, timeout=30).content
        assert photo_size(io.BytesIO(png)) == size
    finally:
        d.quit()
