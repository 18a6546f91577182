// The job manager page (/jobs): submits uploads and programs, lists jobs with their state and
// node, cancels and deletes them, and shows each node's load. It talks to the same JSON API as
// every other client (/api/jobs, /api/nodes), authenticated by the login cookie. Every value
// from the server is written with textContent, never parsed as HTML: job names are free text.
"use strict";

const PAGE_SIZE = 50;
const REFRESH_MS = 3000;
const FINAL = new Set(["succeeded", "failed", "timed_out", "cancelled"]);

const form = document.getElementById("submit");
const message = document.getElementById("submit-message");
const progress = document.getElementById("upload-progress");
const jobsBody = document.querySelector("#jobs tbody");
const nodesBody = document.querySelector("#nodes tbody");
const moreButton = document.getElementById("more");

let stateFilter = "";
let pages = 1;
let refreshing = false;
let refreshAgain = false;

// ---- small helpers ----

function link(href, text) {
  const a = el("a", text);
  a.href = href;
  return a;
}

function seconds(from, to) {
  if (!from) return "";
  const end = to ? Date.parse(to) : Date.now();
  const took = Math.max(0, (end - Date.parse(from)) / 1000);
  return took < 60 ? `${took.toFixed(1)} s` : `${Math.floor(took / 60)} min ${Math.round(took % 60)} s`;
}

function when(stamp) {
  return stamp ? new Date(stamp).toLocaleString() : "";
}

// Splits an argument line like a shell would for plain words and "double" or 'single' quotes.
function splitArgs(line) {
  const args = [];
  const pattern = /"([^"]*)"|'([^']*)'|(\S+)/g;
  let match;
  while ((match = pattern.exec(line)) !== null) {
    args.push(match[1] ?? match[2] ?? match[3]);
  }
  return args;
}

// ---- the submit form ----

function selectedKind() {
  return form.querySelector("input[name=kind]:checked").value;
}

function showFieldsFor(kind) {
  for (const field of form.querySelectorAll("[data-kinds]")) {
    field.hidden = !field.dataset.kinds.split(" ").includes(kind);
  }
}

function limitsFrom(data) {
  const limits = {};
  const number = (name) => {
    const value = data.get(name);
    return value === null || value === "" ? null : Number(value);
  };
  if (number("timeout_seconds") !== null) limits.timeout_seconds = number("timeout_seconds");
  if (number("retries") !== null) limits.retries = number("retries");
  const kind = selectedKind();
  if (kind !== "md5") {
    if (number("memory_mib") !== null) limits.memory_bytes = number("memory_mib") * 1024 * 1024;
    if (number("cpus") !== null) limits.cpus = number("cpus");
  }
  return limits;
}

// One upload: resolves with the created job, reports progress on the bar.
function upload(spec, files, stdin) {
  const body = new FormData();
  body.append("spec", JSON.stringify(spec));
  for (const file of files) body.append("file", file, file.name);
  if (stdin) body.append("stdin", stdin, stdin.name);
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/api/jobs");
    request.responseType = "json";
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) {
        progress.hidden = false;
        progress.value = event.loaded / event.total;
      }
    };
    request.onload = () => {
      const answer = request.response || {};
      if (request.status === 201) resolve(answer);
      else reject(new Error(answer.message || answer.reason || `${request.status} ${request.statusText}`));
    };
    request.onerror = () => reject(new Error("the upload failed (connection lost)"));
    request.send(body);
  });
}

function say(text, isError) {
  message.textContent = text;
  message.className = isError ? "error-text" : "";
}

form.addEventListener("change", (event) => {
  if (event.target.name === "kind") showFieldsFor(selectedKind());
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  const kind = selectedKind();
  const files = Array.from(form.elements.files.files);
  const stdinFile = form.elements.stdin.files[0] || null;
  const name = (data.get("name") || "").trim();
  const base = { kind, limits: limitsFrom(data) };
  if (name) base.name = name;
  // MD5 takes one file a job: several files make several jobs.
  const submissions = [];
  if (kind === "md5") {
    if (files.length === 0) return say("Choose a file to hash.", true);
    for (const file of files) {
      submissions.push({ spec: { ...base, name: name || file.name }, files: [file], stdin: null });
    }
  } else if (kind === "run") {
    if (files.length === 0) return say("Choose the program's source files.", true);
    // The first file chosen is the program; the others are beside it.
    const spec = { ...base, name: name || files[0].name };
    if (files.length > 1) spec.main = files[0].name;
    const language = data.get("language");
    if (language) spec.language = language;
    const args = splitArgs(data.get("args") || "");
    if (args.length) spec.args = args;
    submissions.push({ spec, files, stdin: stdinFile });
  } else {
    const command = (data.get("command") || "").trim();
    if (!command) return say("Type a command line.", true);
    const spec = { ...base, name: name || command, image: data.get("image"), command };
    submissions.push({ spec, files: [], stdin: stdinFile });
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const created = [];
    for (const [index, submission] of submissions.entries()) {
      say(submissions.length > 1 ? `Uploading ${index + 1} of ${submissions.length}…` : "Uploading…");
      progress.value = 0;
      created.push(await upload(submission.spec, submission.files, submission.stdin));
    }
    say(created.length === 1 ? `Submitted job ${created[0].id}.` : `Submitted ${created.length} jobs.`);
    form.elements.files.value = "";
    form.elements.stdin.value = "";
    await refresh();
  } catch (error) {
    say(`Not submitted: ${error.message}`, true);
  } finally {
    button.disabled = false;
    progress.hidden = true;
  }
});

// ---- the job list ----

function stateCell(job) {
  const cell = el("td");
  const pill = el("span", job.state.replace("_", " "), "pill");
  if (job.state === "succeeded") pill.classList.add("ok");
  if (job.state === "failed" || job.state === "timed_out") pill.classList.add("bad");
  cell.append(pill);
  if (job.state === "running" && job.node) cell.append(" on ", el("code", job.node));
  else if (job.ran_on && FINAL.has(job.state)) cell.append(el("div", `ran on ${job.ran_on}`, "muted"));
  if (job.reason) cell.append(el("div", job.reason, "muted"));
  return cell;
}

function resultCell(job) {
  const cell = el("td", null, "result");
  if (job.result) cell.append(el("span", job.result));
  const details = [];
  if (job.exit_code !== null && job.exit_code !== undefined) details.push(`exit ${job.exit_code}`);
  if (job.signal) details.push(`signal ${job.signal}`);
  if (job.oom) details.push("out of memory");
  if (job.truncated) details.push("output truncated");
  if (job.peak_memory_bytes) details.push(`peak ${bytes(job.peak_memory_bytes)}`);
  if (details.length) cell.append(el("div", details.join(" · "), "muted"));
  return cell;
}

function outputsCell(job) {
  const cell = el("td");
  if (job.state === "queued") return cell;
  const base = `/api/jobs/${encodeURIComponent(job.id)}/files/`;
  const names = job.kind === "md5" ? ["result"] : ["stdout", "stderr"];
  names.forEach((name, index) => {
    if (index) cell.append(" ");
    cell.append(link(base + name, name));
  });
  return cell;
}

function actionCell(job) {
  const cell = el("td");
  const button = el("button", FINAL.has(job.state) ? "Delete" : job.state === "running" ? "Kill" : "Cancel", "small");
  button.type = "button";
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      if (FINAL.has(job.state)) {
        await api("DELETE", `/api/jobs/${encodeURIComponent(job.id)}`);
      } else {
        await api("POST", `/api/jobs/${encodeURIComponent(job.id)}/cancel`);
      }
      await refresh();
    } catch (error) {
      button.disabled = false;
      say(`${button.textContent} failed: ${error.message}`, true);
    }
  });
  cell.append(button);
  return cell;
}

function jobRow(job) {
  const row = el("tr");
  row.dataset.job = job.id;
  const title = el("td");
  title.append(el("div", job.name || job.id));
  title.append(link(`/api/jobs/${encodeURIComponent(job.id)}`, job.id.slice(0, 8)));
  title.lastChild.className = "muted";
  row.append(
    title,
    el("td", job.kind),
    stateCell(job),
    el("td", job.attempt),
    el("td", when(job.created_at), "muted"),
    el("td", seconds(job.started_at, job.finished_at)),
    resultCell(job),
    outputsCell(job),
    actionCell(job),
  );
  return row;
}

async function loadJobs() {
  const rows = [];
  let after = null;
  let next = null;
  for (let page = 0; page < pages; page += 1) {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE), order: "newest" });
    if (stateFilter) query.set("state", stateFilter);
    if (after) query.set("after", after);
    const list = await api("GET", `/api/jobs?${query}`);
    rows.push(...list.jobs.map(jobRow));
    next = list.next;
    if (!next) break;
    after = next;
  }
  if (rows.length === 0) {
    const empty = el("tr");
    const cell = el("td", stateFilter ? `No ${stateFilter.replace("_", " ")} jobs.` : "No jobs yet.", "muted");
    cell.colSpan = 9;
    empty.append(cell);
    rows.push(empty);
  }
  jobsBody.replaceChildren(...rows);
  moreButton.hidden = !next;
}

// ---- the nodes ----

async function loadNodes() {
  const nodes = await api("GET", "/api/nodes");
  const rows = nodes.map((node) => {
    const row = el("tr");
    const alive = el("span", node.stopped ? "stopped" : node.alive ? "alive" : "dead", "pill");
    alive.classList.add(node.alive ? "ok" : "bad");
    const aliveCell = el("td");
    aliveCell.append(alive);
    row.append(
      el("td", node.node),
      aliveCell,
      el("td", `${node.cpu_percent.toFixed(0)} %`),
      el("td", `${bytes(node.memory_used_bytes)} of ${bytes(node.memory_total_bytes)}`),
      el("td", node.slots),
      el("td", node.running.length),
      el("td", when(node.updated_at), "muted"),
    );
    return row;
  });
  if (rows.length === 0) {
    const empty = el("tr");
    const cell = el("td", "No runner has published a heartbeat yet.", "muted");
    cell.colSpan = 7;
    empty.append(cell);
    rows.push(empty);
  }
  nodesBody.replaceChildren(...rows);
}

// One refresh at a time; a request for another while one runs (a new filter, say) makes one
// more run right after it, so what shows always matches what was asked last.
async function refresh() {
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = true;
  try {
    do {
      refreshAgain = false;
      await Promise.all([loadJobs(), loadNodes()]);
    } while (refreshAgain);
  } catch (error) {
    say(`Cannot load the jobs: ${error.message}`, true);
  } finally {
    refreshing = false;
  }
}

document.getElementById("filters").addEventListener("change", (event) => {
  stateFilter = event.target.value;
  pages = 1;
  refresh();
});

moreButton.addEventListener("click", () => {
  pages += 1;
  refresh();
});

showFieldsFor(selectedKind());
refresh();
setInterval(() => {
  if (document.visibilityState === "visible") refresh();
}, REFRESH_MS);
