"""pytest plugin: a headless Debian chromium driven by selenium through chromium-driver.

`make test` installs both packages (scripts/install-system-deps.sh), so the browser tests
run in CI; they are skipped, with the reason, only where chromium or its driver is
genuinely not installed. Chromium runs with a fresh profile and with every background
network feature off (this machine has no internet; it must not try to reach one).

Fixtures:
    browser            a selenium WebDriver, 1280x800, closed after the test
    ui_artifacts_dir   .work/artifacts/ui/ — screenshots and the browser console log
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".work" / "artifacts" / "ui"

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--password-store=basic",
    "--window-size=1280,800",
)


def find_chromium() -> tuple[str, str] | None:
    """(browser binary, chromedriver) or None when either is not installed."""
    browser = os.environ.get("CHROMIUM_BINARY") or next(
        (p for name in CHROMIUM_CANDIDATES if (p := shutil.which(name))), None
    )
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not browser or not driver:
        return None
    return browser, driver


@pytest.fixture(scope="session")
def chromium_paths() -> tuple[str, str]:
    found = find_chromium()
    if found is None:
        pytest.skip(
            "chromium and chromium-driver are not installed "
            "(`make deps` / scripts/install-system-deps.sh installs them)"
        )
    return found


@pytest.fixture(scope="session")
def ui_artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def browser(chromium_paths: tuple[str, str], tmp_path: Path, ui_artifacts_dir: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium_paths
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        try:
            console = driver.get_log("browser")
            (ui_artifacts_dir / "console.log").write_text(
                "".join(f"{e['level']} {e['message']}\n" for e in console)
            )
        except Exception:  # noqa: BLE001 - a dead browser has no log to save
            pass
        driver.quit()


def waiter(driver: Any, timeout: float = 30) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the views re-render every few seconds: an element found a moment ago may be replaced
    return WebDriverWait(
        driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    )


def sign_in(driver: Any, base_url: str, password: str) -> None:
    """Sign in as the admin through Airflow's own login page (SimpleAuthManager)."""
    from selenium.webdriver.common.by import By

    from scripts import airflow_stack

    driver.get(f"{base_url}/")
    waiter(driver, 60).until(lambda d: d.find_elements(By.NAME, "username"))
    driver.find_element(By.NAME, "username").send_keys(airflow_stack.ADMIN)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    waiter(driver, 60).until(
        lambda d: "/auth/login" not in d.current_url and d.find_elements(By.CSS_SELECTOR, "a[href$='/dags']")
    )
