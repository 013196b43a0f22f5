/*
 * Behaviour every page shares, kept out of the markup: the Content-Security-Policy allows no
 * inline script and no on* attributes.
 *
 * - <select data-autosubmit> submits its form when changed (the language switcher; a
 *   <noscript> button does the same without JavaScript).
 * - <button data-print> opens the browser's print dialog.
 */
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target instanceof HTMLSelectElement && target.hasAttribute("data-autosubmit") && target.form) {
      target.form.submit();
    }
  });
  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target.closest("[data-print]") : null;
    if (target) {
      event.preventDefault();
      window.print();
    }
  });
})();
