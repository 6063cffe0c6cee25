/* pinpipe report: draws the charts described in #report-data as inline SVG (no libraries, no network; the
   tables are made sortable by tables.js, which runs first). Chart types: hbar (labelled horizontal bars),
   vbar (vertical bars), grouped (vertical bars per group and series), stacked (horizontal bars in segments),
   line (a time series; drag across it to zoom, double-click to zoom out). Every mark has a <title> tooltip.
   When done, body[data-charts-rendered] holds the number of charts drawn and body[data-render-ms] the time taken. */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var W = 680; /* set per chart to the figure's width in CSS pixels, so text is drawn at its true size */
  var PRIMARY = "#3d6fb6";
  var PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
                 "#ff9da7", "#9c755f", "#86bcb6", "#d37295", "#8cd17d", "#b6992d", "#499894"];
  var SERIES = ["#a6c8e8", "#6fa3d6", "#3d6fb6", "#1f4e8c", "#0d2f5e", "#c9daf0"];
  var NAMED = { pin: "#4e79a7", geo: "#f28e2b", user: "#59a14f", stream: "#3d6fb6", batch: "#f28e2b",
                other: "#b07aa1", earlier: "#bab0ac" };
  var keyColors = {};
  var nextColor = 0;

  function colorFor(key) {
    if (!key) { return PRIMARY; }
    if (NAMED[key]) { return NAMED[key]; }
    if (!Object.prototype.hasOwnProperty.call(keyColors, key)) {
      keyColors[key] = PALETTE[nextColor % PALETTE.length];
      nextColor += 1;
    }
    return keyColors[key];
  }

  function seriesColor(name, i) { return NAMED[name] || PALETTE[i % PALETTE.length]; }

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
    function trim(x) { return (Math.round(x * 100) / 100).toString(); }
    if (a >= 1e9) { return trim(v / 1e9) + "B"; }
    if (a >= 1e6) { return trim(v / 1e6) + "M"; }
    if (a >= 1e3) { return trim(v / 1e3) + "k"; }
    return full(Math.round(v * 100) / 100);
  }

  function ticks(max, fractional) {
    /* the "nice" step (1, 2, 2.5 or 5 × 10^n; whole numbers unless fractional) giving at most 6 intervals and
       the lowest top */
    if (!(max > 0)) { return { top: 1, values: [0, 1] }; }
    var mag = Math.pow(10, Math.floor(Math.log10(max / 6)));
    var best = null;
    [1, 2, 2.5, 5, 10, 20].forEach(function (m) {
      var step = fractional ? m * mag : Math.max(1, Math.round(m * mag));
      var top = Math.ceil(max / step - 1e-9) * step;
      if (top / step <= 6 && (best === null || top < best.top)) { best = { step: step, top: top }; }
    });
    var values = [];
    for (var t = 0; t <= best.top + best.step / 2; t += best.step) { values.push(Math.round(t * 1e6) / 1e6); }
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

  function legend(svg, names, colors, y) {
    var lx = W - 12;
    for (var i = names.length - 1; i >= 0; i -= 1) {
      el("text", { x: lx, y: y + 10, "text-anchor": "end", "class": "legend", "data-series": names[i] }, svg, names[i]);
      var tw = names[i].length * 7 + 6;
      el("rect", { x: lx - tw - 12, y: y, width: 12, height: 12, rx: 2, fill: colors[i] }, svg);
      lx -= tw + 26;
    }
  }

  function hbar(fig, chart) {
    var rows = chart.bars.map(function (b) {
      return { label: b.note ? b.label + " · " + b.note : b.label, parts: [{ value: b.value, fill: colorFor(b.key) }] };
    });
    return horizontal(fig, chart, rows, null);
  }

  function stacked(fig, chart) {
    var colors = chart.series.map(seriesColor);
    var rows = chart.groups.map(function (g) {
      return { label: g.label, parts: g.values.map(function (v, i) {
        return { value: v || 0, fill: colors[i], series: chart.series[i] };
      }) };
    });
    return horizontal(fig, chart, rows, colors);
  }

  function horizontal(fig, chart, rows, colors) {
    if (!rows.length) { return empty(fig, chart); }
    var longest = rows.reduce(function (m, r) { return Math.max(m, Math.min(r.label.length, 34)); }, 4);
    var left = Math.min(250, 16 + longest * 6.6);
    var right = 64;
    var rowH = 26;
    var top = (colors ? 26 : 0) + (chart.category_title ? 18 : 8);
    var height = top + rows.length * rowH + 26 + (chart.value_title ? 18 : 0);
    var axisY = top + rows.length * rowH + 4;
    var svg = svgRoot(fig, height, chart.title);
    var totals = rows.map(function (r) { return r.parts.reduce(function (s, p) { return s + p.value; }, 0); });
    var scale = ticks(Math.max.apply(null, totals));
    var span = W - left - right;
    if (colors) { legend(svg, chart.series, colors, 4); }
    if (chart.category_title) {
      el("text", { x: 4, y: top - 6, "class": "axis-title" }, svg, chart.category_title);
    }
    scale.values.forEach(function (t) {
      var x = left + (t / scale.top) * span;
      el("line", { x1: x, x2: x, y1: top - 4, y2: axisY, "class": "grid" }, svg);
      el("text", { x: x, y: axisY + 16, "text-anchor": "middle", "class": "tick" }, svg, compact(t));
    });
    if (chart.value_title) {
      el("text", { x: left + span / 2, y: axisY + 34, "text-anchor": "middle", "class": "axis-title" }, svg, chart.value_title);
    }
    rows.forEach(function (r, i) {
      var y = top + i * rowH;
      var g = el("g", { "class": "row" }, svg);
      el("text", { x: left - 8, y: y + 17, "text-anchor": "end", "class": "label" }, g, shorten(r.label, 34));
      var x = left;
      r.parts.forEach(function (p) {
        if (!p.value && colors) { return; }
        var w = Math.max(1.5, (p.value / scale.top) * span);
        var rect = el("rect", { x: x, y: y + 4, width: w, height: rowH - 8, rx: colors ? 0 : 3, fill: p.fill, "class": "bar" }, g);
        var share = totals[i] ? " (" + Math.round(1000 * p.value / totals[i]) / 10 + "%)" : "";
        tip(rect, r.label + (p.series ? " · " + p.series : "") + ": " + full(p.value) + " " + chart.unit + (colors ? share : ""));
        x += w;
      });
      el("text", { x: x + 6, y: y + 17, "class": "value" }, g, compact(totals[i]));
    });
    return svg;
  }

  function columns(fig, chart, groups, series) {
    var height = 300;
    var left = chart.value_title ? 72 : 58;
    var right = 12;
    var top = series.length > 1 ? 34 : 20;
    var bottom = chart.category_title ? 50 : 34;
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
    axisTitles(svg, chart, left, span, top, plotH, height);
    var slot = span / groups.length;
    var inner = Math.min(slot * 0.72, 64 * series.length);
    var barW = inner / series.length;
    groups.forEach(function (g, gi) {
      var x0 = left + gi * slot + (slot - inner) / 2;
      el("text", { x: left + gi * slot + slot / 2, y: top + plotH + 20, "text-anchor": "middle", "class": "label" }, svg, g.label);
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
    if (series.length > 1) { legend(svg, series, series.map(function (s, i) { return SERIES[i % SERIES.length]; }), 4); }
    return svg;
  }

  function axisTitles(svg, chart, left, span, top, plotH, height) {
    if (chart.category_title) {
      el("text", { x: left + span / 2, y: height - 6, "text-anchor": "middle", "class": "axis-title" }, svg, chart.category_title);
    }
    if (chart.value_title) {
      var cy = top + plotH / 2;
      el("text", { x: 14, y: cy, "text-anchor": "middle", "class": "axis-title", transform: "rotate(-90 14 " + cy + ")" }, svg, chart.value_title);
    }
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

  function line(fig, chart) {
    var range = fig.pinpipeRange || [0, chart.points.length - 1];
    var points = chart.points.slice(range[0], range[1] + 1);
    if (!points.length) { return empty(fig, chart); }
    var pct = chart.format === "percent";
    var height = 280, left = 72, right = 16, top = 30, bottom = 52;
    var svg = svgRoot(fig, height, chart.title);
    var plotH = height - top - bottom, span = W - left - right;
    var max = 0;
    points.forEach(function (p) { p.values.forEach(function (v) { if (v !== null && v > max) { max = v; } }); });
    var scale = ticks(max, pct);
    function X(i) { return points.length === 1 ? left + span / 2 : left + (i / (points.length - 1)) * span; }
    function Y(v) { return top + plotH - (v / scale.top) * plotH; }
    function show(v) { return pct ? (Math.round(v * 100) / 100) + "%" : full(v) + " " + chart.unit; }
    scale.values.forEach(function (t) {
      el("line", { x1: left, x2: W - right, y1: Y(t), y2: Y(t), "class": t === 0 ? "axis" : "grid" }, svg);
      el("text", { x: left - 8, y: Y(t) + 4, "text-anchor": "end", "class": "tick" }, svg, pct ? t + "%" : compact(t));
    });
    axisTitles(svg, chart, left, span, top, plotH, height);
    var every = Math.max(1, Math.ceil(points.length / Math.max(2, Math.floor(span / 110))));
    points.forEach(function (p, i) {
      var last = i === points.length - 1;
      if (i % every === 0 || (last && i % every > every / 2)) {
        var anchor = points.length === 1 ? "middle" : (i === 0 ? "start" : (last ? "end" : "middle"));
        el("text", { x: X(i), y: top + plotH + 18, "text-anchor": anchor, "class": "tick" }, svg, p.x);
      }
    });
    var colors = chart.series.map(seriesColor);
    chart.series.forEach(function (name, si) {
      var d = "";
      points.forEach(function (p, i) {
        var v = p.values[si];
        if (v === null || v === undefined) { d += " "; return; }
        d += (d === "" || d.slice(-1) === " " ? "M" : "L") + X(i).toFixed(1) + "," + Y(v).toFixed(1);
      });
      if (d.trim()) { el("path", { d: d.trim(), fill: "none", stroke: colors[si], "stroke-width": 2, "class": "series" }, svg); }
      points.forEach(function (p, i) {
        var v = p.values[si];
        if (v === null || v === undefined) { return; }
        /* earlier series get bigger dots, so equal values show as rings rather than hiding each other */
        var r = (points.length > 60 ? 2.5 : 3.5) + (chart.series.length - 1 - si) * 1.8;
        var dot = el("circle", { cx: X(i), cy: Y(v), r: r, fill: colors[si], "class": "bar point" }, svg);
        tip(dot, name + " · " + p.x + ": " + show(v));
      });
    });
    legend(svg, chart.series, colors, 4);
    zoomable(fig, chart, svg, points.length, range, left, span, top, plotH);
    return svg;
  }

  function zoomable(fig, chart, svg, n, range, left, span, top, plotH) {
    if (n < 3 && !fig.pinpipeRange) { return; }
    var band = null, start = null;
    function toIndex(evt) {
      var box = svg.getBoundingClientRect();
      var x = (evt.clientX - box.left) * (W / box.width);
      return Math.max(0, Math.min(n - 1, Math.round(((x - left) / span) * (n - 1))));
    }
    svg.addEventListener("mousedown", function (evt) {
      start = toIndex(evt);
      band = el("rect", { x: left, y: top, width: 0, height: plotH, "class": "zoom-band" }, svg);
    });
    svg.addEventListener("mousemove", function (evt) {
      if (start === null) { return; }
      var a = Math.min(start, toIndex(evt)), b = Math.max(start, toIndex(evt));
      band.setAttribute("x", left + (a / (n - 1)) * span);
      band.setAttribute("width", ((b - a) / (n - 1)) * span);
    });
    svg.addEventListener("mouseup", function (evt) {
      if (start === null) { return; }
      var a = Math.min(start, toIndex(evt)), b = Math.max(start, toIndex(evt));
      start = null;
      if (b - a >= 1) { redraw(fig, chart, [range[0] + a, range[0] + b]); } else if (band) { band.remove(); }
    });
    svg.addEventListener("dblclick", function () { redraw(fig, chart, null); });
  }

  function redraw(fig, chart, range) {
    fig.pinpipeRange = range;
    fig.pinpipeWidth = Math.round(fig.getBoundingClientRect().width);
    fig.textContent = "";
    draw(fig, chart);
  }

  var DRAW = { hbar: hbar, vbar: vbar, grouped: grouped, stacked: stacked, line: line };

  function draw(fig, chart) {
    W = Math.max(360, fig.pinpipeWidth || Math.round(fig.getBoundingClientRect().width) || 680);
    var svg = DRAW[chart.type](fig, chart);
    svg.setAttribute("data-bars", String(svg.querySelectorAll(".bar").length));
    return svg;
  }

  function renderCharts() {
    var data = JSON.parse(document.getElementById("report-data").textContent);
    var drawn = 0;
    var failed = [];
    var figs = data.charts.map(function (chart) {  /* measure every figure first: one layout, not one per chart */
      var fig = document.querySelector('figure[data-chart-id="' + chart.id + '"]');
      if (fig) { fig.pinpipeWidth = Math.round(fig.getBoundingClientRect().width); }
      return fig;
    });
    data.charts.forEach(function (chart, i) {
      var fig = figs[i];
      if (!fig) { return; }
      try {
        draw(fig, chart);
        drawn += 1;
      } catch (err) {
        failed.push(chart.id);
        fig.textContent = "chart could not be drawn: " + err;
      }
    });
    document.body.dataset.chartsRendered = String(drawn);
    if (failed.length) { document.body.dataset.chartsFailed = failed.join(" "); }
  }

  function start() {
    var t0 = performance.now();
    renderCharts();
    document.body.dataset.renderMs = (performance.now() - t0).toFixed(1);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
