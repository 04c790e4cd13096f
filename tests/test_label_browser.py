"""``otrain label`` in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by Selenium. ``.ci/run`` installs them when missing; outside CI the tests are skipped
with a reason when they are absent.

Screenshots of the single and grid views are written to ``$OTRAIN_SCREENSHOTS`` when set.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, write_mef
from label_support import Server, triplet_folder
from otrain.alerts.labels import read_label_csv
from otrain.label.store import LabelStore

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1300,850")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and DRIVER.exists()):
        if os.environ.get("CI"):
            pytest.fail("chromium / chromium-driver missing in CI (.ci/run installs them)")
        pytest.skip("needs Debian's chromium and chromium-driver (/usr/bin/chromium, "
                    "/usr/bin/chromedriver); .ci/run installs them")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="otrain-chromium-")
    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(DRIVER)), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition, timeout: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def _open(driver, url: str) -> None:
    driver.get(url)
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "1")
    _wait(driver, lambda d: d.execute_script(
        "return [...document.querySelectorAll('#stamps img')].every("
        "i => i.complete && i.naturalWidth > 0)"))


def _press(driver, keys: str | list[str]) -> None:
    """Send keys to the focused page, one action each, and wait until all are handled."""
    from selenium.webdriver.common.action_chains import ActionChains

    keys = list(keys)
    before = int(driver.execute_script("return document.body.dataset.settled || '0'"))
    chain = ActionChains(driver)
    for key in keys:
        chain.send_keys(key)
    chain.perform()
    _wait(driver, lambda d: int(d.execute_script(
        "return document.body.dataset.settled || '0'")) >= before + len(keys))


def _click(driver, element_id: str) -> None:
    """Click a button with the mouse and wait until its action is handled."""
    before = int(driver.execute_script("return document.body.dataset.settled || '0'"))
    driver.find_element("id", element_id).click()
    _wait(driver, lambda d: int(d.execute_script(
        "return document.body.dataset.settled || '0'")) >= before + 1)


def _text(driver, css: str) -> str:
    return driver.find_element("css selector", css).text


def _shot(driver, name: str) -> None:
    folder = os.environ.get("OTRAIN_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def test_keys_export_and_resume_after_sigkill(browser, tmp_path):
    from selenium.webdriver.common.keys import Keys

    root = triplet_folder(tmp_path / "cut", n=6)
    db = tmp_path / "labels.sqlite"
    args = ("--cutouts", str(root), "--db", str(db), "--labeller", "ann", "--quiet")
    server = Server(*args).start()
    try:
        _open(browser, server.base + "/")
        # The first candidate's three stamps, at their size, and the keyboard focus.
        imgs = browser.find_elements("css selector", "#stamps img")
        assert [i.get_attribute("data-channel") for i in imgs] == ["diff", "sci", "ref"]
        assert all(browser.execute_script("return arguments[0].naturalWidth", i) == 21
                   for i in imgs)
        assert browser.execute_script("return document.activeElement === document.body")
        assert "c_000" in _text(browser, "#meta")
        _shot(browser, "label_single.png")
        _press(browser, ["r", "b", "u"])
        assert "c_003" in _text(browser, "#meta")
        _press(browser, [Keys.BACKSPACE])            # undo the unsure, back to c_002
        assert "c_002" in _text(browser, "#meta")
        assert "labelled 2 / queue 4 / total 6" in _text(browser, "#progress")
        with LabelStore(db) as store:
            events = [(e.candid, e.label) for e in store.events("ann")]
            assert events == [("c_000", "real"), ("c_001", "bogus"), ("c_002", "unsure"),
                              ("c_002", "undo")]
            assert {c: e.label for c, e in store.current("ann").items()} == {
                "c_000": "real", "c_001": "bogus"}
        proc = run_cli("otrain-label", "--export", str(tmp_path / "l.csv"), "--db", str(db),
                       check=True)
        assert "2 labels" in proc.stdout
        assert read_label_csv(tmp_path / "l.csv") == {"c_000": 1, "c_001": 0}
        run_cli("otrain-label", "--export-folders", str(tmp_path / "vetted"), "--db", str(db),
                check=True)                          # the O'TRAIN true/ and false/ folders
        assert sorted(p.name for p in (tmp_path / "vetted").rglob("*.fits")) == [
            "c_000.fits", "c_001.fits"]
        assert (tmp_path / "vetted" / "true" / "c_000.fits").read_bytes() == (
            root / "c_000.fits").read_bytes()
        assert (tmp_path / "vetted" / "false" / "c_001.fits").is_file()

        server.kill(signal.SIGKILL)                  # no clean shutdown
        server = Server(*args, port=server.port).start()
        _open(browser, server.base + "/")
        assert "c_002" in _text(browser, "#meta")    # the queue resumes where it was
        assert "labelled 2 / queue 4 / total 6" in _text(browser, "#progress")
        _click(browser, "btn-skip")                  # the mouse works too: skip c_002
        assert "c_003" in _text(browser, "#meta")
        _press(browser, [Keys.ARROW_LEFT])           # arrow back to it without labelling
        assert "c_002" in _text(browser, "#meta") and "skip" in _text(browser, "#current-label")

        _press(browser, ["g"])                       # grid view
        cells = browser.find_elements("css selector", "#grid .cell")
        assert len(cells) == 6 and not browser.find_element("id", "grid").get_attribute("hidden")
        assert browser.find_element("css selector", "#single").get_attribute("hidden")
        selected = browser.find_element("css selector", "#grid .cell.selected")
        assert selected.get_attribute("data-candid") == "c_002"
        _press(browser, [Keys.ARROW_RIGHT, "b"])     # c_003 bogus, selection moves to c_004
        assert browser.find_element("css selector", "#grid .cell.selected").get_attribute(
            "data-candid") == "c_004"
        assert "lab-bogus" in browser.find_element(
            "css selector", "#grid .cell[data-candid='c_003']").get_attribute("class")
        _wait(browser, lambda d: d.execute_script(
            "return [...document.querySelectorAll('#grid img')].every(i => i.complete)"))
        _shot(browser, "label_grid.png")
        with LabelStore(db) as store:
            assert {c: e.label for c, e in store.current("ann").items()} == {
                "c_000": "real", "c_001": "bogus", "c_002": "skip", "c_003": "bogus"}
    finally:
        server.kill(signal.SIGTERM)


def test_header_strings_stay_text(browser, tmp_path):
    root = triplet_folder(tmp_path / "cut", n=1, FILTER="<b>g</b>")
    evil = "<script>window.pwned=1</script>"
    planes = {n: np.zeros((21, 21)) for n in ("DIFF", "SCI", "REF")}
    write_mef(root / "a_evil.fits", planes, CANDID=evil, FILTER="<img src=x onerror=alert(1)>")
    with Server("--cutouts", str(root), "--quiet") as server:
        _open(browser, server.base + "/")
        meta = _text(browser, "#meta")
        assert evil in meta and "<img src=x onerror=alert(1)>" in meta   # shown as text
        assert browser.execute_script("return window.pwned === undefined")
        assert not browser.find_elements("css selector", "#meta script, #meta img, #meta b")
        _press(browser, ["g"])
        cell = browser.find_element("css selector", "#grid .cell")
        assert cell.get_attribute("data-candid") == evil and evil in cell.text
        assert browser.execute_script("return window.pwned === undefined")
