/*
 * Draws the portal's charts with the vendored Chart.js (static/vendor/chartjs/).
 *
 * A chart is a <canvas data-chart="ID"> whose data sits in <script type="application/json"
 * id="ID"> (Django's json_script). The data is plain:
 *
 *   {"type": "line" | "bar", "labels": [...], "x_label": "...", "y_label": "...",
 *    "y_min": 0, "y_max": 1, "y_whole": false, "stacked": false,
 *    "datasets": [{"label": "...", "data": [...], "dashed": false}]}
 *
 * Every chart's page also shows its figures as a table (in a <details> or beside it), so the
 * canvas is a picture of numbers the reader can also read; the canvas carries role="img" and
 * an aria-label from the template. Colours come from the Okabe-Ito palette, which stays
 * distinguishable with the common colour-vision deficiencies; lines also differ in point style.
 *
 * window.PortalCharts.draw(canvas) draws (or redraws) one canvas from its JSON;
 * window.PortalCharts.drawAll(root) draws every canvas under root. Pages that refresh part of
 * themselves (the run page) call drawAll on the new part.
 */
(function () {
  "use strict";

  var PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];
  var POINTS = ["circle", "rect", "triangle", "rectRot", "star", "crossRot", "rectRounded", "cross"];

  function readData(canvas) {
    var source = document.getElementById(canvas.getAttribute("data-chart"));
    if (!source) {
      return null;
    }
    try {
      return JSON.parse(source.textContent);
    } catch (error) {
      return null;
    }
  }

  function datasets(spec) {
    return (spec.datasets || []).map(function (set, index) {
      var colour = set.colour || PALETTE[index % PALETTE.length];
      return {
        label: set.label,
        data: set.data,
        borderColor: colour,
        backgroundColor: spec.type === "bar" ? colour : colour + "33",
        pointStyle: POINTS[index % POINTS.length],
        pointRadius: spec.type === "line" ? 3 : undefined,
        borderDash: set.dashed ? [6, 4] : undefined,
        borderWidth: 2,
        spanGaps: true,
        tension: 0,
      };
    });
  }

  function axis(title, extra, whole) {
    // Whole-number ticks suit round numbers and counts, not accuracies between 0 and 1.
    var options = { title: { display: !!title, text: title || "" }, ticks: whole ? { precision: 0 } : {} };
    for (var key in extra || {}) {
      options[key] = extra[key];
    }
    return options;
  }

  function draw(canvas) {
    if (!window.Chart) {
      return null;
    }
    var spec = readData(canvas);
    if (!spec) {
      return null;
    }
    var previous = window.Chart.getChart(canvas);
    if (previous) {
      previous.destroy();
    }
    var y = {};
    if (spec.y_min !== undefined && spec.y_min !== null) {
      y.min = spec.y_min;
    }
    if (spec.y_max !== undefined && spec.y_max !== null) {
      y.max = spec.y_max;
    }
    if (spec.stacked) {
      y.stacked = true;
    }
    var chart = new window.Chart(canvas, {
      type: spec.type || "line",
      data: { labels: spec.labels || [], datasets: datasets(spec) },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "nearest", intersect: false },
        plugins: { legend: { display: (spec.datasets || []).length > 1, position: "bottom" } },
        scales: {
          x: axis(spec.x_label, spec.stacked ? { stacked: true } : {}, true),
          y: axis(spec.y_label, y, !!spec.y_whole),
        },
      },
    });
    canvas.setAttribute("data-points", String((spec.labels || []).length));
    return chart;
  }

  function drawAll(root) {
    var canvases = (root || document).querySelectorAll("canvas[data-chart]");
    for (var i = 0; i < canvases.length; i++) {
      draw(canvases[i]);
    }
  }

  window.PortalCharts = { draw: draw, drawAll: drawAll };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () {
      drawAll(document);
    });
  } else {
    drawAll(document);
  }
})();
