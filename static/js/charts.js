/*
 * Draws every chart of the dashboard with plotly.js (static/vendor, strict build). The figures themselves are
 * built in Python (tracking/charts.py); this file only hands them to plotly.js.
 *
 * Markup: an element with data-chart="<kind>" and data-chart-figure="<id>", where <id> is the id of a
 * <script type="application/json"> written by Django's json_script holding the figure ({data, layout,
 * config}). No inline scripts (CSP). After drawing, the element has data-chart-drawn="true" (or
 * data-chart-error). An element with data-period="<n>" shows the last n points of each trace; the
 * [data-period] buttons of its card change n. Every chart has a data table beside it in the page.
 */
(function () {
  "use strict";

  function readFigure(element) {
    var id = element.getAttribute("data-chart-figure");
    var source = id ? document.getElementById(id) : null;
    if (!source) {
      throw new Error("chart figure #" + id + " not found");
    }
    return JSON.parse(source.textContent);
  }

  // The last `n` points of every trace (the period of the activity chart).
  function lastPoints(figure, n) {
    figure.data.forEach(function (trace) {
      ["x", "y", "text", "customdata"].forEach(function (key) {
        if (Array.isArray(trace[key])) trace[key] = trace[key].slice(Math.max(0, trace[key].length - n));
      });
    });
    return figure;
  }

  function draw(element) {
    var figure = readFigure(element);
    if (element.hasAttribute("data-period")) {
      figure = lastPoints(figure, parseInt(element.getAttribute("data-period"), 10));
    }
    window.Plotly.react(element, figure);
    element.setAttribute("data-chart-drawn", "true");
  }

  function drawAll(root) {
    var elements = (root || document).querySelectorAll("[data-chart]");
    Array.prototype.forEach.call(elements, function (element) {
      try {
        draw(element);
      } catch (error) {
        element.setAttribute("data-chart-error", String(error && error.message));
        if (window.console) console.error("Chart not drawn:", error);
      }
    });
  }

  // Period buttons of a chart's card: redraw the chart with the chosen number of days.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-period]");
    if (!button || button.hasAttribute("data-chart")) return;
    var card = button.closest(".card");
    var chart = card && card.querySelector("[data-chart][data-period]");
    if (!chart) return;
    chart.setAttribute("data-period", button.getAttribute("data-period"));
    Array.prototype.forEach.call(card.querySelectorAll("button[data-period]"), function (b) {
      b.setAttribute("aria-pressed", b === button ? "true" : "false");
    });
    draw(chart);
  });

  window.ProgressCharts = { draw: draw, drawAll: drawAll };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  } else {
    drawAll(document);
  }
})();
