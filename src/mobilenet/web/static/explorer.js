/* The explorer's page: controls in, the server's numbers out. Nothing here counts a mult-add or
 * predicts a millisecond: every number comes from /api/* (the Python library), and this file
 * only formats and draws it. */
"use strict";

const $ = (id) => document.getElementById(id);
const KINDS = {
  conv: ["standard 3×3 conv", "var(--stem)"], depthwise: ["depthwise 3×3", "var(--depthwise)"],
  pointwise: ["pointwise 1×1", "var(--pointwise)"], pool: ["average pool", "var(--pool)"],
  fc: ["fully connected", "var(--fc)"],
};
const METRIC_NAMES = { mult_adds: "mult-adds", weights: "weights", activation_bytes: "bytes (input + output)" };
const COST_CONTROLS = ["alpha", "resolution", "height", "width", "variant", "depth_multiplier", "classes", "bytes_per_element"];
const state = { options: null, cost: null, metric: "mult_adds", browserModels: new Map(), costRequest: null };

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

async function getJson(url, init = {}) {
  const response = await fetch(url, init);
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function showError(message) {
  $("error").textContent = message || "";
}

// --------------------------------------------------------------------------------- cost view

function costQuery() {
  const query = new URLSearchParams();
  const skipped = $("non-square").checked ? ["resolution"] : ["height", "width"];
  for (const name of COST_CONTROLS) if (!skipped.includes(name)) query.set(name, $(name).value);
  return query;
}

let costTimer = null;
function scheduleCost() {
  document.body.classList.add("busy"); // tests and scripts wait for this to clear
  clearTimeout(costTimer);
  costTimer = setTimeout(updateCost, 40);
}

async function updateCost() {
  const started = performance.now();
  state.costRequest?.abort();
  const request = (state.costRequest = new AbortController());
  try {
    const view = await getJson(`/api/cost?${costQuery()}`, { signal: request.signal });
    state.cost = view;
    showError("");
    document.querySelector("main").classList.remove("stale");
    renderCost(view);
    $("footer").textContent = `${view.network.convention}. Cost view updated in ${(performance.now() - started).toFixed(0)} ms.`;
    updatePrediction();
    updateChoice();
  } catch (err) {
    if (err.name === "AbortError") return;
    showError(err.message);
    document.querySelector("main").classList.add("stale");
  } finally {
    if (state.costRequest === request) document.body.classList.remove("busy");
  }
}

function renderCost({ network, comparison }) {
  const t = network.total;
  setTotal("total-mult-adds", t.mult_adds, `FLOPs ${integer(t.flops)} (2 × mult-adds)`);
  setTotal("total-params", t.trainable_params, `${integer(t.all_params)} with BatchNorm statistics (Keras)`);
  setTotal("total-weights", t.weights, `conv ${integer(t.conv_weights)} + FC ${integer(t.fc_weights)}`);
  setTotal("total-peak", t.peak_activation_bytes, `${mib(t.peak_activation_bytes)}, at ${t.peak_layer}`, " B");
  if (comparison) {
    const { separable, standard } = comparison.total;
    $("total-savings").textContent = `${(standard.mult_adds / separable.mult_adds).toFixed(2)}× fewer`;
    $("total-savings-note").textContent = `mult-adds than ${integer(standard.mult_adds)} with full 3×3 convolutions`;
  } else {
    $("total-savings").textContent = "–";
    $("total-savings-note").textContent = "Table 4's network is the full-convolution one";
  }
  drawLayers(network);
  drawComparison(comparison);
  renderShares(network.shares);
  renderBlocks(comparison);
  renderLayers(network);
}

function setTotal(id, value, note, unit = "") {
  $(id).textContent = `${integer(value)}${unit}`;
  $(id).dataset.value = String(value);
  $(id).closest(".card").querySelector(".note").textContent = note;
}

function drawLayers(network) {
  const metric = state.metric;
  const value = (layer) => (metric === "activation_bytes" ? layer.in_bytes + layer.out_bytes : layer[metric]);
  Charts.bars($("layer-chart"), network.layers.map((layer) => ({
    label: layer.name.replace("blocks.", "b"), value: value(layer), color: KINDS[layer.kind][1],
    title: `${layer.name} (${KINDS[layer.kind][0]}): ${integer(value(layer))} ${METRIC_NAMES[metric]}`,
  })));
  $("layer-legend").replaceChildren(...Object.values(KINDS).map(([name, color]) =>
    element("span", {}, [element("i", { style: `background:${color}` }), name])));
}

function drawComparison(comparison) {
  if (!comparison) {
    Charts.ratios($("compare-chart"), []);
    return;
  }
  Charts.ratios($("compare-chart"), comparison.blocks.map((b) => ({
    label: String(b.block), value: b.mult_adds_ratio, line: b.formula_ratio, color: "var(--separable)",
    title: `block ${b.block}: separable ${integer(b.separable.mult_adds)} / standard ${integer(b.standard.mult_adds)} = ` +
      `${b.mult_adds_ratio.toFixed(4)}; 1/N + 1/K² = ${b.formula_ratio.toFixed(4)}`,
  })));
}

function renderShares(shares) {
  table($("shares"), ["layer type", "mult-adds", "share", "weights", "share"], shares.map((s) => row([
    s.label, integer(s.mult_adds), `${(100 * s.mult_adds_fraction).toFixed(2)}%`, integer(s.weights),
    `${(100 * s.weights_fraction).toFixed(2)}%`,
  ])));
}

function renderBlocks(comparison) {
  if (!comparison) {
    table($("blocks"), ["Table 4's network has no separable blocks"], []);
    return;
  }
  table($("blocks"), ["block", "input", "output", "full conv", "separable", "fewer", "ratio", "1/N + 1/K²"],
        comparison.blocks.map((b) => row([
          String(b.block), shape(b.input), shape(b.output), integer(b.standard.mult_adds), integer(b.separable.mult_adds),
          `${(b.standard.mult_adds / b.separable.mult_adds).toFixed(2)}×`, b.mult_adds_ratio.toFixed(4),
          b.formula_ratio.toFixed(4),
        ])));
}

function renderLayers(network) {
  const peak = network.total.peak_layer;
  table($("layers"), ["layer", "type", "stride", "input", "output", "mult-adds", "weights", "params", "memory (B)"],
        network.layers.map((x) => row([
          element("span", {}, [element("i", { className: "kind", style: `background:${KINDS[x.kind][1]}` }), x.name]),
          KINDS[x.kind][0], String(x.stride), shape(x.in_shape), shape(x.out_shape), integer(x.mult_adds),
          integer(x.weights), integer(x.trainable_params), integer(x.in_bytes + x.out_bytes),
        ], x.name === peak ? "peak" : "")));
}

// --------------------------------------------------------------------------------- time view

function runtimeQuery() {
  const query = costQuery();
  query.set("runtime", $("runtime").value);
  query.set("precision", $("precision").value);
  if ($("threads").value.trim()) query.set("threads", $("threads").value.trim());
  return query;
}

async function updatePrediction() {
  try {
    const prediction = await getJson(`/api/predict?${runtimeQuery()}`);
    state.prediction = prediction.available ? prediction : null;
    $("prediction-status").textContent = prediction.available
      ? `predicted for ${prediction.runtime} ${prediction.precision} on this machine: ` +
        `${prediction.predicted_ms.toFixed(2)} ms (of which the call itself ${prediction.call_ms.toFixed(2)} ms)`
      : prediction.reason;
    $("calibrate").hidden = prediction.available || !prediction.can_calibrate;
    const layers = prediction.available ? prediction.layers : [];
    $("time-chart").hidden = !layers.length;
    Charts.bars($("time-chart"), layers.map((layer) => ({
      label: layer.name.replace("blocks.", "b"), value: layer.predicted_ms,
      color: layer.bound === "memory" ? "var(--depthwise)" : "var(--pointwise)",
      title: `${layer.name}: ${layer.predicted_ms.toFixed(3)} ms, ${layer.bound}-bound`,
    })), { unit: " ms" });
    $("time-legend").hidden = !layers.length;
  } catch (err) {
    $("prediction-status").textContent = err.message;
  }
}

/** Start a background job (POST url) and show its progress until it ends; its result, or an error. */
async function runJob(url) {
  const buttons = [$("measure"), $("calibrate")];
  buttons.forEach((b) => (b.disabled = true));
  const bar = $("measure-progress");
  bar.hidden = false;
  try {
    let job = await getJson(url, { method: "POST" });
    while (job.state === "running") {
      bar.querySelector("div").style.width = `${100 * job.progress}%`;
      bar.querySelector("span").textContent = `${job.what}: ${job.message}`;
      await new Promise((resolve) => setTimeout(resolve, 250));
      job = await getJson(`/api/jobs/${job.id}`);
    }
    if (job.state === "failed") throw new Error(job.error);
    return job.result;
  } finally {
    buttons.forEach((b) => (b.disabled = false));
    bar.hidden = true;
  }
}

async function measure() {
  try {
    showMeasurement(await runJob(`/api/measure?${runtimeQuery()}`));
  } catch (err) {
    $("time-result").replaceChildren(element("p", { className: "error", textContent: err.message }));
  }
}

async function calibrate() {
  try {
    await runJob(`/api/calibrate?${runtimeQuery()}`);
    await Promise.all([updatePrediction(), updateChoice()]);
  } catch (err) {
    $("prediction-status").textContent = err.message;
  }
}

/** Predicted and measured side by side: the whole call, and each layer type's share of the time. */
function showMeasurement(measured) {
  const predicted = state.prediction;
  const predictedShare = {};
  for (const layer of predicted ? predicted.layers : []) {
    predictedShare[layer.kind] = (predictedShare[layer.kind] || 0) + layer.predicted_ms;
  }
  const layerMs = Object.values(predictedShare).reduce((a, b) => a + b, 0);
  const percent = (x) => (x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
  const rows = [row(["whole call, ms", predicted ? predicted.predicted_ms.toFixed(2) : "–",
                     `${measured.median_ms.toFixed(2)} (p10 ${measured.p10_ms.toFixed(2)}, p90 ${measured.p90_ms.toFixed(2)})`,
                     ""], "peak")];
  for (const kind of measured.kinds) {
    rows.push(row([kind.label, predicted ? percent((predictedShare[kind.kind] || 0) / layerMs) : "–",
                   percent(kind.time_share), percent(kind.mult_add_share)]));
  }
  const result = element("table", { className: "side-by-side" });
  table(result, ["", "predicted", `measured here (${measured.runs} runs)`, "mult-adds"], rows);
  $("time-result").replaceChildren(result, element("p", { className: "note", textContent: measured.description }));
}

// --------------------------------------------------------------------------------- choose view

async function updateChoice() {
  const query = new URLSearchParams({ runtime: $("runtime").value, precision: $("precision").value,
                                      budget: $("budget").value });
  try {
    const choice = await getJson(`/api/choose?${query}`);
    const byLatency = choice.axis === "predicted_ms";
    if (state.chooseAxis && state.chooseAxis !== choice.axis) { // ms and mult-adds budgets differ: start mid-range
      const costs = choice.candidates.map((c) => c.cost).sort((a, b) => a - b);
      $("budget").value = costs[Math.floor(costs.length / 2)].toPrecision(3);
      state.chooseAxis = choice.axis;
      return updateChoice();
    }
    state.chooseAxis = choice.axis;
    $("budget-label").textContent = byLatency ? "budget (ms)" : "budget (million mult-adds)";
    $("choose-status").textContent = choice.available ? `predicted for ${$("runtime").value} ${$("precision").value} ` +
      "on this machine" : `${choice.reason}. Until then: published top-1 against mult-adds (the paper's Figure 4).`;
    const family = $("family").value;
    const shown = choice.candidates.filter((c) => !family || c.family === family);
    Charts.scatter($("choose-chart"), shown.map((c) => ({
      x: c.cost, y: c.top1, front: c.pareto, chosen: choice.chosen && c.name === choice.chosen.name,
      label: `${c.name}: ${c.top1}% top-1, ${byLatency ? `${c.predicted_ms.toFixed(2)} ms` : `${c.cost.toFixed(1)}M mult-adds`}`,
    })), { xLabel: byLatency ? "predicted ms" : "million mult-adds", yLabel: "published top-1", budget: Number($("budget").value) });
    $("chosen").textContent = choice.chosen ? `Chosen: ${choice.chosen.name}, ${choice.chosen.top1}% top-1` : "";
  } catch (err) {
    $("choose-status").textContent = err.message;
    $("chosen").textContent = "";
  }
}

// --------------------------------------------------------------------------------- classify

function showTop(list, top1, top) {
  top1.textContent = top[0] ? top[0].label : "";
  list.replaceChildren(...top.map((p) => element("li", {}, [
    element("span", { textContent: p.label }), element("span", { textContent: `${(100 * p.probability).toFixed(2)}%` }),
  ])));
  [...list.children].forEach((item, i) => Object.assign(item.dataset, { index: top[i].index, probability: top[i].probability }));
}

async function classify(file) {
  for (const id of ["server-top1", "browser-top1", "server-time", "browser-time", "server-status", "browser-status"]) $(id).textContent = "";
  $("server-top5").replaceChildren();
  $("browser-top5").replaceChildren();
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  await Promise.all([classifyOnServer(file), classifyInBrowser(file)]);
}

async function classifyOnServer(file) {
  const query = new URLSearchParams({ weights: $("weights").value, runtime: $("server-runtime").value });
  $("server-status").textContent = "classifying…";
  try {
    const answer = await getJson(`/api/classify?${query}`, { method: "POST", body: file,
                                                             headers: { "Content-Type": "application/octet-stream" } });
    showTop($("server-top5"), $("server-top1"), answer.top);
    $("server-time").textContent = `${answer.ms.toFixed(1)} ms`;
    $("server-status").textContent = `${answer.weights}: ${answer.description}`;
  } catch (err) {
    $("server-status").textContent = "";
    showError(err.message);
  }
}

async function classifyInBrowser(file) {
  const browser = state.options.browser;
  if (!browser.available) {
    $("browser-status").textContent = browser.reason;
    return;
  }
  const weights = $("weights").value;
  try {
    if (!state.browserModels.has(weights)) {
      $("browser-status").textContent = "loading the model into the browser (the first time, the server exports it to ONNX)…";
      const base = `/api/browser/${encodeURIComponent(weights)}/`;
      state.browserModels.set(weights, MobileNetBrowser.load({
        model: `${base}model.onnx`, labels: `${base}labels.json`, preprocess: `${base}preprocess.json`,
        wasmPaths: "/static/vendor/onnxruntime-web/",
      }));
    }
    const model = await state.browserModels.get(weights);
    const answer = await MobileNetBrowser.classifyFile(model, file);
    showTop($("browser-top5"), $("browser-top1"), answer.top);
    $("browser-time").textContent = `${answer.modelMs.toFixed(1)} ms (+ ${answer.preprocessMs.toFixed(1)} ms preprocessing)`;
    $("browser-status").textContent = `onnxruntime-web ${browser.onnxruntime_web}, WASM, ${model.threads} thread(s)`;
  } catch (err) {
    state.browserModels.delete(weights);
    $("browser-status").textContent = err.message;
  }
}

// --------------------------------------------------------------------------------- set-up

function fill(select, values, label = (v) => v) {
  select.replaceChildren(...values.map((v) => element("option", { value: v, textContent: label(v) })));
}

async function start() {
  state.options = await getJson("/api/options");
  const { options } = state;
  fill($("runtime"), options.runtimes);
  fill($("server-runtime"), options.runtimes);
  fill($("precision"), options.precisions);
  const weights = [...options.weights].sort((a, b) => b.default - a.default || b.cached - a.cached);
  fill($("weights"), weights.map((w) => w.name), (name) => {
    const w = options.weights.find((x) => x.name === name);
    return `${name}${w.default ? " (default)" : ""}${w.cached ? "" : " (downloads on first use)"}`;
  });
  const families = [...new Set(options.weights.map((w) => w.family))];
  $("family").append(...families.map((f) => element("option", { value: f, textContent: f })));

  for (const name of COST_CONTROLS) $(name).addEventListener("input", scheduleCost);
  $("non-square").addEventListener("change", () => {
    const on = $("non-square").checked;
    $("square").classList.toggle("hidden", on);
    $("height-label").classList.toggle("hidden", !on);
    $("width-label").classList.toggle("hidden", !on);
    if (on && !$("height").value) $("height").value = $("width").value = $("resolution").value;
    scheduleCost();
  });
  for (const button of $("metric-tabs").querySelectorAll("button")) {
    button.addEventListener("click", () => {
      state.metric = button.dataset.metric;
      for (const other of $("metric-tabs").querySelectorAll("button")) other.classList.toggle("on", other === button);
      if (state.cost) drawLayers(state.cost.network);
    });
  }
  for (const id of ["runtime", "precision", "threads"]) $(id).addEventListener("change", () => { updatePrediction(); updateChoice(); });
  for (const id of ["budget", "family"]) $(id).addEventListener("input", updateChoice);
  $("measure").addEventListener("click", measure);
  $("calibrate").addEventListener("click", calibrate);
  $("photo").addEventListener("change", () => $("photo").files[0] && classify($("photo").files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files[0]) classify(event.dataTransfer.files[0]);
  });
  window.addEventListener("resize", () => state.cost && renderCost(state.cost));
  scheduleCost();
}

start().catch((err) => showError(err.message));
