"""The pages in a real browser: headless Chromium (Debian ``chromium`` + ``chromium-driver``) via Selenium.

The test's set-up starts ``search.py serve`` in a subprocess on a free port, exactly as a user
does, then: picks a query file in the Search page's file input, waits for the k result tiles,
clicks one to search from it, switches to the ae index (decoded neighbours), and checks that the
Duplicates, Palette and Training pages render their figures. Screenshots land in the test's tmp
folder (their paths are printed). Nothing here is skipped: without Chromium the test fails and
says how to get it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)
MISSING = (
    "headless Chromium is needed for the browser test: `make test` installs it (Debian packages "
    "chromium and chromium-driver; by hand: sudo apt-get install -y chromium chromium-driver)"
)


@pytest.fixture(scope="module")
def server(web_data, start_server):
    proc, url = start_server([web_data["phash"], web_data["ae"], "--run-dir", web_data["run_dir"]])
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail(MISSING)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not try to download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for f in (*FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(f)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, predicate, what: str, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: predicate(d))
    except Exception:
        status = driver.execute_script("var s = document.getElementById('status'); return s ? s.textContent : ''")
        pytest.fail(f"timed out waiting for {what}; page status: {status!r}")


BROKEN = "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src.slice(0, 80))"


def _shot(driver, tmp_path: Path, name: str) -> Path:
    out = tmp_path / f"{name}.png"
    driver.save_screenshot(str(out))
    print(f"screenshot: {out}")
    return out


def _pick(driver, path: Path) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "file")
    driver.execute_script("arguments[0].hidden = false;", field)  # the styled label hides it
    field.send_keys(str(path))
    driver.execute_script("arguments[0].hidden = true;", field)


def _tiles(driver, k: int):
    from selenium.webdriver.common.by import By

    tiles = driver.find_elements(By.CSS_SELECTOR, "#tiles .tile")
    loaded = driver.execute_script(BROKEN) == []
    return tiles if len(tiles) == k and loaded else None


def test_search_page_query_click_and_ae(server, browser, web_data, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(server + "/")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#index option")) == 2, "the index list")
    _pick(browser, web_data["upload"])
    tiles = _wait(browser, lambda d: _tiles(d, 5), "5 result tiles")
    first = tiles[0].find_element(By.CSS_SELECTOR, ".id").text
    assert first.startswith("photos/astronaut"), first
    assert tiles[0].find_element(By.CSS_SELECTOR, ".dist").text == "0 bits"
    assert browser.find_element(By.ID, "query-name").text == "query.jpg"
    _shot(browser, tmp_path, "search_phash")

    target = tiles[3].find_element(By.CSS_SELECTOR, ".id").text
    tiles[3].click()  # search from a result
    _wait(
        browser, lambda d: d.find_element(By.ID, "query-name").text == target and _tiles(d, 5), "a search from a tile"
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#tiles .tile .id")[0].text == target

    Select(browser.find_element(By.ID, "index")).select_by_value("ae")
    _pick(browser, web_data["upload"])
    _wait(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#tiles .tile img.recon")) == 5 and _tiles(d, 5),
        "5 ae tiles with decoded neighbours",
    )
    assert browser.find_element(By.ID, "mirror").is_enabled()  # mirror-aware codes too (issue 15)
    _shot(browser, tmp_path, "search_ae")


def test_duplicates_page_groups_and_threshold(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server + "/duplicates")
    _wait(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, ".group .thumb img") and d.execute_script(BROKEN) == [],
        "duplicate groups with thumbnails",
    )
    groups = browser.find_elements(By.CSS_SELECTOR, ".group")
    assert any("photos/astronaut_copy.jpg" in g.text for g in groups)
    before = browser.find_element(By.ID, "status").text
    browser.execute_script(
        "const t = document.getElementById('threshold'); t.value = 0;t.dispatchEvent(new Event('input'));"
    )
    _wait(browser, lambda d: "threshold 0" in d.find_element(By.ID, "status").text, "the groups at threshold 0")
    assert browser.find_element(By.ID, "status").text != before
    _shot(browser, tmp_path, "duplicates")


def test_palette_page_side_by_side_and_download(server, browser, skimage_data, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server + "/palette")
    _pick(browser, skimage_data / "coffee.png")
    _wait(
        browser,
        lambda d: (
            d.execute_script("const r = document.getElementById('result');return r.complete && r.naturalWidth === 600;")
            and "PSNR" in d.find_element(By.ID, "stats-table").text
        ),
        "the palette result",
    )
    table = browser.find_element(By.ID, "stats-table").text
    assert "dB" in table and "bytes" in table
    assert browser.find_element(By.ID, "download").get_attribute("href").startswith("data:image/png;base64,")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#swatches .swatch")) <= 16
    assert browser.execute_script(BROKEN) == []
    _shot(browser, tmp_path, "palette")


def test_training_page_curves_and_grids(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server + "/training")
    _wait(
        browser,
        lambda d: (
            len(d.find_elements(By.CSS_SELECTOR, "svg.chart polyline")) >= 3
            and len(d.find_elements(By.CSS_SELECTOR, ".grid img")) == 2
            and d.execute_script(BROKEN) == []
        ),
        "training curves and grids",
    )
    assert browser.find_element(By.ID, "nav-training").is_displayed()
    _shot(browser, tmp_path, "training")
