/*
 * Keeps a training run's page current while the run trains.
 *
 * Every two seconds it fetches the page's live part (#run-live, from its data-live-url) and puts
 * the new content in place and redraws its charts; it stops once that part says
 * data-finished="true". The page works without this script: a reload shows the same state.
 */
(function () {
  "use strict";

  var INTERVAL = 2000;
  var last = null;

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

  function stop() {
    // Actions that only make sense while the run trains (cancelling) go once it is over.
    var stale = document.querySelectorAll("[data-hide-when-finished]");
    for (var i = 0; i < stale.length; i++) {
      stale[i].hidden = true;
    }
  }

  function apply(text) {
    var current = live();
    var holder = document.createElement("template");
    holder.innerHTML = text.trim();
    var next = holder.content.getElementById
      ? holder.content.getElementById("run-live")
      : holder.content.firstElementChild;
    if (!current || !next) {
      return;
    }
    // Replacing only on change keeps the reader's place (and an open tooltip) between polls.
    if (text !== last) {
      current.replaceWith(next);
      last = text;
      if (window.PortalCharts) {
        window.PortalCharts.drawAll(next);
      }
      announce(next);
    }
    if (finished(next)) {
      stop();
    }
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
    fetch(current.getAttribute("data-live-url"), {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "text/html" },
    })
      .then(function (response) {
        if (!response.ok) {
          throw new Error(String(response.status));
        }
        return response.text();
      })
      .then(apply)
      .catch(function () {
        // A missed beat (a restart, a dropped connection): the next one tries again.
      })
      .then(function () {
        window.setTimeout(poll, INTERVAL);
      });
  }

  function start() {
    var current = live();
    if (current && !finished(current)) {
      window.setTimeout(poll, INTERVAL);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
