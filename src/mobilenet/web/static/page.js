/* The explorer's shared pieces: the page's state, DOM helpers, and the one way it asks the server.
 * Nothing on the page counts a mult-add or predicts a millisecond: every number comes from
 * /api/* (the Python library), and the page only formats and draws it. */
"use strict";

const $ = (id) => document.getElementById(id);
const KINDS = {
  conv: ["standard 3×3 conv", "var(--stem)"], depthwise: ["depthwise 3×3", "var(--depthwise)"],
  pointwise: ["pointwise 1×1", "var(--pointwise)"], pool: ["average pool", "var(--pool)"],
  fc: ["fully connected", "var(--fc)"],
};
const METRIC_NAMES = { mult_adds: "mult-adds", weights: "weights", activation_bytes: "bytes (input + output)" };
const COST_CONTROLS = ["alpha", "resolution", "height", "width", "variant", "depth_multiplier", "classes", "bytes_per_element"];
const state = { options: null, cost: null, metric: "mult_adds", browserModels: new Map(), requests: new Map() };

const integer = (n) => Number(n).toLocaleString("en-US");
const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(2)} MiB`;
const shape = (chw) => chw.join("×");

function element(tag, properties = {}, children = []) {
  const node = Object.assign(document.createElement(tag), properties);
  node.append(...children);
  return node;
}

function table(node, header, rows) {
  node.replaceChildren(element("thead", {}, [element("tr", {}, header.map((h) => element("th", { textContent: h })))]),
                       element("tbody", {}, rows));
}

function row(cells, className = "") {
  return element("tr", { className }, cells.map((c) => (c instanceof Node ? element("td", {}, [c]) : element("td", { textContent: c }))));
}

/** The latest request of a kind wins. Answers come back in any order (a slow prediction for the
 * settings before last can arrive after the one for the settings now shown), so every view that
 * asks as controls change starts its request with `latest(kind)`: the kind's request still under
 * way is aborted, and after every await the view shows its answer (or its error) only while
 * `request.current()`: an aborted or overtaken request shows nothing. `request.signal` goes to fetch. */
function latest(kind) {
  state.requests.get(kind)?.abort();
  const controller = new AbortController();
  state.requests.set(kind, controller);
  return { signal: controller.signal, current: () => state.requests.get(kind) === controller };
}

async function getJson(url, init = {}) {
  const response = await fetch(url, init);
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function showError(message) {
  $("error").textContent = message || "";
}
