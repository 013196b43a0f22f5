/*
 * Keeps a training run's page current while the run trains.
 *
 * It fetches the page's live part (#run-live, from its data-live-url) and puts the new content
 * in place and draws its new charts; it stops once that part says data-finished="true". Each
 * request names the version of the part the page shows (?seen=, the X-Live-Version of the last
 * answer): the portal holds it until the run changes (a round opens or closes, the run ends),
 * or for a few seconds, so a closed round shows as it closes, and the next request goes at once.
 * The page works without this script: a reload shows the same state.
 *
 * Charts only change when a round closes. The request names the closed rounds the page's
 * charts show (?charts=<data-charts>); while no other round has closed, the answer holds an
 * empty <div data-kept> with the same id and data-state in place of each chart, and the chart
 * already drawn is moved into the new part instead.
 *
 * When the portal does not answer (a dropped connection, a restart, an answer that is not the
 * run's part, such as a login page after the session ended), #run-connection is shown and the
 * part dimmed, and polls go on less often (up to every 10 s) until one succeeds. Once the run is
 * over, what was only true while it trained goes: [data-hide-when-finished] elements and the
 * launch message (.msg.until-finished).
 */
(function () {
  "use strict";

  var INTERVAL = 2000; // while the tab is hidden, or when the portal answered at once unchanged
  var LONGEST = 10000; // between retries while the portal does not answer
  var QUICK = 250; // an unchanged answer sooner than this was not held: do not ask at once
  var failures = 0;
  var last = null;
  var version = null; // the X-Live-Version of the part shown
  var full = false; // ask for the charts too on the next beat

  function live() {
    return document.getElementById("run-live");
  }

  function finished(element) {
    return element.getAttribute("data-finished") === "true";
  }

  function announce(element) {
    var region = document.getElementById("run-announce");
    var summary = element.getAttribute("data-summary");
    if (region && summary && region.textContent !== summary) {
      region.textContent = summary;
    }
  }

  function connection(ok) {
    var note = document.getElementById("run-connection");
    var current = live();
    if (current) {
      current.classList.toggle("stale", !ok);
    }
    if (!note) {
      return;
    }
    if (note.hidden !== ok) {
      note.hidden = ok;
    }
  }

  function stop() {
    // Actions that only make sense while the run trains (cancelling) go once it is over, and
    // so does the message that said the page follows the launched run.
    var stale = document.querySelectorAll("[data-hide-when-finished], .msg.until-finished");
    for (var i = 0; i < stale.length; i++) {
      stale[i].hidden = true;
    }
  }

  // Moves the charts of the current part into the new one's placeholders; false if one is
  // missing, and then nothing is touched.
  function keepCharts(current, next) {
    var holes = next.querySelectorAll("[data-kept]");
    var kept = [];
    for (var i = 0; i < holes.length; i++) {
      var old = document.getElementById(holes[i].id);
      if (
        !old ||
        !current.contains(old) ||
        old.hasAttribute("data-kept") ||
        old.getAttribute("data-state") !== holes[i].getAttribute("data-state")
      ) {
        return false;
      }
      kept.push([holes[i], old]);
    }
    for (var j = 0; j < kept.length; j++) {
      kept[j][0].replaceWith(kept[j][1]);
    }
    return true;
  }

  function drawNew(root) {
    if (!window.PortalCharts || !window.Chart) {
      return;
    }
    var canvases = root.querySelectorAll("canvas[data-chart]");
    for (var i = 0; i < canvases.length; i++) {
      if (!window.Chart.getChart(canvases[i])) {
        window.PortalCharts.draw(canvases[i]);
      }
    }
  }

  function apply(text) {
    var current = live();
    var holder = document.createElement("template");
    holder.innerHTML = text.trim();
    var next = holder.content.getElementById
      ? holder.content.getElementById("run-live")
      : holder.content.firstElementChild;
    if (!current) {
      return;
    }
    if (!next) {
      throw new Error("not the run's live part");
    }
    // Replacing only on change keeps the reader's place (and an open tooltip) between polls.
    if (text !== last) {
      if (!keepCharts(current, next)) {
        full = true;
        return;
      }
      current.replaceWith(next);
      last = text;
      drawNew(next);
      announce(next);
    }
    if (finished(next)) {
      stop();
    }
  }

  function address(current) {
    var url = new URL(current.getAttribute("data-live-url"), window.location.href);
    var charts = current.getAttribute("data-charts");
    if (charts && !full) {
      url.searchParams.set("charts", charts);
    }
    if (version && !full) {
      url.searchParams.set("seen", version);
    }
    full = false;
    return url.toString();
  }

  function poll() {
    var current = live();
    if (!current) {
      return;
    }
    if (finished(current)) {
      stop();
      return;
    }
    if (document.hidden) {
      window.setTimeout(poll, INTERVAL);
      return;
    }
    var asked = Date.now();
    var before = last;
    fetch(address(current), {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "text/html" },
    })
      .then(function (response) {
        if (!response.ok) {
          throw new Error(String(response.status));
        }
        version = response.headers.get("X-Live-Version");
        return response.text();
      })
      .then(function (text) {
        apply(text);
        failures = 0;
        connection(true);
        // Held until the run changed: ask again at once. Answered at once with nothing new
        // (a portal that does not hold requests): ask again later.
        var held = Date.now() - asked >= QUICK || last !== before || full;
        window.setTimeout(poll, held ? 0 : INTERVAL);
      })
      .catch(function () {
        // A missed beat (a restart, a dropped connection): say so, and try again later.
        failures += 1;
        version = null;
        connection(false);
        window.setTimeout(poll, Math.min(INTERVAL * Math.pow(2, failures), LONGEST));
      });
  }

  function start() {
    var current = live();
    if (current && finished(current)) {
      stop();
    } else if (current) {
      poll();
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
