/*
 * Behaviour every page shares, with no inline script (the pages work without it):
 *
 * - marks <html> with class "js" at once, so that the stylesheet collapses the main menu on a
 *   phone behind its button (#nav-toggle, aria-controls the menu) only when the button works;
 * - a <button data-copy="TEXT"> copies TEXT to the clipboard and says so for a moment (its
 *   data-copied text); such buttons are hidden until this script can copy;
 * - a <select data-autosubmit> submits its form when the choice changes (the language menu;
 *   a <noscript> button does it without this script);
 * - a <button data-print> opens the browser's print dialog.
 *
 * The Content-Security-Policy allows no inline script and no on* attributes: all of it is here.
 *
 * Loaded in <head> without "defer": the class must be set before the page is first drawn,
 * or the menu would show open and then jump shut.
 */
(function () {
  "use strict";

  document.documentElement.classList.add("js");

  function toggleMenu(button) {
    var menu = document.getElementById(button.getAttribute("aria-controls"));
    if (!menu) {
      return;
    }
    var open = button.getAttribute("aria-expanded") !== "true";
    button.setAttribute("aria-expanded", open ? "true" : "false");
    menu.classList.toggle("open", open);
  }

  function copy(button) {
    var text = button.getAttribute("data-copy");
    if (!text || !navigator.clipboard) {
      return;
    }
    navigator.clipboard.writeText(text).then(function () {
      var label = button.firstChild;
      var before = label ? label.nodeValue : null;
      if (label && label.nodeType === Node.TEXT_NODE && button.getAttribute("data-copied")) {
        label.nodeValue = button.getAttribute("data-copied");
        button.classList.add("copied");
        window.setTimeout(function () {
          label.nodeValue = before;
          button.classList.remove("copied");
        }, 1500);
      }
    });
  }

  document.addEventListener("click", function (event) {
    var target = event.target.closest ? event.target.closest("button") : null;
    if (!target) {
      return;
    }
    if (target.id === "nav-toggle") {
      toggleMenu(target);
    } else if (target.hasAttribute("data-copy")) {
      event.preventDefault();
      copy(target);
    }
  });

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target.closest("[data-print]") : null;
    if (target) {
      event.preventDefault();
      window.print();
    }
  });

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches && target.matches("select[data-autosubmit]") && target.form) {
      target.form.submit();
    }
  });

  function ready() {
    // Copying needs the clipboard API (a secure context: HTTPS or localhost).
    if (navigator.clipboard && window.isSecureContext) {
      var buttons = document.querySelectorAll("button[data-copy][hidden]");
      for (var i = 0; i < buttons.length; i++) {
        buttons[i].hidden = false;
      }
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", ready);
  } else {
    ready();
  }
})();
