/* pinpipe report: draws the bar charts described in #report-data as inline SVG (no libraries, no network).
   Chart types: hbar (labelled horizontal bars), vbar (vertical bars), grouped (vertical bars per group and
   series, with a legend). When done, body[data-charts-rendered] holds the number of charts drawn. */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var W = 680; /* set per chart to the figure's width in CSS pixels, so text is drawn at its true size */
  var PRIMARY = "#3d6fb6";
  var PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
                 "#ff9da7", "#9c755f", "#86bcb6", "#d37295", "#8cd17d", "#b6992d", "#499894"];
  var SERIES = ["#a6c8e8", "#6fa3d6", "#3d6fb6", "#1f4e8c", "#0d2f5e", "#c9daf0"];
  var keyColors = {};
  var nextColor = 0;

  function colorFor(key) {
    if (!key) { return PRIMARY; }
    if (!Object.prototype.hasOwnProperty.call(keyColors, key)) {
      keyColors[key] = PALETTE[nextColor % PALETTE.length];
      nextColor += 1;
    }
    return keyColors[key];
  }

  function el(name, attrs, parent, text) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function full(v) { return Number(v).toLocaleString("en-US"); }

  function compact(v) {
    var a = Math.abs(v);
    function trim(x) { return (Math.round(x * 10) / 10).toString(); }
    if (a >= 1e9) { return trim(v / 1e9) + "B"; }
    if (a >= 1e6) { return trim(v / 1e6) + "M"; }
    if (a >= 1e3) { return trim(v / 1e3) + "k"; }
    return full(v);
  }

  function ticks(max) {
    /* the "nice" step (1, 2, 2.5 or 5 × 10^n) giving at most 6 intervals and the lowest top */
    if (!(max > 0)) { return { top: 1, values: [0, 1] }; }
    var mag = Math.pow(10, Math.floor(Math.log10(max / 6)));
    var best = null;
    [1, 2, 2.5, 5, 10, 20].forEach(function (m) {
      var step = Math.max(1, m * mag);
      var top = Math.ceil(max / step) * step;
      if (top / step <= 6 && (best === null || top < best.top)) { best = { step: step, top: top }; }
    });
    var values = [];
    for (var t = 0; t <= best.top + best.step / 2; t += best.step) { values.push(t); }
    return { top: best.top, values: values };
  }

  function tip(node, text) { el("title", {}, node, text); }

  function shorten(text, n) { return text.length > n ? text.slice(0, n - 1) + "…" : text; }

  function svgRoot(fig, height, label) {
    var svg = el("svg", { viewBox: "0 0 " + W + " " + height, role: "img", "aria-label": label });
    fig.appendChild(svg);
    return svg;
  }

  function empty(fig, chart) {
    var svg = svgRoot(fig, 60, chart.title);
    el("text", { x: W / 2, y: 34, "text-anchor": "middle", "class": "empty-text" }, svg, "No rows to chart");
    return svg;
  }

  function hbar(fig, chart) {
    var bars = chart.bars;
    if (!bars.length) { return empty(fig, chart); }
    var labels = bars.map(function (b) { return b.note ? b.label + " · " + b.note : b.label; });
    var longest = labels.reduce(function (m, t) { return Math.max(m, Math.min(t.length, 34)); }, 4);
    var left = Math.min(250, 16 + longest * 6.6);
    var right = 64;
    var rowH = 26;
    var top = 8;
    var height = top + bars.length * rowH + 26;
    var svg = svgRoot(fig, height, chart.title);
    var max = Math.max.apply(null, bars.map(function (b) { return b.value; }));
    var scale = ticks(max);
    var span = W - left - right;
    scale.values.forEach(function (t) {
      var x = left + (t / scale.top) * span;
      el("line", { x1: x, x2: x, y1: top - 4, y2: height - 22, "class": "grid" }, svg);
      el("text", { x: x, y: height - 6, "text-anchor": "middle", "class": "tick" }, svg, compact(t));
    });
    bars.forEach(function (b, i) {
      var y = top + i * rowH;
      var w = Math.max(1.5, (b.value / scale.top) * span);
      var g = el("g", { "class": "row" }, svg);
      el("text", { x: left - 8, y: y + 17, "text-anchor": "end", "class": "label" }, g, shorten(labels[i], 34));
      var rect = el("rect", { x: left, y: y + 4, width: w, height: rowH - 8, rx: 3, fill: colorFor(b.key), "class": "bar" }, g);
      tip(rect, labels[i] + ": " + full(b.value) + " " + chart.unit);
      el("text", { x: left + w + 6, y: y + 17, "class": "value" }, g, compact(b.value));
    });
    return svg;
  }

  function columns(fig, chart, groups, series) {
    var height = 300;
    var left = 58;
    var right = 12;
    var top = series.length > 1 ? 34 : 20;
    var bottom = 34;
    var svg = svgRoot(fig, height, chart.title);
    var max = 0;
    groups.forEach(function (g) { g.values.forEach(function (v) { if (v !== null && v > max) { max = v; } }); });
    var scale = ticks(max);
    var plotH = height - top - bottom;
    var span = W - left - right;
    scale.values.forEach(function (t) {
      var y = top + plotH - (t / scale.top) * plotH;
      el("line", { x1: left, x2: W - right, y1: y, y2: y, "class": t === 0 ? "axis" : "grid" }, svg);
      el("text", { x: left - 8, y: y + 4, "text-anchor": "end", "class": "tick" }, svg, compact(t));
    });
    var slot = span / groups.length;
    var inner = Math.min(slot * 0.72, 64 * series.length);
    var barW = inner / series.length;
    groups.forEach(function (g, gi) {
      var x0 = left + gi * slot + (slot - inner) / 2;
      el("text", { x: left + gi * slot + slot / 2, y: height - 12, "text-anchor": "middle", "class": "label" }, svg, g.label);
      g.values.forEach(function (v, si) {
        if (v === null || v === undefined) { return; }
        var h = Math.max(1.5, (v / scale.top) * plotH);
        var x = x0 + si * barW;
        var fill = series.length > 1 ? SERIES[si % SERIES.length] : colorFor(g.key);
        var rect = el("rect", { x: x + 1, y: top + plotH - h, width: Math.max(2, barW - 2), height: h, rx: 3, fill: fill, "class": "bar" }, svg);
        tip(rect, g.label + (series.length > 1 ? " · " + series[si] : "") + ": " + full(v) + " " + chart.unit);
        el("text", { x: x + barW / 2, y: top + plotH - h - 5, "text-anchor": "middle", "class": "value small" }, svg, compact(v));
      });
    });
    if (series.length > 1) {
      var lx = W - right;
      for (var si = series.length - 1; si >= 0; si -= 1) {
        var tx = el("text", { x: lx, y: 14, "text-anchor": "end", "class": "legend" }, svg, series[si]);
        var tw = series[si].length * 7 + 6;
        el("rect", { x: lx - tw - 12, y: 4, width: 12, height: 12, rx: 2, fill: SERIES[si % SERIES.length] }, svg);
        lx -= tw + 26;
        tx.setAttribute("data-series", series[si]);
      }
    }
    return svg;
  }

  function vbar(fig, chart) {
    if (!chart.bars.length) { return empty(fig, chart); }
    var groups = chart.bars.map(function (b) { return { label: b.label, key: b.key, values: [b.value] }; });
    return columns(fig, chart, groups, [chart.unit]);
  }

  function grouped(fig, chart) {
    if (!chart.groups.length) { return empty(fig, chart); }
    return columns(fig, chart, chart.groups, chart.series);
  }

  var DRAW = { hbar: hbar, vbar: vbar, grouped: grouped };

  function render() {
    var data = JSON.parse(document.getElementById("report-data").textContent);
    var drawn = 0;
    var failed = [];
    data.charts.forEach(function (chart) {
      var fig = document.querySelector('figure[data-chart-id="' + chart.id + '"]');
      if (!fig) { return; }
      try {
        W = Math.max(360, Math.round(fig.getBoundingClientRect().width) || 680);
        var svg = DRAW[chart.type](fig, chart);
        svg.setAttribute("data-bars", String(svg.querySelectorAll(".bar").length));
        drawn += 1;
      } catch (err) {
        failed.push(chart.id);
        fig.textContent = "chart could not be drawn: " + err;
      }
    });
    document.body.dataset.chartsRendered = String(drawn);
    if (failed.length) { document.body.dataset.chartsFailed = failed.join(" "); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", render);
  } else {
    render();
  }
}());
