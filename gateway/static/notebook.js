// The notebook editor (/notebook): code cells run in a kernel over the Jupyter websocket
// protocol, like any other client of the gateway. State lives in the kernel between cells;
// the cells and their outputs live in this browser (localStorage) and download as .ipynb. A
// reloaded page finds its kernel again (sessionStorage) and keeps its state; a cell that was
// running goes on receiving its output, which the runner kept for this page's session.
//
// Everything the kernel sends is written with textContent, except text/html outputs, which
// the page's Content-Security-Policy keeps from running scripts.
"use strict";

const NOTEBOOK_KEY = "cellgate.notebook";
const KERNEL_KEY = "cellgate.notebook.kernel";
// The executions in flight, {msg_id: cell id}, so that a reloaded page knows whose output the
// runner replays.
const RUNNING_KEY = "cellgate.notebook.running";
const PROTOCOL_VERSION = "5.3";
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;

const cellsBox = document.getElementById("cells");
const kernelSelect = document.getElementById("kernel-name");
const statePill = document.getElementById("kernel-state");
const message = document.getElementById("notebook-message");

// The kernel this page talks to ({id, name, session}), its websocket, and the requests
// waiting for their replies, by msg_id.
let kernel = null;
let socket = null;
let connecting = null;
const pending = new Map();
// Cells run one after another; an error in "Run all" drops the rest of the queue.
let queue = Promise.resolve();
let generation = 0;
let cells = [];
let saveTimer = null;

// ---- small helpers ----

function joined(value) {
  return Array.isArray(value) ? value.join("") : value || "";
}

function say(text, isError) {
  message.textContent = text;
  message.className = isError ? "error-text" : "muted";
}

function setState(state) {
  statePill.textContent = state;
  statePill.className = "pill";
  if (state === "idle") statePill.classList.add("ok");
  if (state === "dead" || state === "disconnected") statePill.classList.add("bad");
}

// ---- the kernel and its websocket ----

function send(channel, msgType, content, parentHeader) {
  const header = {
    msg_id: crypto.randomUUID(),
    msg_type: msgType,
    session: kernel.session,
    username: "cellgate",
    date: new Date().toISOString(),
    version: PROTOCOL_VERSION,
  };
  socket.send(JSON.stringify({
    header,
    parent_header: parentHeader || {},
    metadata: {},
    content,
    channel,
    buffers: [],
  }));
  return header.msg_id;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/api/kernels/${encodeURIComponent(kernel.id)}/channels?session_id=${encodeURIComponent(kernel.session)}`;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.onopen = () => {
      socket = ws;
      resolve();
    };
    ws.onerror = () => reject(new Error("the kernel's websocket did not open"));
    ws.onmessage = (event) => {
      if (typeof event.data === "string") handle(JSON.parse(event.data));
    };
    ws.onclose = (event) => {
      if (socket !== ws) return;
      socket = null;
      for (const entry of pending.values()) entry.finish();
      pending.clear();
      if (event.code === 1011) {
        kernelDied(event.reason);
      } else if (event.code === 1001) {
        dropKernel(false, "no kernel", "The kernel was shut down; running a cell starts a new one.");
      } else {
        setState("disconnected");
        if (event.reason) say(`Kernel connection closed: ${event.reason}`, true);
      }
    };
  });
}

// Lets go of the page's kernel: what was running ends, open input prompts go, the socket
// closes, and with `shutdown` the kernel itself is shut down. The next run starts another.
function dropKernel(shutdown, state, message) {
  const old = kernel;
  kernel = null;
  sessionStorage.removeItem(KERNEL_KEY);
  for (const entry of pending.values()) entry.finish();
  pending.clear();
  for (const prompt of cellsBox.querySelectorAll(".input-request")) prompt.remove();
  if (socket) {
    const closing = socket;
    socket = null;
    closing.close();
  }
  if (shutdown && old) {
    api("DELETE", `/api/kernels/${encodeURIComponent(old.id)}`).catch((error) => {
      if (error.status !== 404) say(`Shutting the kernel down failed: ${error.message}`, true);
    });
  }
  setState(state);
  if (message) say(message, true);
}

// The kernel died, or its runner went away; what is left of it is shut down.
function kernelDied(reason) {
  dropKernel(true, "dead", `The kernel died (${reason || "no reason given"}); running a cell starts a new one.`);
}

async function kernelExists(id) {
  try {
    await api("GET", `/api/kernels/${encodeURIComponent(id)}`);
    return true;
  } catch (error) {
    if (error.status === 404) return false;
    throw error;
  }
}

// A kernel of the chosen spec with an open websocket: the page's own (also from before a
// reload) while it runs, else a new one. Concurrent callers share one attempt.
async function ensureKernel() {
  while (connecting) await connecting.catch(() => {});
  const name = kernelSelect.value;
  if (kernel && kernel.name === name && socket && socket.readyState === WebSocket.OPEN) return;
  connecting = openKernel(name);
  try {
    await connecting;
  } finally {
    connecting = null;
  }
}

async function openKernel(name) {
  if (kernel && kernel.name !== name) dropKernel(true, "no kernel");
  if (!kernel) {
    const saved = JSON.parse(sessionStorage.getItem(KERNEL_KEY) || "null");
    if (saved && saved.name === name && (await kernelExists(saved.id))) kernel = saved;
  }
  if (kernel) {
    try {
      await connect();
      setState("idle");
      if (Array.from(pending.values()).some((entry) => entry.resumed)) {
        request(null, "kernel_info_request", {})
          .then(settleResumed)
          .catch((error) => say(`Cannot tell how the running cells ended: ${error.message}`, true));
      }
      return;
    } catch (error) {
      // Shut down elsewhere, or gone with its runner: start another.
      if (await kernelExists(kernel.id)) throw error;
      dropKernel(false, "no kernel");
    }
  }
  // Cells that were running in a kernel that is gone have ended.
  settleResumed();
  setState("starting");
  const model = await api("POST", "/api/kernels", { name });
  kernel = { id: model.id, name, session: crypto.randomUUID() };
  sessionStorage.setItem(KERNEL_KEY, JSON.stringify(kernel));
  await connect();
  setState("idle");
}

function handle(msg) {
  const type = msg.header.msg_type;
  const parent = msg.parent_header && msg.parent_header.msg_id;
  const entry = parent ? pending.get(parent) : undefined;
  if (type === "status") {
    if (msg.content.execution_state === "dead") {
      kernelDied(msg.content.reason);
      return;
    }
    // Only a kernel that died by itself is announced as restarting: the runner starts it
    // again, with none of the variables it had.
    if (msg.content.execution_state === "restarting") {
      say("The kernel died and is being restarted: the variables it had are gone.", true);
    }
    setState(msg.content.execution_state);
    if (entry && msg.content.execution_state === "idle") {
      entry.idle = true;
      // A resumed execution's reply went to the connection that asked; its idle is the end.
      if (entry.replied || entry.resumed) entry.finish();
    }
    return;
  }
  if (!entry) return;
  const content = msg.content;
  switch (type) {
    case "execute_input":
      entry.cell.setCount(content.execution_count, true);
      break;
    case "stream":
      entry.cell.addOutput({ output_type: "stream", name: content.name, text: content.text });
      break;
    case "execute_result":
      entry.cell.addOutput({
        output_type: "execute_result",
        data: content.data,
        metadata: content.metadata || {},
        execution_count: content.execution_count,
      });
      break;
    case "display_data":
      entry.cell.addOutput({ output_type: "display_data", data: content.data, metadata: content.metadata || {} });
      break;
    case "error":
      entry.cell.addOutput({
        output_type: "error",
        ename: content.ename,
        evalue: content.evalue,
        traceback: content.traceback || [],
      });
      break;
    case "clear_output":
      if (content.wait) entry.cell.clearBeforeNext = true;
      else entry.cell.clearOutputs();
      break;
    case "input_request":
      entry.cell.askInput(content.prompt, content.password, msg.header);
      break;
    case "execute_reply":
      entry.cell.setCount(content.execution_count, false);
      if (content.status === "error") generation += 1;
      if (content.status === "aborted") entry.cell.setCount(null, false);
      entry.replied = true;
      if (entry.idle) entry.finish();
      break;
    case "complete_reply":
    case "kernel_info_reply":
      entry.finish(content);
      break;
    default:
      break;
  }
}

// Sends a shell request and resolves once its reply (and, for executions, the kernel's idle)
// has come; a lost connection resolves it too.
function request(cell, msgType, content) {
  return new Promise((resolve) => {
    const msgId = send("shell", msgType, content);
    awaitReply(msgId, cell, msgType === "execute_request", resolve);
  });
}

// Waits for the reply to `msgId`; an execution's is remembered until then, across reloads.
// Returns the waiting entry.
function awaitReply(msgId, cell, execution, resolve) {
  const entry = {
    msgId,
    cell,
    replied: false,
    idle: false,
    finish: (value) => {
      pending.delete(msgId);
      if (execution) setRunning(msgId, null);
      if (cell) cell.running = false;
      resolve(value);
    },
  };
  pending.set(msgId, entry);
  if (execution) setRunning(msgId, cell.id);
  return entry;
}

function runningExecutions() {
  try {
    return JSON.parse(sessionStorage.getItem(RUNNING_KEY) || "{}") || {};
  } catch (_) {
    return {};
  }
}

function setRunning(msgId, cellId) {
  const running = runningExecutions();
  if (cellId) running[msgId] = cellId;
  else delete running[msgId];
  sessionStorage.setItem(RUNNING_KEY, JSON.stringify(running));
}

// After a reload: the cells whose executions were in flight wait for the rest of their
// output again, which the runner replays to this session once the websocket is back. What
// the kernel finished while nobody listened is settled once the replay is through.
function resumeExecutions() {
  const running = runningExecutions();
  sessionStorage.removeItem(RUNNING_KEY);
  for (const [msgId, cellId] of Object.entries(running)) {
    const cell = cells.find((each) => each.id === cellId);
    if (!cell || cell.cellType !== "code") continue;
    cell.running = true;
    cell.setCount(null, true);
    awaitReply(msgId, cell, true, () => cell.setCount(cell.count, false)).resumed = true;
  }
}

// Called with the reply to a request sent after reconnecting: the kernel answers its shell
// requests in order, so every execution sent before it has ended, and one still waiting
// ended while nobody listened.
function settleResumed() {
  for (const entry of Array.from(pending.values())) if (entry.resumed) entry.finish();
}

// ---- cells ----

// HTML outputs (pandas tables, rich reprs) may come from a notebook someone else wrote: they
// are parsed in an inert document and rebuilt from an allowlist of elements and attributes,
// so no form, link, style, meta refresh or script reaches the page.
const HTML_TAGS = new Set([
  "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "div", "dl", "dt",
  "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "li", "ol", "p", "pre", "s", "small",
  "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
]);
const HTML_DROPPED = new Set(["script", "style", "template", "iframe", "object", "embed", "noscript", "title", "head"]);
const HTML_ATTRIBUTES = new Set(["colspan", "rowspan", "align", "valign", "title", "border"]);

function sanitizedNodes(source) {
  const nodes = [];
  for (const node of source.childNodes) {
    if (node.nodeType === Node.TEXT_NODE) {
      nodes.push(document.createTextNode(node.textContent));
    } else if (node.nodeType === Node.ELEMENT_NODE) {
      const tag = node.tagName.toLowerCase();
      if (HTML_DROPPED.has(tag)) continue;
      if (!HTML_TAGS.has(tag)) {
        nodes.push(...sanitizedNodes(node));
        continue;
      }
      const copy = document.createElement(tag);
      for (const attribute of node.attributes) {
        if (HTML_ATTRIBUTES.has(attribute.name)) copy.setAttribute(attribute.name, attribute.value);
      }
      copy.append(...sanitizedNodes(node));
      nodes.push(copy);
    }
  }
  return nodes;
}

function sanitizedHtml(html) {
  const parsed = new DOMParser().parseFromString(html, "text/html");
  return sanitizedNodes(parsed.body);
}

function renderData(data) {
  const value = (type) => joined(data[type]);
  if (data["image/png"]) {
    const image = el("img");
    image.src = `data:image/png;base64,${value("image/png").replace(/\s/g, "")}`;
    image.alt = value("text/plain") || "plot";
    return image;
  }
  if (data["image/jpeg"]) {
    const image = el("img");
    image.src = `data:image/jpeg;base64,${value("image/jpeg").replace(/\s/g, "")}`;
    image.alt = value("text/plain") || "image";
    return image;
  }
  if (data["image/svg+xml"]) {
    const image = el("img");
    image.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(value("image/svg+xml"))}`;
    image.alt = value("text/plain") || "image";
    return image;
  }
  if (data["text/html"]) {
    const html = el("div", null, "html-output");
    html.append(...sanitizedHtml(value("text/html")));
    return html;
  }
  return el("pre", value("text/plain") || value("text/markdown") || JSON.stringify(data));
}

function renderOutput(output) {
  switch (output.output_type) {
    case "stream":
      return el("pre", joined(output.text), output.name === "stderr" ? "stream stderr" : "stream");
    case "error": {
      const traceback = Array.isArray(output.traceback) ? output.traceback : [];
      const text = traceback.length ? traceback.join("\n") : `${output.ename}: ${output.evalue}`;
      return el("pre", text.replace(ANSI, ""), "stream error-output");
    }
    default:
      return renderData(output.data || {});
  }
}

// ---- markdown cells: a small renderer that builds elements, never HTML from text ----

// Links go only where a click is harmless: web pages and mail addresses.
function safeHref(url) {
  try {
    const parsed = new URL(url, location.href);
    return ["http:", "https:", "mailto:"].includes(parsed.protocol) ? parsed.href : null;
  } catch (_) {
    return null;
  }
}

function inline(parent, text) {
  const pattern = /(`[^`]+`)|(\*\*[^*]+\*\*|__[^_]+__)|(\*[^*\s][^*]*\*|_[^_\s][^_]*_)|(\[[^\]]+\]\([^)\s]+\))/g;
  let last = 0;
  let match;
  while ((match = pattern.exec(text)) !== null) {
    if (match.index > last) parent.append(text.slice(last, match.index));
    const token = match[0];
    if (match[1]) parent.append(el("code", token.slice(1, -1)));
    else if (match[2]) inline(parent.appendChild(el("strong")), token.slice(2, -2));
    else if (match[3]) inline(parent.appendChild(el("em")), token.slice(1, -1));
    else {
      const [, label, url] = token.match(/^\[([^\]]+)\]\(([^)\s]+)\)$/);
      const href = safeHref(url);
      if (href) {
        const link = el("a");
        link.href = href;
        link.rel = "noopener noreferrer";
        link.target = "_blank";
        inline(link, label);
        parent.append(link);
      } else {
        parent.append(token);
      }
    }
    last = match.index + token.length;
  }
  if (last < text.length) parent.append(text.slice(last));
  return parent;
}

function renderMarkdown(source) {
  const box = el("div", null, "rendered");
  const lines = source.split("\n");
  let paragraph = [];
  let list = null;
  const flush = () => {
    if (paragraph.length) box.append(inline(el("p"), paragraph.join(" ")));
    paragraph = [];
    list = null;
  };
  for (let index = 0; index < lines.length; index += 1) {
    const line = lines[index];
    let match;
    if (line.startsWith("```")) {
      flush();
      const code = [];
      for (index += 1; index < lines.length && !lines[index].startsWith("```"); index += 1) {
        code.push(lines[index]);
      }
      box.append(el("pre", code.join("\n")));
    } else if ((match = line.match(/^(#{1,6})\s+(.*)$/))) {
      flush();
      box.append(inline(el(`h${match[1].length}`), match[2]));
    } else if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      flush();
      box.append(el("hr"));
    } else if ((match = line.match(/^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$/))) {
      if (paragraph.length) flush();
      const tag = match[1] ? "ul" : "ol";
      if (!list || list.tagName.toLowerCase() !== tag) {
        list = el(tag);
        box.append(list);
      }
      list.append(inline(el("li"), match[3]));
    } else if ((match = line.match(/^>\s?(.*)$/))) {
      flush();
      box.append(inline(el("blockquote"), match[1]));
    } else if (line.trim() === "") {
      flush();
    } else {
      list = null;
      paragraph.push(line.trim());
    }
  }
  flush();
  return box;
}

class Cell {
  constructor(cellType, source, outputs, count, id) {
    this.cellType = cellType;
    // nbformat 4.5 cell ids: kept from the file, made up for new cells.
    this.id = typeof id === "string" && /^[A-Za-z0-9_-]{1,64}$/.test(id) ? id : crypto.randomUUID().slice(0, 8);
    this.outputs = [];
    this.count = count;
    this.running = false;
    this.clearBeforeNext = false;
    // The stream output that text on the same stream continues, with its element.
    this.lastStream = null;

    this.root = el("div", null, cellType === "markdown" ? "cell markdown" : "cell");
    this.prompt = el("div", null, "prompt");
    const body = el("div", null, "cell-body");
    this.editor = el("textarea", null, "source");
    this.editor.spellcheck = false;
    this.editor.value = source;
    this.editor.setAttribute("aria-label", cellType === "markdown" ? "markdown cell" : "code cell");
    this.outputBox = el("div", null, "outputs");
    body.append(this.editor, this.outputBox);
    if (cellType === "markdown") {
      // Double-click the rendered text to edit it again.
      this.outputBox.addEventListener("dblclick", () => this.edit());
    }
    const tools = el("div", null, "cell-tools");
    const tool = (label, title, action) => {
      const button = el("button", label, "small");
      button.type = "button";
      button.title = title;
      button.addEventListener("click", action);
      tools.append(button);
      return button;
    };
    if (cellType === "code") tool("▶", "Run this cell", () => runCell(this));
    tool("↑", "Move up", () => moveCell(this, -1));
    tool("↓", "Move down", () => moveCell(this, 1));
    tool("✕", "Delete this cell", () => deleteCell(this));
    this.root.append(this.prompt, body, tools);

    this.editor.addEventListener("input", () => {
      this.fit();
      scheduleSave();
    });
    this.editor.addEventListener("keydown", (event) => this.onKey(event));
    for (const output of outputs) this.addOutput(output, true);
    this.setCount(count, false);
    if (cellType === "markdown" && source.trim()) this.render();
  }

  // Markdown: show the text rendered instead of its source.
  render() {
    this.outputBox.replaceChildren(renderMarkdown(this.source()));
    this.editor.hidden = true;
  }

  edit() {
    this.editor.hidden = false;
    this.outputBox.replaceChildren();
    this.fit();
    this.editor.focus();
  }

  source() {
    return this.editor.value;
  }

  fit() {
    this.editor.style.height = "auto";
    this.editor.style.height = `${this.editor.scrollHeight + 2}px`;
  }

  setCount(count, running) {
    if (this.cellType !== "code") {
      this.prompt.textContent = "md";
      return;
    }
    if (count !== undefined && count !== null) this.count = count;
    if (count === null && !running) this.count = null;
    this.prompt.textContent = running || this.running ? "[*]:" : `[${this.count ?? " "}]:`;
    scheduleSave();
  }

  clearOutputs() {
    this.outputs = [];
    this.lastStream = null;
    this.outputBox.replaceChildren();
    this.clearBeforeNext = false;
    scheduleSave();
  }

  addOutput(output, restoring) {
    if (this.clearBeforeNext) this.clearOutputs();
    // Text on the same stream joins the block it continues, unless something came between.
    const last = this.lastStream;
    if (output.output_type === "stream" && last && last.output.name === output.name) {
      last.output.text = joined(last.output.text) + joined(output.text);
      last.element.textContent = last.output.text;
    } else {
      this.outputs.push(output);
      const element = renderOutput(output);
      this.outputBox.append(element);
      this.lastStream = output.output_type === "stream" ? { output, element } : null;
    }
    if (!restoring) scheduleSave();
  }

  askInput(prompt, password, requestHeader) {
    this.lastStream = null;
    const line = el("div", null, "input-request");
    line.append(el("span", prompt || ""));
    const field = el("input");
    field.type = password ? "password" : "text";
    field.setAttribute("aria-label", "input for the running cell");
    line.append(field);
    this.outputBox.append(line);
    field.focus();
    field.addEventListener("keydown", (event) => {
      if (event.key !== "Enter") return;
      event.preventDefault();
      send("stdin", "input_reply", { value: field.value }, requestHeader);
      line.replaceWith(el("pre", `${prompt || ""}${password ? "" : field.value}`, "stream"));
    });
  }

  // Tab completion. The protocol counts positions in code points, the editor in UTF-16
  // units; a reply that comes after the text changed is dropped.
  async complete() {
    const code = this.source();
    const cursor = this.editor.selectionStart;
    await ensureKernel();
    const points = (text) => Array.from(text).length;
    const units = (count) => Array.from(code).slice(0, count).join("").length;
    const reply = await request(null, "complete_request", { code, cursor_pos: points(code.slice(0, cursor)) });
    if (!reply || reply.status !== "ok" || !reply.matches.length || this.source() !== code) return;
    const matches = reply.matches;
    let common = matches[0];
    for (const match of matches) {
      while (!match.startsWith(common)) common = common.slice(0, -1);
    }
    const start = units(reply.cursor_start);
    const end = units(reply.cursor_end);
    if (common.length > end - start) {
      this.editor.setRangeText(common, start, end, "end");
      scheduleSave();
    }
    if (matches.length > 1) say(matches.slice(0, 30).join("  "));
  }

  onKey(event) {
    if (event.key === "Enter" && (event.shiftKey || event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      if (this.cellType === "code") runCell(this);
      else this.render();
      if (event.shiftKey) focusNext(this);
    } else if (event.key === "Tab" && !event.shiftKey && this.cellType === "code") {
      event.preventDefault();
      const before = this.source().slice(0, this.editor.selectionStart);
      if (/[\w.]$/.test(before)) {
        this.complete().catch((error) => say(`Completion failed: ${error.message}`, true));
      } else {
        this.editor.setRangeText("    ", this.editor.selectionStart, this.editor.selectionEnd, "end");
      }
    }
  }

  toJson() {
    const cell = { cell_type: this.cellType, id: this.id, metadata: {}, source: this.source() };
    if (this.cellType === "code") {
      cell.outputs = this.outputs;
      cell.execution_count = this.count ?? null;
    }
    return cell;
  }
}

function addCell(cellType, source, outputs, count, after) {
  const cell = new Cell(cellType, source || "", outputs || [], count ?? null);
  const index = after ? cells.indexOf(after) + 1 : cells.length;
  cells.splice(index, 0, cell);
  const next = cells[index + 1];
  if (next) cellsBox.insertBefore(cell.root, next.root);
  else cellsBox.append(cell.root);
  cell.fit();
  scheduleSave();
  return cell;
}

function focusNext(cell) {
  const index = cells.indexOf(cell);
  const next = cells[index + 1] || addCell("code", "", [], null, cell);
  next.editor.focus();
}

function moveCell(cell, step) {
  const index = cells.indexOf(cell);
  const target = index + step;
  if (target < 0 || target >= cells.length) return;
  cells.splice(index, 1);
  cells.splice(target, 0, cell);
  cellsBox.replaceChildren(...cells.map((each) => each.root));
  scheduleSave();
}

function deleteCell(cell) {
  cells = cells.filter((each) => each !== cell);
  cell.root.remove();
  if (cells.length === 0) addCell("code");
  scheduleSave();
}

function runCell(cell) {
  const mine = generation;
  cell.running = true;
  cell.setCount(null, true);
  queue = queue.then(async () => {
    if (mine !== generation || !cells.includes(cell)) {
      // An earlier cell failed, or this one was deleted while it waited: it does not run.
      cell.running = false;
      cell.setCount(cell.count, false);
      return;
    }
    try {
      await ensureKernel();
      cell.clearOutputs();
      await request(cell, "execute_request", {
        code: cell.source(),
        silent: false,
        store_history: true,
        user_expressions: {},
        allow_stdin: true,
        stop_on_error: true,
      });
    } catch (error) {
      say(`Cannot run the cell: ${error.message}`, true);
      generation += 1;
    } finally {
      cell.running = false;
      cell.setCount(cell.count, false);
    }
  });
  return queue;
}

// ---- the notebook: local persistence, .ipynb in and out ----

function notebookJson() {
  const option = kernelSelect.selectedOptions[0];
  return {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: {
      kernelspec: { name: kernelSelect.value, display_name: option ? option.textContent : kernelSelect.value },
    },
    cells: cells.map((cell) => cell.toJson()),
  };
}

function saveNow() {
  clearTimeout(saveTimer);
  saveTimer = null;
  const notebook = notebookJson();
  try {
    localStorage.setItem(NOTEBOOK_KEY, JSON.stringify(notebook));
  } catch (_) {
    // Over the browser's quota (big plots): keep the sources at least.
    for (const cell of notebook.cells) if (cell.outputs) cell.outputs = [];
    try {
      localStorage.setItem(NOTEBOOK_KEY, JSON.stringify(notebook));
    } catch (_) {
      say("This notebook is too big to keep in the browser: save it as .ipynb.", true);
    }
  }
}

function scheduleSave() {
  clearTimeout(saveTimer);
  saveTimer = setTimeout(saveNow, 300);
}

// Leaving or reloading the page keeps the last keystrokes and outputs too.
window.addEventListener("pagehide", () => {
  if (saveTimer !== null) saveNow();
});

// The browser keeps one notebook: another tab saving it is said once, before two tabs
// overwrite each other's work unnoticed.
let warnedOfOtherTab = false;
window.addEventListener("storage", (event) => {
  if (event.key !== NOTEBOOK_KEY || warnedOfOtherTab) return;
  warnedOfOtherTab = true;
  say("This notebook is open in another tab too: the tab that saves last keeps its version. Save it as .ipynb to keep both.", true);
});

// Replaces the notebook with `notebook` (nbformat 4), or throws leaving the current one as
// it was when `notebook` is not one.
function load(notebook) {
  if (!notebook || !Array.isArray(notebook.cells)) throw new Error("it has no cells");
  const loaded = [];
  for (const cell of notebook.cells) {
    if (!cell || (cell.cell_type !== "code" && cell.cell_type !== "markdown")) continue;
    const outputs = Array.isArray(cell.outputs) ? cell.outputs.filter((output) => output && output.output_type) : [];
    loaded.push(new Cell(cell.cell_type, joined(cell.source), outputs, cell.execution_count ?? null, cell.id));
  }
  if (loaded.length === 0) loaded.push(new Cell("code", "", [], null));
  cells = loaded;
  cellsBox.replaceChildren(...cells.map((cell) => cell.root));
  for (const cell of cells) cell.fit();
  const name = notebook.metadata && notebook.metadata.kernelspec && notebook.metadata.kernelspec.name;
  if (name && Array.from(kernelSelect.options).some((option) => option.value === name)) {
    kernelSelect.value = name;
  }
  scheduleSave();
}

// The chosen spec differs from the running kernel's: that kernel goes, a new one starts.
function switchKernel() {
  if (kernel && kernel.name !== kernelSelect.value) {
    dropKernel(true, "no kernel");
    for (const cell of cells) cell.setCount(null, false);
  }
  scheduleSave();
  ensureKernel().catch((error) => say(`No kernel: ${error.message}`, true));
}

function download() {
  const blob = new Blob([JSON.stringify(notebookJson(), null, 1)], { type: "application/x-ipynb+json" });
  const link = el("a");
  link.href = URL.createObjectURL(blob);
  link.download = "notebook.ipynb";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

// ---- the toolbar ----

document.getElementById("run-all").addEventListener("click", () => {
  generation += 1;
  for (const cell of cells) {
    if (cell.cellType === "code") runCell(cell);
    else if (cell.source().trim()) cell.render();
  }
});

document.getElementById("interrupt").addEventListener("click", async () => {
  if (!kernel) return;
  try {
    await api("POST", `/api/kernels/${encodeURIComponent(kernel.id)}/interrupt`);
    generation += 1;
  } catch (error) {
    say(`Interrupt failed: ${error.message}`, true);
  }
});

document.getElementById("restart").addEventListener("click", async () => {
  if (!kernel) return;
  try {
    setState("restarting");
    await api("POST", `/api/kernels/${encodeURIComponent(kernel.id)}/restart`);
    generation += 1;
    for (const cell of cells) cell.setCount(null, false);
    say("Kernel restarted: its variables are gone, the cells stay.");
  } catch (error) {
    say(`Restart failed: ${error.message}`, true);
  }
});

document.getElementById("shutdown").addEventListener("click", () => {
  if (kernel) dropKernel(true, "no kernel");
});

document.getElementById("add-cell").addEventListener("click", () => {
  addCell("code").editor.focus();
});

document.getElementById("add-markdown").addEventListener("click", () => {
  addCell("markdown").editor.focus();
});

document.getElementById("save").addEventListener("click", download);

document.getElementById("open").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  try {
    load(JSON.parse(await file.text()));
    say(`Opened ${file.name}.`);
    switchKernel();
  } catch (error) {
    say(`${file.name} is not a notebook: ${error.message}`, true);
  }
  event.target.value = "";
});

kernelSelect.addEventListener("change", () => {
  // Another language: the old kernel goes, a new one starts.
  switchKernel();
});

// ---- start ----

const wanted = new URLSearchParams(location.search).get("kernel");
let stored = null;
try {
  stored = JSON.parse(localStorage.getItem(NOTEBOOK_KEY) || "null");
  if (stored) load(stored);
} catch (error) {
  say(`The notebook kept in this browser could not be read (${error.message}); starting afresh.`, true);
}
if (cells.length === 0) addCell("code");
if (wanted && Array.from(kernelSelect.options).some((option) => option.value === wanted)) {
  kernelSelect.value = wanted;
}
// A kernel starts with the first run; one this tab had before a reload is found again now.
const saved = JSON.parse(sessionStorage.getItem(KERNEL_KEY) || "null");
if (saved && saved.name === kernelSelect.value) {
  resumeExecutions();
  ensureKernel().catch((error) => {
    setState("no kernel");
    say(`No kernel: ${error.message}`, true);
  });
} else {
  sessionStorage.removeItem(RUNNING_KEY);
}
cells[0].editor.focus();
