"""The model selector in a real headless Chromium against a real server that loads both models: the size
list follows the model, a new model starts at its usual size and runs the same upload through the other
network, and the result keeps its model across a reload.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import requests

from support.browser import make_driver, skip_without_browser, upload, wait_settled
from support.samples import SAMPLES

skip_without_browser()

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

VISIBLE_SIZES = """
return [...document.querySelectorAll('#f-size option')]
  .filter(o => !o.parentElement.hidden && !o.disabled && !o.parentElement.disabled).map(o => o.value);
"""


def query(driver) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(driver.current_url).query).items()}


def test_the_model_selector_switches_networks(two_model_server_url) -> None:
    health = requests.get(two_model_server_url + "/healthz", timeout=10).json()
    assert [m["name"] for m in health["models"]] == ["midas-small", "depth-anything-v2-small"]
    driver = make_driver()
    try:
        driver.get(two_model_server_url + "/")
        model = Select(driver.find_element(By.ID, "f-model"))
        size = Select(driver.find_element(By.ID, "f-size"))
        assert model.first_selected_option.get_attribute("value") == "midas-small"
        assert driver.execute_script(VISIBLE_SIZES) == ["256", "384", "512"]

        upload(driver, SAMPLES["chelsea"])
        wait_settled(driver)
        first = query(driver)["depth_id"]

        model.select_by_value("depth-anything-v2-small")
        assert driver.execute_script(VISIBLE_SIZES) == ["364", "518"]
        assert size.first_selected_option.get_attribute("value") == "518"  # its usual size
        size.select_by_value("364")
        WebDriverWait(driver, 120).until(lambda d: query(d).get("depth_id") not in (None, first)
                                         and query(d).get("size") == "364")
        wait_settled(driver, 120)
        shown = query(driver)
        assert shown["model"] == "depth-anything-v2-small"
        meta = requests.post(two_model_server_url + "/api/v1/render",
                             json={"depth_id": shown["depth_id"], "views": "none"}, timeout=30).json()
        assert meta["options"]["model"] == "depth-anything-v2-small" and meta["options"]["size"] == 364

        driver.refresh()  # the result page keeps its model and size
        wait_settled(driver, 120)
        chosen = {name: Select(driver.find_element(By.ID, f"f-{name}")).first_selected_option
                  .get_attribute("value") for name in ("model", "size")}
        assert chosen == {"model": "depth-anything-v2-small", "size": "364"}
        assert driver.execute_script(VISIBLE_SIZES) == ["364", "518"]
    finally:
        driver.quit()
