"""Drives reg's web interface in headless Chromium (Selenium + the system chromedriver).

usage: browse.py BASE_URL USER PASSWORD REPO SHOT_DIR

Logs in, browses to REPO's first tag and its layers, checks what the pages say, saves a
screenshot of each page, logs out. Prints one `ok: ...` line per step; exits non-zero on the
first failure (with the page's text).
"""
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException,
                                        TimeoutException)
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

base, user, password, repo, shots = sys.argv[1:6]
os.makedirs(shots, exist_ok=True)

opts = webdriver.ChromeOptions()
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--window-size=1280,900", "--no-first-run", "--disable-background-networking"):
    opts.add_argument(a)
opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")),
                          options=opts)
driver.set_page_load_timeout(30)


def fail(why):
    print(f"FAIL: {why}\n--- {driver.current_url} ---\n{driver.find_element(By.TAG_NAME, 'body').text}")
    driver.quit()
    sys.exit(1)


def until(why, cond):
    """Waits (up to 15 s) for the page a click started to be there. While the old page is
    still being replaced, its elements go stale or are not found yet: asked again."""
    try:
        WebDriverWait(driver, 15, ignored_exceptions=(StaleElementReferenceException,
                                                      NoSuchElementException)).until(lambda d: cond())
    except TimeoutException:
        fail(why)


def shot(name):
    driver.save_screenshot(os.path.join(shots, f"{name}.png"))


def nav(link, title):
    """Follows the header's link `link` and waits for the page titled `title` (a prefix)."""
    driver.find_element(By.LINK_TEXT, link).click()
    until(f"the {link} page", lambda: driver.title.startswith(title))


try:
    driver.get(base + "/ui/")
    if "/ui/login" not in driver.current_url:
        fail("an anonymous visit should land on the login page")
    shot("login")
    print("ok: anonymous visit goes to the login page")

    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys("not-" + password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    until("a wrong password should say so",
          lambda: "Wrong user name or password" in driver.page_source)
    print("ok: a wrong password is refused with a message")

    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    until("after logging in, the repositories page", lambda: driver.title == "Repositories · reg")
    if f"Signed in as {user}" not in driver.find_element(By.TAG_NAME, "header").text:
        fail("the header names the user")
    shot("repositories")
    print("ok: logged in, repositories listed")

    driver.find_element(By.LINK_TEXT, repo).click()
    until("the repository's page", lambda: driver.title == f"{repo} · reg")
    pull = driver.find_element(By.TAG_NAME, "main").text
    if f"docker pull" not in pull or repo not in pull:
        fail("a docker pull line")
    shot("tags")
    print("ok: the repository's tags, with a docker pull line")

    driver.find_element(By.CSS_SELECTOR, "td a code").click()
    until("the manifest's page", lambda: "@sha256:" in driver.title)
    text = driver.find_element(By.TAG_NAME, "main").text
    for want in ("Layers", "History (image config)", "tar+gzip", "@sha256:"):
        if want not in text:
            fail(f"the manifest page shows {want!r}")
    print("ok: the manifest's layers and history")
    for line in text.splitlines():
        if "COPY" in line or "created_by" in line or "RUN" in line:
            print(f"ok: history line: {line.strip()}")
            break
    shot("manifest")

    nav("Access tokens", "Access tokens · reg")
    driver.find_element(By.ID, "scopes").send_keys(f"repository:{repo}:pull")
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    until("a new token's secret", lambda: len(driver.find_elements(By.ID, "secret")) == 1)
    secret = driver.find_element(By.ID, "secret").get_attribute("value")
    if len(secret) < 20:
        fail("the secret is shown")
    shot("tokens")
    print("ok: a token made, its secret shown once")

    nav("Users", "Users · reg")
    shot("users")
    print("ok: the users page (administrators)")

    nav("Storage", "Storage · reg")
    if not driver.find_elements(By.CSS_SELECTOR, "svg rect"):
        fail("the storage charts")
    if "the next by this process at" not in driver.find_element(By.TAG_NAME, "main").text:
        fail("the storage page says when the next collection runs")
    shot("storage")
    print("ok: the storage page with its charts and the next collection")

    nav("Retention", "Retention · reg")
    driver.find_element(By.ID, "repositories").send_keys(repo.split("/")[0] + "/*")
    driver.find_element(By.ID, "keep_last").clear()
    driver.find_element(By.ID, "keep_last").send_keys("10")
    driver.find_element(By.ID, "immutable_tags").send_keys("release-*")
    driver.find_element(By.CSS_SELECTOR, "main form[action='/ui/admin/retention'] button").click()
    until("the rule added", lambda: "added." in driver.find_element(By.TAG_NAME, "main").text)
    shot("retention")
    print("ok: a retention rule added from the browser")

    nav("Organisations", "Organisations · reg")
    shot("orgs")
    print("ok: the organisations page")

    nav("Account", "Account ")
    if not driver.find_elements(By.ID, "current"):
        fail("the password form")
    shot("account")
    print("ok: the account page")

    driver.find_element(By.CSS_SELECTOR, "header form button").click()
    until("logging out goes to the login page", lambda: "/ui/login" in driver.current_url)
    driver.get(base + "/ui/")
    if "/ui/login" not in driver.current_url:
        fail("after logging out, pages need a login again")
    print("ok: logged out")
finally:
    driver.quit()
