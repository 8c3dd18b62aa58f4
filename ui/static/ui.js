// The amlocal UI's page behaviour: charts (uPlot), the driver log and status following a live
// run, and the cancel button. Loaded as a file (the Content-Security-Policy allows no inline
// script); everything a run controlled is put into the page as text, never as HTML.
(function () {
  "use strict";

  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
                   "#ca8a04", "#db2777", "#4b5563", "#65a30d"];
  const charts = [];

  function chartWidth(element) {
    return Math.max(280, Math.floor(element.getBoundingClientRect().width) || 600);
  }

  function number(value) {
    if (value === null || value === undefined) return "";
    if (Number.isInteger(value)) return String(value);
    return Math.abs(value) >= 1e5 || (Math.abs(value) < 1e-3 && value !== 0)
      ? value.toExponential(3) : String(+value.toPrecision(6));
  }

  function makeChart(element, xLabel, series, data, extra) {
    const options = Object.assign({
      width: chartWidth(element),
      height: element.classList.contains("compare") || element.classList.contains("parallel") ? 360 : 240,
      scales: {x: {time: false}},
      series: [{label: xLabel, value: (u, v) => number(v)}].concat(series.map((item, index) => ({
        label: item.label,
        stroke: PALETTE[index % PALETTE.length],
        width: 1.5,
        spanGaps: false,
        points: item.points || {show: data[0].length < 60},
        paths: item.paths,
        fill: item.fill,
        value: item.value || ((u, v) => number(v)),
      }))),
      axes: [{label: xLabel, grid: {stroke: "#eef0f3"}}, {grid: {stroke: "#eef0f3"},
             values: (u, ticks) => ticks.map(number), size: 60}],
      legend: {live: true},
      cursor: {drag: {x: true, y: false}},
    }, extra || {});
    element.textContent = "";
    const chart = new uPlot(options, data, element);
    charts.push({chart: chart, element: element});
    return chart;
  }

  function getJSON(url) {
    return fetch(url, {credentials: "same-origin"}).then((response) => response.json().then((body) => {
      if (!response.ok) throw new Error(body.error || response.statusText);
      return body;
    }));
  }

  function showProblem(element, error) {
    element.textContent = "";
    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = "Cannot draw this chart: " + error.message;
    element.appendChild(note);
  }

  // -- a run's scalar curves, fetched downsampled --------------------------------------------
  function drawSeries(element) {
    return getJSON(element.dataset.series).then((body) => {
      const summary = element.parentElement.querySelector("[data-summary]");
      if (summary) {
        summary.textContent = body.total + " values" +
          (body.shown < body.total ? " (chart: " + body.shown + " points, min and max of each stretch)" : "") +
          " · last " + number(body.last) + " · min " + number(body.min) + " · max " + number(body.max);
      }
      const data = [body.x, body.y];
      if (element.chart) {
        element.chart.setData(data);
      } else {
        element.chart = makeChart(element, body.uses_steps ? "step" : "logging order",
                                  [{label: element.dataset.name}], data);
      }
    }).catch((error) => showProblem(element, error));
  }

  // -- small charts whose values are in the page (lists, residuals, predictions) -----------------
  function drawStatic(element) {
    const spec = JSON.parse(element.dataset.staticChart);
    const bars = spec.type === "bars";
    // bars stand on zero, and the outer ones show whole
    const half = spec.x.length > 1 ? (spec.x[1] - spec.x[0]) / 2 : 0.5;
    const extra = bars ? {scales: {
      x: {time: false, range: (u, low, high) => [low - half, high + half]},
      y: {range: (u, low, high) => [0, high * 1.1 || 1]},
    }} : undefined;
    makeChart(element, spec.xlabel, [{
      label: spec.title,
      paths: bars ? uPlot.paths.bars({size: [0.96, Infinity]}) : undefined,
      points: bars ? {show: false} : undefined,
      fill: bars ? "rgba(37, 99, 235, 0.35)" : undefined,
    }], [spec.x, spec.y], extra);
  }

  // -- several runs' curves of one metric on one chart ----------------------------------------
  function drawCompare(element) {
    getJSON(element.dataset.compare).then((body) => {
      if (!body.series.length) throw new Error("none of these runs logged " + body.name);
      const data = uPlot.join(body.series.map((item) => [item.x, item.y]));
      makeChart(element, body.uses_steps ? "step" : "logging order",
                body.series.map((item) => ({label: item.run})), data);
    }).catch((error) => showProblem(element, error));
  }

  // -- a sweep's children across their hyperparameters: parallel coordinates on uPlot ----------
  function drawParallel(element) {
    const spec = JSON.parse(element.dataset.parallel);
    const axes = spec.axes;
    const xs = axes.map((axis, index) => index);
    const series = spec.runs.map((runId, run) => ({
      label: runId,
      value: (u, v, seriesIndex, index) => {
        if (index === null || index === undefined) return "";
        const raw = axes[index].raw[run];
        return raw === null ? "" : (typeof raw === "number" ? number(raw) : raw);
      },
    }));
    const data = [xs].concat(spec.runs.map((runId, run) => axes.map((axis) => axis.values[run])));
    function axisLabel(axis) {
      if (axis.choices) return axis.name + "\n" + axis.choices.length + " choices";
      return axis.name + "\n" + number(axis.low) + " – " + number(axis.high);
    }
    makeChart(element, "axis", series, data, {
      scales: {x: {time: false, range: [-0.05, axes.length - 0.95]}, y: {range: [-0.05, 1.05]}},
      axes: [
        {values: (u, ticks) => ticks.map((tick) => Number.isInteger(tick) && axes[tick] ? axisLabel(axes[tick]) : ""),
         splits: () => xs, grid: {stroke: "#9aa4b2", width: 1}, size: 56},
        {values: (u, ticks) => ticks.map((tick) => tick === 0 ? "low" : (tick === 1 ? "high" : "")),
         splits: () => [0, 1], size: 50, grid: {stroke: "#eef0f3"}},
      ],
    });
  }

  // -- a live run: its log, its status, its curves -----------------------------------------
  function followLog(run) {
    const log = document.getElementById("log-text");
    if (!log) return;
    let offset = Number(log.dataset.offset || 0);
    let ended = false;
    function poll() {
      getJSON(log.dataset.url + "?offset=" + offset).then((body) => {
        if (body.text) {
          const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 24;
          log.appendChild(document.createTextNode(body.text));
          if (atBottom) log.scrollTop = log.scrollHeight;
        }
        offset = body.offset;
        log.dataset.offset = String(offset);
        if (body.terminal) {
          if (ended) return finished(run);
          ended = true;  // read once more: the last lines arrive with the end
        }
        setTimeout(poll, 1000);
      }).catch(() => setTimeout(poll, 3000));
    }
    setTimeout(poll, 1000);
  }

  let reloading = false;
  function finished(run) {
    if (reloading) return;
    reloading = true;
    const state = document.getElementById("log-state");
    if (state) state.textContent = "complete";
    // the run's final metrics and files: the page as it is now
    setTimeout(() => window.location.reload(), 800);
  }

  function setStatus(status) {
    const holder = document.getElementById("run-status");
    if (!holder) return;
    const badge = holder.querySelector(".badge");
    badge.className = "badge status-" + status.toLowerCase();
    badge.textContent = status;
  }

  function followStatus(run) {
    function poll() {
      getJSON("/api/runs/" + encodeURIComponent(run.dataset.run) + "/status").then((body) => {
        setStatus(body.status);
        if (body.metric_names.join("\n") !== run.dataset.metrics) {
          // a metric the page has no place for yet: the page as it is now
          window.location.reload();
          return;
        }
        document.querySelectorAll("[data-series]").forEach(drawSeries);
        if (body.terminal) {
          // the log's last lines first, when there is a log to follow
          if (!document.getElementById("log-text")) finished(run);
          else setTimeout(() => finished(run), 2500);
          return;
        }
        setTimeout(poll, 2000);
      }).catch(() => setTimeout(poll, 5000));
    }
    setTimeout(poll, 2000);
  }

  function wireCancel() {
    const button = document.getElementById("cancel");
    if (!button) return;
    button.addEventListener("click", () => {
      if (!window.confirm("Cancel this run?")) return;
      button.disabled = true;
      fetch(button.dataset.url, {
        method: "POST", credentials: "same-origin",
        headers: {"X-Amlocal-Token": document.body.dataset.token},
      }).then((response) => response.json().then((body) => {
        if (!response.ok) throw new Error(body.error || response.statusText);
        setStatus(body.status);
        button.textContent = "Cancel requested";
      })).catch((error) => {
        button.disabled = false;
        window.alert("The run was not canceled: " + error.message);
      });
    });
  }

  // -- the runs table: filters apply on change; a page with live runs refreshes itself ---------
  function wireRunsTable() {
    document.querySelectorAll("form.filters select").forEach((select) =>
      select.addEventListener("change", () => select.form.submit()));
    const table = document.getElementById("runs-table");
    if (!table || table.dataset.live !== "yes") return;
    (function later() {
      setTimeout(() => {
        const busy = document.querySelector("#runs-table input:checked") ||
          (document.activeElement && document.activeElement.form);
        if (busy) later();  // never throw away the user's selection or typing
        else window.location.reload();
      }, 5000);
    })();
  }

  function start() {
    wireRunsTable();
    document.querySelectorAll("[data-series]").forEach(drawSeries);
    document.querySelectorAll("[data-static-chart]").forEach(drawStatic);
    document.querySelectorAll("[data-compare]").forEach(drawCompare);
    document.querySelectorAll("[data-parallel]").forEach(drawParallel);
    const run = document.getElementById("run");
    if (run && run.dataset.terminal === "no") {
      followLog(run);
      followStatus(run);
    }
    wireCancel();
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => charts.forEach((item) => item.chart.setSize({
        width: chartWidth(item.element), height: item.chart.height})), 150);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
