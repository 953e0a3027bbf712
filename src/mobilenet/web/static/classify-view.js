/* The classify panel: one photo, two answers side by side, the server's (the Python library)
 * and this browser's own (classify.js: the project's ONNX export in onnxruntime-web). */
"use strict";

function showTop(list, top1, top) {
  top1.textContent = top[0] ? top[0].label : "";
  list.replaceChildren(...top.map((p) => element("li", {}, [
    element("span", { textContent: p.label }), element("span", { textContent: `${(100 * p.probability).toFixed(2)}%` }),
  ])));
  [...list.children].forEach((item, i) => Object.assign(item.dataset, { index: top[i].index, probability: top[i].probability }));
}

async function classify(file) {
  // Each side's answer is shown only while it is for the latest photo: a second photo picked before
  // the first is answered aborts the first's upload, and a late answer for it is dropped.
  const server = latest("classify-server");
  const browser = latest("classify-browser");
  for (const id of ["server-top1", "browser-top1", "server-time", "browser-time", "server-status", "browser-status"]) $(id).textContent = "";
  $("server-top5").replaceChildren();
  $("browser-top5").replaceChildren();
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  await Promise.all([classifyOnServer(file, server), classifyInBrowser(file, browser)]);
}

async function classifyOnServer(file, request) {
  const query = new URLSearchParams({ weights: $("weights").value, runtime: $("server-runtime").value });
  $("server-status").textContent = "classifying…";
  try {
    const answer = await getJson(`/api/classify?${query}`, { method: "POST", body: file, signal: request.signal,
                                                             headers: { "Content-Type": "application/octet-stream" } });
    if (!request.current()) return;
    showTop($("server-top5"), $("server-top1"), answer.top);
    $("server-time").textContent = `${answer.ms.toFixed(1)} ms`;
    $("server-status").textContent = `${answer.weights}: ${answer.description}`;
  } catch (err) {
    if (!request.current()) return;
    $("server-status").textContent = "";
    showError(err.message);
  }
}

async function classifyInBrowser(file, request) {
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
    if (!request.current()) return; // (the model is kept: the next photo uses it)
    showTop($("browser-top5"), $("browser-top1"), answer.top);
    $("browser-time").textContent = `${answer.modelMs.toFixed(1)} ms (+ ${answer.preprocessMs.toFixed(1)} ms preprocessing)`;
    $("browser-status").textContent = `onnxruntime-web ${browser.onnxruntime_web}, WASM, ${model.threads} thread(s)`;
  } catch (err) {
    state.browserModels.delete(weights);
    if (!request.current()) return;
    $("browser-status").textContent = err.message;
  }
}
