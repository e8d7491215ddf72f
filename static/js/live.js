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
      var chart = document.getElementById("activity-chart");
      if (chart && window.ProgressCharts) {
        document.getElementById(chart.getAttribute("data-chart-data")).textContent = JSON.stringify(data.viz);
        window.ProgressCharts.draw(chart);
      }
      var cards = document.getElementById("summary-cards");
      if (cards && data.cards_html) cards.innerHTML = data.cards_html;  // server-rendered, escaped
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
      inbox.classList.toggle("inbox--alerting", data.open > 0);
      var list = document.getElementById("inbox-list");
      list.textContent = "";
      data.latest.forEach(function (alert) {
        var item = document.createElement("li");
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
    button.addEventListener("click", function () {
      var open = button.getAttribute("aria-expanded") === "true";
      button.setAttribute("aria-expanded", open ? "false" : "true");
      panel.hidden = open;
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
