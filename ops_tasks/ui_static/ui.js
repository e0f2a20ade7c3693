// ops ui's page. Every string shown comes from a pod or a file: it is written with textContent
// (never innerHTML), attributes only by setAttribute of our own names, so nothing a pod sends can
// become markup or script. Served with script-src 'self' and no inline script.
"use strict";

const TOKEN = document.querySelector('meta[name="ops-token"]').getAttribute("content");
const ACTIVE = ["queued", "running"];
const ENDED = ["succeeded", "failed", "timeout", "stalled", "cancelled", "lost"];
// Where a pod's price per hour comes from (costs.price_of): what Lium said when ops rented it, or the profile.
const PRICE_SOURCES = { lium: "Lium", profile: "profile's price_per_hour" };
const view = { doc: null, sort: { key: "run_id", dir: 1 }, follow: null, source: null, pending: null };

// ------------------------------------------------------------------ DOM helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "onclick") node.addEventListener("click", value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// ------------------------------------------------------------------ formatting

function num(value) {
  return typeof value === "number" && isFinite(value) ? value : null;
}

function bytes(count) {
  if (num(count) === null) return "?";
  let size = count;
  for (const unit of ["B", "KiB", "MiB", "GiB", "TiB"]) {
    if (size < 1024 || unit === "TiB") return unit === "B" ? `${size} B` : `${size.toFixed(1)} ${unit}`;
    size /= 1024;
  }
  return "?";
}

function duration(seconds) {
  if (num(seconds) === null) return "";
  const s = Math.max(0, Math.floor(seconds));
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

function money(value, suffix) {
  return num(value) === null ? "" : `$${value.toFixed(2)}${suffix || ""}`;
}

function clock(epoch) {
  return num(epoch) === null ? "" : new Date(epoch * 1000).toLocaleString();
}

function text(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(6)));
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// ------------------------------------------------------------------ the feed

function connect() {
  if (view.source) view.source.close();
  const follow = view.follow ? `?follow=${encodeURIComponent(view.follow.pod + "/" + view.follow.run_id)}` : "";
  const source = new EventSource(`/api/events${follow}`);
  source.addEventListener("state", (event) => {
    view.doc = JSON.parse(event.data);
    render();
  });
  source.addEventListener("log", (event) => renderLog(JSON.parse(event.data)));
  source.addEventListener("error", () => {
    document.getElementById("status").textContent = "connection to ops ui lost; trying again…";
  });
  view.source = source;
}

function render() {
  const doc = view.doc;
  const refresh = doc.refresh || {};
  document.getElementById("status").textContent =
    `refreshed ${clock(doc.at)} (took ${text(refresh.took_s)} s; next in ${text(refresh.interval_s)} s)`;
  renderTotals(doc.totals || {});
  renderPods(doc.pods || [], doc.watching);
  renderRuns(doc.runs || []);
  renderSubmissions(doc.submissions || []);
  renderCampaigns(doc.campaigns || []);
  renderReport(doc.report);
  document.body.dataset.refresh = String(refresh.number || 0);
  document.body.dataset.appliedAt = String(Date.now() / 1000);
  document.body.dataset.answeredAt = String(refresh.answered_at || "");
}

function renderTotals(totals) {
  const states = Object.entries(totals.runs_by_state || {}).map(([s, n]) => `${n} ${s}`).join(", ") || "no runs";
  const parts = [`${text(totals.pods_up)}/${text(totals.pods)} pods up`, `${text(totals.gpus_free)}/${text(totals.gpus)} GPUs free`,
    `runs: ${states}`];
  if (num(totals.price_per_hour) !== null) parts.push(`${money(totals.price_per_hour, "/h")}` +
    (totals.unpriced_pods ? ` (+${totals.unpriced_pods} pods without a price)` : ""));
  if (num(totals.cost_usd) !== null) parts.push(`${money(totals.cost_usd)} spent on pods so far`);
  document.getElementById("totals").textContent = parts.join(" · ");
}

// ------------------------------------------------------------------ pods

function gpuCell(gpus) {
  if (!gpus.length) return el("td", { class: "muted" }, "none");
  return el("td", {}, ...gpus.map((g) => {
    const used = num(g.memory_used_mib), total = num(g.memory_total_mib), util = num(g.utilization_pct);
    const fill = el("span");
    fill.style.width = `${Math.min(100, Math.max(0, util || 0))}%`;
    return el("span", { class: "gpu", title: text(g.name) }, `${text(g.index)}: ${util === null ? "?" : util}%`,
      el("span", { class: "bar" }, fill),
      used === null || total === null ? "" : `${(used / 1024).toFixed(1)}/${(total / 1024).toFixed(1)} GiB`);
  }));
}

function serverCell(pod) {
  if (!pod.vllm.length) return el("td", { class: "muted" }, "none");
  return el("td", {}, ...pod.vllm.map((s) => el("div", { class: "server", "data-session": s.session },
    el("span", { class: s.ok ? "ok" : "bad" }, s.ok ? "serving" : "not serving"), " ",
    `${s.session}: ${s.models.join(", ") || s.model_id || "?"}`, s.port ? ` :${s.port}` : "",
    s.ok ? "" : el("div", { class: "muted" }, s.error || ""),
    el("button", { type: "button", class: "danger", onclick: () => ask(`Stop vLLM session ${s.session} on ${pod.name}?`,
      { action: "vllm_stop", pod: pod.name, session: s.session }) }, "stop"))));
}

function renderPods(pods, watching) {
  const body = document.querySelector("#pods tbody");
  if (!pods.length) {
    const named = watching && watching.hosts ? watching.hosts : "--host";
    replaceRows(body, [el("tr", { class: "no-pods" }, el("td", { colspan: 9, class: "muted" },
      `no pod in ${named} yet: each shows here once it is recorded (a campaign records its pods once it has rented them)`,
      watching && watching.error ? el("div", { class: "bad" }, watching.error) : ""))]);
    return;
  }
  const rows = pods.map((pod) => {
    const notes = [...pod.problems, ...pod.warnings];
    const free = pod.volume && num(pod.volume.free_bytes) !== null ? bytes(pod.volume.free_bytes) : "?";
    return el("tr", { "data-pod": pod.name },
      el("td", {}, pod.name),
      el("td", {}, el("span", { class: pod.ok ? "ok" : "bad" }, pod.reachable ? (pod.ok ? "ok" : "NOT OK") : "unreachable"),
        ...notes.map((n) => el("div", { class: "muted" }, n))),
      gpuCell(pod.gpus),
      el("td", {}, `${free}${pod.volume && pod.volume.path ? " on " + pod.volume.path : ""}`),
      el("td", {}, Array.isArray(pod.load) ? pod.load.map(text).join(" ") : ""),
      el("td", {}, pod.price_per_hour === null ? "unknown" : money(pod.price_per_hour, "/h"),
        pod.price_source ? el("div", { class: "muted price-source" }, PRICE_SOURCES[pod.price_source] || pod.price_source) : ""),
      el("td", {}, money(pod.cost_usd)),
      serverCell(pod),
      el("td", {}, num(pod.latency_ms) === null ? "" : `${Math.round(pod.latency_ms)} ms`));
  });
  if (watching && watching.error) {  // the fleet's record names a pod that cannot be reached by name: said, pods kept
    rows.push(el("tr", { class: "pods-error" }, el("td", { colspan: 9, class: "bad" },
      `${watching.hosts}: its pods as last read (${watching.error})`)));
  }
  replaceRows(body, rows);
}

// ------------------------------------------------------------------ runs

function runActions(run) {
  const buttons = [el("button", { type: "button", class: "follow", onclick: () => follow(run) }, "log")];
  if (ACTIVE.includes(run.state)) buttons.push(el("button", { type: "button", class: "danger cancel",
    onclick: () => ask(`Cancel run ${run.run_id} on ${run.pod}? Its process group is stopped.`,
      { action: "cancel", pod: run.pod, run_id: run.run_id }) }, "cancel"));
  if (run.state === "lost") buttons.push(el("button", { type: "button", class: "resume",
    onclick: () => ask(`Resume run ${run.run_id} on ${run.pod}? It is queued again.`,
      { action: "resume", pod: run.pod, run_id: run.run_id }) }, "resume"));
  if (ENDED.includes(run.state)) buttons.push(el("button", { type: "button", class: "fetch",
    onclick: () => ask(`Fetch run ${run.run_id} from ${run.pod} into this project?`,
      { action: "fetch", pod: run.pod, run_id: run.run_id }) }, "fetch"));
  return el("td", {}, ...buttons);
}

function fillSelect(select, values) {
  const chosen = select.value;
  const options = [el("option", { value: "" }, "any"), ...values.map((v) => el("option", { value: v }, v))];
  select.replaceChildren(...options);
  select.value = values.includes(chosen) ? chosen : "";
}

function sortValue(run, key) {
  const value = key === "gpus" ? (Array.isArray(run.gpus) ? run.gpus.join(",") : "") : run[key];
  return value === null || value === undefined ? "" : value;
}

function renderRuns(runs) {
  fillSelect(document.getElementById("filter-state"), [...new Set(runs.map((r) => r.state))].sort());
  fillSelect(document.getElementById("filter-pod"), [...new Set(runs.map((r) => r.pod))].sort());
  const wanted = document.getElementById("filter-text").value.toLowerCase();
  const state = document.getElementById("filter-state").value;
  const pod = document.getElementById("filter-pod").value;
  const shown = runs.filter((r) => (!state || r.state === state) && (!pod || r.pod === pod) && (!wanted ||
    [r.run_id, r.pod, r.state, r.submission_id, r.failure_class, r.last_line].some((v) => text(v).toLowerCase().includes(wanted))));
  const { key, dir } = view.sort;
  shown.sort((a, b) => {
    const x = sortValue(a, key), y = sortValue(b, key);
    if (typeof x === "number" && typeof y === "number") return (x - y) * dir;
    return String(x).localeCompare(String(y), undefined, { numeric: true }) * dir;
  });
  for (const th of document.querySelectorAll("#runs th[data-sort]")) {
    th.classList.toggle("sorted-asc", th.dataset.sort === key && dir > 0);
    th.classList.toggle("sorted-desc", th.dataset.sort === key && dir < 0);
  }
  document.getElementById("runs-count").textContent = `${shown.length} of ${runs.length} runs`;
  replaceRows(document.querySelector("#runs tbody"), shown.map((r) => el("tr", { "data-run": r.run_id, "data-pod": r.pod,
    "data-state": r.state },
    el("td", {}, r.pod), el("td", {}, r.run_id), el("td", {}, r.submission_id || ""),
    el("td", { class: `state state-${r.state}${r.stale_since ? " stale" : ""}` }, r.state,
      r.stale_since ? el("span", { class: "muted" }, ` (as of ${clock(r.stale_since)}: no answer since)`) : ""),
    el("td", {}, Array.isArray(r.gpus) ? r.gpus.map(text).join(",") : ""),
    el("td", {}, duration(r.elapsed_s)), el("td", {}, text(r.attempts)),
    el("td", {}, [r.failure_class, r.error].filter(Boolean).map(text).join(": ")),
    el("td", {}, money(r.cost_usd)), el("td", { class: "text" }, text(r.last_line)), runActions(r))));
  if (view.follow) {
    const run = runs.find((r) => r.pod === view.follow.pod && r.run_id === view.follow.run_id);
    document.getElementById("detail-title").textContent =
      `${view.follow.run_id} on ${view.follow.pod}${run ? ": " + run.state : ""}`;
  }
}

// ------------------------------------------------------------------ a followed run

function follow(run) {
  view.follow = { pod: run.pod, run_id: run.run_id };
  document.getElementById("detail").hidden = false;
  document.getElementById("detail-title").textContent = `${run.run_id} on ${run.pod}: ${run.state}`;
  document.getElementById("log").textContent = "waiting for the next refresh…";
  document.getElementById("curves").replaceChildren();
  connect();
}

function unfollow() {
  view.follow = null;
  document.getElementById("detail").hidden = true;
  connect();
}

function renderLog(data) {
  if (!view.follow || data.pod !== view.follow.pod || data.run_id !== view.follow.run_id) return;
  const log = document.getElementById("log");
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.textContent = data.text === null || data.text === undefined ? (data.error || "no stdout.log yet") : data.text;
  if (atEnd) log.scrollTop = log.scrollHeight;
  renderCurves(data.curves || {});
}

function renderCurves(curves) {
  const box = document.getElementById("curves");
  const series = Object.entries(curves.series || {});
  box.replaceChildren(...series.map(([name, points]) => curve(name, points, curves.x || "step")));
}

function curve(name, points, xName) {
  const width = 320, height = 120, pad = 24;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * (width - 2 * pad);
  const sy = (y) => height - pad - (y1 > y0 ? (y - y0) / (y1 - y0) : 0.5) * (height - 2 * pad);
  const chart = svg("svg", { class: "curve", width, height, viewBox: `0 0 ${width} ${height}`, "data-metric": name });
  const title = svg("text", { x: pad, y: 12 });
  title.textContent = `${name} by ${xName}`;
  const low = svg("text", { x: 2, y: height - pad });
  low.textContent = text(y0);
  const high = svg("text", { x: 2, y: pad });
  high.textContent = text(y1);
  chart.append(title, low, high, svg("polyline", { points: points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ") }));
  return chart;
}

// ------------------------------------------------------------------ records: submissions, campaigns, report

function renderSubmissions(submissions) {
  replaceRows(document.querySelector("#submissions tbody"), submissions.map((s) => el("tr", { "data-submission": s.submission_id },
    el("td", {}, s.submission_id), el("td", {}, clock(s.submitted_at)), el("td", {}, (s.hosts || []).map(text).join(", ")),
    el("td", {}, text(s.config)), el("td", {}, text(s.runs)),
    el("td", {}, Object.entries(s.by_state || {}).map(([k, n]) => `${n} ${k}`).join(", ")))));
}

function renderCampaigns(campaigns) {
  const box = document.getElementById("campaigns");
  if (!campaigns.length) {
    box.replaceChildren(el("p", { class: "muted" }, "no campaign in this project"));
    return;
  }
  box.replaceChildren(...campaigns.map((c) => el("div", { class: "campaign", "data-campaign": c.campaign_id },
    el("strong", {}, c.campaign_id), ` on ${(c.hosts || []).map(text).join(", ") || "(pods not rented yet)"}`,
    c.submission_id ? ` · submission ${c.submission_id}` : "",
    (c.rented || []).length ? el("div", { class: "rented" }, "rented on Lium: ", c.rented.map((p) =>
      `${p.name} ${p.price_per_hour === null ? "(price unknown)" : money(p.price_per_hour, "/h")} ` +
      (p.released ? "released" : p.ready ? "ready" : "starting, not answering SSH yet")).join(" · ")) : "",
    el("ol", {}, ...c.phases.map((p) => el("li", { class: `phase-${p.outcome}` },
      `${p.phase}: ${p.outcome}`, p.error || p.summary ? ` — ${p.error || p.summary}` : ""))),
    el("div", { class: "campaign-end" }, c.left.length ? `left: ${c.left.join(", ")}` : "every phase done",
      (c.not_ok || []).length ? el("span", { class: "bad" }, ` · not ok: ${c.not_ok.join(", ")}`) : ""))));
}

function isMoney(key) {
  return key === "cost" || key === "cost_usd" || /_usd$/.test(key);
}

function cell(key, value) {
  return isMoney(key) && num(value) !== null ? money(value) : text(value);
}

function headerValue(value) {
  // A report.json header value as words: a list joined, an object as "key value, ...", dollars as $.
  if (Array.isArray(value)) return value.map(text).join(", ");
  if (value !== null && typeof value === "object") {
    return Object.entries(value).map(([k, v]) => `${k} ${cell(k, v)}`).join(", ");
  }
  return text(value);
}

function isEmpty(value) {
  return value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length) ||
    (typeof value === "object" && !Array.isArray(value) && !Object.keys(value).length);
}

function table(columns, rows, className) {
  return el("table", { class: className },
    el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...columns.map((c) => el("td", {}, cell(c, r[c])))))));
}

function renderReport(report) {
  const box = document.getElementById("report");
  if (!report) return;
  const parts = [el("p", {}, `written ${clock(report.written_at)}`, report.html ? " · " : "",
    report.html ? el("a", { href: "/report.html", target: "_blank", rel: "noopener noreferrer" }, "open report.html") : "")];
  if (report.error) parts.push(el("p", { class: "bad" }, report.error));
  parts.push(el("ul", { class: "header" }, ...Object.entries(report.header || {}).filter(([, v]) => !isEmpty(v))
    .map(([k, v]) => el("li", {}, `${k}: ${headerValue(v)}`))));
  if (report.groups) parts.push(el("h3", {}, "Groups"), table(report.group_columns, report.groups, "report-groups"));
  if (report.comparison) parts.push(el("h3", {}, "Comparison"), el("ul", {}, ...report.comparison.map((line) => el("li", {}, line))));
  parts.push(el("h3", {}, "Runs"), table(report.columns, report.rows, "report-runs"));
  box.replaceChildren(...parts);
}

// ------------------------------------------------------------------ actions: confirmed, then POSTed

function ask(question, body) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = question;
  view.pending = body;
  dialog.showModal();
}

async function send(body) {
  const notice = document.getElementById("notice");
  notice.className = "";
  notice.textContent = `${body.action} ${body.run_id || body.session} on ${body.pod}…`;
  let result;
  try {
    const response = await fetch("/api/action", { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Ops-Token": TOKEN }, body: JSON.stringify(body) });
    result = (response.headers.get("Content-Type") || "").startsWith("application/json") ? await response.json()
      : { ok: false, error: await response.text() };
  } catch (error) {
    result = { ok: false, error: String(error) };
  }
  notice.className = result.ok ? "ok" : "bad";
  notice.textContent = `${body.action} ${body.run_id || body.session} on ${body.pod}: ${result.ok ? "done" : "NOT OK: " + (result.error || "?")}`;
}

// ------------------------------------------------------------------ wiring

function start() {
  document.getElementById("confirm-no").addEventListener("click", () => document.getElementById("confirm").close());
  document.getElementById("confirm-yes").addEventListener("click", () => {
    document.getElementById("confirm").close();
    if (view.pending) send(view.pending);
    view.pending = null;
  });
  document.getElementById("detail-close").addEventListener("click", unfollow);
  for (const id of ["filter-text", "filter-state", "filter-pod"]) {
    document.getElementById(id).addEventListener("input", () => view.doc && renderRuns(view.doc.runs || []));
  }
  for (const th of document.querySelectorAll("#runs th[data-sort]")) {
    th.addEventListener("click", () => {
      view.sort = { key: th.dataset.sort, dir: view.sort.key === th.dataset.sort ? -view.sort.dir : 1 };
      if (view.doc) renderRuns(view.doc.runs || []);
    });
  }
  connect();
}

start();
