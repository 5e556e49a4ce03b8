// The console's own script: served as a file, never inline (the pages' policy forbids inline
// script). htmx does the rest. Everything written into the page goes through textContent, so a
// name such as "<script>" stays text.
"use strict";

// After htmx swaps in an error page, move focus to it so keyboard users hear it.
document.addEventListener("htmx:afterSwap", (event) => {
  const flash = document.getElementById("flash");
  if (flash && event.detail.target === flash) {
    flash.focus();
  }
});
