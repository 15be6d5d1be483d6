window.__reportErrors = [];
window.onerror = function (message, source, line) {
  window.__reportErrors.push(String(message) + (line ? " (line " + line + ")" : ""));
  var box = document.getElementById("page-errors");
  if (box) { box.textContent = window.__reportErrors.join("\n"); box.hidden = false; }
};
