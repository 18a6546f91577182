// What the pages' scripts share: building elements with text (never HTML), byte counts, and
// calling the gateway's JSON API with the login cookie. Loaded before each page's own script.
"use strict";

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

// A JSON API call; an error answer becomes an Error with the server's message and status.
async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (!response.ok) {
    let reason = `${response.status} ${response.statusText}`;
    try {
      const answer = await response.json();
      reason = answer.message || answer.reason || reason;
    } catch (_) {
      // Not JSON: keep the status line.
    }
    const error = new Error(reason);
    error.status = response.status;
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

// A byte count in binary units, as the pages show sizes and memory.
function bytes(count) {
  if (count === null || count === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}
