// The cluster page (/cluster): follows the gateway's cluster snapshot as server-sent events
// (/api/cluster/stream, one after every sample), or polls /api/cluster when the stream cannot
// be had, and redraws the tables and the charts: CPU and memory per node, cells per second and
// jobs per minute. The charts are SVG drawn here; nothing is loaded from elsewhere. Every
// value from the server is written with textContent, never parsed as HTML.
"use strict";

const WINDOW_MS = 10 * 60 * 1000;
const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";

const nodesBody = document.querySelector("#nodes tbody");
const runnersBody = document.querySelector("#runners tbody");
const eventsBody = document.querySelector("#events tbody");
const streamState = document.getElementById("stream-state");

// The newest event already shown, so newer ones can be marked.
let lastEventId = null;

// ---- small helpers ----

function rate(value) {
  if (value === undefined || value === null) return "–";
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

function pill(text, kind) {
  const span = el("span", text.replaceAll("_", " "), "pill");
  if (kind) span.classList.add(kind);
  return span;
}

function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  return node;
}

function emptyRow(columns, text) {
  const row = el("tr");
  const cell = el("td", text, "muted");
  cell.colSpan = columns;
  row.append(cell);
  return row;
}

// A ceiling for a chart's scale: 1, 2 or 5 times a power of ten.
function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

// ---- charts ----

// Draws `series` ([{values, className}], aligned with `times`, null for no value) into the
// SVG element as lines over the last ten minutes; `max` fixes the scale (100 for percents).
function chart(element, times, series, options) {
  const width = options.width || 600;
  const height = options.height || 150;
  const left = options.compact ? 4 : 36;
  const right = 6;
  const top = 8;
  const bottom = options.compact ? 4 : 18;
  element.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const end = times.length ? times[times.length - 1] : Date.now();
  const start = end - WINDOW_MS;
  let max = options.max;
  if (max === undefined) {
    let highest = 0;
    for (const { values } of series) {
      for (const value of values) if (value !== null && value > highest) highest = value;
    }
    max = niceCeiling(highest);
  }
  const x = (time) => left + ((time - start) / WINDOW_MS) * (width - left - right);
  const y = (value) => top + (1 - Math.min(value, max) / max) * (height - top - bottom);
  const parts = [];
  for (const fraction of [0, 0.5, 1]) {
    const level = y(max * fraction);
    parts.push(svg("line", { class: "grid", x1: left, x2: width - right, y1: level, y2: level }));
    if (!options.compact) {
      const label = svg("text", { class: "label", x: left - 4, y: level + 3, "text-anchor": "end" });
      label.textContent = rate(max * fraction).replace(/\.0+$/, "") + (options.unit || "");
      parts.push(label);
    }
  }
  if (!options.compact) {
    for (const [minutes, anchor] of [[10, "start"], [5, "middle"], [0, "end"]]) {
      const label = svg("text", { class: "label", x: x(end - minutes * 60000), y: height - 4, "text-anchor": anchor });
      label.textContent = minutes ? `−${minutes} min` : "now";
      parts.push(label);
    }
  }
  for (const { values, className } of series) {
    // One path per run of values; a missing value breaks the line.
    let line = "";
    let area = "";
    let run = [];
    const flush = () => {
      if (run.length === 0) return;
      line += run.map(([px, py], index) => `${index ? "L" : "M"}${px.toFixed(1)} ${py.toFixed(1)}`).join(" ") + " ";
      if (run.length > 1) {
        const base = y(0).toFixed(1);
        area += `M${run[0][0].toFixed(1)} ${base} ` +
          run.map(([px, py]) => `L${px.toFixed(1)} ${py.toFixed(1)}`).join(" ") +
          ` L${run[run.length - 1][0].toFixed(1)} ${base} Z `;
      }
      run = [];
    };
    values.forEach((value, index) => {
      if (value === null || value === undefined || times[index] < start) {
        flush();
      } else {
        run.push([x(times[index]), y(value)]);
      }
    });
    flush();
    if (area) parts.push(svg("path", { class: `area ${className}`, d: area }));
    if (line) parts.push(svg("path", { class: `line ${className}`, d: line }));
  }
  element.replaceChildren(...parts);
}

// ---- tables ----

function nodeRow(node, times) {
  const row = el("tr");
  row.dataset.node = node.name;
  const name = el("td");
  name.append(el("div", node.name));
  if (node.host && node.host !== node.name) name.append(el("div", node.host, "muted"));
  const stateKind = node.state === "alive" ? "ok" : "bad";
  const state = el("td");
  state.append(pill(node.state, stateKind));
  const load = el("td");
  const picture = svg("svg", { class: "chart node-chart", role: "img", "aria-label": `CPU and memory of ${node.name}` });
  chart(picture, times, [
    { values: node.history.memory_percent, className: "memory" },
    { values: node.history.cpu_percent, className: "cpu" },
  ], { max: 100, width: 240, height: 48, compact: true });
  load.append(picture);
  const memory = node.memory_total_bytes ? `${bytes(node.memory_used_bytes)} of ${bytes(node.memory_total_bytes)}` : "";
  load.append(el("div", `CPU ${node.cpu_percent.toFixed(0)} % · memory ${memory}`, "muted"));
  const runners = el("td");
  if (node.runners.length === 0) runners.append(el("span", "none here", "muted"));
  node.runners.forEach((url, index) => {
    if (index) runners.append(el("br"));
    runners.append(el("code", url));
  });
  const jobs = el("td");
  jobs.append(el("div", `${node.running_jobs.length} running of ${node.slots} slots`));
  for (const job of node.running_jobs.slice(0, 5)) {
    const line = el("div", null, "muted");
    const link = el("a", job.id.slice(0, 8));
    link.href = `/api/jobs/${encodeURIComponent(job.id)}`;
    line.append(link, job.attempt > 1 ? ` attempt ${job.attempt}` : "");
    jobs.append(line);
  }
  row.append(
    name,
    el("td", node.role || "unknown"),
    state,
    load,
    runners,
    el("td", `${node.kernels} (${node.sessions} sessions)`),
    jobs,
  );
  return row;
}

const RUNNER_KIND = { healthy: "ok", draining: "warn", unhealthy: "bad", gone: "bad" };

function runnerRow(runner) {
  const row = el("tr");
  row.dataset.runner = runner.url;
  const name = el("td");
  name.append(el("div", runner.runner_id || "not checked yet"));
  name.append(el("code", runner.url, "muted"));
  if (runner.host) name.append(el("div", `on ${runner.host}${runner.role ? ` (${runner.role})` : ""}`, "muted"));
  const state = el("td");
  state.append(pill(runner.state, RUNNER_KIND[runner.state]));
  const finished = runner.jobs_finished;
  const finishedText = finished
    ? `${finished.succeeded + finished.failed + finished.timed_out + finished.cancelled}` +
      (finished.failed + finished.timed_out ? ` (${finished.failed + finished.timed_out} failed)` : "")
    : "";
  row.append(
    name,
    state,
    el("td", `${runner.sessions} (${runner.proxied_sessions} here)`),
    el("td", runner.kernels),
    el("td", runner.kernels_started ?? ""),
    el("td", finishedText),
    el("td", runner.version || "", "muted"),
  );
  return row;
}

const EVENT_KIND = {
  runner_joined: "ok", runner_back: "ok", node_joined: "ok", node_back: "ok",
  runner_draining: "warn", job_requeued: "warn",
  runner_left: "bad", runner_unhealthy: "bad", runner_gone: "bad", node_stale: "bad", node_stopped: "bad",
};

function eventRow(event, isNew) {
  const row = el("tr");
  if (isNew) row.className = "new";
  const kind = el("td");
  kind.append(pill(event.kind, EVENT_KIND[event.kind]));
  const subject = el("td");
  subject.append(el("code", event.subject));
  row.append(
    el("td", new Date(event.at).toLocaleString(), "when"),
    kind,
    subject,
    el("td", event.message),
  );
  return row;
}

// ---- one snapshot ----

function show(snapshot) {
  const throughput = snapshot.throughput;
  const times = throughput.times;
  const last = (values) => (values.length ? values[values.length - 1] : null);
  document.getElementById("cells-now").textContent = rate(last(throughput.cells_per_second));
  document.getElementById("jobs-now").textContent = rate(last(throughput.jobs_per_minute));
  document.getElementById("jobs-running").textContent = snapshot.jobs.running;
  document.getElementById("jobs-queued").textContent = snapshot.jobs.queued ?? "?";
  chart(document.getElementById("cells-chart"), times,
    [{ values: throughput.cells_per_second, className: "cells" }], { unit: "/s" });
  chart(document.getElementById("jobs-chart"), times,
    [{ values: throughput.jobs_per_minute, className: "jobs" }], {});

  const nodes = snapshot.nodes.map((node) => nodeRow(node, times));
  nodesBody.replaceChildren(...(nodes.length ? nodes : [emptyRow(7, "No node has published a heartbeat on the job volume yet.")]));
  const runners = snapshot.runners.map(runnerRow);
  runnersBody.replaceChildren(...(runners.length ? runners : [emptyRow(7, "This gateway has no runners.")]));
  const events = snapshot.events.map((event) => eventRow(event, lastEventId !== null && event.id > lastEventId));
  eventsBody.replaceChildren(...(events.length ? events : [emptyRow(4, "Nothing has happened yet.")]));
  if (snapshot.events.length) lastEventId = snapshot.events[0].id;
}

// ---- keeping up ----

let polling = null;

async function poll() {
  try {
    show(await api("GET", "/api/cluster"));
    streamState.textContent = " · refreshed every 2 s";
  } catch (error) {
    streamState.textContent = ` · cannot load the cluster: ${error.message}`;
    if (error.status === 403) window.location.assign(`/login?next=${encodeURIComponent("/cluster")}`);
  }
}

function startPolling() {
  if (polling !== null) return;
  poll();
  polling = setInterval(() => {
    if (document.visibilityState === "visible") poll();
  }, POLL_MS);
}

function follow() {
  if (typeof EventSource !== "function") return startPolling();
  const source = new EventSource("/api/cluster/stream");
  source.addEventListener("snapshot", (message) => {
    streamState.textContent = " · live";
    show(JSON.parse(message.data));
  });
  source.addEventListener("error", () => {
    // The browser reconnects by itself after a dropped stream; a refused one (a gateway
    // restarting, a login that expired) is closed for good, and polling takes over.
    if (source.readyState === EventSource.CLOSED) {
      streamState.textContent = " · stream lost; polling";
      startPolling();
    } else {
      streamState.textContent = " · reconnecting…";
    }
  });
}

follow();
