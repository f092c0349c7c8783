"""The web dashboard in a real browser (Debian's headless Chromium, driven by selenium) against the
quickstart on a real 3-node cluster: logged in through ``oct ui``'s link, it shows the nodes and
services, follows a redeploy as it happens without a reload, shows an instance's log, fits a
phone's screen, and reads whole with JavaScript off. Screenshots are kept as test artefacts
(``test-artifacts/dashboard/``); assertions are on content, never pixels."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.harness import REPO, Project, state_record

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(os.environ.get("OCT_TEST_ARTIFACTS", REPO / "test-artifacts")) / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def browser(javascript: bool = True) -> webdriver.Chrome:
    """Headless Chromium as the machine notes start it: no background traffic (the network is
    closed), a fresh profile, and the cluster's own CA not imported (the test accepts it)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tempfile.mkdtemp(prefix='oct-chromium-')}",
    ):
        options.add_argument(flag)
    options.accept_insecure_certs = True
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(options=options, service=ChromeService(executable_path=CHROMEDRIVER))
    driver.set_window_size(1280, 1000)
    return driver


@pytest.fixture
def chrome() -> Iterator[webdriver.Chrome]:
    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), "install chromium and chromium-driver"
    driver = browser()
    try:
        yield driver
    finally:
        driver.quit()


def login_link(project: Project) -> str:
    url = project.oct("ui").stdout.strip()
    assert url.startswith("https://") and "/ui/login?code=" in url
    return url


def instance_of(driver: webdriver.Chrome, service: str) -> dict[str, str]:
    item = driver.find_element(By.CSS_SELECTOR, f'article[data-service="{service}"] li.instance')
    return {key: item.get_attribute(f"data-{key}") or "" for key in ("instance", "state", "deployment")}


def shot(driver: webdriver.Chrome, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))


def test_the_dashboard_in_a_browser(make_project, chrome: webdriver.Chrome) -> None:  # type: ignore[no-untyped-def]
    project: Project = make_project("examples/quickstart")
    project.oct("deploy")
    link = login_link(project)
    token = state_record(project.dir)["token"]
    assert token not in link

    chrome.get(link)
    # (A live update replaces parts of the page: an element read while it is swapped is stale; try again.)
    wait = WebDriverWait(
        chrome, 60, poll_frequency=0.25, ignored_exceptions=(StaleElementReferenceException,)
    )
    wait.until(lambda d: d.current_url.endswith("/ui"))  # the code is gone from the address bar
    nodes = chrome.find_elements(By.CSS_SELECTOR, "article.node")
    assert len(nodes) == 3
    assert [n.find_element(By.CSS_SELECTOR, ".badge").text for n in nodes].count("leader") == 1
    services = {
        e.get_attribute("data-service") for e in chrome.find_elements(By.CSS_SELECTOR, "article.service")
    }
    assert services == {"store", "api", "web"}
    assert all(instance_of(chrome, s)["state"] == "running" for s in services)
    assert "$0.00" in chrome.find_element(By.ID, "summary").text
    shot(chrome, "dashboard.png")

    # A redeploy that changes `web`: the open page (never reloaded) shows its new instance running.
    before = instance_of(chrome, "web")
    project.edit('GREETING = "Hello"', 'GREETING = "Hi"')
    project.oct("deploy")
    chrome.execute_script("window.notReloaded = true")
    wait.until(lambda d: instance_of(d, "web")["deployment"] not in ("", before["deployment"]))
    wait.until(lambda d: instance_of(d, "web")["state"] == "running")
    assert chrome.execute_script("return window.notReloaded") is True

    def current_deployment(d: webdriver.Chrome) -> str:
        """The newest deployment's entry, once the page's list has caught up with the instance
        (each part of the page refreshes on its own: one may show the new deployment first)."""
        newest = d.find_element(By.CSS_SELECTOR, "#deployments li.deployment.current")
        if newest.get_attribute("data-deployment") != instance_of(d, "web")["deployment"]:
            return ""
        return str(newest.text)

    newest_text = wait.until(current_deployment)
    assert "web replaced" in newest_text and "api unchanged" in newest_text
    wait.until(lambda d: "deployment.succeeded" in d.find_element(By.ID, "events").text)
    shot(chrome, "after-redeploy.png")

    # An instance's log, from the node that runs it.
    chrome.find_element(By.CSS_SELECTOR, 'article[data-service="api"] a[href$="/logs"]').click()
    wait.until(lambda d: "api@node-" in d.find_element(By.ID, "log").text)
    shot(chrome, "api-logs.png")

    # A phone: one column, nothing wider than the screen.
    chrome.set_window_size(390, 844)
    chrome.get(chrome.current_url.split("/ui")[0] + "/ui")
    width = chrome.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page is {width[0]} px wide on a {width[1]} px screen"
    assert chrome.find_element(By.CSS_SELECTOR, 'article[data-service="web"]').is_displayed()
    shot(chrome, "phone.png")

    # With JavaScript off (a new login: the first link was used), every page still reads whole.
    plain = browser(javascript=False)
    try:
        plain.get(login_link(project))
        assert plain.current_url.endswith("/ui")
        assert len(plain.find_elements(By.CSS_SELECTOR, "article.node")) == 3
        assert len(plain.find_elements(By.CSS_SELECTOR, "li.instance[data-state=running]")) == 3
        assert "reload it" in plain.find_element(By.TAG_NAME, "body").text  # <noscript>: scripts are off
    finally:
        plain.quit()
