// The user-metrics dashboard: plain JavaScript over the service's HTTP JSON API (/api/v1/...).
// Pages: / (users), /users/{id} (one user), /properties (cost per property value), /profitability
// (profit.js: margins per user and plan), /coverage (what each instrumentation scope's spans
// carry, and what no convention reads). The page's state (window or calendar period, time zone,
// filters, sort, search, page) lives in the URL, so every view can be linked.
// Data is only ever inserted as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "user-metrics-read-token";
const PAGE_SIZE = 25;
const PRESETS = ["24h", "7d", "30d"];
// Calendar periods in the page's time zone (the API's since=<name>); ISO months (2026-11) too.
const PERIODS = [["today", "Today"], ["yesterday", "Yesterday"], ["this_week", "This week"],
                 ["last_week", "Last week"], ["this_month", "This month"], ["last_month", "Last month"]];
const MONTH = /^\d{4}-(0[1-9]|1[0-2])$/;
const ZONES = ["UTC", "America/Los_Angeles", "America/Denver", "America/Chicago", "America/New_York",
               "America/Sao_Paulo", "Europe/London", "Europe/Paris", "Europe/Berlin", "Africa/Johannesburg",
               "Asia/Dubai", "Asia/Kolkata", "Asia/Kathmandu", "Asia/Singapore", "Asia/Shanghai", "Asia/Tokyo",
               "Australia/Sydney", "Pacific/Auckland"];
const EVER = [["since", "0001-01-01T00:00:00Z"], ["until", "9999-12-31T00:00:00Z"]]; // every request stored
const COLUMNS = [
  // [field, heading, format, default direction when first sorted]
  ["user_id", "User", null, "+"],
  ["requests", "Requests", "int", "-"],
  ["cost_usd", "Cost", "usd", "-"],
  ["total_tokens", "Tokens", "int", "-"],
  ["active_days", "Active days", "int", "-"],
  ["first_active", "First active", "time", "+"],
  ["last_active", "Last active", "time", "-"],
  ["avg_requests_per_active_day", "Requests / active day", "dec", "-"],
  ["avg_tokens_per_request", "Tokens / request", "dec", "-"],
  ["error_rate", "Error rate", "pct", "-"],
  ["p95_latency_ms", "p95 latency", "ms", "-"],
];

// ---- small helpers ------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const fmt = {
  int: (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US")),
  dec: (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US", { maximumFractionDigits: 1 })),
  usd: (v) => usd(v), // profit.js: rounded on the decimal digits, never through a float
  pct: (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %"),
  ms: (v) => (v === null || v === undefined ? "–" : v >= 1000 ? (v / 1000).toFixed(2) + " s" : Math.round(v) + " ms"),
  time: (v) => (v ? v.replace("T", " ").slice(0, 16) : "–"),
  // A bucket's day on the page's calendar: a local day starts at 18:30 UTC in Asia/Kolkata.
  day: (v) => (pageZone() === "UTC" ? v.slice(0, 10) : wallClock(v, pageZone()).slice(0, 10)),
};

function cell(format, value) {
  const text = format ? fmt[format](value) : value;
  // Money is exact decimal text in the API: keep it in the tooltip, and in data-value for tests.
  return el("td", { class: format ? "num" : null, title: format === "usd" && value ? "$" + value : null,
                    "data-value": value === null ? "" : value }, text);
}

class AuthError extends Error {
  constructor(refused, message) {
    super(message);
    this.refused = refused;
  }
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// ---- the read token -----------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function takeTokenFromFragment() {
  // /#token=... in the address (a fragment never reaches a server or its logs)
  const match = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(history.state, "", location.pathname + location.search);
  }
}

function showAuth(error) {
  const box = document.getElementById("auth");
  document.getElementById("auth-message").textContent = error.refused
    ? "The read token was refused by the server (401 Unauthorized). Check it against the server's " +
      "read_tokens and enter it again."
    : "This server needs a read token to show its data. Enter one of its read_tokens " +
      "(the token the CLI takes as --token or USER_METRICS_TOKEN).";
  box.hidden = false;
  document.getElementById("main").replaceChildren();
  document.getElementById("token-input").focus();
}

// ---- addresses ----------------------------------------------------------------------------------

// The dashboard may sit under a proxy's path prefix (a proxy serving this server's / at /usage/).
// The server gives each page a <base href> pointing at its own root ("./" or "../"), so ROOT
// is "/" when served directly and "/usage/" behind that proxy; every address is made from it.
const ROOT = new URL(document.baseURI).pathname;

function local(path) {
  // "/users/ada" -> ROOT + "users/ada"
  return ROOT + path.replace(/^\//, "");
}

function route() {
  // the page's path as the server sees it: "/", "/users/ada", "/properties"
  return location.pathname.startsWith(ROOT) ? "/" + location.pathname.slice(ROOT.length) : location.pathname;
}

// ---- the API ------------------------------------------------------------------------------------

async function api(path, params) {
  const url = new URL(local(path), location.origin);
  for (const [name, value] of params || []) url.searchParams.append(name, value);
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  let response;
  try {
    response = await fetch(url, { headers, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, "cannot reach the server: " + err.message);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (response.status === 401) throw new AuthError(Boolean(token()), body && body.error);
  if (!response.ok) throw new ApiError(response.status, (body && body.error) || response.statusText);
  return body;
}

// ---- page state in the URL ----------------------------------------------------------------------

function isPeriod(name) {
  return PERIODS.some(([value]) => value === name) || MONTH.test(name || "");
}

function state() {
  const q = new URLSearchParams(location.search);
  // ?since=7d (the API's own spelling, as in a shared link) is the preset of that name;
  // ?since=this_month or ?since=2026-11 a calendar period.
  const preset = !q.get("until") && PRESETS.includes(q.get("since")) ? q.get("since") : null;
  const period = !q.get("until") && isPeriod(q.get("since")) ? q.get("since") : null;
  const since = preset || period ? null : q.get("since");
  return {
    window: preset || (period ? "period" : since ? "custom" : PRESETS.includes(q.get("window")) ? q.get("window") : "30d"),
    period,
    tz: q.get("tz") || "",
    since,
    until: since ? q.get("until") : null,
    properties: q.getAll("property"),
    model: q.get("model") || "",
    sort: q.get("sort") || "-cost_usd",
    search: q.get("q") || "",
    page: Math.max(1, parseInt(q.get("page") || "1", 10) || 1),
    key: q.get("key"),
  };
}

// The window and filters every API call takes, from the page state.
function filterParams(s) {
  const since = s.window === "custom" ? s.since : s.window === "period" ? s.period : s.window;
  const params = [["since", since]];
  if (s.window === "custom" && s.until) params.push(["until", s.until]);
  // Without a zone of its own the page sends none, and the server reads the window in its timezone.
  if (s.tz) params.push(["tz", s.tz]);
  for (const p of s.properties) params.push(["property", p]);
  if (s.model) params.push(["model", s.model]);
  return params;
}

// Shared parameters (window, filters) carried by every link between pages.
function sharedQuery(s) {
  const q = new URLSearchParams();
  if (s.window === "custom") {
    q.set("since", s.since);
    if (s.until) q.set("until", s.until);
  } else if (s.window === "period") {
    q.set("since", s.period);
  } else if (s.window !== "30d") {
    q.set("window", s.window);
  }
  for (const p of s.properties) q.append("property", p);
  if (s.model) q.set("model", s.model);
  if (s.tz) q.set("tz", s.tz);
  return q;
}

function href(path, s, extra) {
  const q = sharedQuery(s);
  for (const [name, value] of Object.entries(extra || {})) if (value) q.set(name, value);
  const text = q.toString();
  return local(path) + (text ? "?" + text : "");
}

function go(changes, replace) {
  const q = new URLSearchParams(location.search);
  for (const [name, value] of Object.entries(changes)) {
    q.delete(name);
    for (const v of [].concat(value)) if (v !== null && v !== undefined && v !== "") q.append(name, v);
  }
  const text = q.toString();
  const url = location.pathname + (text ? "?" + text : "");
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
}

// ---- controls -----------------------------------------------------------------------------------

function syncControls(s, facts) {
  const picker = document.getElementById("window");
  picker.value = s.window;
  syncPeriod(s);
  syncZone(s, facts);
  const custom = document.getElementById("custom-window");
  custom.hidden = s.window !== "custom";
  if (s.window === "custom") {
    document.getElementById("since").value = (s.since || "").slice(0, 16);
    document.getElementById("until").value = (s.until || "").slice(0, 16);
  }
  const chips = document.getElementById("filters");
  const chip = (text, remove) =>
    el("span", { class: "chip" }, text,
      el("button", { type: "button", title: "Remove filter " + text, "aria-label": "Remove filter " + text,
                     onclick: remove }, "×"));
  chips.replaceChildren(
    ...s.properties.map((p) => chip(p, () => go({ property: s.properties.filter((x) => x !== p), page: null }))),
    ...(s.model ? [chip("model=" + s.model, () => go({ model: null, page: null }))] : []),
  );
  document.getElementById("nav-users").href = href("/", s);
  document.getElementById("nav-properties").href = href("/properties", s, { key: s.key });
  document.getElementById("nav-coverage").href = href("/coverage", s);
  document.getElementById("nav-profitability").href = href("/profitability", s, { key: s.key });
  document.getElementById("forget-token").hidden = !token();
}

// The calendar periods, and the last 12 months in the page's zone; the one shown selected.
function syncPeriod(s) {
  const now = localParts(new Date(), pageZone());
  const months = [];
  for (let i = 0; i < 12; i++) {
    const total = now.year * 12 + now.month - 1 - i;
    const [year, month] = [Math.floor(total / 12), (total % 12) + 1];
    const name = `${year}-${String(month).padStart(2, "0")}`;
    const label = new Date(Date.UTC(year, month - 1, 15)).toLocaleString("en-US", { month: "long", year: "numeric", timeZone: "UTC" });
    months.push([name, label]);
  }
  if (s.period && MONTH.test(s.period) && !months.some(([m]) => m === s.period)) months.push([s.period, s.period]);
  const select = document.getElementById("period");
  select.replaceChildren(
    el("option", { value: "" }, "Calendar period…"),
    ...PERIODS.map(([value, label]) => el("option", { value }, label)),
    el("optgroup", { label: "Month" }, months.map(([value, label]) => el("option", { value }, label))));
  select.value = s.period || "";
}

// The zone choice: the server's timezone by default, common zones, the browser's, or any name.
function syncZone(s, facts) {
  const server = facts.timezone || "UTC";
  const browserZone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const zones = [...ZONES];
  for (const z of [browserZone, s.tz]) if (z && !zones.includes(z)) zones.push(z);
  const select = document.getElementById("tz");
  select.replaceChildren(
    el("option", { value: "" }, `Server's (${server})`),
    ...zones.map((z) => el("option", { value: z }, z === browserZone ? z + " (this browser)" : z)),
    el("option", { value: "other" }, "Other…"));
  select.value = s.tz;
  document.getElementById("tz-form").hidden = true;
  document.getElementById("zone-note").textContent = pageZone() === "UTC"
    ? "Times are UTC."
    : `Windows, calendar periods and days are in ${pageZone()}; times in tables are UTC.`;
}

let facts = null; // a promise of what /healthz says about the server (its timezone), asked for once

function serverFacts() {
  if (facts === null) {
    facts = fetch(local("/healthz"), { headers: { Accept: "application/json" }, cache: "no-store" })
      .then((response) => (response.ok ? response.json() : {}))
      .catch(() => ({}));
  }
  return facts;
}

let knownFacts = {}; // the answer of serverFacts(), once it came

// The zone the page's windows are read in: its own choice, else the server's timezone, else UTC.
function pageZone() {
  return state().tz || knownFacts.timezone || "UTC";
}

// Year, month, day, hour, minute of an instant on the wall clock of `zone` (UTC if it is unknown).
function localParts(date, zone) {
  let parts;
  try {
    parts = new Intl.DateTimeFormat("en-US", { timeZone: zone, year: "numeric", month: "numeric", day: "numeric",
      hour: "numeric", minute: "numeric", hourCycle: "h23" }).formatToParts(date);
  } catch (err) {
    return localParts(date, "UTC");
  }
  const get = (type) => Number(parts.find((p) => p.type === type).value);
  return { year: get("year"), month: get("month"), day: get("day"), hour: get("hour"), minute: get("minute") };
}

let propertyKeys = null; // a promise of the recorded property keys, asked for once

function loadPropertyKeys() {
  if (propertyKeys === null) {
    propertyKeys = api("/api/v1/properties").then(
      ({ keys }) => {
        const select = document.getElementById("filter-key");
        if (keys.length) select.replaceChildren(...keys.map((k) => el("option", { value: k }, k)));
        return keys;
      },
      (error) => {
        propertyKeys = null;
        throw error;
      },
    );
  }
  return propertyKeys;
}

// The values offered for a filter: asked for when the value box is used, not on every page load
// (a breakdown over the window costs as much as the page itself).
async function loadFilterValues() {
  const key = document.getElementById("filter-key").value;
  const list = document.getElementById("filter-values");
  if (!key) return list.replaceChildren();
  const data = await api("/api/v1/properties/" + encodeURIComponent(key), filterParams(state()));
  list.replaceChildren(...data.values.filter((v) => v.value !== null).map((v) => el("option", { value: v.value })));
}

function wireControls() {
  document.getElementById("window").addEventListener("change", (event) => {
    const value = event.target.value;
    if (value === "custom") {
      document.getElementById("custom-window").hidden = false;
      const until = new Date();
      const since = new Date(until.getTime() - 7 * 86400e3);
      document.getElementById("since").value = since.toISOString().slice(0, 16);
      document.getElementById("until").value = until.toISOString().slice(0, 16);
      return;
    }
    go({ window: value === "30d" ? null : value, since: null, until: null, page: null });
  });
  document.getElementById("period").addEventListener("change", (event) => {
    if (event.target.value) go({ window: null, since: event.target.value, until: null, page: null });
  });
  document.getElementById("tz").addEventListener("change", (event) => {
    if (event.target.value !== "other") return go({ tz: event.target.value || null, page: null });
    document.getElementById("tz-form").hidden = false;
    document.getElementById("tz-text").focus();
  });
  document.getElementById("tz-form").addEventListener("submit", (event) => {
    event.preventDefault();
    go({ tz: document.getElementById("tz-text").value.trim() || null, page: null });
  });
  document.getElementById("custom-window").addEventListener("submit", (event) => {
    event.preventDefault();
    const since = document.getElementById("since").value;
    const until = document.getElementById("until").value;
    go({ window: null, since: since + ":00Z", until: until ? until + ":00Z" : null, page: null });
  });
  document.getElementById("filter-key").addEventListener("change", () => loadFilterValues().catch(fail));
  document.getElementById("filter-value").addEventListener("focus", () => loadFilterValues().catch(fail));
  document.getElementById("add-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = document.getElementById("filter-key").value;
    const value = document.getElementById("filter-value").value;
    if (!key) return;
    const rest = state().properties.filter((p) => !p.startsWith(key + "="));
    document.getElementById("filter-value").value = "";
    go({ property: [...rest, key + "=" + value], page: null });
  });
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token-input").value.trim());
    document.getElementById("token-input").value = "";
    propertyKeys = null;
    render();
  });
  document.getElementById("forget-token").addEventListener("click", (event) => {
    event.preventDefault();
    sessionStorage.removeItem(TOKEN_KEY);
    propertyKeys = null;
    render();
  });
  window.addEventListener("popstate", render);
}

// ---- rendering ----------------------------------------------------------------------------------

let generation = 0;

function fail(error) {
  if (error instanceof AuthError) return showAuth(error);
  const box = document.getElementById("error");
  box.textContent = error instanceof ApiError && error.status
    ? `The server answered ${error.status}: ${error.message}`
    : String(error.message || error);
  box.hidden = false;
}

async function render() {
  const mine = ++generation;
  const s = state();
  document.getElementById("auth").hidden = true;
  document.getElementById("error").hidden = true;
  knownFacts = await serverFacts();
  if (mine !== generation) return;
  syncControls(s, knownFacts);
  const main = document.getElementById("main");
  const path = route();
  let page;
  if (path === "/" || path === "/users" || path === "/users/") page = usersPage;
  else if (path.startsWith("/users/")) page = userPage;
  else if (path === "/properties") page = propertiesPage;
  else if (path === "/coverage") page = coveragePage;
  else if (path === "/profitability") page = profitabilityPage;
  else page = async () => [el("h1", {}, "Not found"), el("p", {}, "No page at " + path + ". "), el("a", { href: local("/") }, "Users")];
  document.body.dataset.state = "loading";
  try {
    const [, nodes] = await Promise.all([loadPropertyKeys(), page(s)]);
    if (mine !== generation) return; // a newer render has started
    main.replaceChildren(...nodes);
    document.body.dataset.state = "ready";
  } catch (error) {
    if (mine !== generation) return;
    main.replaceChildren();
    document.body.dataset.state = "error";
    fail(error);
  }
}

function windowText(data) {
  const zone = pageZone();
  if (zone === "UTC") return `${fmt.time(data.since)} – ${fmt.time(data.until)} UTC`;
  return `${wallClock(data.since, zone)} – ${wallClock(data.until, zone)} ${zone}`;
}

// "2026-11-30 18:54": an instant (ISO text) on the wall clock of `zone`.
function wallClock(text, zone) {
  const p = localParts(new Date(text), zone);
  const two = (n) => String(n).padStart(2, "0");
  return `${p.year}-${two(p.month)}-${two(p.day)} ${two(p.hour)}:${two(p.minute)}`;
}

// The page's window as the server read it; a custom one also fills the From/To boxes, so a
// since of 12h or an instant with an offset shows what it meant (the boxes are minutes, UTC).
function pageWindow(data) {
  if (state().window === "custom") {
    document.getElementById("since").value = data.since.slice(0, 16);
    document.getElementById("until").value = data.until.slice(0, 16);
  }
  return windowText(data);
}

function card(label, value, title) {
  return el("div", { class: "card", title: title || null }, el("div", { class: "label" }, label),
            el("div", { class: "value" }, value));
}

// ---- the users page -----------------------------------------------------------------------------

async function usersPage(s) {
  const params = filterParams(s);
  const list = [...params, ["sort", s.sort], ["limit", PAGE_SIZE], ["offset", (s.page - 1) * PAGE_SIZE]];
  if (s.search) list.push(["search", s.search]);
  // Anomaly detection reads a week of history (about a second on 10M requests): its panel is
  // filled in when it arrives, without holding up the table.
  const unusual = api("/api/v1/anomalies");
  unusual.catch(() => {}); // handled by the panel; this only marks it handled if the page fails first
  const [totals, users] = await Promise.all([api("/api/v1/totals", params), api("/api/v1/users", list)]);
  document.title = "Users · user-metrics";
  const heading = [el("h1", {}, "Users"), el("p", { class: "muted", id: "window-text" }, pageWindow(totals))];
  if (!totals.requests && !(await api("/api/v1/totals", EVER)).requests) {
    return [...heading, gettingStarted()];
  }
  return [
    ...heading,
    totalsCards(totals),
    anomaliesPanel(unusual, s),
    // Revenue, margin and margin ratio (beside cost) only when revenue is known for the window.
    usersTable(users, s, totals.revenue_usd === null ? COLUMNS
      : COLUMNS.flatMap((column) => (column[0] === "cost_usd" ? [column, ...PROFIT_COLUMNS] : [column]))),
  ];
}

// A service that has stored nothing yet says how to send it spans. The page knows only this
// server's address; the OTLP ports are the defaults, and the service logs the ones it uses.
function gettingStarted() {
  const host = location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname;
  const endpoint = (port) => `${location.protocol}//${host}:${port}`;
  return el("section", { class: "panel", id: "getting-started" },
    el("h2", {}, "No requests yet"),
    el("p", {}, "This service has not stored any LLM request. Point your application's OpenTelemetry " +
      "exporter at it, with the environment variables of any OpenTelemetry SDK:"),
    el("pre", {}, `OTEL_EXPORTER_OTLP_ENDPOINT=${endpoint(4317)}\nOTEL_EXPORTER_OTLP_PROTOCOL=grpc`),
    el("p", {}, `or ${endpoint(4318)} with OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf. These are the ` +
      "default ports; the service's first log line names the ones it listens on. Put user.id on the " +
      "LLM call's span, or on an ancestor such as the request handler's, to count requests per user."),
    el("p", { class: "muted" }, "README's “Sending spans” has the details and a Collector " +
      "configuration. To see this dashboard full of data first, run user-metrics demo."));
}

function totalsCards(t) {
  const errorRate = t.requests ? t.errors / t.requests : null;
  return el("section", { class: "cards", id: "totals", "aria-label": "Totals for the window" },
    card("Users", fmt.int(t.users)),
    card("Requests", fmt.int(t.requests)),
    card("Cost", fmt.usd(t.cost_usd), "$" + t.cost_usd),
    ...(t.revenue_usd === null ? [] : [card("Revenue", fmt.usd(t.revenue_usd), "$" + t.revenue_usd),
                                       card("Margin", fmt.usd(t.margin_usd), "$" + t.margin_usd)]),
    card("Tokens", fmt.int(t.total_tokens)),
    card("Error rate", fmt.pct(errorRate)),
    card("Avg latency", fmt.ms(t.avg_latency_ms)),
    card("Requests without a user", fmt.int(t.anonymous_requests)));
}

function anomaliesPanel(answer, s) {
  const section = el("section", { class: "panel", id: "anomalies", "data-state": "loading" },
    el("h2", {}, "Unusual in the last hour"), el("p", { class: "muted" }, "Looking for unusual users…"));
  answer.then(
    (data) => {
      section.replaceChildren(...anomalyFindings(data, s));
      section.dataset.state = "ready";
    },
    (error) => {
      section.lastChild.textContent = "Could not look for unusual users: " + error.message;
      section.dataset.state = "error";
    },
  );
  return section;
}

function anomalyFindings(data, s) {
  const section = [el("h2", {}, "Unusual in the last hour")];
  if (!data.findings.length) {
    section.push(el("p", { class: "muted" }, "No user is unusual in " + windowText(data) + "."));
    return section;
  }
  const names = { requests: "requests", cost_usd: "cost", tokens_per_request: "tokens per request", error_rate: "error rate" };
  const show = (metric, v) => (metric === "cost_usd" ? fmt.usd(v) : metric === "error_rate" ? fmt.pct(v) : fmt.dec(v));
  section.push(el("ul", {}, data.findings.map((f) =>
    el("li", {},
      el("a", { href: href("/users/" + encodeURIComponent(f.user_id), s) }, f.user_id), " — ",
      `${names[f.metric] || f.metric} ${show(f.metric, f.observed)}`,
      f.method === "own_history"
        ? ` against a usual ${show(f.metric, f.baseline)} (score ${f.score.toFixed(1)})`
        : ` — a new user; the 99.9th percentile of all users is ${show(f.metric, f.baseline)}`))));
  return section;
}

function usersTable(page, s, columns) {
  const field = s.sort.replace(/^[-+]/, "");
  const descending = s.sort.startsWith("-");
  let timer = null;
  const search = el("input", { type: "search", id: "search", placeholder: "Search user id", value: s.search,
    "aria-label": "Search user id",
    oninput: (event) => {
      clearTimeout(timer);
      timer = setTimeout(() => go({ q: event.target.value.trim(), page: null }, true), 250);
    } });
  const head = el("tr", {}, columns.map(([name, title, format, first]) => {
    const active = name === field;
    const next = active ? (descending ? "+" : "-") : first;
    return el("th", { scope: "col", class: format ? "num" : null, "data-field": name,
                      "aria-sort": active ? (descending ? "descending" : "ascending") : "none" },
      el("button", { type: "button", onclick: () => go({ sort: (next === "-" ? "-" : "") + name, page: null }) },
        title, active ? (descending ? " ▼" : " ▲") : ""));
  }));
  const rows = page.users.map((u) => el("tr", { "data-user": u.user_id === null ? "" : u.user_id },
    columns.map(([name, , format]) => {
      if (name !== "user_id") return cell(format, u[name]);
      return el("th", { scope: "row" }, u.user_id === null
        ? el("span", { class: "muted", title: "requests that named no user" }, "(no user id)")
        : el("a", { href: href("/users/" + encodeURIComponent(u.user_id), s) }, u.user_id));
    })));
  const first = page.total ? (s.page - 1) * PAGE_SIZE + 1 : 0;
  const last = (s.page - 1) * PAGE_SIZE + page.users.length;
  const pager = el("nav", { class: "pager", "aria-label": "Pages" },
    el("button", { type: "button", id: "prev", disabled: s.page <= 1, onclick: () => go({ page: s.page - 1 }) }, "‹ Previous"),
    el("span", { id: "page-text" }, `${first}–${last} of ${fmt.int(page.total)} users`),
    el("button", { type: "button", id: "next", disabled: last >= page.total, onclick: () => go({ page: s.page + 1 }) }, "Next ›"));
  return el("section", { class: "panel" },
    el("div", { class: "table-head" }, el("h2", {}, "Per user"), search),
    el("div", { class: "scroll" }, el("table", { id: "users" }, el("thead", {}, head), el("tbody", {}, rows))),
    page.users.length ? null : el("p", { class: "muted" }, s.search ? `No user id contains “${s.search}”.` : "No requests in this window."),
    pager);
}

// ---- one user -----------------------------------------------------------------------------------

async function userPage(s) {
  const id = decodeURIComponent(route().slice("/users/".length));
  const path = "/api/v1/users/" + encodeURIComponent(id);
  const params = filterParams(s);
  let user, series, recent;
  try {
    [user, series, recent] = await Promise.all([
      api(path, params),
      api(path + "/timeseries", [...params, ["bucket", "day"]]),
      api(path + "/requests", [...params, ["limit", 20]]),
    ]);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      return [el("h1", {}, id), el("p", { class: "notice" }, error.message), el("a", { href: href("/", s) }, "‹ All users")];
    }
    throw error;
  }
  document.title = id + " · user-metrics";
  return [
    el("p", {}, el("a", { href: href("/", s) }, "‹ All users")),
    el("h1", { id: "user-id" }, id),
    el("p", { class: "muted" }, pageWindow(series)),
    el("section", { class: "cards", id: "user-cards" },
      card("Requests", fmt.int(user.requests)),
      card("Cost", fmt.usd(user.cost_usd), user.cost_usd === null ? "no known price" : "$" + user.cost_usd),
      ...(user.revenue_usd === null ? [] : [card("Revenue", fmt.usd(user.revenue_usd), "$" + user.revenue_usd),
                                            card("Margin", fmt.usd(user.margin_usd), "$" + user.margin_usd)]),
      card("Tokens", fmt.int(user.total_tokens)),
      card("Active days", fmt.int(user.active_days)),
      card("Requests / active day", fmt.dec(user.avg_requests_per_active_day)),
      card("Tokens / request", fmt.dec(user.avg_tokens_per_request)),
      card("Error rate", fmt.pct(user.error_rate)),
      card("p50 / p95 latency", fmt.ms(user.p50_latency_ms) + " / " + fmt.ms(user.p95_latency_ms)),
      card("First active", fmt.time(user.first_active)),
      card("Last active", fmt.time(user.last_active))),
    el("section", { class: "charts" },
      chart("requests-chart", "Requests per day", series.points, (p) => p.requests, fmt.int),
      chart("cost-chart", "Cost per day", series.points, (p) => Number(p.cost_usd), fmt.usd)),
    modelsTable(user, s),
    recentTable(recent),
  ];
}

function chart(id, title, points, value, format) {
  // Drawn at the size it is shown (two charts side by side, or one on a narrow screen), so the
  // labels keep their size.
  const columns = matchMedia("(max-width: 700px)").matches ? 1 : 2;
  const width = Math.round(Math.max(260, document.getElementById("main").clientWidth / columns - 40));
  const height = 180, left = 8, bottom = 22, top = 18;
  const values = points.map(value);
  const max = Math.max(...values, 0) || 1;
  const step = (width - 2 * left) / Math.max(points.length, 1);
  const bars = points.map((p, i) => {
    const h = ((height - bottom - top) * values[i]) / max;
    return svg("rect", { class: "bar", x: left + i * step + step * 0.1, y: height - bottom - h,
                         width: Math.max(step * 0.8, 1), height: Math.max(h, values[i] > 0 ? 1 : 0),
                         "data-day": fmt.day(p.start), "data-value": values[i] },
      svg("title", {}, `${fmt.day(p.start)}: ${format(values[i])}`));
  });
  const labels = points.length
    ? [svg("text", { x: left, y: height - 6, class: "axis" }, fmt.day(points[0].start)),
       svg("text", { x: width - left, y: height - 6, class: "axis", "text-anchor": "end" }, fmt.day(points[points.length - 1].start)),
       svg("text", { x: left, y: 12, class: "axis" }, "max " + format(Math.max(...values, 0)))]
    : [];
  return el("figure", { class: "panel chart", id },
    el("figcaption", {}, title),
    svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title },
      svg("line", { x1: left, x2: width - left, y1: height - bottom, y2: height - bottom, class: "baseline" }),
      bars, labels));
}

// A model links to the users table filtered by it (requests that asked for it or were answered by it).
function modelsTable(user, s) {
  return el("section", { class: "panel" }, el("h2", {}, "Models"),
    el("div", { class: "scroll" }, el("table", { id: "models" },
      el("thead", {}, el("tr", {}, ["Provider", "Model", "Requests", "Cost", "Unpriced"].map((h, i) =>
        el("th", { scope: "col", class: i > 1 ? "num" : null }, h)))),
      el("tbody", {}, user.models.map((m) => el("tr", {},
        el("td", {}, m.provider || "–"),
        el("td", {}, m.model ? el("a", { href: href("/", s, { model: m.model }), class: "model" }, m.model) : "–"),
        cell("int", m.requests), cell("usd", m.cost_usd), cell("int", m.unpriced_requests)))))),
    user.models.length ? null : el("p", { class: "muted" }, "No requests in this window."));
}

function recentTable(recent) {
  return el("section", { class: "panel" }, el("h2", {}, "Latest requests"),
    el("div", { class: "scroll" }, el("table", { id: "recent" },
      el("thead", {}, el("tr", {}, ["Time (UTC)", "Model", "Input", "Output", "Cost", "Latency", "Status", "Properties"].map((h, i) =>
        el("th", { scope: "col", class: i >= 2 && i <= 5 ? "num" : null }, h)))),
      el("tbody", {}, recent.requests.map((r) => el("tr", { class: r.status === "error" ? "failed" : null },
        el("td", { title: r.start_time }, fmt.time(r.start_time)),
        el("td", {}, r.model || "–"),
        cell("int", r.input_tokens), cell("int", r.output_tokens), cell("usd", r.cost_usd), cell("ms", r.duration_ms),
        el("td", {}, r.status === "error" ? "error" + (r.error_type ? ": " + r.error_type : "") : "ok"),
        el("td", { class: "props" }, Object.entries(r.properties).map(([k, v]) => k + "=" + v).join(" "))))))),
    recent.requests.length ? null : el("p", { class: "muted" }, "No requests in this window."));
}

// ---- properties ---------------------------------------------------------------------------------

async function propertiesPage(s) {
  document.title = "Properties · user-metrics";
  const keys = await loadPropertyKeys();
  if (!keys.length) {
    return [el("h1", {}, "Properties"),
            el("p", { class: "muted" }, "No custom property has been recorded yet (e.g. property.plan on a span).")];
  }
  const key = s.key && keys.includes(s.key) ? s.key : keys.includes("plan") ? "plan" : keys[0];
  const data = await api("/api/v1/properties/" + encodeURIComponent(key), filterParams(s));
  const picker = el("select", { id: "property-key", "aria-label": "Property",
                                onchange: (event) => go({ key: event.target.value }) },
    keys.map((k) => el("option", { value: k, selected: k === key }, k)));
  const most = Math.max(...data.values.map((v) => Number(v.avg_cost_per_user)), 0) || 1;
  return [
    el("h1", {}, "Cost per user by ", picker),
    el("p", { class: "muted" }, pageWindow(data)),
    ...(data.truncated ? [el("p", { class: "muted", id: "values-cut" },
      `The ${fmt.int(data.values.length)} costliest of ${fmt.int(data.total_values)} values.`)] : []),
    el("section", { class: "panel" }, el("div", { class: "scroll" }, el("table", { id: "property-values" },
      el("thead", {}, el("tr", {}, ["Value", "Users", "Requests", "Cost", "Avg cost per user", "", "Costliest user"].map((h, i) =>
        el("th", { scope: "col", class: i >= 1 && i <= 4 ? "num" : null }, h)))),
      el("tbody", {}, data.values.map((v) => el("tr", { "data-value": v.value === null ? "" : v.value },
        el("th", { scope: "row" }, v.value === null ? el("span", { class: "muted" }, "(not set)")
          : el("a", { href: usersWith(s, key + "=" + v.value), title: "Users with " + key + "=" + v.value }, v.value)),
        cell("int", v.users), cell("int", v.requests), cell("usd", v.cost_usd), cell("usd", v.avg_cost_per_user),
        el("td", { class: "meter", "aria-hidden": "true" }, meter(Number(v.avg_cost_per_user) / most)),
        el("td", {}, v.most_costly_user === null ? "–"
          : el("a", { href: href("/users/" + encodeURIComponent(v.most_costly_user), s) }, v.most_costly_user)))))))),
  ];
}

function usersWith(s, property) {
  const q = sharedQuery(s);
  if (!q.getAll("property").includes(property)) q.append("property", property);
  return local("/") + "?" + q.toString();
}

function meter(share) {
  // The Content-Security-Policy forbids style attributes; the CSSOM is allowed.
  const bar = el("span", { "data-share": share.toFixed(3) });
  bar.style.width = (100 * share).toFixed(1) + "%";
  return bar;
}

// ---- coverage -----------------------------------------------------------------------------------

// Per service and instrumentation scope: the share of stored requests with a user, a session and a
// cost in the window; then what the running service saw since it started: spans that look like
// LLM calls but were skipped (names, keys), and keys on LLM spans that no convention reads.
async function coveragePage(s) {
  document.title = "Coverage · user-metrics";
  const data = await api("/api/v1/coverage", [...filterParams(s), ["limit", 25]]);
  const scopeCells = (e) => [el("th", { scope: "row" }, e.service_name || "–"),
                             el("td", {}, e.scope_name || "(none)"), el("td", {}, e.scope_version || "–")];
  const share = (value) => el("td", { class: "num" + (value < 1 ? " short" : ""), "data-value": value }, fmt.pct(value));
  const keys = (list) => el("td", { class: "props" }, list.map((k) => k.key + " ×" + k.count).join(", ") || "–");
  const stored = el("section", { class: "panel" }, el("h2", {}, "Stored requests"),
    el("div", { class: "scroll" }, el("table", { id: "coverage-scopes" },
      el("thead", {}, el("tr", {}, ["Service", "Scope", "Version", "Requests", "With user", "With session", "With cost"].map((h, i) =>
        el("th", { scope: "col", class: i >= 3 ? "num" : null }, h)))),
      el("tbody", {}, data.scopes.map((e) => el("tr", {}, scopeCells(e), cell("int", e.requests),
        share(e.user_share), share(e.session_share), share(e.cost_share)))))),
    data.scopes.length ? null : el("p", { class: "muted" }, "No requests in this window."));
  const seen = el("section", { class: "panel" }, el("h2", {}, "Spans seen since " + fmt.time(data.live_since) + " UTC"),
    el("div", { class: "scroll" }, el("table", { id: "coverage-spans" },
      el("thead", {}, el("tr", {}, ["Service", "Scope", "Version", "LLM spans", "LLM-looking, skipped", "Skipped spans",
                                     "Their keys", "Keys no convention reads"].map((h, i) =>
        el("th", { scope: "col", class: i === 3 || i === 4 ? "num" : null }, h)))),
      el("tbody", {}, data.spans.map((e) => el("tr", { class: e.llm_like_skipped ? "failed" : null }, scopeCells(e),
        cell("int", e.llm_spans), cell("int", e.llm_like_skipped),
        keys(e.skipped_span_names), keys(e.skipped_keys), keys(e.unread_keys)))))),
    data.spans.length ? null : el("p", { class: "muted" }, "No spans seen yet."));
  return [
    el("h1", {}, "Coverage"),
    el("p", { class: "muted" }, pageWindow(data) + ". What each instrumentation library's spans carry: " +
       "a share under 100 % means requests without a user, a session or a known cost."),
    stored,
    data.live ? seen : el("p", { class: "notice" }, "The span report is kept by a running service."),
  ];
}

// ---- start --------------------------------------------------------------------------------------

takeTokenFromFragment();
wireControls();
render();
