/* Small SVG charts for the explorer: bars and a scatter. They draw numbers the server sent and
 * compute nothing else (scales and ticks only). */
"use strict";

const Charts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const MARGIN = { left: 56, right: 12, top: 10, bottom: 46 };

  function el(name, attributes = {}, parent = null) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (parent) parent.append(node);
    return node;
  }

  function clear(svg) {
    svg.replaceChildren();
    const { width, height } = svg.getBoundingClientRect();
    svg.setAttribute("viewBox", `0 0 ${width || 600} ${height || 260}`);
    return { width: width || 600, height: height || 260 };
  }

  /** 1.2k, 3.4M, 5.6G: short labels for an axis. */
  function short(value) {
    const units = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (const [size, unit] of units) if (Math.abs(value) >= size) return `${+(value / size).toPrecision(3)}${unit}`;
    return `${+value.toPrecision(3)}`;
  }

  function linear(max, from, to) { return (v) => from + (to - from) * (max > 0 ? v / max : 0); }
  function logScale(min, max, from, to) {
    const [a, b] = [Math.log10(min), Math.log10(max)];
    return (v) => from + (to - from) * (b > a ? (Math.log10(v) - a) / (b - a) : 0.5);
  }
  function niceMax(value) {
    if (value <= 0) return 1;
    const step = 10 ** Math.floor(Math.log10(value));
    return Math.ceil(value / step) * step;
  }

  function yAxis(svg, ticks, y, width) {
    for (const [value, label] of ticks) {
      el("line", { class: "axis", x1: MARGIN.left, x2: width - MARGIN.right, y1: y(value), y2: y(value) }, svg);
      el("text", { x: MARGIN.left - 6, y: y(value) + 3, "text-anchor": "end" }, svg).textContent = label;
    }
  }

  /** Bars, one per item: {label, value, color, title}; optional second series `overlay` drawn thinner. */
  function bars(svg, items, { overlay = null, unit = "" } = {}) {
    const { width, height } = clear(svg);
    const values = items.map((item) => item.value).concat(overlay ? overlay.map((o) => o.value) : []);
    const max = niceMax(Math.max(0, ...values));
    const y = linear(max, height - MARGIN.bottom, MARGIN.top);
    yAxis(svg, [0, 0.25, 0.5, 0.75, 1].map((f) => [f * max, short(f * max) + unit]), y, width);
    const band = (width - MARGIN.left - MARGIN.right) / Math.max(items.length, 1);
    items.forEach((item, i) => {
      const x = MARGIN.left + i * band;
      if (overlay) {
        const o = overlay[i];
        el("rect", { x: x + band * 0.1, y: y(o.value), width: band * 0.8, height: y(0) - y(o.value), fill: o.color },
           svg).append(Object.assign(el("title"), { textContent: o.title }));
      }
      const inset = overlay ? 0.3 : 0.12;
      el("rect", { x: x + band * inset, y: y(item.value), width: band * (1 - 2 * inset), height: y(0) - y(item.value),
                   fill: item.color }, svg).append(Object.assign(el("title"), { textContent: item.title }));
      el("text", { x: x + band / 2, y: height - MARGIN.bottom + 8, "text-anchor": "end",
                   transform: `rotate(-55 ${x + band / 2} ${height - MARGIN.bottom + 8})` }, svg).textContent = item.label;
    });
    return { x: (i) => MARGIN.left + (i + 0.5) * band, y };
  }

  /** Ratios (0..1) as bars with a second value per item drawn as a dashed line over them. */
  function ratios(svg, items) {
    const { width, height } = clear(svg);
    const max = niceMax(Math.max(...items.map((i) => Math.max(i.value, i.line))) * 1.1);
    const y = linear(max, height - MARGIN.bottom, MARGIN.top);
    yAxis(svg, [0, 0.25, 0.5, 0.75, 1].map((f) => [f * max, (f * max).toFixed(3)]), y, width);
    const band = (width - MARGIN.left - MARGIN.right) / Math.max(items.length, 1);
    const points = [];
    items.forEach((item, i) => {
      const x = MARGIN.left + i * band;
      el("rect", { x: x + band * 0.15, y: y(item.value), width: band * 0.7, height: y(0) - y(item.value),
                   fill: item.color }, svg).append(Object.assign(el("title"), { textContent: item.title }));
      points.push(`${x + band / 2},${y(item.line)}`);
      el("text", { x: x + band / 2, y: height - MARGIN.bottom + 14, "text-anchor": "middle" }, svg).textContent = item.label;
    });
    el("polyline", { class: "formula", points: points.join(" ") }, svg);
  }

  /** Points {x, y, label, front, chosen}; x on a log scale. The front is joined by a line. */
  function scatter(svg, points, { xLabel, yLabel, budget = null }) {
    const { width, height } = clear(svg);
    if (!points.length) return;
    const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
    const x = logScale(Math.min(...xs) * 0.8, Math.max(...xs) * 1.25, MARGIN.left, width - MARGIN.right);
    const step = Math.max(...ys) - Math.min(...ys) > 30 ? 10 : 5;
    const [low, high] = [Math.floor(Math.min(...ys) / step) * step, Math.ceil(Math.max(...ys) / step) * step];
    const y = (v) => height - MARGIN.bottom - (height - MARGIN.bottom - MARGIN.top) * (v - low) / Math.max(high - low, 1);
    const ticks = [];
    for (let v = low; v <= high; v += step) ticks.push([v, `${v}%`]);
    yAxis(svg, ticks, y, width);
    for (const tick of [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]) {
      if (x(tick) < MARGIN.left || x(tick) > width - MARGIN.right) continue;
      el("text", { x: x(tick), y: height - MARGIN.bottom + 14, "text-anchor": "middle" }, svg).textContent = short(tick);
    }
    el("text", { x: (width + MARGIN.left) / 2, y: height - 8, "text-anchor": "middle" }, svg).textContent = xLabel;
    el("text", { x: 12, y: MARGIN.top + 4, transform: `rotate(-90 12 ${MARGIN.top + 4})`, "text-anchor": "end" }, svg)
      .textContent = yLabel;
    if (budget !== null && x(budget) >= MARGIN.left && x(budget) <= width - MARGIN.right) {
      el("line", { class: "budget", x1: x(budget), x2: x(budget), y1: MARGIN.top, y2: height - MARGIN.bottom }, svg);
    }
    const front = points.filter((p) => p.front).sort((a, b) => a.x - b.x);
    el("polyline", { class: "front", points: front.map((p) => `${x(p.x)},${y(p.y)}`).join(" ") }, svg);
    for (const p of points) {
      const dot = el("circle", { cx: x(p.x), cy: y(p.y), r: p.front ? 4.5 : 3, fill: p.front ? "var(--fc)" : "var(--standard)" }, svg);
      dot.append(Object.assign(el("title"), { textContent: p.label }));
      if (p.chosen) el("circle", { class: "chosen", cx: x(p.x), cy: y(p.y), r: 8 }, svg);
    }
  }

  return { bars, ratios, scatter, short };
})();
