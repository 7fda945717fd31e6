// Draws the dashboard's charts (Chart.js, served from our static files) from the JSON the page carries in
// <script type="application/json"> elements; redraws after htmx refreshes a part of the page. No inline script.
(function () {
  "use strict";
  const charts = {};
  const green = "#067647", red = "#b42318", blue = "#2e5aac";

  function readJson(id) {
    const element = document.getElementById(id);
    return element ? JSON.parse(element.textContent) : null;
  }

  function draw(canvasId, config) {
    const canvas = document.getElementById(canvasId);
    if (!canvas || typeof Chart === "undefined") return;
    if (charts[canvasId]) charts[canvasId].destroy();
    config.options = Object.assign({animation: false, responsive: true, plugins: {legend: {display: false}}},
                                   config.options || {});
    charts[canvasId] = new Chart(canvas, config);
  }

  function bars(canvasId, series) {
    draw(canvasId, {type: "bar", data: {labels: series.labels, datasets: [{
      data: series.pnl, backgroundColor: series.pnl.map(v => (v < 0 ? red : green))}]}});
  }

  function drawDashboard() {
    const data = readJson("chart-data");
    if (!data) return;
    draw("equity-chart", {type: "line", data: {labels: data.equity.labels, datasets: [{
      label: "equity", data: data.equity.equity, borderColor: blue, pointRadius: 0, stepped: true}]}});
    draw("drawdown-chart", {type: "line", data: {labels: data.equity.labels, datasets: [{
      label: "drawdown %", data: data.equity.drawdown, borderColor: red, backgroundColor: "#fee4e2",
      fill: true, pointRadius: 0, stepped: true}]}});
    bars("daily-chart", data.daily);
    bars("pair-chart", data.by_pair);
    bars("reason-chart", data.by_reason);
  }

  function drawPair() {
    const data = readJson("pair-chart-data");
    const bands = readJson("pair-bands");
    if (!data || !bands) return;
    const flat = value => data.labels.map(() => value);
    const band = (label, value, color) => ({label: label, data: flat(value), borderColor: color, borderDash: [4, 4],
                                            pointRadius: 0, borderWidth: 1});
    draw("zscore-chart", {type: "line", options: {plugins: {legend: {display: true}}}, data: {labels: data.labels,
      datasets: [
        {label: "z", data: data.z, borderColor: blue, pointRadius: 0, borderWidth: 1.5},
        band("+entry", bands.entry, green), band("-entry", -bands.entry, green),
        band("exit", bands.exit, "#667"),
        band("+stop", bands.stop, red), band("-stop", -bands.stop, red),
        {label: "entries", data: data.entries, type: "scatter", backgroundColor: green, pointRadius: 5},
        {label: "exits", data: data.exits, type: "scatter", backgroundColor: red, pointRadius: 5, pointStyle: "rect"},
      ]}});
    draw("spread-chart", {type: "line", data: {labels: data.labels, datasets: [
      {label: "spread", data: data.spread, borderColor: "#667", pointRadius: 0, borderWidth: 1}]}});
  }

  function drawAll() {
    drawDashboard();
    drawPair();
  }

  // A refresh that fails (the server down, an error page) swaps nothing: the figures on screen stay those of the
  // last refresh, so say so, and since when, until a refresh succeeds and replaces the note with its own time.
  function refreshFailed(event) {
    const status = document.getElementById("live-status");
    if (!status || !event.detail.elt || event.detail.elt.id !== "live") return;
    const xhr = event.detail.xhr;
    const why = xhr && xhr.status ? "the server answered " + xhr.status : "the server does not answer";
    status.textContent = "Not refreshed since " + status.dataset.refreshed + " UTC: " + why +
      ". The figures below are from then; they update when the server answers again.";
    status.classList.add("stale");
  }

  document.addEventListener("DOMContentLoaded", drawAll);
  document.addEventListener("htmx:sendError", refreshFailed);
  document.addEventListener("htmx:responseError", refreshFailed);
  document.addEventListener("htmx:afterSwap", drawAll);
})();
