/* The explorer's page, wired: the controls, the panels (cost-view.js, time-view.js,
 * classify-view.js) and the first request. */
"use strict";

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
