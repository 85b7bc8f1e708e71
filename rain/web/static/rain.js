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
    search.addEventListener("input", () => {
      const words = search.value.trim().toLowerCase();
      for (const row of catalog.tBodies[0].rows) {
        row.classList.toggle("filtered-out", words !== "" && !row.dataset.name.toLowerCase().includes(words));
      }
    });
  }
});
