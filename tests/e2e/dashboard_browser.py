#!/usr/bin/env python3
"""Drives the Weir dashboard in a real (headless) Chromium with Selenium, against a running
`weir serve`, and checks what a user sees; the `weir` CLI checks the other side. Run by the
e2e test `dashboard::dashboard_in_a_real_browser` (tests/e2e/dashboard.rs), which starts the
node and prepares a dead letter of group `billing` first; and with `--scenario cluster` by
`dashboard::dashboard_cluster_view_in_a_real_browser`, against a replica of a 3-replica
broker group, for the overview's cluster view.

Arguments: --url http://HTTP_ADDR --weir PATH --server NATIVE_ADDR --screenshots DIR
           [--scenario all|cluster] [--replicas N]
Exits non-zero with a message on the first failed check.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

args = None
driver = None


def log(msg):
    print(f"[dashboard] {msg}", flush=True)


def cli(*argv, stdin=None):
    """Runs `weir ARGV` against the node; returns stdout; fails on a non-zero exit."""
    env = dict(os.environ, WEIR_SERVER=args.server)
    out = subprocess.run([args.weir, *argv], input=stdin, capture_output=True, text=True, env=env, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"weir {' '.join(argv)} failed: {out.stderr}")
    return out.stdout


def api(path, method="GET", body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(args.url + "/api/v1" + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
        return json.loads(text) if text else None


def wait(cond, what, timeout=30):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=[NoSuchElementException, StaleElementReferenceException]).until(cond)
    except Exception as e:
        shot("failure")
        raise AssertionError(f"timed out waiting for {what}; page error: {error_text()!r}") from e


def until(pred, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return
        except (NoSuchElementException, StaleElementReferenceException):
            pass
        time.sleep(0.2)
    shot("failure")
    raise AssertionError(f"timed out waiting for {what}")


def error_text():
    try:
        el = driver.find_element(By.ID, "error")
        return el.text if el.is_displayed() else ""
    except Exception:
        return ""


def go(hash_):
    driver.get(args.url + "/" + hash_)


def el(css):
    return wait(EC.presence_of_element_located((By.CSS_SELECTOR, css)), css)


def visible(css):
    return wait(EC.visibility_of_element_located((By.CSS_SELECTOR, css)), css)


def shot(name, full=True):
    """Saves the page as NAME.png: the whole page (the window grown to its height, at most
    2400 px) when `full`, else what the window shows."""
    os.makedirs(args.screenshots, exist_ok=True)
    path = os.path.join(args.screenshots, name + ".png")
    size = driver.get_window_size()
    driver.execute_script("window.scrollTo(0, 0)")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    if full:
        driver.set_window_size(size["width"], min(max(height + 100, size["height"]), 2400))
    time.sleep(0.2)
    driver.save_screenshot(path)
    driver.set_window_size(size["width"], size["height"])
    log(f"screenshot {path}")


def fill(css, text):
    box = el(css)
    box.clear()
    box.send_keys(text)


def card_value(card):
    return el(f"#card-{card} .value").text


def number(text):
    return int(text.replace(",", "").strip() or 0)


def check_overview_and_topics():
    go("#/")
    visible("#card-topics")
    assert "standalone" in el("#card-broker").text, el("#card-broker").text
    assert not driver.find_elements(By.ID, "cluster"), "a standalone broker shows no cluster view"
    shot("overview-empty")

    # Create a topic in the UI, see it with the CLI.
    go("#/topics")
    fill("#new-topic-name", "ui-orders")
    fill("#create-topic input[name=queues]", "3")
    el("#create-topic-button").click()
    wait(lambda d: "ui-orders" in d.find_element(By.ID, "topics-table").text, "the new topic in the table")
    assert "ui-orders created" in driver.find_element(By.ID, "notice").text
    described = cli("topic", "describe", "ui-orders")
    assert "topic ui-orders (3 queues)" in described, described
    listed = cli("topic", "list")
    assert "ui-orders" in listed, listed
    log("topic created in the UI is seen by the CLI")

    # A broker error is shown as a readable message, not JSON.
    fill("#new-topic-name", "ui-orders")
    el("#create-topic-button").click()
    wait(lambda d: "already exists" in error_text(), "the duplicate-topic error")
    assert "{" not in error_text(), error_text()
    shot("topics-error")

    # Produce with the CLI; counts and the rate chart move.
    go("#/")
    visible("#card-messages")
    before = number(card_value("messages"))
    lines = "".join(f"order {i}\n" for i in range(3000))
    for _ in range(3):
        cli("produce", "ui-orders", stdin=lines)
        time.sleep(1.0)
    until(lambda: number(card_value("messages")) >= before + 9000, "the message count to grow by 9000", 20)
    until(lambda: float(el("#chart-messages").get_attribute("data-peak")) > 0, "the rate chart to show messages in", 20)
    log("overview count and rate chart moved")
    shot("overview")


def check_many_topics():
    # 1,000 topics: the list pages them and loads fast.
    for i in range(1000):
        api("/topics", "POST", {"name": f"load-{i:04d}", "queues": 1})
    started = time.time()
    go("#/topics")
    wait(lambda d: "of 1,002" in d.find_element(By.ID, "topics-range").text, "the pager over 1,002 topics")
    elapsed = time.time() - started
    rows = driver.find_elements(By.CSS_SELECTOR, "#topics-table tbody tr")
    assert len(rows) == 50, len(rows)
    assert elapsed < 5, f"topics page took {elapsed:.1f}s"
    log(f"1,002 topics: first page of 50 in {elapsed:.2f}s")
    el("#topics-next").click()
    wait(lambda d: "51–100" in d.find_element(By.ID, "topics-range").text, "the second page")
    # Delete a topic, after the confirmation.
    go("#/topics?q=load-0007")
    visible("[data-delete='load-0007']").click()
    assert "load-0007" in visible("#modal-text").text
    el("#modal-cancel").click()
    assert "load-0007" in cli("topic", "list"), "cancelled: still there"
    visible("[data-delete='load-0007']").click()
    visible("#modal-ok").click()
    wait(lambda d: "load-0007 deleted" in d.find_element(By.ID, "notice").text, "the delete notice")
    assert "load-0007" not in cli("topic", "list")
    log("topic deleted from the UI after confirming")
    fill("#topic-filter input[name=q]", "ui-")
    el("#topic-filter button").click()
    wait(lambda d: "of 1" in d.find_element(By.ID, "topics-range").text, "the filtered list")
    # The topic's size, in human units, as the API counts it.
    size = el("tr[data-topic='ui-orders'] .topic-size")
    exact = api("/topics/ui-orders")["bytes"]
    assert exact > 9000 * len("order 1234"), exact
    assert size.get_attribute("title") == f"{exact:,} bytes", (size.get_attribute("title"), exact)
    assert size.text.endswith(" KiB") or size.text.endswith(" MiB"), size.text
    log(f"ui-orders holds {size.text} ({exact} bytes)")
    shot("topics")

    go("#/topics/ui-orders")
    wait(lambda d: number(d.find_element(By.ID, "topic-messages").text) >= 9000, "the topic's message count")
    el("#add-queues input[name=queues]")
    fill("#add-queues input[name=queues]", "4")
    el("#add-queues button").click()
    wait(lambda d: d.find_element(By.ID, "topic-queues").text == "4", "four queues")
    shot("topic")


def check_messages():
    msg_id = cli("produce", "ui-orders", "--key", "order-42", "--tag", "paid",
                 "--property", "region=eu", "--body", '{"order":42,"total":9.5}').split()[0]
    go("#/messages?by=key&topic=ui-orders")
    fill("#find-key", "order-42")
    el("#find-button").click()
    detail = visible(".message-detail")
    assert detail.get_attribute("data-id") == msg_id, (detail.get_attribute("data-id"), msg_id)
    body = el("pre.body").text
    assert '"total": 9.5' in body, body  # pretty-printed JSON
    el("[data-view=hex]").click()
    wait(lambda d: "7b 22 6f 72" in d.find_element(By.CSS_SELECTOR, "pre.body").text, "the hex view")
    el("[data-view=json]").click()
    log("found by key")

    go("#/messages?by=id")
    fill("#find-id", msg_id)
    el("#find-button").click()
    wait(lambda d: d.find_element(By.CSS_SELECTOR, ".message-detail .msg-key").text == "order-42", "the message by id")
    log("found by id")

    # Send a test message from the UI, find it by queue and offset.
    fill("#send-topic", "ui-orders")
    fill("#send-key", "ui-sent")
    fill("#send-body", "hello from the dashboard")
    fill("#send-form textarea[name=properties]", "source=ui")
    el("#send-button").click()
    sent = visible("#sent-id").text
    found = api("/messages/" + sent)
    assert found["key"] == "ui-sent" and found["properties"].get("source") == "ui", found
    go(f"#/messages?topic=ui-orders&queue={found['queue_id']}&offset={found['queue_offset']}")
    wait(lambda d: "hello from the dashboard" in d.find_element(By.ID, "results").text, "the message at its queue offset")
    log("sent from the UI, found by queue and offset")

    # By time: the messages stored in the last hour (the form's default), 50 at most.
    go("#/messages?by=time&topic=ui-orders")
    el("#find-button").click()
    wait(lambda d: d.find_element(By.ID, "results-note").text.startswith("50 found"), "messages by time")
    rows = driver.find_elements(By.CSS_SELECTOR, "#results-table tbody tr")
    assert len(rows) == 50, len(rows)
    rows[0].click()
    visible("#detail .message-detail")
    log("found by time")
    go("#/messages?by=key&topic=ui-orders")
    fill("#find-key", "order-42")
    el("#find-button").click()
    visible(".message-detail")
    shot("messages")

    # A not-found lookup is a readable error.
    go("#/messages?by=id")
    fill("#find-id", "not-an-id")
    el("#find-button").click()
    wait(lambda d: error_text() != "", "the bad-id error")
    assert "{" not in error_text(), error_text()


def check_groups():
    env = dict(os.environ, WEIR_SERVER=args.server)
    consumer = subprocess.Popen([args.weir, "consume", "ui-orders", "-g", "ui-readers", "--from", "earliest"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        until(lambda: any(g == "ui-readers" for g in api("/groups")["groups"])
              and api("/groups/ui-readers")["members"], "the live consumer", 20)
        go("#/groups/ui-readers")
        visible("#reset-warning")
        Select(el("#reset-to")).select_by_value("earliest")
        el("#reset-button").click()
        visible("#modal-ok").click()
        wait(lambda d: "live members" in error_text(), "the refusal while members are live")
        log("reset refused while members are live: " + error_text())
        shot("group-reset-refused")
    finally:
        consumer.send_signal(signal.SIGINT)
        try:
            consumer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            consumer.kill()
    until(lambda: not api("/groups/ui-readers")["members"], "the member to leave", 30)
    until(lambda: api("/groups/ui-readers")["total_lag"] == 0, "the consumer to have committed everything", 30)
    go("#/groups/ui-readers")
    Select(el("#reset-to")).select_by_value("earliest")
    el("#reset-button").click()
    visible("#modal-ok").click()
    wait(lambda d: "reset" in d.find_element(By.ID, "notice").text, "the reset notice")
    group = api("/groups/ui-readers")
    assert all(q["committed_offset"] == q["min_offset"] for q in group["queues"]), group
    assert group["total_lag"] > 9000, group
    wait(lambda d: number(d.find_element(By.ID, "group-lag").text) > 9000, "the lag shown after the reset")
    log("group reset to earliest from the UI")
    check_group_pages()


def check_group_pages():
    # 60 more groups (a reset gives a group offsets): the list pages them 50 at a time.
    for i in range(60):
        api(f"/groups/many-{i:02d}/reset", "POST", {"topic": "ui-orders", "to": "latest"})
    total = api("/groups")["total"]
    assert total >= 62, total
    go("#/groups")
    wait(lambda d: f"1–50 of {total}" in d.find_element(By.ID, "groups-range").text, "the first page of groups")
    rows = driver.find_elements(By.CSS_SELECTOR, "#groups-table tbody tr")
    assert len(rows) == 50, len(rows)
    el("#groups-next").click()
    wait(lambda d: f"51–{total} of {total}" in d.find_element(By.ID, "groups-range").text, "the second page")
    shot("groups")
    fill("#group-filter input[name=q]", "ui-")
    el("#group-filter button").click()
    wait(lambda d: "1–1 of 1" in d.find_element(By.ID, "groups-range").text, "the filtered groups")
    row = el("tr[data-group='ui-readers']")
    assert number(row.find_elements(By.CSS_SELECTOR, "td")[-1].text) > 9000, row.text  # its lag
    log(f"{total} groups paged 50 at a time")


def check_cluster(replicas):
    """The overview of a replica of a broker group shows the name servers and every replica
    with its role, term, commit index and lag."""
    go("#/")

    def roles():
        rows = driver.find_elements(By.CSS_SELECTOR, "#cluster tr[data-node]")
        found = {int(r.get_attribute("data-node")): r.get_attribute("data-role") for r in rows}
        return [found.get(n) for n in range(1, replicas + 1)]

    until(lambda: None not in roles(), f"replicas 1 to {replicas} in the cluster view", 60)
    until(lambda: sorted(roles()) == ["follower"] * (replicas - 1) + ["leader"],
          "one leader and the others followers", 60)
    # No other row: a replica never registers as a standalone node 0 while its Raft starts.
    nodes = [r.get_attribute("data-node") for r in driver.find_elements(By.CSS_SELECTOR, "#cluster tr[data-node]")]
    assert nodes == [str(n) for n in range(1, replicas + 1)], nodes
    assert driver.find_elements(By.CSS_SELECTOR, "#cluster [data-name-server]"), "the name servers"
    assert "✓" in el("#cluster [data-name-server]").text, el("#cluster [data-name-server]").text
    assert el("#cluster tr.self"), "this broker is marked"
    leader = el(f"#cluster tr[data-node='{roles().index('leader') + 1}']")
    cells = leader.find_elements(By.CSS_SELECTOR, "td")
    assert number(cells[3].text) >= 1, "a term"
    assert cells[4].text.replace(",", "").isdigit(), "a commit index"  # as last registered
    assert cells[6].text == "0", "the leader does not lag"
    assert "node" in el("#card-broker").text, el("#card-broker").text
    log("cluster view: " + ", ".join(f"{n}={r}" for n, r in enumerate(roles(), 1)))
    shot("cluster")
    driver.set_window_size(390, 844)
    go("#/")
    visible("#cluster")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 400, f"the page is {width}px wide on a 390px phone"
    shot("phone-cluster")


def check_lag_chart():
    # The lag chart draws the broker's samples (every 10 s) of the group's lag.
    until(lambda: len(api("/groups/ui-readers/lag-history")["samples"]) >= 2, "two lag samples", 25)
    go("#/groups/ui-readers")
    wait(lambda d: int(d.find_element(By.ID, "chart-lag").get_attribute("data-points")) >= 2, "the lag chart")
    assert float(el("#chart-lag").get_attribute("data-peak")) > 9000
    shot("group")
    # The overview again, with the whole run's traffic in its charts.
    go("#/")
    wait(lambda d: int(d.find_element(By.ID, "chart-messages").get_attribute("data-points")) >= 20, "a longer history")
    shot("overview")


def check_dead_letters():
    go("#/dead-letters?group=billing")
    button = visible("[data-resend]")
    el("#dlq-table tbody tr").click()
    visible("#detail .message-detail")
    shot("dead-letters")
    button.click()
    wait(lambda d: "Resent to group billing" in d.find_element(By.ID, "notice").text, "the resend notice")
    log("dead letter resent from the UI")


def check_pending():
    cli("produce", "ui-orders", "--key", "later", "--delay", "1h", "--body", "in an hour")
    go("#/pending")
    wait(lambda d: number(d.find_element(By.ID, "delayed-count").text) >= 1, "a pending delayed message")
    assert "ui-orders" in el("#delayed-table").text
    shot("pending")


def check_phone():
    driver.set_window_size(390, 844)
    go("#/")
    visible("#card-topics")
    shot("phone-overview", full=False)
    nav = driver.find_element(By.ID, "nav")
    assert not nav.is_displayed(), "the navigation is folded on a phone"
    el("#menu-toggle").click()
    wait(lambda d: nav.is_displayed(), "the opened menu")
    shot("phone-menu", full=False)
    nav.find_element(By.LINK_TEXT, "Consumer groups").click()
    visible("#groups-table")
    assert not nav.is_displayed(), "the menu folds after navigating"
    el("#menu-toggle").click()
    nav.find_element(By.LINK_TEXT, "Topics").click()
    visible("#topics-table")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 400, f"the page is {width}px wide on a 390px phone"
    shot("phone-topics", full=False)
    log("phone layout navigates")


def main():
    global args, driver
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--weir", required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--screenshots", required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    parser.add_argument("--scenario", default="all", choices=["all", "cluster"])
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,900", "--hide-scrollbars", "--force-device-scale-factor=1"]:
        options.add_argument(a)
    # Each scenario replaces its own screenshots only.
    cluster_shots = ("cluster.png", "phone-cluster.png")
    if os.path.isdir(args.screenshots):
        for old in os.listdir(args.screenshots):
            if old.endswith(".png") and (old in cluster_shots) == (args.scenario == "cluster"):
                os.remove(os.path.join(args.screenshots, old))
    driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
    driver.set_page_load_timeout(30)
    try:
        if args.scenario == "cluster":
            check_cluster(args.replicas)
        else:
            check_overview_and_topics()
            check_many_topics()
            check_messages()
            check_groups()
            check_dead_letters()
            check_pending()
            check_lag_chart()
            check_phone()
    finally:
        driver.quit()
    log("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"[dashboard] FAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
