/*
 * Live updates (server-sent events, see tracking/live.py). A patient page listens to its patient's
 * stream and redraws the activity chart when the game posts data; every therapist page keeps the
 * header's alert inbox current. The stream never extends the login session; when the session ends the
 * page says so and stops listening (reload to log in again). Without JavaScript, reload the page.
 */
(function () {
  "use strict";

  var status = document.getElementById("live-status");
  var inbox = document.getElementById("inbox");
  var url = status ? status.getAttribute("data-live-url") : inbox ? inbox.getAttribute("data-events-url") : null;
  if (!url || !window.EventSource) {
    if (status) status.textContent = "Live updates unavailable: reload the page to see new data.";
    return;
  }

  function setStatus(text) {
    if (status) status.textContent = text;
  }

  function getJSON(href) {
    return fetch(href, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    });
  }

  function refreshPatient() {
    if (!status) return;
    getJSON(status.getAttribute("data-refresh-url")).then(function (data) {
      // The activity figure is built by the server (tracking/charts.py): write it where the chart reads it.
      var chart = document.getElementById("activity-chart");
      if (chart && window.ProgressCharts && data.activity_figure) {
        document.getElementById(chart.getAttribute("data-chart-data")).textContent = JSON.stringify(data.viz);
        document.getElementById(chart.getAttribute("data-chart-figure")).textContent = JSON.stringify(data.activity_figure);
        window.ProgressCharts.draw(chart);
      }
      // Server-rendered and escaped: the cards, the alerts card, the risk-flag banner, the recommendations.
      // A form the therapist is typing in is left alone until the next update.
      [["summary-cards", "cards_html"], ["alerts-region", "alerts_html"], ["risk-flag-region", "risk_flag_html"],
        ["recommendations", "recommendations_html"]].forEach(function (pair) {
        var region = document.getElementById(pair[0]);
        if (!region || data[pair[1]] === undefined) return;
        if (region.contains(document.activeElement) && document.activeElement.matches("input, textarea")) return;
        region.innerHTML = data[pair[1]];
      });
      setStatus("Live updates on · new activity received " + new Date().toLocaleTimeString());
    }).catch(function () {
      setStatus("Live updates paused: reload the page to see new data.");
    });
  }

  function refreshInbox() {
    if (!inbox) return;
    getJSON(inbox.getAttribute("data-inbox-url")).then(function (data) {
      var count = document.getElementById("inbox-count");
      count.textContent = String(data.open);
      var worst = ["urgent", "high", "moderate"].filter(function (s) { return data.counts[s] > 0; })[0];
      inbox.classList.toggle("inbox--alerting", data.open > 0);
      inbox.setAttribute("data-severity", worst || "none");
      var counts = document.getElementById("inbox-counts");
      counts.textContent = "";
      ["urgent", "high", "moderate"].forEach(function (severity) {
        var chip = document.createElement("span");
        chip.className = "badge badge--" + severity;
        chip.textContent = data.counts[severity] + " " + severity;
        counts.appendChild(chip);
        counts.appendChild(document.createTextNode(" "));
      });
      var list = document.getElementById("inbox-list");
      list.textContent = "";
      data.latest.forEach(function (alert) {
        var item = document.createElement("li");
        item.setAttribute("data-severity", alert.severity);
        var link = document.createElement("a");
        link.href = "/patients/" + encodeURIComponent(alert.player_id) + "/#alerts";
        link.textContent = alert.severity.toUpperCase() + " · " + alert.player_id + " · " + alert.kind;
        item.appendChild(link);
        list.appendChild(item);
      });
      if (!data.latest.length) {
        var none = document.createElement("li");
        none.textContent = "No open alerts.";
        list.appendChild(none);
      }
    }).catch(function () { /* the inbox keeps its last state */ });
  }

  if (inbox) {
    var button = inbox.querySelector("button");
    var panel = document.getElementById("inbox-panel");
    function setOpen(open) {
      button.setAttribute("aria-expanded", open ? "true" : "false");
      panel.hidden = !open;
    }
    button.addEventListener("click", function () {
      setOpen(button.getAttribute("aria-expanded") !== "true");
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && !panel.hidden) {
        setOpen(false);
        button.focus();
      }
    });
    refreshInbox();
  }

  var opened = 0;
  var source = new EventSource(url);
  source.addEventListener("open", function () {
    opened += 1;
    setStatus("Live updates on");
    if (opened > 1) {  // reconnected: catch up on anything sent while we were away
      refreshPatient();
      refreshInbox();
    }
  });
  source.addEventListener("patient", refreshPatient);
  source.addEventListener("alerts", function () {
    refreshInbox();
    if (status) refreshPatient();
  });
  source.addEventListener("bye", function (event) {
    if (JSON.parse(event.data).reason === "session") {
      source.close();
      setStatus("Live updates stopped: your session has ended. Reload the page to log in again.");
    }
  });
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) {
      setStatus("Live updates stopped. Reload the page to see new data.");
    }
  });
})();

// Printing: chart data tables print open even when folded on screen.
window.addEventListener("beforeprint", function () {
  Array.prototype.forEach.call(document.querySelectorAll("details.chart-table, details.explain"), function (d) {
    d.setAttribute("open", "");
  });
});
