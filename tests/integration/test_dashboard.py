"""The dashboard in a real headless Chromium (Debian's, through its chromedriver), against a
kallm that has served traffic: the numbers it shows are /stats's, and deleting an entry and
reporting a wrong hit work from the page."""

import shutil
from collections.abc import Iterator

import httpx
import pytest
from processes import SERVER_KEY, Caller, Kallm, start_kallm
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

TOKEN = "dashboard-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
PAGE_TIMEOUT = 20  # seconds for the page to show what it fetched


@pytest.fixture(scope="module")
def board(tmp_path_factory, simulator) -> Iterator[Kallm]:
    proxy = start_kallm(
        tmp_path_factory,
        simulator,
        "kallm-dashboard",
        OPENAI_API_KEY=SERVER_KEY,
        KALLM_ADMIN_TOKEN=TOKEN,
    )
    yield proxy
    proxy.process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "scripts/test.sh installs Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(driver), options=options)
    session.set_window_size(1280, 2000)
    yield session
    session.quit()


def opened(browser: WebDriver, proxy: Kallm, token: str = TOKEN) -> WebDriverWait:
    browser.get(f"{proxy.root}/ui")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{proxy.root}/ui")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()
    wait = WebDriverWait(browser, PAGE_TIMEOUT)
    wait.until(lambda b: b.find_element(By.ID, "status").text != "")
    return wait


def shown(browser: WebDriver, stat: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, f'[data-stat="{stat}"]').text


def test_the_page_shows_the_numbers_stats_reports(board, make_caller, browser):
    caller: Caller = make_caller(board)
    caller.chat("How many legs does a spider have?")
    caller.chat("How many legs does a spider have?")
    caller.chat("How many legs do spiders have?")
    caller.chat("What is the tallest mountain in Africa?")
    wait = opened(browser, board)
    stats = httpx.get(f"{board.root}/stats", headers=ADMIN).json()
    wait.until(lambda b: shown(b, "total_hits") == str(stats["total_hits"]))
    for stat in ("total_hits", "exact_hits", "semantic_hits", "total_misses", "total_entries"):
        assert shown(browser, stat) == str(stats[stat]), stat
    assert shown(browser, "hit_rate") == f"{100 * stats['hit_rate']:.1f}%"
    # The outcome bars hold as many hits and misses as /stats counts (all in the last hour).
    titles = [t.get_attribute("textContent") for t in browser.find_elements(
        By.CSS_SELECTOR, "#outcomes-chart rect title")]  # fmt: skip
    drawn = {"hit": 0, "miss": 0}
    for title in titles:
        count, outcome = title.rsplit(": ", 1)[1].split()
        if outcome in drawn:
            drawn[outcome] += int(count)
    assert drawn == {"hit": stats["total_hits"], "miss": stats["total_misses"]}
    # The similarity histogram has its below-threshold bar: the mountain's nearest entry.
    assert browser.find_elements(By.CSS_SELECTOR, "#similarity-chart rect.below-fill")
    assert browser.find_elements(By.CSS_SELECTOR, "#similarity-chart rect.hit-fill")
    # By API and by namespace too: this test's namespace holds its one semantic hit.
    views = Select(browser.find_element(By.ID, "similarity-view"))
    views.select_by_value(f"namespace:{caller.namespace}")
    drawn = [t.get_attribute("textContent") for t in browser.find_elements(
        By.CSS_SELECTOR, "#similarity-chart rect title")]  # fmt: skip
    assert sum(int(t.rsplit(": ", 1)[1].split()[0]) for t in drawn if t.endswith(" hit")) == 1
    views.select_by_value("api:chat.completions")
    assert browser.find_elements(By.CSS_SELECTOR, "#similarity-chart rect.hit-fill")


def test_an_entry_is_deleted_from_the_page(board, make_caller, browser):
    caller = make_caller(board)
    caller.chat("Which planet has the most moons?")
    wait = opened(browser, board)
    search = browser.find_element(By.CSS_SELECTOR, '#entries-form input[name="q"]')
    search.send_keys("most moons")
    browser.find_element(By.CSS_SELECTOR, "#entries-form button").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#entries-table tbody tr")) == 1)
    row = browser.find_element(By.CSS_SELECTOR, "#entries-table tbody tr")
    row.find_element(By.XPATH, ".//button[text()='Delete']").click()
    wait.until(lambda b: "Deleted" in b.find_element(By.ID, "status").text)
    listed = httpx.get(f"{board.root}/admin/entries", params={"q": "most moons"}, headers=ADMIN)
    assert listed.json()["entries"] == []
    assert caller.chat("Which planet has the most moons?").cache == "MISS"


def test_a_wrong_hit_is_reported_from_the_page(board, make_caller, browser):
    caller = make_caller(board)
    caller.chat("How do I enable dark mode on my phone?")
    asked = "How do I enable dark mode on my phone, please?"
    assert caller.chat(asked).cache == "HIT"
    wait = opened(browser, board)
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#hits-table tbody tr"))
    row = browser.find_element(By.CSS_SELECTOR, "#hits-table tbody tr")  # the newest first
    assert "please" in row.text
    row.find_element(By.XPATH, ".//button[text()='Report wrong']").click()
    wait.until(lambda b: "Reported" in b.find_element(By.ID, "status").text)
    reports = httpx.get(f"{board.root}/admin/reports", headers=ADMIN).json()["reports"]
    assert [r["right"] for r in reports if "please" in (r["asked_text"] or "")] == [False]
    assert caller.chat(asked, headers={"Cache-Control": "no-store"}).cache == "MISS"


def test_the_page_refuses_without_the_token(board, browser, kallm):
    browser.get(f"{board.root}/ui")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{board.root}/ui")
    assert browser.find_element(By.ID, "login").is_displayed()
    assert not browser.find_element(By.ID, "dashboard").is_displayed()
    opened(browser, board, token="not-the-token")
    WebDriverWait(browser, PAGE_TIMEOUT).until(
        lambda b: "refused" in b.find_element(By.ID, "status").text
    )
    assert not browser.find_element(By.ID, "dashboard").is_displayed()
    assert shown(browser, "total_hits") == ""  # nothing was read
    assert httpx.get(f"{board.root}/admin/dashboard").status_code == 401
    assert httpx.get(f"{kallm.root}/ui").status_code == 404  # no admin token: no dashboard
