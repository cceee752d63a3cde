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

// Running a statement.
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
  const started = performance.now();
  try {
    const r = await api("/api/v1/query", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sql, max_rows: MAX_ROWS }),
      signal: running.signal,
    });
    const body = await r.json();
    if (!r.ok) throw new Error(`${body.error} (SQLSTATE ${body.sqlstate})`);
    result = body;
    page = 0;
    const ms = (performance.now() - started).toFixed(0);
    const rows = body.command && body.columns.length === 0 ? body.command : `${body.row_count} rows`;
    $("status").textContent = `${rows}${body.truncated ? ` (the first ${MAX_ROWS})` : ""} in ${ms} ms`;
    if (body.error) throw new Error(`${body.error} (SQLSTATE ${body.sqlstate}), after ${body.row_count} rows`);
    $("csv").disabled = body.columns.length === 0;
    show();
  } catch (e) {
    $("status").textContent = "";
    const message = e.name === "AbortError" ? "Cancelled." : e.message;
    $("result").replaceChildren(el("p", { class: "error", id: "error" }, message));
  } finally {
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

/// A line chart over a time or number column, or bars over a text one: one series per numeric column,
/// or, with text columns beside one numeric column, one series per distinct text.
function chart(res) {
  const cols = res.columns;
  const x = Math.max(0, cols.findIndex((c) => c.kind === "time"));
  const nums = cols.map((c, i) => i).filter((i) => i !== x && cols[i].kind === "number");
  const texts = cols.map((c, i) => i).filter((i) => i !== x && cols[i].kind === "text");
  if (nums.length === 0) {
    $("result").replaceChildren(el("p", { class: "error" }, "A chart needs a numeric column."));
    return;
  }
  const xValue = (v) => cols[x].kind === "time" ? Date.parse(v + (/[zZ+]/.test(v.slice(10)) ? "" : "Z")) : v;
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
  const W = 900, H = 320, L = 60, B = 30;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("id", "chart");
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
  const yMax = Math.max(0, ...ys), yMin = Math.min(0, ...ys);
  const yPos = (v) => H - B - ((v - yMin) / (yMax - yMin || 1)) * (H - B - 10);
  add("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#9aa3af" });
  add("text", { x: 4, y: 14 }, String(yMax));
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
    const xMin = Math.min(...xs), xMax = Math.max(...xs);
    const xPos = (v) => L + ((v - xMin) / (xMax - xMin || 1)) * (W - L - 10);
    shown.forEach(([, pts], s) => {
      const d = pts.filter((p) => typeof p[1] === "number" && typeof p[0] === "number").sort((a, b) => a[0] - b[0])
        .map((p, i) => `${i ? "L" : "M"}${xPos(p[0]).toFixed(1)},${yPos(p[1]).toFixed(1)}`).join("");
      add("path", { d, fill: "none", stroke: COLORS[s], "stroke-width": 1.5 });
    });
    const label = (v) => cols[x].kind === "time" ? new Date(v).toISOString().slice(0, 16).replace("T", " ") : String(v);
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
  $("result").replaceChildren(svg, legend, note);
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
    const r = await api("/api/v1/query", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sql: "SELECT table_name, column_name, data_type FROM information_schema.columns " +
        "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position" }),
    });
    const cols = await r.json();
    if (!r.ok) throw new Error(cols.error);
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
    box.replaceChildren(...parts);
  } catch (e) {
    box.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

highlight();
showHistory();
api("/api/v1/status").then(() => loadSchema()).catch(() => {});
