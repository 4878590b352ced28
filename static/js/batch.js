// Reloads the batch report while the batch is still being processed.
(function () {
  "use strict";
  var section = document.getElementById("batch");
  if (!section || section.getAttribute("data-finished") === "1") { return; }
  var url = section.getAttribute("data-status-url");
  var seen = null;
  function poll() {
    fetch(url, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (data && (data.finished || (seen !== null && data.rows_done !== seen))) { window.location.reload(); return; }
        if (data) { seen = data.rows_done; }
        window.setTimeout(poll, 2000);
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  window.setTimeout(poll, 2000);
})();
