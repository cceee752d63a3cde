"""The web console in a real browser: Debian's chromium, headless, driven by Playwright (no browser
download: the system's executable).

Against a running `serve --demo --http` (trust): the page loads with no console errors and no refused
resource (the Content-Security-Policy holds), a query typed in the editor and run with Ctrl-Enter shows
the rows the PostgreSQL port gives for it, a time series draws a chart, the on-call view draws the
demo's week with its incidents shaded and its anomalies dotted, the retry-model page shows the deployed
model's evaluation with its ROC, calibration and expected retry load, the schema lists the demo's tables
and the functions of trafficdb_functions(), a statement's first rows are shown while it still runs, and
Cancel stops it (the server counts it cancelled).

Then against a server of its own with passwords (`BINARY serve --auth password`): the console asks for
credentials; a reader's INSERT is refused with 42501 and writes nothing; text holding `<script>` and an
`<img onerror>` is shown as text, and neither runs.

With --screenshots DIR, saves a picture of each page there.

Usage: python console.py BINARY HOST PG_PORT HTTP_PORT [--screenshots DIR]
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import psycopg
from playwright.sync_api import sync_playwright

parser = argparse.ArgumentParser()
parser.add_argument("binary")
parser.add_argument("host")
parser.add_argument("port", type=int)
parser.add_argument("http_port", type=int)
parser.add_argument("--screenshots")
args = parser.parse_args()

passed = failed = 0


def check(cond, what, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"console: {what}: ok")
    else:
        failed += 1
        print(f"console: {what}: FAILED {detail}")


def shoot(page, name):
    if args.screenshots:
        os.makedirs(args.screenshots, exist_ok=True)
        page.screenshot(path=os.path.join(args.screenshots, f"console-{name}.png"))


def wire_rows(port, sql, user="console"):
    with psycopg.connect(host=args.host, port=port, user=user, dbname="trafficdb", autocommit=True) as c:
        return [[None if v is None else str(v) for v in r] for r in c.execute(sql).fetchall()]


def run(page, sql, wait_for="#rows, #error, #chart"):
    page.fill("#sql", sql)
    page.focus("#sql")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#result[data-state=done]", state="attached", timeout=60_000)
    page.wait_for_selector(wait_for, timeout=60_000)


def table_cells(page):
    return page.eval_on_selector_all("#rows tr", "rows => rows.slice(1).map(r => [...r.cells].map(c => c.textContent))")


def metric(http, name):
    text = urllib.request.urlopen(f"http://{args.host}:{http}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


browser_path = shutil.which("chromium") or "/usr/bin/chromium"
with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    base = f"http://{args.host}:{args.http_port}"
    started = time.perf_counter()
    response = page.goto(base + "/")
    page.wait_for_load_state("load")
    load_ms = (time.perf_counter() - started) * 1000
    csp = response.headers.get("content-security-policy", "")
    check(response.status == 200 and "script-src 'self'" in csp and "default-src 'none'" in csp,
          "the console is served with its Content-Security-Policy", csp)

    # A query typed and run with Ctrl-Enter: the rows the PostgreSQL port gives.
    sql = "SELECT backend, count(*) AS n, max(total_ms) AS worst FROM lb_requests GROUP BY backend ORDER BY backend"
    started = time.perf_counter()
    run(page, sql)
    first_table_ms = (time.perf_counter() - started) * 1000
    got = table_cells(page)
    want = wire_rows(args.port, sql)
    norm = lambda rows: [[re.sub(r"\.0$", "", c) for c in r] for r in rows]
    check(norm(got) == norm(want), f"a query's rows are the PostgreSQL port's ({len(want)} rows)",
          f"{got[:3]} vs {want[:3]}")
    check("rows in" in page.text_content("#status"), "the row count and time are shown", page.text_content("#status"))
    shoot(page, "query")

    # A chart of a time series.
    page.check("#as-chart")
    started = time.perf_counter()
    run(page, "SELECT date_trunc('minute', ts) AS minute, backend, count(*) AS n FROM lb_requests "
              "WHERE ts > (SELECT max(ts) FROM lb_requests) - INTERVAL '3 hours' AND backend IN ('api', 'auth', 'cart') "
              "GROUP BY 1, 2 ORDER BY 1", "#chart, #error")
    chart_ms = (time.perf_counter() - started) * 1000
    paths = page.eval_on_selector_all("#chart path", "ps => ps.map(p => p.getAttribute('d').length)")
    legend = page.eval_on_selector_all(".legend span", "ss => ss.map(s => s.textContent)")
    check(len(paths) == 3 and all(n > 100 for n in paths) and sorted(legend) == ["api", "auth", "cart"],
          "a time series draws a line per backend", f"{paths} {legend}")
    shoot(page, "chart")
    page.uncheck("#as-chart")

    # The schema.
    page.click("nav button[data-tab=schema]")
    page.wait_for_selector(".schema-table h3", timeout=30_000)
    names = page.eval_on_selector_all(".schema-table h3", "hs => hs.map(h => h.textContent)")
    check({"lb_requests", "lb_targets", "incidents", "kpi_requests_1m"} <= set(names),
          "the schema lists the demo's tables and views", str(names[:10]))
    functions = page.eval_on_selector_all("#schema-functions .function", "fs => fs.map(f => [f.dataset.name, f.querySelector('code').textContent])")
    listed = wire_rows(args.port, "SELECT name, signature FROM trafficdb_functions()")
    check([f[0] for f in functions] == [r[0] for r in listed] and len(listed) > 50
          and any(f[1].startswith("time_bucket(width interval, ts timestamp") for f in functions),
          f"the schema lists the functions with their signatures ({len(listed)})", str(functions[:3]))
    shoot(page, "schema")
    page.click("nav button[data-tab=query]")

    # The on-call view over the demo's week: the charts from the hourly rollup, its incidents shaded.
    page.click("nav button[data-tab=oncall]")
    page.select_option("#range", "7d")
    page.wait_for_selector("#oncall[data-range='7d'] #oncall-incidents", timeout=60_000)
    oncall_status = page.text_content("#oncall-status")
    charts = page.eval_on_selector_all(".oncall-chart", "cs => cs.map(c => [c.dataset.chart, c.querySelectorAll('path').length, c.querySelectorAll('rect.band').length, c.querySelectorAll('circle.mark').length])")
    shown_incidents = page.eval_on_selector_all("#oncall-incidents tr", "rs => rs.length - 1")
    want_incidents = wire_rows(args.port, "SELECT count(*) FROM incidents WHERE ended_at > "
                                          "(SELECT max(bucket) FROM kpi_rollup_1h) - INTERVAL '168 hours'")[0][0]
    check([c[0] for c in charts] == ["rps", "rate_5xx", "p50_ms", "p99_ms"] and all(c[1] >= 2 for c in charts),
          "the on-call view draws requests/s, 5xx rate, p50 and p99 per backend", str(charts))
    check(str(shown_incidents) == want_incidents and int(want_incidents) > 0 and all(c[2] > 0 for c in charts),
          f"the on-call view lists and shades the demo's incidents ({want_incidents})", f"{shown_incidents} {charts}")
    check(sum(c[3] for c in charts) > 0, "anomalies are dotted on the charts", str(charts))
    for part in ("#oncall-slo", "#oncall-health"):
        check(page.eval_on_selector_all(part + " tr", "rs => rs.length") > 1, f"the on-call view shows {part[8:]}")
    shoot(page, "oncall")
    page.click("nav button[data-tab=query]")

    # The retry model: the demo's deployed version, its ROC and calibration, the expected retry load.
    page.click("nav button[data-tab=model]")
    page.wait_for_selector("#model-versions, #model .error", timeout=120_000)
    error = page.eval_on_selector_all("#model .error", "es => es.map(e => e.textContent)")
    deployed = wire_rows(args.port, "SELECT version, auc_roc FROM models WHERE name = 'retry' AND deployed")
    shown_auc = page.eval_on_selector_all("#model-metrics td", "ts => ts.map(t => t.textContent)")
    roc = page.eval_on_selector_all("#model-roc path", "ps => ps.map(p => p.getAttribute('d').length)")
    calibration = page.eval_on_selector_all("#model-calibration path", "ps => ps.length")
    load = page.eval_on_selector_all("#model-load path", "ps => ps.length")
    check(not error and len(deployed) == 1 and f"{float(deployed[0][1]):.4f}" in shown_auc,
          "the retry-model page shows the deployed version's evaluation", f"{error} {deployed} {shown_auc}")
    check(len(roc) == 1 and roc[0] > 100 and calibration == 2 and load == 2,
          "the retry-model page draws ROC, calibration and the expected retry load", f"{roc} {calibration} {load}")
    shoot(page, "model")
    page.click("nav button[data-tab=query]")

    # Rows shown while the statement still runs, then Cancel: the first branch's row comes at once,
    # the count takes hours.
    before = metric(args.http_port, "trafficdb_http_queries_cancelled_total") or 0
    page.fill("#sql", "SELECT 1 AS n UNION ALL SELECT count(*) FROM generate_series(1, 100000000000)")
    page.click("#run")
    page.wait_for_selector("#rows", timeout=10_000)
    streaming = page.eval_on_selector("#result", "r => r.dataset.state") == "running" and table_cells(page) == [["1"]]
    check(streaming, "rows are shown while the statement runs", str(table_cells(page)))
    page.click("#cancel")
    page.wait_for_selector("#error", timeout=10_000)
    cancelled = False
    for _ in range(100):
        if (metric(args.http_port, "trafficdb_http_queries_cancelled_total") or 0) > before:
            cancelled = True
            break
        time.sleep(0.1)
    check(page.text_content("#error") == "Cancelled." and cancelled, "Cancel stops a long statement on the server")
    check(not problems, "no errors in the browser's console", "; ".join(problems))
    page.close()

    # A server with passwords: a reader's console, and text that looks like HTML.
    work = tempfile.mkdtemp()
    users = ""
    for name, role in (("admin", "admin"), ("viewer", "reader")):
        users += subprocess.run([args.binary, "passwd", "--role", role, name], input=f"{name} pw\n", text=True,
                                capture_output=True, check=True).stdout
    with open(os.path.join(work, "trafficdb.toml"), "w") as f:
        f.write(users)
    pg, http = free_port(), free_port()
    server = subprocess.Popen([args.binary, "serve", "--empty", "-d", os.path.join(work, "data"), "--config",
                               os.path.join(work, "trafficdb.toml"), "--auth", "password", "--listen",
                               f"127.0.0.1:{pg}", "--http", f"127.0.0.1:{http}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                admin = psycopg.connect(host="127.0.0.1", port=pg, user="admin", password="admin pw",
                                        dbname="trafficdb", autocommit=True)
                break
            except psycopg.OperationalError:
                time.sleep(0.1)
        admin.execute("CREATE TABLE notes (ts TIMESTAMP NOT NULL, note TEXT) WITH (time_column = 'ts')")
        probes = ["<script>window.__xss = 1</script>", "<img src=x onerror=\"window.__xss = 2\">"]
        for i, p in enumerate(probes):
            admin.execute(f"INSERT INTO notes VALUES (TIMESTAMP '2024-01-01 00:00:0{i}', %s)", (p,))
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        problems = []
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.goto(f"http://127.0.0.1:{http}/")
        page.wait_for_selector("#login:not([hidden])", timeout=10_000)
        check(True, "with passwords, the console asks for credentials")
        shoot(page, "login")
        page.fill("input[name=user]", "viewer")
        page.fill("input[name=password]", "wrong")
        page.click("#login-form button")
        page.wait_for_selector("#login-error:not(:empty)", timeout=10_000)
        page.fill("input[name=password]", "viewer pw")
        page.click("#login-form button")
        page.wait_for_selector("#login[hidden]", state="attached", timeout=10_000)
        run(page, "SELECT note FROM notes ORDER BY ts")
        shown = [r[0] for r in table_cells(page)]
        injected = page.evaluate("window.__xss") or page.eval_on_selector_all("#rows img, #rows script", "e => e.length")
        check(shown == probes and not injected, "text holding <script> and <img onerror> is shown as text",
              f"{shown} {injected}")
        run(page, "INSERT INTO notes VALUES (TIMESTAMP '2024-01-02 00:00:00', 'from a reader')")
        error = page.text_content("#error") or ""
        count = admin.execute("SELECT count(*) FROM notes").fetchone()[0]
        check("42501" in error and count == 2, "a reader's console cannot INSERT", f"{error} ({count} rows)")
        shoot(page, "reader")
        check(not problems, "no errors in the reader's browser", "; ".join(problems))
        admin.close()
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    browser.close()

print(f"console: page load {load_ms:.0f} ms; first table {first_table_ms:.0f} ms; chart over 3 hours {chart_ms:.0f} ms; "
      f"on-call week: {oncall_status}")
print(f"test result: {'ok' if failed == 0 else 'FAILED'}. {passed} passed; {failed} failed")
sys.exit(1 if failed else 0)
