"""The demo in a real browser, and an 8000x8000 photo through the API (slow: ``make test-slow``).

The browser is Debian's ``chromium`` driven headless by selenium through Debian's
``chromium-driver``, both named by path, so nothing is downloaded: selenium-manager is never
asked (a test double makes it fail if it were). ``.ci/run`` installs the two with apt when
missing; a machine without them skips, CI (or ``ODISE_PL_REQUIRE_BROWSER=1``) fails.
``docs/app_screenshot.png`` is a screenshot this test took.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.app.conftest import PHOTOS

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
TYPED = ["person", "horse", "truck", "grass", "sky", "tree"]
VOCABULARY = "person,rider;horse;truck;grass:stuff;sky:stuff;tree:stuff"
#: Chromium with no network of its own: no first-run, sync, component updates, QUIC or background requests
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1100",
]


@pytest.fixture
def browser(tmp_path, monkeypatch):
    """Headless Chromium through chromedriver, both given by path; a fresh profile under ``tmp_path``."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        message = f"{', '.join(missing)} not found: apt-get install chromium chromium-driver"
        if os.environ.get("CI") or os.environ.get("ODISE_PL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"a browser is required here (CI or ODISE_PL_REQUIRE_BROWSER=1): {message}")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def no_downloads(*args, **kwargs):
        raise AssertionError("selenium-manager ran: the driver and the browser must be given by path")

    monkeypatch.setattr(SeleniumManager, "binary_paths", no_downloads)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request the page makes
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_a_photo_and_a_typed_vocabulary_give_a_legend_of_typed_classes(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    page, _ = served
    wait = WebDriverWait(browser, 180)
    browser.get(page.local_url)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#image input[type=file]")))
    browser.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(PHOTOS[1]))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#image img")))  # uploaded and shown
    browser.find_element(By.CSS_SELECTOR, "#vocabulary textarea").send_keys(VOCABULARY)
    browser.find_element(By.CSS_SELECTOR, "#segment").click()
    legend = wait.until(ec.presence_of_all_elements_located((By.CSS_SELECTOR, "#annotated .legend-item")))
    entries = [item.text for item in legend]
    assert entries and all(entry.split(" (")[0] in TYPED for entry in entries), entries
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#summary"), f"{len(entries)} segment"))
    legend[0].click()  # selecting a segment shows its class, score and area
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#selected"), "area"))
    selected = browser.find_element(By.CSS_SELECTOR, "#selected").text
    assert selected.startswith(entries[0].split(" (")[0]) and "score" in selected, selected
    time.sleep(1.0)  # let the page finish drawing the masks before the picture
    shot = tmp_path / "app_screenshot.png"
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as picture:
        assert picture.size[0] >= 1000
    print(f"screenshot: {shot}")
    requested = {
        json.loads(entry["message"])["message"]["params"]["request"]["url"]
        for entry in browser.get_log("performance")
        if json.loads(entry["message"])["message"]["method"] == "Network.requestWillBeSent"
    }
    web = {url for url in requested if url.startswith(("http:", "https:", "ws:", "wss:"))}  # not chrome:// pages
    elsewhere = sorted(url for url in web if not url.startswith(page.local_url))
    assert web and elsewhere == [], elsewhere  # the page loads nothing from the network


def test_an_8000x8000_photo_is_segmented_within_the_limits(served, tmp_path):
    """The session scales it to its pixel limit; the Predictor keeps its own budgets; the app answers after."""
    import huggingface_hub.constants
    from gradio_client import Client, handle_file

    page, session = served
    big = tmp_path / "big.jpg"
    with Image.open(PHOTOS[0]) as photo:
        photo.convert("RGB").resize((8000, 8000)).save(big, quality=85)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        client = Client(page.local_url, verbose=False, analytics_enabled=False)
        _, segments, _, files, _ = client.predict(handle_file(str(big)), "person;grass:stuff;sky:stuff", api_name="/segment")
        record = json.loads(Path(files[1]).read_text())
        width, height = record["width"], record["height"]
        assert width == height and width * height <= session.max_pixels < (width + 2) * (height + 2)  # ~4096 x 4096
        assert sum(s["area"] for s in segments) <= width * height
        assert client.predict(handle_file(str(PHOTOS[1])), "horse", api_name="/segment")[1] is not None
