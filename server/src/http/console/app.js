// The trafficdb web console: SQL in a browser, over POST /api/v1/query.
//
// Values from the server are put on the page as text (textContent, SVG text nodes), never as HTML.
// Credentials, when the server asks for them, are kept in this tab's sessionStorage and sent as an
// Authorization header: never in a cookie, so another site cannot make the browser send them.
"use strict";

const PAGE = 100;
const MAX_ROWS = 100000;
const HISTORY = "trafficdb-history";
const KEYWORDS = new Set(("select from where group by order having limit offset join left right inner outer full on as and or " +
  "not null is in between like ilike case when then else end distinct with union all insert into values update set delete " +
  "create table view materialized drop alter explain analyze asc desc nulls first last over partition rows range preceding " +
  "following current row interval timestamp date true false cast filter within exists any").split(" "));

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, text) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};

let auth = sessionStorage.getItem("trafficdb-auth");
let result = null;
let page = 0;
let running = null;

/// A request to the server with the console's credentials; a 401 shows the sign-in form.
async function api(path, options = {}) {
  const headers = Object.assign({ "X-Trafficdb-Console": "1" }, options.headers || {});
  if (auth) headers["Authorization"] = "Basic " + auth;
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (r.status === 401) {
    showLogin("");
    throw new Error("sign in first");
  }
  return r;
}

/// Runs one statement and reads its JSON answer a line at a time, as the server writes it (a head
/// line, a line per row — a comma before all but the first — and an end line): `onRows(result)` is called as rows arrive. Resolves to
/// `{columns, command, rows, row_count, truncated, elapsed_ms, error, sqlstate}`; rejects on an HTTP
/// error, with the server's message and SQLSTATE.
async function query(statement, { signal, maxRows = MAX_ROWS, onRows } = {}) {
  const r = await api("/api/v1/query", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sql: statement, max_rows: maxRows }),
    signal,
  });
  if (!r.ok) {
    const body = await r.json();
    throw new Error(`${body.error} (SQLSTATE ${body.sqlstate})`);
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let result = null;
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const lines = (pending + value).split("\n");
    pending = lines.pop();
    const rows = [];
    for (const line of lines) {
      if (result === null) {
        result = JSON.parse(line + "]}");
      } else if (line.startsWith("[") || line.startsWith(",[")) {
        rows.push(line.startsWith(",") ? line.slice(1) : line);
      } else if (line.startsWith("]")) {
        Object.assign(result, JSON.parse("{" + line.slice(1).replace(/^,/, "")));
      }
    }
    if (rows.length) {
      for (const row of JSON.parse("[" + rows.join(",") + "]")) result.rows.push(row);
      if (onRows) onRows(result);
    }
  }
  if (result === null || result.row_count === undefined) throw new Error("the answer ended early");
  return result;
}

function showLogin(message) {
  $("login").hidden = false;
  $("login-error").textContent = message;
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const candidate = btoa(unescape(encodeURIComponent(f.get("user") + ":" + f.get("password"))));
  const r = await fetch("/api/v1/status", { headers: { "Authorization": "Basic " + candidate, "X-Trafficdb-Console": "1" } });
  if (r.status === 401) {
    showLogin("The user or the password is wrong.");
    return;
  }
  auth = candidate;
  sessionStorage.setItem("trafficdb-auth", auth);
  $("login").hidden = true;
  $("who").textContent = f.get("user");
  loadSchema();
});

// Tabs.
for (const b of document.querySelectorAll("nav button")) {
  b.addEventListener("click", () => {
    for (const o of document.querySelectorAll("nav button")) o.classList.toggle("active", o === b);
    for (const s of document.querySelectorAll("main > section[id^=tab-]")) s.hidden = s.id !== "tab-" + b.dataset.tab;
    if (b.dataset.tab === "schema") loadSchema();
    if (b.dataset.tab === "oncall") loadOncall();
    if (b.dataset.tab === "model") loadModel();
  });
}

// The editor: a textarea over a highlighted copy of its text.
function escapeHtml(s) {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function highlight() {
  const sql = $("sql").value;
  const token = /(--[^\n]*)|('(?:[^']|'')*'?)|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)|([\s\S])/g;
  let out = "";
  for (const m of sql.matchAll(token)) {
    const [t, comment, str, num, word] = m;
    if (comment) out += `<span class="com">${escapeHtml(t)}</span>`;
    else if (str) out += `<span class="str">${escapeHtml(t)}</span>`;
    else if (num) out += `<span class="num">${escapeHtml(t)}</span>`;
    else if (word && KEYWORDS.has(word.toLowerCase())) out += `<span class="kw">${escapeHtml(t)}</span>`;
    else out += escapeHtml(t);
  }
  $("highlight").innerHTML = out + "\n";
  $("highlight").scrollTop = $("sql").scrollTop;
}

$("sql").addEventListener("input", highlight);
$("sql").addEventListener("scroll", () => { $("highlight").scrollTop = $("sql").scrollTop; });
$("sql").addEventListener("keydown", (ev) => {
  if ((ev.ctrlKey || ev.metaKey) && ev.key === "Enter") {
    ev.preventDefault();
    run();
  }
});

// History, in this browser.
function history() {
  try { return JSON.parse(localStorage.getItem(HISTORY) || "[]"); } catch { return []; }
}

function remember(sql) {
  const h = [sql, ...history().filter((s) => s !== sql)].slice(0, 50);
  localStorage.setItem(HISTORY, JSON.stringify(h));
  showHistory();
}

function showHistory() {
  const s = $("history");
  s.replaceChildren(el("option", { value: "" }, "History"));
  history().forEach((sql, i) => s.append(el("option", { value: String(i) }, sql.replace(/\s+/g, " ").slice(0, 80))));
}

$("history").addEventListener("change", (ev) => {
  const sql = history()[Number(ev.target.value)];
  if (sql !== undefined && ev.target.value !== "") {
    $("sql").value = sql;
    highlight();
  }
  ev.target.value = "";
});

// Running a statement: the first page is shown as soon as its rows arrive, the count as they come.
async function run() {
  if (running) return;
  const sql = $("sql").value.trim();
  if (!sql) return;
  remember(sql);
  running = new AbortController();
  $("run").disabled = true;
  $("cancel").disabled = false;
  $("status").textContent = "running…";
  $("result").replaceChildren();
  $("result").dataset.state = "running";
  result = null;
  page = 0;
  const started = performance.now();
  let drawn = 0;
  const progress = (res) => {
    result = res;
    // The table while rows stream in, at most every 200 ms; a chart waits for all of them.
    if ($("as-chart").checked || performance.now() - drawn < 200) return;
    drawn = performance.now();
    $("status").textContent = `${res.rows.length} rows so far…`;
    table(res);
  };
  try {
    const body = await query(sql, { signal: running.signal, onRows: progress });
    result = body;
    const ms = (performance.now() - started).toFixed(0);
    const rows = body.command && body.columns.length === 0 ? body.command : `${body.row_count} rows`;
    $("status").textContent = `${rows}${body.truncated ? ` (the first ${MAX_ROWS})` : ""} in ${ms} ms`;
    if (body.error) throw new Error(`${body.error} (SQLSTATE ${body.sqlstate}), after ${body.row_count} rows`);
    $("csv").disabled = body.columns.length === 0;
    show();
  } catch (e) {
    if (!result || !result.error) $("status").textContent = "";
    const message = e.name === "AbortError" ? "Cancelled." : e.message;
    $("result").replaceChildren(el("p", { class: "error", id: "error" }, message));
  } finally {
    $("result").dataset.state = "done";
    running = null;
    $("run").disabled = false;
    $("cancel").disabled = true;
  }
}

$("run").addEventListener("click", run);
$("cancel").addEventListener("click", () => running && running.abort());
$("as-chart").addEventListener("change", show);

function show() {
  if (!result) return;
  if ($("as-chart").checked) chart(result);
  else table(result);
}

function table(res) {
  const rows = res.rows.slice(page * PAGE, (page + 1) * PAGE);
  const t = el("table", { id: "rows" });
  const head = el("tr");
  for (const c of res.columns) head.append(el("th", { title: c.type }, c.name));
  t.append(head);
  for (const row of rows) {
    const tr = el("tr");
    row.forEach((v, i) => {
      const numeric = res.columns[i].kind === "number";
      tr.append(v === null ? el("td", { class: "null" }, "NULL") : el("td", numeric ? { class: "n" } : {}, typeof v === "object" ? JSON.stringify(v) : String(v)));
    });
    t.append(tr);
  }
  const pages = Math.max(1, Math.ceil(res.rows.length / PAGE));
  const pager = el("div", { class: "pager" });
  const prev = el("button", {}, "‹");
  const next = el("button", {}, "›");
  prev.disabled = page === 0;
  next.disabled = page + 1 >= pages;
  prev.addEventListener("click", () => { page--; show(); });
  next.addEventListener("click", () => { page++; show(); });
  pager.append(prev, el("span", {}, `page ${page + 1} of ${pages}`), next);
  $("result").replaceChildren(pager, t);
}

const COLORS = ["#2f6fdf", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c", "#5c940d", "#495057", "#1864ab"];

/// A time as milliseconds: the server's timestamps without a zone are UTC.
const millis = (v) => v === null ? NaN : Date.parse(v + (/[zZ+]/.test(v.slice(10)) ? "" : "Z"));

/// The least and the greatest of `values` (no spread: a long array would overflow the call stack).
const extent = (values) => values.reduce(([lo, hi], v) => [Math.min(lo, v), Math.max(hi, v)], [Infinity, -Infinity]);

function chart(res) {
  $("result").replaceChildren(...drawChart(res));
}

/// A line chart over a time or number column, or bars over a text one: one series per numeric column,
/// or, with text columns beside one numeric column, one series per distinct text. `options.bands`
/// ([start, end, label] in milliseconds) shade spans of time; `options.marks` ([time, series]) put a
/// dot on a series. Returns the nodes to show.
function drawChart(res, options = {}) {
  const cols = res.columns;
  const x = Math.max(0, cols.findIndex((c) => c.kind === "time"));
  const nums = cols.map((c, i) => i).filter((i) => i !== x && cols[i].kind === "number");
  const texts = cols.map((c, i) => i).filter((i) => i !== x && cols[i].kind === "text");
  if (nums.length === 0) return [el("p", { class: "error" }, "A chart needs a numeric column.")];
  const xValue = (v) => cols[x].kind === "time" ? millis(v) : v;
  const series = new Map();
  for (const row of res.rows) {
    if (texts.length > 0) {
      const key = texts.map((i) => row[i] ?? "NULL").join(" / ");
      if (!series.has(key)) series.set(key, []);
      series.get(key).push([xValue(row[x]), row[nums[0]]]);
    } else {
      for (const i of nums) {
        if (!series.has(cols[i].name)) series.set(cols[i].name, []);
        series.get(cols[i].name).push([xValue(row[x]), row[i]]);
      }
    }
  }
  const shown = [...series.entries()].slice(0, COLORS.length);
  const bars = cols[x].kind === "text";
  const W = options.width || 900, H = options.height || 320, L = 60, B = 30;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "chart");
  if (!options.width) svg.setAttribute("id", "chart");
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  const ys = shown.flatMap(([, pts]) => pts.map((p) => p[1])).filter((v) => typeof v === "number");
  const [yLow, yHigh] = extent(ys);
  const yMax = Math.max(0, yHigh), yMin = Math.min(0, yLow);
  const yPos = (v) => H - B - ((v - yMin) / (yMax - yMin || 1)) * (H - B - 10);
  add("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#9aa3af" });
  if (options.title) add("text", { x: L, y: 12, class: "title" }, options.title);
  add("text", { x: 4, y: 14 }, String(Number(yMax.toPrecision(4))));
  add("text", { x: 4, y: H - B }, String(yMin));
  if (bars) {
    const labels = [...new Set(shown.flatMap(([, pts]) => pts.map((p) => p[0])))];
    const slot = (W - L - 10) / Math.max(1, labels.length);
    const width = slot / Math.max(1, shown.length) * 0.8;
    shown.forEach(([, pts], s) => {
      for (const [label, v] of pts) {
        if (typeof v !== "number") continue;
        const i = labels.indexOf(label);
        add("rect", { x: L + i * slot + s * width, y: Math.min(yPos(v), yPos(0)), width, height: Math.abs(yPos(0) - yPos(v)), fill: COLORS[s] });
      }
    });
    labels.slice(0, 30).forEach((label, i) => add("text", { x: L + i * slot, y: H - 12 }, String(label ?? "NULL").slice(0, 12)));
  } else {
    const xs = shown.flatMap(([, pts]) => pts.map((p) => p[0])).filter((v) => typeof v === "number");
    const [xMin, xMax] = extent(xs);
    const xPos = (v) => L + ((Math.min(xMax, Math.max(xMin, v)) - xMin) / (xMax - xMin || 1)) * (W - L - 10);
    for (const [from, to, label] of options.bands || []) {
      if (to < xMin || from > xMax) continue;
      const band = add("rect", { class: "band", x: xPos(from), y: 10, width: Math.max(2, xPos(to) - xPos(from)), height: H - B - 10 });
      const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
      title.textContent = label;
      band.append(title);
    }
    shown.forEach(([, pts], s) => {
      const d = pts.filter((p) => typeof p[1] === "number" && typeof p[0] === "number").sort((a, b) => a[0] - b[0])
        .map((p, i) => `${i ? "L" : "M"}${xPos(p[0]).toFixed(1)},${yPos(p[1]).toFixed(1)}`).join("");
      add("path", { d, fill: "none", stroke: COLORS[s], "stroke-width": 1.5 });
    });
    const names = shown.map(([name]) => name);
    for (const [t, name] of options.marks || []) {
      const s = names.indexOf(name);
      if (s < 0 || t < xMin || t > xMax) continue;
      const near = shown[s][1].reduce((best, p) => Math.abs(p[0] - t) < Math.abs(best[0] - t) ? p : best, [Infinity, null]);
      if (typeof near[1] === "number") add("circle", { class: "mark", cx: xPos(t), cy: yPos(near[1]), r: 4 });
    }
    const label = (v) => cols[x].kind === "time" ? new Date(v).toISOString().slice(0, 16).replace("T", " ") : String(Number(v.toPrecision(4)));
    if (xs.length) {
      add("text", { x: L, y: H - 8 }, label(xMin));
      add("text", { x: W - 130, y: H - 8 }, label(xMax));
    }
  }
  const legend = el("div", { class: "legend" });
  shown.forEach(([name], s) => {
    const item = el("span");
    const swatch = el("i");
    swatch.style.background = COLORS[s];
    item.append(swatch, document.createTextNode(name));
    legend.append(item);
  });
  const note = series.size > shown.length ? el("p", {}, `${series.size - shown.length} more series not drawn.`) : "";
  return [svg, legend, note];
}

// CSV of the rows shown, made here.
$("csv").addEventListener("click", () => {
  if (!result) return;
  const cell = (v) => {
    if (v === null) return "";
    const s = typeof v === "object" ? JSON.stringify(v) : String(v);
    return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const lines = [result.columns.map((c) => cell(c.name)).join(",")];
  for (const row of result.rows) lines.push(row.map(cell).join(","));
  const a = el("a", { download: "result.csv", href: URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" })) });
  a.click();
  URL.revokeObjectURL(a.href);
});

// The schema: tables and views, their columns, rows and time ranges.
async function loadSchema() {
  const box = $("schema");
  try {
    const status = await (await api("/api/v1/status")).json();
    const [cols, functions] = await Promise.all([
      sql("SELECT table_name, column_name, data_type FROM information_schema.columns " +
        "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"),
      sql("SELECT name, kind, signature, returns, description FROM trafficdb_functions()"),
    ]);
    const byTable = new Map();
    for (const [t, c, ty] of cols.rows) {
      if (!byTable.has(t)) byTable.set(t, []);
      byTable.get(t).push(`${c} ${ty}`);
    }
    const stats = new Map(status.tables.map((t) => [t.name, t]));
    const parts = [];
    for (const [name, columns] of byTable) {
      const div = el("div", { class: "schema-table" });
      const s = stats.get(name);
      const what = s ? `table, ${s.rows} rows${s.oldest ? `, ${s.oldest} … ${s.newest}` : ""}` : "view";
      div.append(el("h3", {}, name), el("div", {}, what), el("code", {}, columns.join(", ")));
      parts.push(div);
    }
    // The functions of docs/functions.md, by kind, as trafficdb_functions() lists them.
    const list = el("div", { class: "schema-functions", id: "schema-functions" });
    list.append(el("h2", {}, `Functions (${functions.rows.length})`));
    for (const [name, kind, signature, returns, description] of functions.rows) {
      const item = el("div", { class: "function", "data-name": name });
      item.append(el("code", {}, `${signature} → ${returns}`), el("span", { class: "kind" }, kind), el("div", {}, description));
      list.append(item);
    }
    box.replaceChildren(...parts, list);
  } catch (e) {
    box.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

// The on-call view: per backend over a range, from the rollups (a week reads hourly buckets);
// incidents shaded, anomalies dotted; health, SLO burn and firing alerts as of the newest minute.
const RANGES = { "1h": [1, "kpi_rollup_1m"], "6h": [6, "kpi_rollup_1m"], "24h": [24, "kpi_rollup_1m"], "7d": [168, "kpi_rollup_1h"] };
// Which chart an anomaly of each KPI of kpi_anomalies is marked on.
const MARKED = { error_rate: "5xx", total_p90_ms: "p99" };
const TOP_BACKENDS = 8;

/// The rows of a statement, all of them.
const sql = (statement) => query(statement).then((body) => {
  if (body.error) throw new Error(`${body.error} (SQLSTATE ${body.sqlstate})`);
  return body;
});

function simpleTable(res, id) {
  const t = el("table", { id });
  const head = el("tr");
  for (const c of res.columns) head.append(el("th", {}, c.name));
  t.append(head);
  for (const row of res.rows) {
    const tr = el("tr");
    row.forEach((v, i) => {
      const shown = v === null ? "NULL" : typeof v === "number" && !Number.isInteger(v) ? v.toFixed(4) : String(v);
      tr.append(el("td", res.columns[i].kind === "number" ? { class: "n" } : {}, shown));
    });
    t.append(tr);
  }
  return t;
}

let oncallLoads = 0;

/// The on-call view's parts: made empty when the range changes; a refresh replaces each part when
/// its query answers, so the charts (from the rollups, fast) show before the slower lists.
const ONCALL_PARTS = [
  ["oncall-part-incidents", "Incidents"], ["oncall-part-alerts", "Firing alerts"], ["oncall-part-slo", "SLO burn, newest minute"],
  ["oncall-part-health", "Backend health, newest minute"], ["oncall-part-anomalies", "Anomalies (5xx and p90 ones dotted on the charts)"],
];
const ONCALL_CHARTS = [["rps", "requests/s", null], ["rate_5xx", "5xx rate", "5xx"], ["p50_ms", "p50 latency, ms", null],
  ["p99_ms", "p99 latency, ms (worst load balancer)", "p99"]];

function oncallSkeleton() {
  const charts = el("div", { class: "charts", id: "oncall-charts" });
  for (const [name] of ONCALL_CHARTS) charts.append(el("div", { class: "oncall-chart", "data-chart": name }, "loading…"));
  const parts = ONCALL_PARTS.map(([id, title]) => {
    const d = el("div", { class: "oncall-part", id });
    d.append(el("h3", {}, title), el("p", {}, "loading…"));
    return d;
  });
  $("oncall").replaceChildren(charts, ...parts);
}

function oncallPart(id, title, node) {
  $(id).replaceChildren(el("h3", {}, title), node);
}

async function loadOncall() {
  // Only the newest load draws (a range changed while another loads).
  const mine = ++oncallLoads;
  const current = () => mine === oncallLoads;
  const range = $("range").value;
  const [hours, rollup] = RANGES[range];
  const since = `(SELECT max(bucket) FROM ${rollup}) - INTERVAL '${hours} hours'`;
  const started = performance.now();
  if ($("oncall").dataset.shown !== range) {
    delete $("oncall").dataset.range;
    oncallSkeleton();
    $("oncall").dataset.shown = range;
  }
  const status = (text) => { if (current()) $("oncall-status").textContent = text; };
  status("loading…");
  const traffic = sql(`WITH top AS (SELECT backend FROM ${rollup} WHERE bucket > ${since} GROUP BY backend ` +
    `ORDER BY sum(attempts) DESC LIMIT ${TOP_BACKENDS}) ` +
    `SELECT bucket, backend, sum(rps) AS rps, sum(target_5xx + lb_5xx) * 1.0 / nullif(sum(attempts), 0) AS rate_5xx, ` +
    `max(total_p50_ms) AS p50_ms, max(total_p99_ms) AS p99_ms FROM ${rollup} ` +
    `WHERE bucket > ${since} AND backend IN (SELECT backend FROM top) GROUP BY bucket, backend ORDER BY bucket, backend`);
  const incidents = sql(`SELECT started_at, ended_at, kind, lb, backend, description FROM incidents WHERE ended_at > ${since} ORDER BY started_at`);
  // The rest once the charts' data is in: on two cores, kpi_anomalies would otherwise slow them.
  const charted = Promise.all([traffic, incidents]);
  const later = (statement) => charted.then(() => sql(statement));
  const anomalies = later(`SELECT bucket, kpi, backend, value, expected, method FROM kpi_anomalies WHERE is_anomaly AND bucket > ${since} ORDER BY bucket`);
  const health = later("SELECT backend, avg(healthy_ratio) AS healthy_ratio, avg(ejected_ratio) AS ejected_ratio, " +
    "avg(avg_queue_depth) AS queue_depth, max(max_active_conns) AS max_conns FROM kpi_backend_health_1m " +
    "WHERE bucket = (SELECT max(bucket) FROM kpi_backend_health_1m) GROUP BY backend ORDER BY healthy_ratio, backend");
  const slo = later("SELECT lb, backend, objective, burn_1h, burn_6h, burn_3d, alert_level FROM kpi_slo_burn " +
    "WHERE bucket = (SELECT max(bucket) FROM kpi_slo_burn) ORDER BY burn_1h DESC, lb, backend");
  const alerts = later("SELECT ts, alert, key, value, details FROM (SELECT *, row_number() OVER (PARTITION BY alert, key ORDER BY ts DESC) AS n " +
    "FROM alert_events) e WHERE n = 1 AND state = 'firing' ORDER BY ts DESC");

  // The charts: drawn once the traffic and the incidents are in, drawn again with the anomalies' dots.
  let chartsMs = null;
  let marked = false;
  const noRows = { rows: [] };
  const drawCharts = (t, inc, anomalous) => {
    if (!current() || marked) return;
    marked = anomalous !== noRows;
    const bands = inc.rows.map(([from, to, kind, lb, backend]) => [millis(from), millis(to), `${kind}: ${backend ?? lb ?? "all"} ${from} … ${to}`]);
    const column = (name) => t.columns.findIndex((c) => c.name === name);
    const only = (name) => ({ columns: [t.columns[0], t.columns[1], t.columns[column(name)]], rows: t.rows.map((r) => [r[0], r[1], r[column(name)]]) });
    const marks = (chartName) => anomalous.rows.filter(([, kpi]) => MARKED[kpi] === chartName).map(([t0, , backend]) => [millis(t0), backend]);
    const charts = el("div", { class: "charts", id: "oncall-charts" });
    for (const [name, title, mark] of ONCALL_CHARTS) {
      const box = el("div", { class: "oncall-chart", "data-chart": name });
      box.append(...drawChart(only(name), { width: 560, height: 240, title, bands, marks: mark ? marks(mark) : [] }));
      charts.append(box);
    }
    $("oncall-charts").replaceWith(charts);
    chartsMs ??= performance.now() - started;
    status(`charts in ${chartsMs.toFixed(0)} ms; loading the lists…`);
  };
  const parts = [
    charted.then(([t, inc]) => drawCharts(t, inc, noRows)),
    incidents.then((r) => current() && oncallPart("oncall-part-incidents", `Incidents (${r.rows.length})`, simpleTable(r, "oncall-incidents"))),
    alerts.then((r) => current() && oncallPart("oncall-part-alerts", `Firing alerts (${r.rows.length})`,
      r.rows.length ? simpleTable(r, "oncall-alerts") : el("p", {}, "None."))),
    slo.then((r) => current() && oncallPart("oncall-part-slo", "SLO burn, newest minute", simpleTable(r, "oncall-slo"))),
    health.then((r) => current() && oncallPart("oncall-part-health", "Backend health, newest minute", simpleTable(r, "oncall-health"))),
    anomalies.then((r) => current() && oncallPart("oncall-part-anomalies", `Anomalies (${r.rows.length}; 5xx and p90 ones dotted on the charts)`,
      simpleTable(r, "oncall-anomalies"))),
    Promise.all([traffic, incidents, anomalies]).then(([t, inc, a]) => drawCharts(t, inc, a)),
  ];
  try {
    await Promise.all(parts);
    if (!current()) return;
    $("oncall").dataset.range = range;
    status(`updated ${new Date().toLocaleTimeString()}: charts in ${chartsMs.toFixed(0)} ms, all in ` +
      `${(performance.now() - started).toFixed(0)} ms; refreshed every 15 s`);
  } catch (e) {
    if (!current()) return;
    delete $("oncall").dataset.shown;
    $("oncall").replaceChildren(el("p", { class: "error" }, e.message));
    status("");
  }
}

$("range").addEventListener("change", loadOncall);
setInterval(() => { if (!$("tab-oncall").hidden && !document.hidden) loadOncall(); }, 15000);

// The retry model: its versions, the deployed one's evaluation, ROC and calibration on its held-out
// rows (`roc_curve`, `calibration`: they score those rows again, seconds on a week), and the retry
// load it expects (`kpi_retry_impact_1m`) next to the retries seen.
async function loadModel() {
  const box = $("model");
  box.replaceChildren(el("p", {}, "Scoring the held-out rows…"));
  try {
    const versions = await sql("SELECT version, deployed, created_at, rows_train, auc_roc, split_at FROM models " +
      "WHERE name = 'retry' ORDER BY version DESC");
    if (versions.rows.length === 0) {
      box.replaceChildren(el("p", {}, "No retry model yet: train one with train_retry_model (docs/retry-model.md)."));
      return;
    }
    const [metrics, roc, calibration, load] = await Promise.all([
      sql("SELECT metrics FROM models WHERE name = 'retry' AND deployed"),
      sql("SELECT fpr, tpr FROM roc_curve('retry')"),
      sql("SELECT mean_predicted, observed_rate, mean_predicted AS perfect FROM calibration('retry')"),
      sql("SELECT bucket, sum(retries) AS retries, sum(expected_retries) AS expected_retries FROM kpi_retry_impact_1m " +
          "WHERE bucket > (SELECT max(bucket) FROM kpi_retry_impact_1m) - INTERVAL '24 hours' GROUP BY bucket ORDER BY bucket"),
    ]);
    const m = metrics.rows.length ? JSON.parse(metrics.rows[0][0]) : {};
    const names = ["rows", "positives", "auc_roc", "auc_pr", "log_loss", "brier", "accuracy", "precision", "recall", "f1", "threshold"];
    const evaluation = { columns: names.map((n) => ({ name: n, kind: "number" })), rows: [names.map((n) => m[n] ?? null)] };
    const comparisons = (m.comparisons || []).map((c) => [c.scorer, c.subset, c.auc_roc, c.log_loss, c.brier]);
    const compared = {
      columns: ["scorer", "subset", "auc_roc", "log_loss", "brier"].map((n, i) => ({ name: n, kind: i < 2 ? "text" : "number" })),
      rows: comparisons,
    };
    const part = (title, ...nodes) => { const d = el("div", { class: "oncall-part" }); d.append(el("h3", {}, title), ...nodes); return d; };
    const charts = el("div", { class: "charts" });
    const chartBox = (id, nodes) => { const d = el("div", { class: "model-chart", id }); d.append(...nodes); return d; };
    charts.append(
      chartBox("model-roc", drawChart(roc, { width: 560, height: 300, title: "ROC on the held-out rows (tpr over fpr)" })),
      chartBox("model-calibration", drawChart(calibration, { width: 560, height: 300, title: "calibration: observed rate over mean predicted" })),
      chartBox("model-load", drawChart(load, { width: 560, height: 300, title: "retries seen and expected, last 24 hours (per minute)" })),
    );
    box.replaceChildren(
      part("Versions", simpleTable(versions, "model-versions")),
      part("The deployed version on its held-out rows", simpleTable(evaluation, "model-metrics")),
      part("Next to simpler scorers", simpleTable(compared, "model-comparisons")),
      charts,
    );
  } catch (e) {
    box.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

highlight();
showHistory();
api("/api/v1/status").then(() => loadSchema()).catch(() => {});
