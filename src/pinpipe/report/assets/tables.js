/* pinpipe report: every .data-table becomes sortable (click or Enter on a header: ascending, then descending;
   nulls last), filterable (rows containing the text) and downloadable as CSV (the rows shown, with the real
   column names and raw values from data-col / data-v). window.pinpipeReport.csv(element) gives that CSV. */
(function () {
  "use strict";

  function bodyRows(box) { return Array.prototype.slice.call(box.querySelectorAll("tbody tr")); }

  function sortBy(box, th) {
    var ths = Array.prototype.slice.call(box.querySelectorAll("thead th"));
    var col = ths.indexOf(th);
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var num = th.dataset.type === "num";
    ths.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var tbody = box.querySelector("tbody");
    bodyRows(box).map(function (tr, i) {
      return { tr: tr, i: i, v: tr.children[col].dataset.v };
    }).sort(function (a, b) {
      if (a.v === "" || b.v === "") { return a.v === b.v ? a.i - b.i : (a.v === "" ? 1 : -1); } /* nulls last */
      var c = num ? Number(a.v) - Number(b.v) : a.v.localeCompare(b.v, "en", { numeric: true });
      return c !== 0 ? dir * c : a.i - b.i;
    }).forEach(function (r) { tbody.appendChild(r.tr); });
  }

  function filter(box, text, count) {
    var q = text.trim().toLowerCase();
    var rows = bodyRows(box), shown = 0;
    if (q === "" && !box.pinpipeFiltered) { shown = rows.length; rows = []; }  /* nothing hidden yet */
    box.pinpipeFiltered = q !== "";
    rows.forEach(function (tr) {
      tr.hidden = q !== "" && tr.textContent.toLowerCase().indexOf(q) < 0;
      if (!tr.hidden) { shown += 1; }
    });
    var total = box.querySelectorAll("tbody tr").length;
    count.textContent = (shown === total ? "" : shown + " of ") + total + (total === 1 ? " row" : " rows");
  }

  function csvField(v) { return /[",\n\r]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }

  function csv(box) {
    var head = Array.prototype.map.call(box.querySelectorAll("thead th"), function (th) { return csvField(th.dataset.col); });
    var lines = [head.join(",")];
    bodyRows(box).forEach(function (tr) {
      if (tr.hidden) { return; }
      lines.push(Array.prototype.map.call(tr.children, function (td) { return csvField(td.dataset.v); }).join(","));
    });
    return lines.join("\r\n") + "\r\n";
  }

  function tables() {
    Array.prototype.forEach.call(document.querySelectorAll(".data-table"), function (box) {
      var tools = document.createElement("div");
      tools.className = "table-tools";
      var input = document.createElement("input");
      input.type = "search";
      input.placeholder = "Filter rows…";
      input.setAttribute("aria-label", "Filter the rows of this table");
      var count = document.createElement("span");
      count.className = "count";
      var link = document.createElement("a");
      link.className = "csv";
      link.textContent = "Download CSV";
      link.href = "#";
      link.download = (box.dataset.tableId || "table") + ".csv";
      link.addEventListener("click", function () { link.href = "data:text/csv;charset=utf-8," + encodeURIComponent(csv(box)); });
      input.addEventListener("input", function () { filter(box, input.value, count); });
      tools.appendChild(input); tools.appendChild(count); tools.appendChild(link);
      box.insertBefore(tools, box.firstChild);
      filter(box, "", count);
      Array.prototype.forEach.call(box.querySelectorAll("thead th"), function (th) {
        th.addEventListener("click", function () { sortBy(box, th); });
        th.addEventListener("keydown", function (evt) { if (evt.key === "Enter") { sortBy(box, th); } });
      });
    });
  }

  window.pinpipeReport = { csv: csv };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", tables);
  } else {
    tables();
  }
}());
