// The workflow view's charts, drawn with Chart.js (chart.umd.min.js, shipped beside this file).
// Each series differs by line dash and point shape as well as by colour, and every chart's
// legend shows those shapes, so the charts read without colour.
"use strict";

const WorkflowCharts = (() => {
  const COLOURS = { auc: "#0b6bcb", logloss: "#c62828", train: "#5f6b7a", done: "#15803d", other: "#8a5a00" };
  const drawn = {};

  // Draw (or redraw in place: the detail view refreshes every few seconds) the chart on canvas `id`.
  function draw(id, config) {
    const canvas = document.getElementById(id);
    const box = canvas.closest(".chart-box");
    if (!config) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    config.options = {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: "nearest", intersect: false },
      ...config.options,
      plugins: { legend: { labels: { usePointStyle: true } }, ...(config.options.plugins || {}) },
    };
    const chart = drawn[id];
    if (chart) {
      chart.data = config.data;
      chart.options = config.options;
      chart.update();
    } else {
      drawn[id] = new Chart(canvas, config);
    }
  }

  function series(label, data, colour, dash, point, axis) {
    return {
      label, data, yAxisID: axis, borderColor: colour, backgroundColor: colour, borderDash: dash,
      pointStyle: point, pointRadius: 4, borderWidth: 2, spanGaps: true,
    };
  }

  const axis = (title, position, grid = true) => ({
    type: "linear", position, title: { display: true, text: title }, grid: { drawOnChartArea: grid },
  });

  // The training curve: validation AUC (left axis) and logloss, with the mean training loss
  // (right axis), one point per epoch. Null while there are no epochs yet.
  function curve(epochs) {
    if (!epochs || epochs.length === 0) return null;
    const points = (key) => epochs.map((e) => ({ x: e.epoch, y: e[key] }));
    return {
      type: "line",
      data: {
        datasets: [
          series("validation AUC", points("auc"), COLOURS.auc, [], "circle", "auc"),
          series("validation logloss", points("logloss"), COLOURS.logloss, [6, 4], "triangle", "loss"),
          series("training loss", points("train_loss"), COLOURS.train, [2, 3], "rect", "loss"),
        ],
      },
      options: {
        scales: {
          x: { type: "linear", title: { display: true, text: "epoch" }, ticks: { stepSize: 1, precision: 0 } },
          auc: axis("AUC", "left"),
          loss: axis("loss", "right", false),
        },
      },
    };
  }

  const seconds = (from, to) => (to - from) / 1000;

  // The stage timeline: a bar per stage that has started, from its start to its end (or now),
  // in seconds since the first stage started; its label carries its status, duration and, for
  // a transfer, its MB/s. `parse` turns the API's timestamps into Dates.
  function timeline(steps, parse) {
    const started = steps.filter((s) => s.started_at);
    if (started.length === 0) return null;
    const t0 = Math.min(...started.map((s) => parse(s.started_at).getTime()));
    const now = Date.now();
    const bars = started.map((s) => {
      const start = parse(s.started_at).getTime();
      const end = s.completed_at ? parse(s.completed_at).getTime() : now;
      const rate = s.result && typeof s.result.mb_per_s === "number" ? `, ${s.result.mb_per_s.toFixed(1)} MB/s` : "";
      // two lines (Chart.js draws an array label as lines): a long one would be cut off
      const label = [s.step_name, `${s.status}, ${seconds(start, end).toFixed(1)} s${rate}`];
      return { label, range: [seconds(t0, start), seconds(t0, end)], done: s.status === "completed" };
    });
    return {
      type: "bar",
      data: {
        labels: bars.map((b) => b.label),
        datasets: [{
          label: "stage, from start to end",
          data: bars.map((b) => b.range),
          backgroundColor: bars.map((b) => (b.done ? COLOURS.done : COLOURS.other)),
          borderColor: "#1f2933",
          borderWidth: 1,
          barPercentage: 0.7,
        }],
      },
      options: {
        indexAxis: "y",
        scales: { x: { type: "linear", min: 0, title: { display: true, text: "seconds since the first stage started" } } },
        plugins: { legend: { display: false } },
      },
    };
  }

  // The experiment's tasks, oldest first: final validation AUC (left axis) and logloss (right
  // axis) of each; a published task (completed: its predictions are in Hive) is a filled
  // diamond, any other a cross, and the task on screen is drawn larger.
  function history(entries, currentId) {
    const trained = entries.filter((e) => e.auc !== null || e.logloss !== null).reverse();
    if (trained.length === 0) return null;
    const shape = trained.map((e) => (e.status === "completed" ? "rectRot" : "crossRot"));
    const radius = trained.map((e) => (e.task_id === currentId ? 8 : 5));
    const line = (label, key, colour, dash, axisId) => ({
      ...series(label, trained.map((e) => e[key]), colour, dash, shape, axisId),
      pointRadius: radius,
      pointBorderWidth: 2,
    });
    return {
      type: "line",
      data: {
        labels: trained.map((e) => `#${e.task_id}`),
        datasets: [
          line("AUC", "auc", COLOURS.auc, [], "auc"),
          line("logloss", "logloss", COLOURS.logloss, [6, 4], "loss"),
        ],
      },
      options: {
        scales: {
          x: { title: { display: true, text: "task (oldest first)" } },
          auc: axis("AUC", "left"),
          loss: axis("logloss", "right", false),
        },
      },
    };
  }

  return { draw, curve, timeline, history };
})();
