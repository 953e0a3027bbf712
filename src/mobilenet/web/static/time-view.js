/* The time and choose views: predicted time (mobilenet.latency), time measured on this machine,
 * and the published model for a budget. The numbers are the server's; this file shows them. */
"use strict";

/** The runtime settings every time and choose request sends: the latency constants are
 * per runtime, precision and thread count, so a view that left one out would read other constants. */
function runtimeSettings() {
  const query = new URLSearchParams({ runtime: $("runtime").value, precision: $("precision").value });
  if ($("threads").value.trim()) query.set("threads", $("threads").value.trim());
  return query;
}

function runtimeQuery() {
  const query = costQuery();
  for (const [name, value] of runtimeSettings()) query.set(name, value);
  return query;
}

/** /api/predict's answer for `query` when it has one (latency constants here), else null. */
async function predictionFor(query) {
  const prediction = await getJson(`/api/predict?${query}`);
  return prediction.available ? { ...prediction, query: String(query) } : null;
}

async function updatePrediction() {
  const request = latest("prediction");
  const query = runtimeQuery();
  try {
    const prediction = await getJson(`/api/predict?${query}`, { signal: request.signal });
    if (!request.current()) return;
    // Kept with the settings it is for: a measurement is shown beside the prediction of its own.
    state.prediction = prediction.available ? { ...prediction, query: String(query) } : null;
    $("prediction-status").textContent = prediction.available
      ? `predicted for ${prediction.runtime} ${prediction.precision} on this machine: ` +
        `${prediction.predicted_ms.toFixed(2)} ms (of which the call itself ${prediction.call_ms.toFixed(2)} ms)` +
        (prediction.calibrated ? `; calibrated ${prediction.calibrated}` : "") +
        (prediction.caveats.length ? `; ${prediction.caveats.join(" and ")}: calibrate again when the machine is quiet` : "")
      : prediction.reason;
    // Constants keep the machine's speed of the spell they were measured in: offered again once calibrated.
    $("calibrate").hidden = !prediction.available && !prediction.can_calibrate;
    $("calibrate").textContent = prediction.available ? "Calibrate again" : "Calibrate the latency model";
    const layers = prediction.available ? prediction.layers : [];
    $("time-chart").hidden = !layers.length;
    Charts.bars($("time-chart"), layers.map((layer) => ({
      label: layer.name.replace("blocks.", "b"), value: layer.predicted_ms,
      color: layer.bound === "memory" ? "var(--depthwise)" : "var(--pointwise)",
      title: `${layer.name}: ${layer.predicted_ms.toFixed(3)} ms, ${layer.bound}-bound` +
        (layer.attained_macs_per_s ? `, ${(layer.attained_macs_per_s / 1e9).toPrecision(3)} G mult-adds/s` : "") +
        (layer.spilled_bytes ? `, ${(layer.spilled_bytes / 2 ** 20).toFixed(1)} MiB of its activations from memory` : ""),
    })), { unit: " ms" });
    $("time-legend").hidden = !layers.length;
  } catch (err) {
    if (!request.current()) return;
    state.prediction = null;
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
    return job;
  } finally {
    buttons.forEach((b) => (b.disabled = false));
    bar.hidden = true;
  }
}

async function measure() {
  // The settings as clicked: the controls may change while it runs, and the prediction beside the
  // measurement must be of the network measured, not of whatever the page shows when it ends.
  const query = runtimeQuery();
  const threads = query.get("threads");
  try {
    const job = await runJob(`/api/measure?${query}`);
    let predicted = state.prediction && state.prediction.query === String(query) ? state.prediction : null;
    if (!predicted) predicted = await predictionFor(query).catch(() => null);
    const settings = `${job.what.replace(/^measuring /, "")}, ${threads ? `${threads} thread(s)` : "the runtime's threads"}`;
    showMeasurement(job.result, predicted, settings);
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

/** Predicted and measured side by side, for the same settings (`settings` says which): the whole
 * call, and each layer type's share of the time. */
function showMeasurement(measured, predicted, settings) {
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
  result.prepend(element("caption", { textContent: settings }));
  $("time-result").replaceChildren(result, element("p", { className: "note", textContent: measured.description }));
}

async function updateChoice() {
  const request = latest("choice");
  const settings = runtimeSettings();
  try {
    // The budget's unit is the server's to say: ms where this machine has latency constants for
    // these settings, million mult-adds where not. Asked first, without a budget (never refused),
    // so that a budget is only ever sent in the unit the page shows beside it.
    const ranking = await getJson(`/api/choose?${settings}`, { signal: request.signal });
    if (!request.current()) return;
    if (ranking.axis !== state.chooseAxis) {
      if (state.chooseAxis) { // ms and mult-adds budgets differ: start mid-range in the new unit
        const costs = ranking.candidates.map((c) => c.cost).sort((a, b) => a - b);
        $("budget").value = costs[Math.floor(costs.length / 2)].toPrecision(3);
      }
      state.chooseAxis = ranking.axis;
      $("budget-label").textContent = ranking.axis === "predicted_ms" ? "budget (ms)" : "budget (million mult-adds)";
    }
    const budget = $("budget").value.trim();
    const choice = budget
      ? await getJson(`/api/choose?${settings}&${new URLSearchParams({ budget })}`, { signal: request.signal })
      : ranking;
    if (!request.current()) return;
    if (choice.axis !== state.chooseAxis) return updateChoice(); // calibrated in between: the unit changed
    const byLatency = choice.axis === "predicted_ms";
    $("choose-status").textContent = choice.available ? `predicted for ${settings.get("runtime")} ${settings.get("precision")} ` +
      "on this machine" : `${choice.reason}. Until then: published top-1 against mult-adds (the paper's Figure 4).`;
    const family = $("family").value;
    const shown = choice.candidates.filter((c) => !family || c.family === family);
    Charts.scatter($("choose-chart"), shown.map((c) => ({
      x: c.cost, y: c.top1, front: c.pareto, chosen: choice.chosen && c.name === choice.chosen.name,
      label: `${c.name}: ${c.top1}% top-1, ${byLatency ? `${c.predicted_ms.toFixed(2)} ms` : `${c.cost.toFixed(1)}M mult-adds`}`,
    })), { xLabel: byLatency ? "predicted ms" : "million mult-adds", yLabel: "published top-1", budget: Number(budget) });
    $("chosen").textContent = choice.chosen ? `Chosen: ${choice.chosen.name}, ${choice.chosen.top1}% top-1` : "";
  } catch (err) {
    if (!request.current()) return;
    $("choose-status").textContent = err.message;
    $("chosen").textContent = "";
  }
}
