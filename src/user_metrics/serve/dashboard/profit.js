// The user-metrics dashboard's money and profitability: loaded before app.js, whose helpers (el,
// api, fmt, cell, card, href, go, filterParams, pageWindow, loadPropertyKeys, serverFacts) it
// calls when a page is drawn.
//
// Amounts arrive as exact decimal strings ("12.345678901", "-0.004900000"). They are rounded
// for display on their digits, never through a binary float, so what the page shows is the
// server's figure rounded half to even, and data-value keeps the exact text.
"use strict";

// Digits of a decimal string: sign, integer digits (no leading zeros) and fraction digits.
function decimalParts(text) {
  const match = /^([-+]?)(\d*)(?:\.(\d*))?$/.exec(String(text).trim());
  if (!match || (match[2] === "" && !match[3])) return null;
  return { negative: match[1] === "-", whole: match[2].replace(/^0+/, ""), fraction: match[3] || "" };
}

// Whether a decimal string is below zero (a loss), read on its digits.
function isNegative(text) {
  const parts = text === null || text === undefined ? null : decimalParts(text);
  return Boolean(parts && parts.negative && /[1-9]/.test(parts.whole + parts.fraction));
}

// A decimal string rounded half to even to `digits` fraction digits: [whole, fraction] strings.
function roundDigits(whole, fraction, digits) {
  const padded = fraction.padEnd(digits + 1, "0");
  let kept = (whole || "0") + padded.slice(0, digits);
  const rest = padded.slice(digits);
  const half = rest[0] > "5" || (rest[0] === "5" && (/[1-9]/.test(rest.slice(1)) || Number(kept.at(-1)) % 2 === 1));
  if (half) {
    // Add one to the last kept digit, carrying to the left on the digit string.
    const out = kept.split("");
    let i = out.length - 1;
    while (i >= 0 && out[i] === "9") out[i--] = "0";
    if (i < 0) out.unshift("1");
    else out[i] = String(Number(out[i]) + 1);
    kept = out.join("");
  }
  const cut = kept.length - digits;
  return [kept.slice(0, cut).replace(/^0+(?=\d)/, "") || "0", kept.slice(cut)];
}

// $1,234 (from $100), $12.35, and below a dollar two significant digits with at least cents:
// $0.80, $0.030, $0.0060. Negative amounts: -$1.25. Null: a dash.
function usd(text) {
  if (text === null || text === undefined) return "–";
  const parts = decimalParts(text);
  if (!parts) return "$" + text;
  const { negative, whole, fraction } = parts;
  if (!/[1-9]/.test(whole + fraction)) return "$0";
  let digits;
  if (whole === "") digits = Math.max(2, fraction.search(/[1-9]/) + 2);
  else digits = whole.length >= 3 ? 0 : 2;
  const [intPart, fracPart] = roundDigits(whole, fraction, digits);
  const grouped = intPart.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return (negative ? "-$" : "$") + grouped + (digits ? "." + fracPart : "");
}

// The users table's margin columns, shown when revenue is known for the page's window.
const PROFIT_COLUMNS = [
  ["revenue_usd", "Revenue", "usd", "-"],
  ["margin_usd", "Margin", "usd", "+"],
  ["margin_ratio", "Margin ratio", "pct", "+"],
];

function noRevenue() {
  return el("section", { class: "notice", id: "no-revenue" },
    el("h2", {}, "No revenue is configured"),
    el("p", {}, "This service knows what each user costs, but not what they pay, so it has no margin to " +
      "show (revenue and margin are null, not zero). Add revenue in either of two ways:"),
    el("ul", {},
      el("li", {}, "plan prices in the settings' [billing] section: the property that names the plan " +
        "(plan_property = \"plan\") and a price per plan, per month or per year;"),
      el("li", {}, "imported revenue records: user-metrics revenue import FILE.csv, or POST /api/v1/revenue " +
        "(user id, amount, an instant or a service period).")),
    el("p", { class: "muted" }, "README's “Billing” section has the details. Margins then appear here " +
      "and as columns of the users table."));
}

// Users sorted by margin, least profitable first: the first ten, and every loss among the first 100.
const LOSSES_MAX = 100;

async function profitabilityPage(s) {
  document.title = "Profitability · user-metrics";
  const params = filterParams(s);
  const totals = await api("/api/v1/totals", params);
  const heading = [el("h1", {}, "Profitability"), el("p", { class: "muted", id: "window-text" }, pageWindow(totals))];
  if (totals.revenue_usd === null) return [...heading, noRevenue()];
  const [least, most, keys, facts] = await Promise.all([
    api("/api/v1/users", [...params, ["sort", "margin_usd"], ["limit", LOSSES_MAX]]),
    api("/api/v1/users", [...params, ["sort", "-margin_usd"], ["limit", 10]]),
    loadPropertyKeys(),
    serverFacts(),
  ]);
  const losses = least.users.filter((u) => isNegative(u.margin_usd));
  const lossNote = losses.length === LOSSES_MAX
    ? `The ${LOSSES_MAX} largest losses; sort the users table by margin for the rest.` : null;
  return [
    ...heading,
    el("section", { class: "cards", id: "profit-cards", "aria-label": "Revenue and margin for the window" },
      card("Revenue", usd(totals.revenue_usd), "$" + totals.revenue_usd),
      card("Cost", usd(totals.cost_usd), "$" + totals.cost_usd),
      card("Margin", usd(totals.margin_usd), totals.margin_usd === null ? null : "$" + totals.margin_usd),
      card("Margin ratio", fmt.pct(totals.margin_ratio))),
    marginUsers("least-profitable", "Least profitable users", least.users.slice(0, 10), s, "margin_usd"),
    marginUsers("most-profitable", "Most profitable users", most.users, s, "-margin_usd"),
    marginUsers("losses", "Users whose cost exceeds their revenue", losses, s, "margin_usd", lossNote,
      "No user cost more than they paid in this window."),
    await marginByProperty(s, keys, facts),
  ];
}

function marginUsers(id, title, users, s, sort, note, empty) {
  const heads = ["User", "Requests", "Revenue", "Cost", "Margin", "Margin ratio"];
  return el("section", { class: "panel" },
    el("div", { class: "table-head" }, el("h2", {}, title),
      el("a", { href: href("/", s, { sort }) }, "All users by margin ›")),
    el("div", { class: "scroll" }, el("table", { id },
      el("thead", {}, el("tr", {}, heads.map((h, i) => el("th", { scope: "col", class: i ? "num" : null }, h)))),
      el("tbody", {}, users.map((u) => el("tr", { "data-user": u.user_id === null ? "" : u.user_id,
                                                   class: isNegative(u.margin_usd) ? "loss" : null },
        el("th", { scope: "row" }, u.user_id === null ? el("span", { class: "muted" }, "(no user id)")
          : el("a", { href: href("/users/" + encodeURIComponent(u.user_id), s) }, u.user_id)),
        cell("int", u.requests), cell("usd", u.revenue_usd), cell("usd", u.cost_usd),
        cell("usd", u.margin_usd), cell("pct", u.margin_ratio)))))),
    note ? el("p", { class: "muted" }, note) : null,
    users.length ? null : el("p", { class: "muted" }, empty || "No users in this window."));
}

// Margin per value of the plan property: the server's [billing] plan_property when it names one
// that was recorded, else "plan", else the first key; the picker changes it.
async function marginByProperty(s, keys, facts) {
  if (!keys.length) {
    return el("section", { class: "panel" }, el("h2", {}, "Margin by plan"),
      el("p", { class: "muted" }, "No custom property has been recorded yet (e.g. property.plan on a span)."));
  }
  const configured = facts.plan_property;
  const key = s.key && keys.includes(s.key) ? s.key
    : configured && keys.includes(configured) ? configured : keys.includes("plan") ? "plan" : keys[0];
  const data = await api("/api/v1/properties/" + encodeURIComponent(key), filterParams(s));
  const picker = el("select", { id: "profit-key", "aria-label": "Property", onchange: (event) => go({ key: event.target.value }) },
    keys.map((k) => el("option", { value: k, selected: k === key }, k)));
  const heads = ["Value", "Users", "Revenue", "Cost", "Margin", "Margin ratio"];
  return el("section", { class: "panel" }, el("h2", {}, "Margin by ", picker),
    el("div", { class: "scroll" }, el("table", { id: "margin-by-property" },
      el("thead", {}, el("tr", {}, heads.map((h, i) => el("th", { scope: "col", class: i ? "num" : null }, h)))),
      el("tbody", {}, data.values.map((v) => el("tr", { "data-value": v.value === null ? "" : v.value,
                                                      class: isNegative(v.margin_usd) ? "loss" : null },
        el("th", { scope: "row" }, v.value === null ? el("span", { class: "muted" }, "(not set)") : v.value),
        cell("int", v.users), cell("usd", v.revenue_usd), cell("usd", v.cost_usd),
        cell("usd", v.margin_usd), cell("pct", v.margin_ratio)))))),
    data.truncated ? el("p", { class: "muted" }, `The ${data.values.length} costliest of ${data.total_values} values.`) : null);
}
