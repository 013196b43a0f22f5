/*
 * The launch form shows only the chosen strategy's option.
 *
 * Each option's field sits in an element with data-strategy="<strategy>" inside the fieldset
 * [data-strategy-options]; when the strategy (#id_strategy) changes, the other options hide,
 * and the whole fieldset when the strategy has none. Hidden inputs are disabled, so that an
 * option typed for another strategy is not sent. Without this script every option shows, each
 * saying which strategy it is for.
 */
(function () {
  "use strict";

  function update() {
    var choice = document.getElementById("id_strategy");
    var fieldset = document.querySelector("[data-strategy-options]");
    if (!choice || !fieldset) {
      return;
    }
    var shown = 0;
    var options = fieldset.querySelectorAll("[data-strategy]");
    for (var i = 0; i < options.length; i++) {
      var mine = options[i].getAttribute("data-strategy") === choice.value;
      options[i].hidden = !mine;
      var inputs = options[i].querySelectorAll("input, select, textarea");
      for (var j = 0; j < inputs.length; j++) {
        inputs[j].disabled = !mine;
      }
      shown += mine ? 1 : 0;
    }
    fieldset.hidden = shown === 0;
  }

  function start() {
    var choice = document.getElementById("id_strategy");
    if (choice) {
      choice.addEventListener("change", update);
      update();
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
