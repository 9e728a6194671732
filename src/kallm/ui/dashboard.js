// kallm's dashboard: reads /stats and the management API with the admin token, draws its
// plots as SVG, and refreshes every 5 s. Everything shown is set as text, never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const OUTCOMES = ["hit", "miss", "bypass", "error"];
const DECISIONS = ["hit", "rejected", "below"];
let token = sessionStorage.getItem("kallm-token");

function el(name, attributes = {}, text = null) {
  const node = document.createElement(name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  return node;
}

function svg(name, attributes = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

function say(text) {
  document.getElementById("status").textContent = text;
}

async function call(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${token}` },
  });
  if (response.status === 401) {
    sessionStorage.removeItem("kallm-token");
    token = null;
    showLogin("That token was refused.");
    throw new Error("unauthorized");
  }
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

function showLogin(message) {
  document.getElementById("dashboard").hidden = true;
  document.getElementById("login").hidden = false;
  say(message);
  document.getElementById("token").focus();
}

function rows(table, lines) {
  const body = document.querySelector(`#${table} tbody`);
  body.replaceChildren(...lines.map((cells) => {
    const row = el("tr");
    for (const cell of cells) {
      const td = el("td");
      if (cell instanceof Node) td.append(cell); else td.textContent = cell;
      row.append(td);
    }
    return row;
  }));
}

function bars(target, label, groups, series, height = 160) {
  // Stacked bars, one a group; `groups`: [{label, values: {series: n}}].
  const width = 640, left = 36, bottom = 18;
  const top = Math.max(1, ...groups.map((g) => series.reduce((s, k) => s + (g.values[k] || 0), 0)));
  const step = (width - left) / Math.max(groups.length, 1);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  chart.append(Object.assign(svg("text", { x: 0, y: 10, class: "axis" }), { textContent: String(top) }));
  chart.append(Object.assign(svg("text", { x: 0, y: height - bottom, class: "axis" }), { textContent: "0" }));
  groups.forEach((group, i) => {
    let y = height - bottom;
    for (const name of series) {
      const value = group.values[name] || 0;
      if (!value) continue;
      const h = (value / top) * (height - bottom - 12);
      y -= h;
      const bar = svg("rect", { x: left + i * step + 1, y, width: Math.max(step - 2, 1), height: h, class: `${name}-fill` });
      bar.append(Object.assign(svg("title"), { textContent: `${group.label}: ${value} ${name}` }));
      chart.append(bar);
    }
    if (group.tick) chart.append(Object.assign(svg("text", { x: left + i * step, y: height - 4, class: "axis" }), { textContent: group.label }));
  });
  document.getElementById(target).replaceChildren(chart);
}

function shown(stat, value) {
  if (stat === "hit_rate") return `${(100 * value).toFixed(1)}%`;
  if (stat === "saved_tokens") return `${value.prompt + value.completion}`;
  if (stat === "estimated_saved_usd") return `$${value.toFixed(6)}`;
  return String(value);
}

function ago(seconds) {
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

async function refresh() {
  const [stats, board] = await Promise.all([call("/stats"), call("/admin/dashboard")]);
  for (const node of document.querySelectorAll("[data-stat]")) {
    node.textContent = shown(node.dataset.stat, stats[node.dataset.stat]);
  }
  const minutes = board.activity.minutes;
  bars("outcomes-chart", "Requests a minute over the last hour, by outcome",
    minutes.map((m, i) => ({
      label: new Date(m.minute * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
      values: m, tick: i % 15 === 0,
    })), OUTCOMES);
  const latency = board.activity.latency_ms;
  const timed = [...OUTCOMES, "upstream"];
  rows("latency-table", timed.map((o) => [o, latency[o].p50 ?? "–", latency[o].p95 ?? "–", latency[o].count]));
  bars("latency-chart", "Median latency in ms by outcome, and of the upstream alone",
    timed.map((o) => ({ label: o, values: { [o]: latency[o].p50 || 0 }, tick: true })), timed, 120);
  drawSimilarity(board.activity.similarity);
  const counted = (table) => Object.entries(table).map(([name, c]) => [name, ...OUTCOMES.map((o) => c[o])]);
  rows("routes-table", counted(board.activity.routes));
  rows("namespaces-table", counted(board.activity.namespaces));
  rows("hits-table", board.activity.recent_hits.map((hit) => {
    const report = el("button", { type: "button" }, "Report wrong");
    report.setAttribute("aria-label", `Report wrong: ${hit.asked_text}`);
    report.addEventListener("click", () => reportWrong(hit, report));
    return [new Date(hit.at * 1000).toLocaleTimeString(), hit.namespace, hit.asked_text,
      hit.cached_text, hit.similarity.toFixed(4), hit.request ? report : ""];
  }));
}

let similarity = null;

function drawSimilarity(latest = similarity) {
  // In all, by API ("api:…") or by namespace ("namespace:…"), as the select says.
  similarity = latest;
  const select = document.getElementById("similarity-view");
  const views = Object.keys(similarity.views).sort();
  if (select.options.length !== Math.max(views.length, 1)) {
    const chosen = select.value;
    select.replaceChildren(...(views.length ? views : ["all"]).map((view) =>
      el("option", { value: view }, view === "all" ? "all lookups" : view.replace(":", ": "))));
    select.value = views.includes(chosen) ? chosen : "all";
  }
  const counts = similarity.views[select.value] || {};
  bars("similarity-chart", `Nearest-entry similarity by bucket (${select.value}): hit, rejected, below`,
    similarity.upper_bounds.map((bound, i) => ({
      label: `≤${bound}`,
      values: Object.fromEntries(DECISIONS.map((d) => [d, (counts[d] || [])[i] || 0])),
      tick: true,
    })), DECISIONS);
}

async function reportWrong(hit, button) {
  button.disabled = true;
  try {
    await call("/admin/reports", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ entry: hit.entry, request: hit.request, verdict: "wrong" }),
    });
    button.textContent = "Reported";
    say(`Reported: "${hit.asked_text}" will not get that answer again.`);
  } catch (error) {
    button.disabled = false;
    say(`The report failed: ${error.message}`);
  }
}

async function searchEntries() {
  const form = new FormData(document.getElementById("entries-form"));
  const query = new URLSearchParams({ limit: "100" });
  for (const [key, value] of form) if (value) query.set(key, value);
  const found = await call(`/admin/entries?${query}`);
  const now = Date.now() / 1000;
  rows("entries-table", found.entries.map((entry) => {
    const actions = el("span");
    const show = el("button", { type: "button", "aria-label": `Show the answer to: ${entry.prompt}` }, "Answer");
    show.addEventListener("click", () => showAnswer(entry.id));
    const remove = el("button", { type: "button", "aria-label": `Delete: ${entry.prompt}` }, "Delete");
    remove.addEventListener("click", () => deleteEntry(entry));
    actions.append(show, " ", remove);
    return [entry.prompt ?? "(exact only)", entry.namespace, entry.model, entry.hits,
      ago(now - entry.created), ago(Math.max(entry.expires - now, 0)), actions];
  }));
  say(`${found.entries.length} entries shown.`);
}

async function showAnswer(id) {
  const entry = await call(`/admin/entries/${encodeURIComponent(id)}`);
  const answer = document.getElementById("answer");
  answer.textContent = JSON.stringify(entry.response, null, 2);
  answer.hidden = false;
  answer.focus();
}

async function deleteEntry(entry) {
  await call(`/admin/entries/${encodeURIComponent(entry.id)}`, { method: "DELETE" });
  await searchEntries();
  say(`Deleted the entry for "${entry.prompt}".`);
}

async function open() {
  document.getElementById("login").hidden = true;
  document.getElementById("dashboard").hidden = false;
  try {
    await refresh();
    await searchEntries();
    say("Up to date; refreshes every 5 s.");
  } catch (error) {
    if (error.message !== "unauthorized") say(`Could not load: ${error.message}`);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    token = document.getElementById("token").value;
    sessionStorage.setItem("kallm-token", token);
    open();
  });
  document.getElementById("similarity-view").addEventListener("change", () => drawSimilarity());
  document.getElementById("entries-form").addEventListener("submit", (event) => {
    event.preventDefault();
    searchEntries().catch((error) => say(error.message));
  });
  if (token) open(); else showLogin("Give the admin token to open the dashboard.");
  setInterval(() => { if (token) refresh().catch(() => {}); }, 5000);
});
