"""Videos on the studio page in a real headless Chromium against the real gunicorn server: upload, the
progress bar and time left, the depth video playing in the page (H.264 decoded by the browser itself),
the downloads, cancelling, and a photo after a video. Skipped like tests/browser/test_browser.py without
Chromium (and failing instead in CI)."""

from __future__ import annotations

import io
import zipfile

import requests

from support.browser import save_screenshot, skip_without_browser, upload, wait_settled
from support.clips import moving_scene, stream_info, write_clip
from support.samples import SAMPLES

skip_without_browser()

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

# what the status line and the progress bar showed, in order (a MutationObserver records every change)
RECORD = """
window.seen = [];
const s = document.getElementById('video-status'), p = document.getElementById('video-progress');
new MutationObserver(() => window.seen.push([s.textContent, p.value]))
  .observe(s, {childList: true, characterData: true, subtree: true});
"""
# the <video> has decoded a frame of the result, and its size
PLAYABLE = """
const v = document.getElementById('video-player');
return !v.hidden && v.readyState >= 2 && v.videoWidth > 0 ? [v.videoWidth, v.videoHeight] : null;
"""
# a frame of the playing video, read back through a canvas: mean brightness and channel spread
FRAME = """
const v = document.getElementById('video-player');
const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
const ctx = c.getContext('2d'); ctx.drawImage(v, 0, 0);
const d = ctx.getImageData(0, 0, c.width, c.height).data;
let sum = 0, spread = 0;
for (let i = 0; i < d.length; i += 4) { sum += d[i] + d[i+1] + d[i+2]; spread += Math.abs(d[i] - d[i+2]); }
return [sum / (d.length / 4 * 3), spread / (d.length / 4)];
"""
JOB_URLS = """
return performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)
  .filter(p => p.startsWith('/api/v1/jobs/'));
"""


def status(driver) -> str:
    return driver.find_element(By.ID, "video-status").text


def test_video_upload_progress_play_and_download(driver, server_url, tmp_path) -> None:
    clip = write_clip(tmp_path / "walk.mp4", moving_scene(40, 160, 96))
    driver.get(server_url + "/")
    Select(driver.find_element(By.ID, "f-view")).select_by_value("side")
    driver.find_element(By.ID, "f-depth_zip").click()
    driver.execute_script(RECORD)
    upload(driver, clip)
    size = WebDriverWait(driver, 180).until(lambda d: d.execute_script(PLAYABLE))
    assert size == [320, 96]  # side by side: the frame and its heatmap
    assert not driver.find_element(By.ID, "results").is_displayed()  # no photo result meanwhile

    seen = driver.execute_script("return window.seen")
    progress = [(text, value) for text, value in seen if "frames" in text and "/ 40" in text]
    assert progress, seen  # "Depth (pass 1 of 2): 12 / 40 frames · about 3 s left"
    assert any("left" in text for text, _ in progress), progress
    values = [value for _, value in seen]
    assert values == sorted(values) and values[-1] == 1  # the bar only moves forward, to the end
    assert status(driver).startswith("Done: 40 frames")
    assert not driver.find_element(By.ID, "video-cancel").is_displayed()

    # it plays: time advances, and the frame drawn is the heatmap (coloured), not a black box
    driver.execute_script("document.getElementById('video-player').play()")
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return document.getElementById('video-player').currentTime > 0.2"))
    brightness, colour = driver.execute_script(FRAME)
    assert brightness > 20 and colour > 5
    driver.execute_script("window.scrollTo(0, 0)")
    save_screenshot(driver, "studio-video.jpg")

    mp4 = requests.get(driver.find_element(By.ID, "video-download").get_attribute("href"), timeout=30)
    assert mp4.status_code == 200 and "attachment" in mp4.headers["Content-Disposition"]
    got = tmp_path / "got.mp4"
    got.write_bytes(mp4.content)
    info = stream_info(got)
    assert (info["codec"], info["frames"], info["width"]) == ("h264", 40, 320)
    zip_link = driver.find_element(By.ID, "video-zip")
    assert zip_link.is_displayed()
    z = requests.get(zip_link.get_attribute("href"), timeout=30)
    assert len([n for n in zipfile.ZipFile(io.BytesIO(z.content)).namelist() if n.endswith(".png")]) == 40


def test_cancel_a_running_video(driver, server_url, tmp_path) -> None:
    clip = write_clip(tmp_path / "long.mp4", moving_scene(300, 160, 96))
    driver.get(server_url + "/")
    upload(driver, clip)
    WebDriverWait(driver, 120).until(lambda d: " / 300 frames" in status(d))
    driver.find_element(By.ID, "video-cancel").click()
    WebDriverWait(driver, 60).until(lambda d: status(d) == "Cancelled.")
    job_url = next(p for p in driver.execute_script(JOB_URLS) if p.count("/") == 4)
    job = requests.get(server_url + job_url, timeout=30).json()
    assert job["state"] == "cancelled" and job["progress"]["frames_done"] < 300
    assert not driver.find_element(By.ID, "video-player").is_displayed()


def test_a_photo_after_a_video_shows_the_photo(driver, server_url) -> None:
    upload(driver, SAMPLES["chelsea"])
    wait_settled(driver)
    assert driver.find_element(By.ID, "results").is_displayed()
    assert not driver.find_element(By.ID, "video-results").is_displayed()


def test_bad_video_shows_a_plain_error(driver, server_url, tmp_path) -> None:
    fake = tmp_path / "holiday.mp4"
    fake.write_bytes(b"this is not a video" * 10)
    upload(driver, fake)
    error = driver.find_element(By.ID, "error")
    WebDriverWait(driver, 30).until(lambda d: error.is_displayed())
    assert "not a video" in error.text
