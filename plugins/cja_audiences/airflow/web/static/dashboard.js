// CJA audiences dashboard: local times, table sorting and filtering. No dependencies.
(function () {
  "use strict";
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  var fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  var rel = typeof Intl.RelativeTimeFormat === "function" ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;

  function relative(date) {
    if (!rel) return "";
    var seconds = (date.getTime() - Date.now()) / 1000;
    var units = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600], ["minute", 60]];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(seconds) >= units[i][1]) return rel.format(Math.round(seconds / units[i][1]), units[i][0]);
    }
    return rel.format(Math.round(seconds), "second");
  }

  function localTimes() {
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date)) return;
      el.title = fmt.format(date) + " (" + zone + ")";
      el.textContent = relative(date) || fmt.format(date);
    });
    document.querySelectorAll("[data-tz]").forEach(function (el) { el.textContent = zone; });
  }

  function cellValue(row, index, kind) {
    var cell = row.cells[index];
    var raw = cell ? (cell.getAttribute("data-value") || cell.textContent.trim()) : "";
    if (kind === "num") return parseFloat(raw.replace(/[^0-9.-]/g, "")) || 0;
    if (kind === "time") return raw ? Date.parse(raw) : -Infinity;
    return raw.toLowerCase();
  }

  function sortable(table) {
    var heads = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(heads, function (th, index) {
      var kind = th.getAttribute("data-sort");
      if (!kind) return;
      th.tabIndex = 0;
      function sort() {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a, index, kind), y = cellValue(b, index, kind);
          return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") sort(); });
    });
  }

  function filters(form) {
    var table = document.getElementById(form.getAttribute("data-filter-for"));
    if (!table) return;
    var empty = table.parentNode.querySelector(".empty");
    var params = new URLSearchParams(location.search);
    Array.prototype.forEach.call(form.elements, function (el) { if (el.name && params.get(el.name)) el.value = params.get(el.name); });
    function apply() {
      var q = (form.q && form.q.value || "").toLowerCase();
      var tag = form.tag ? form.tag.value : "", freq = form.frequency ? form.frequency.value : "", status = form.status ? form.status.value : "";
      var shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var ok = (!q || (row.getAttribute("data-text") || "").indexOf(q) >= 0) &&
          (!tag || (" " + (row.getAttribute("data-tags") || "") + " ").indexOf(" " + tag + " ") >= 0) &&
          (!freq || row.getAttribute("data-frequency") === freq) &&
          (!status || row.getAttribute("data-status") === status);
        row.hidden = !ok;
        if (ok) shown++;
      });
      if (empty) empty.hidden = shown > 0;
      var next = new URLSearchParams(location.search);
      Array.prototype.forEach.call(form.elements, function (el) { if (el.name) { if (el.value) next.set(el.name, el.value); else next.delete(el.name); } });
      history.replaceState(null, "", location.pathname + (next.toString() ? "?" + next : "") + location.hash);
    }
    form.addEventListener("input", apply);
    form.addEventListener("change", apply);
    apply();
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes();
    document.querySelectorAll("table.sortable").forEach(sortable);
    document.querySelectorAll("form[data-filter-for]").forEach(filters);
  });
})();
