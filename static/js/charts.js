/*
 * Draws every chart of the dashboard with plotly.js (static/vendor, strict build).
 *
 * Markup: an element with data-chart="<renderer name>" and data-chart-data="<id>", where <id> is the id
 * of a <script type="application/json"> written by Django's json_script. No inline scripts (CSP).
 * A renderer is a function (element, data) registered under its name; add one with
 * ProgressCharts.register("name", function (element, data) { ... }). Every chart has a data table
 * beside it in the page, and never relies on colour alone (symbols, line styles, text labels).
 */
(function () {
  "use strict";

  var renderers = Object.create(null);

  function register(name, renderer) {
    renderers[name] = renderer;
  }

  function readData(element) {
    var id = element.getAttribute("data-chart-data");
    var source = id ? document.getElementById(id) : null;
    if (!source) {
      throw new Error("chart data #" + id + " not found");
    }
    return JSON.parse(source.textContent);
  }

  function draw(element) {
    var name = element.getAttribute("data-chart");
    var renderer = renderers[name];
    if (!renderer) {
      throw new Error("no chart renderer named " + name);
    }
    renderer(element, readData(element));
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

  // ----- shared look ------------------------------------------------------------------------------

  var INK = "#1f2a37";
  var MUTED = "#5b6675";
  var LINE = "#dde3ea";
  var FONT = { family: '"DejaVu Sans", "Segoe UI", system-ui, sans-serif', size: 12, color: INK };
  var CONFIG = {
    displaylogo: false,
    responsive: true,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"],
  };

  function signed(value) {
    if (value === null || value === undefined) return "—";
    if (value > 0) return "+" + value;
    if (value < 0) return "−" + Math.abs(value);
    return "0";
  }

  // ----- outcomes: one questionnaire's totals over time ------------------------------------------

  // Light, calm tints that grow warmer with severity; each band is also named in text on the right.
  var BAND_FILL = {
    minimal: "#eaf4ee",
    mild: "#f4f3e3",
    moderate: "#fbeedb",
    moderately_severe: "#f9e2d6",
    severe: "#f5d7d7",
  };
  var TOTAL_COLOUR = "#2f6f8f";
  var IMPROVEMENT_COLOUR = "#2e7d4f";
  var DETERIORATION_COLOUR = "#9a4a00";
  var RISK_COLOUR = "#a4262c";
  var ITEM_ROW_Y = -2.2; // the row of item-9 answers under the axis

  function pick(points, test) {
    var picked = points.filter(test);
    return {
      x: picked.map(function (p) { return p.x; }),
      y: picked.map(function (p) { return p.total; }),
      points: picked,
    };
  }

  function parseLocal(text) {
    // "YYYY-MM-DD HH:MM" (the patient's local time, as the page shows it).
    var m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})/.exec(text);
    return new Date(+m[1], +m[2] - 1, +m[3], +m[4], +m[5]);
  }

  function formatLocal(date) {
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return date.getFullYear() + "-" + two(date.getMonth() + 1) + "-" + two(date.getDate()) + " " +
      two(date.getHours()) + ":" + two(date.getMinutes());
  }

  // A date range with room around the first and last score: at least a week each side of a single
  // score (otherwise the axis would zoom to milliseconds), else 4% of the span.
  function paddedRange(xs) {
    var times = xs.map(function (x) { return parseLocal(x).getTime(); });
    var low = Math.min.apply(null, times);
    var high = Math.max.apply(null, times);
    var day = 24 * 3600 * 1000;
    var pad = Math.max(0.04 * (high - low), high - low < 14 * day ? 7 * day : day);
    return [formatLocal(new Date(low - pad)), formatLocal(new Date(high + pad))];
  }

  register("outcomes", function (element, data) {
    var points = data.points;
    var itemName = data.risk_item ? "Item " + data.risk_item : null;
    var traces = [
      {
        type: "scatter",
        mode: "lines+markers",
        name: data.name + " total",
        x: points.map(function (p) { return p.x; }),
        y: points.map(function (p) { return p.total; }),
        line: { color: TOTAL_COLOUR, width: 2.5 },
        marker: { color: TOTAL_COLOUR, size: 8, symbol: "circle" },
        customdata: points.map(function (p) {
          return [p.band_label, signed(p.change_from_previous), signed(p.change_from_first)];
        }),
        hovertemplate:
          "%{x}<br><b>" + data.name + " %{y}</b> (%{customdata[0]})" +
          "<br>Change from previous: %{customdata[1]}<br>Change from first: %{customdata[2]}<extra></extra>",
      },
    ];

    var improved = pick(points, function (p) { return p.step === "improvement"; });
    var worsened = pick(points, function (p) { return p.step === "deterioration"; });
    traces.push({
      type: "scatter",
      mode: "markers",
      name: "▼ Reliable improvement (" + data.reliable_change + "+ down from first)",
      x: improved.x,
      y: improved.y,
      marker: { symbol: "triangle-down", size: 15, color: IMPROVEMENT_COLOUR, line: { color: "#ffffff", width: 1 } },
      hovertemplate: "%{x}<br>Reliable improvement from the first score<extra></extra>",
    });
    traces.push({
      type: "scatter",
      mode: "markers",
      name: "▲ Reliable deterioration (" + data.reliable_change + "+ up from first)",
      x: worsened.x,
      y: worsened.y,
      marker: { symbol: "triangle-up", size: 15, color: DETERIORATION_COLOUR, line: { color: "#ffffff", width: 1 } },
      hovertemplate: "%{x}<br>Reliable deterioration from the first score<extra></extra>",
    });

    var annotations = [];
    if (itemName) {
      // Every answer to the risk item is written under its administration: "–" when not recorded.
      // Answers above 0 are also marked on the line with a diamond. A 0 is shown as 0, nothing more.
      var risky = pick(points, function (p) { return p.items_known && p.item9 > 0; });
      traces.push({
        type: "scatter",
        mode: "markers",
        name: "◆ " + itemName + " answered above 0",
        x: risky.x,
        y: risky.y,
        marker: { symbol: "diamond", size: 13, color: RISK_COLOUR, line: { color: "#ffffff", width: 1 } },
        hovertemplate: "%{x}<br>" + itemName + " answered %{customdata} (of 3)<extra></extra>",
        customdata: risky.points.map(function (p) { return p.item9; }),
      });
      traces.push({
        type: "scatter",
        mode: "text",
        name: itemName + " answers",
        x: points.map(function (p) { return p.x; }),
        y: points.map(function () { return ITEM_ROW_Y; }),
        text: points.map(function (p) {
          if (!p.items_known) return "–";
          return p.item9 > 0 ? "<b>◆" + p.item9 + "</b>" : String(p.item9);
        }),
        textfont: {
          size: 12,
          color: points.map(function (p) { return p.items_known && p.item9 > 0 ? RISK_COLOUR : MUTED; }),
        },
        hovertemplate: "%{x}<br>" + itemName + ": %{text}<extra></extra>",
      });
      annotations.push({
        xref: "paper", yref: "y", x: 0, y: ITEM_ROW_Y, xanchor: "right", xshift: -6,
        text: itemName, showarrow: false, font: { size: 11, color: MUTED },
      });
    }

    var shapes = data.bands.map(function (band) {
      return {
        type: "rect", xref: "paper", yref: "y", x0: 0, x1: 1, layer: "below", line: { width: 0 },
        y0: band.low === 0 ? 0 : band.low - 0.5,
        y1: band.high === data.total_max ? data.total_max + 0.5 : band.high + 0.5,
        fillcolor: BAND_FILL[band.name] || "#f1f3f5",
      };
    });
    var caseness = data.caseness_threshold - 0.5;
    shapes.push({
      type: "line", xref: "paper", yref: "y", x0: 0, x1: 1, y0: caseness, y1: caseness,
      line: { color: INK, width: 1.5, dash: "dash" },
    });
    data.bands.forEach(function (band) {
      annotations.push({
        xref: "paper", yref: "y", x: 1, xanchor: "left", xshift: 6, y: (band.low + band.high) / 2,
        text: band.label, showarrow: false, font: { size: 11, color: MUTED },
      });
    });
    annotations.push({
      xref: "paper", yref: "y", x: 0, xanchor: "left", xshift: 4, y: caseness, yanchor: "bottom",
      text: "Caseness (" + data.caseness_threshold + "+)", showarrow: false,
      font: { size: 11, color: INK }, bgcolor: "rgba(255,255,255,0.8)",
    });

    var ticks = [];
    for (var t = 0; t <= data.total_max; t += 5) ticks.push(t);
    var layout = {
      font: FONT,
      height: 360,
      margin: { l: 56, r: 130, t: 12, b: 40 },
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      hovermode: "closest",
      // The key is HTML beside the chart (it wraps at any width and is read by screen readers).
      showlegend: false,
      xaxis: {
        type: "date",
        range: paddedRange(points.map(function (p) { return p.x; })),
        showgrid: false,
        linecolor: LINE,
        ticks: "outside",
        tickcolor: LINE,
        automargin: true,
      },
      yaxis: {
        title: { text: "Total (0–" + data.total_max + ")", font: { size: 12, color: MUTED } },
        range: [itemName ? -3.6 : -0.5, data.total_max + 0.8],
        tickvals: ticks,
        gridcolor: "rgba(31,42,55,0.06)",
        zeroline: false,
        fixedrange: true,
      },
      shapes: shapes,
      annotations: annotations,
    };
    window.Plotly.newPlot(element, traces, layout, CONFIG);
  });


  // ----- activity (sessions and minutes per patient-local day) and progress markers ----------------

  var SESSIONS_COLOUR = "#2f6f8f";
  var MINUTES_COLOUR = "#b86e00";

  function lastDays(data, days) {
    var n = data.time_buckets.length;
    var from = Math.max(0, n - days);
    return {
      x: data.time_buckets.slice(from),
      sessions: data.series.sessions.slice(from),
      minutes: data.series.duration_minutes.slice(from),
    };
  }

  register("activity", function (element, data) {
    var days = parseInt(element.getAttribute("data-period") || "30", 10);
    var window_ = lastDays(data, days);
    var traces = [
      {
        type: "bar",
        name: "Sessions (bars, left axis)",
        x: window_.x,
        y: window_.sessions,
        marker: { color: SESSIONS_COLOUR },
        hovertemplate: "%{x}: %{y} session(s)<extra></extra>",
      },
      {
        type: "scatter",
        mode: "lines+markers",
        name: "Minutes (dotted line, right axis)",
        x: window_.x,
        y: window_.minutes,
        yaxis: "y2",
        line: { color: MINUTES_COLOUR, dash: "dot", width: 2 },
        marker: { symbol: "diamond", size: 6 },
        hovertemplate: "%{x}: %{y} min<extra></extra>",
      },
    ];
    var layout = {
      font: FONT,
      height: 300,
      margin: { l: 48, r: 56, t: 10, b: 40 },
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      bargap: 0.25,
      showlegend: true,
      legend: { orientation: "h", x: 0, y: -0.18, yanchor: "top" },
      xaxis: { type: "date", showgrid: false, linecolor: LINE, tickformat: "%d %b", automargin: true },
      yaxis: { title: { text: "Sessions", font: { size: 12, color: MUTED } }, rangemode: "tozero", dtick: 1, gridcolor: "rgba(31,42,55,0.06)", fixedrange: true },
      yaxis2: { title: { text: "Minutes", font: { size: 12, color: MUTED } }, overlaying: "y", side: "right", rangemode: "tozero", tickformat: "d", showgrid: false, fixedrange: true },
    };
    window.Plotly.react(element, traces, layout, CONFIG);
  });

  var MARKER_SYMBOLS = {
    skill_acquired: "circle", breakthrough: "star", insight: "diamond", milestone: "square",
    goal_achieved: "triangle-up", setback_overcome: "cross", therapeutic_goal: "x",
  };

  register("markers", function (element, data) {
    var traces = data.types.map(function (type) {
      var points = data.points.filter(function (p) { return p.type === type; });
      var label = type.replace(/_/g, " ");
      return {
        type: "scatter",
        mode: "markers",
        name: label + " (" + points.length + ")",
        x: points.map(function (p) { return p.at; }),
        y: points.map(function () { return label; }),
        marker: { symbol: MARKER_SYMBOLS[type] || "circle", size: 9, opacity: 0.8 },
        customdata: points.map(function (p) { return [p.description || "", p.value]; }),
        hovertemplate: "%{x}<br>" + label + "<br>%{customdata[0]}<br>value %{customdata[1]}<extra></extra>",
      };
    });
    var layout = {
      font: FONT,
      height: 280,
      margin: { l: 130, r: 16, t: 10, b: 40 },
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      showlegend: false,
      xaxis: { type: "date", showgrid: true, gridcolor: "rgba(31,42,55,0.06)", linecolor: LINE, tickformat: "%d %b" },
      yaxis: { type: "category", categoryorder: "array", categoryarray: data.types.map(function (t) { return t.replace(/_/g, " "); }), fixedrange: true },
    };
    window.Plotly.react(element, traces, layout, CONFIG);
  });

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

  window.ProgressCharts = { register: register, draw: draw, drawAll: drawAll };

  // Drawn after the page is parsed; renderers registered by files loaded before this one are included.
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  } else {
    drawAll(document);
  }
})();
