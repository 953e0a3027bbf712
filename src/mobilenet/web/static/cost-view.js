/* The cost view: every layer, each block against the full convolution it replaces, Table 2's
 * shares. The numbers are /api/cost's (mobilenet.cost); this file formats and draws them. */
"use strict";

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
  costTimer = null;
  const started = performance.now();
  const request = latest("cost");
  try {
    const view = await getJson(`/api/cost?${costQuery()}`, { signal: request.signal });
    if (!request.current()) return;
    state.cost = view;
    showError("");
    document.querySelector("main").classList.remove("stale");
    renderCost(view);
    $("footer").textContent = `${view.network.convention}. Cost view updated in ${(performance.now() - started).toFixed(0)} ms.`;
    updatePrediction();
    updateChoice();
  } catch (err) {
    if (!request.current()) return; // (aborted by a newer change: its own answer is shown)
    showError(err.message);
    document.querySelector("main").classList.add("stale");
  } finally {
    // Settled only when this is the latest request and no change waits for its turn.
    if (request.current() && costTimer === null) document.body.classList.remove("busy");
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
