// Small progressive helpers: every page works without them.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // copy buttons (shown only where the clipboard can be written)
  for (const button of document.querySelectorAll("button.copy[data-copy]")) {
    if (!navigator.clipboard) continue;
    button.hidden = false;
    button.addEventListener("click", () => {
      navigator.clipboard.writeText(button.dataset.copy).then(() => { button.textContent = "copied"; });
    });
  }
  // the package list filters as you type
  const filter = document.getElementById("package-filter");
  const packages = document.getElementById("packages");
  if (filter && packages) {
    filter.hidden = false;
    filter.addEventListener("input", () => {
      const words = filter.value.trim().toLowerCase();
      for (const row of packages.tBodies[0].rows) {
        row.classList.toggle("filtered-out", words !== "" && !row.cells[0].textContent.toLowerCase().includes(words));
      }
    });
  }
  // the catalog's rows on this page narrow as you type; Enter asks the server for the whole catalog
  const search = document.getElementById("search");
  const catalog = document.getElementById("catalog");
  if (search && catalog) {
    // as the server searches: each word typed starts a word of the name (words: letters and digits)
    const words = (text) => text.toLowerCase().match(/[a-z0-9]+/g) || [];
    search.addEventListener("input", () => {
      const wanted = words(search.value);
      for (const row of catalog.tBodies[0].rows) {
        const have = words(row.dataset.name);
        const shown = wanted.every((w) => have.some((h) => h.startsWith(w)));
        row.classList.toggle("filtered-out", !shown);
      }
    });
  }
});
