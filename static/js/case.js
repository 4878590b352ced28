// Keeps each probe photo's status current without a reload.
(function () {
  "use strict";
  var section = document.getElementById("photos");
  if (!section) { return; }
  var url = section.getAttribute("data-status-url");
  var lastConfirmed = null;

  function render(data) {
    data.photos.forEach(function (photo) {
      var figure = section.querySelector('[data-photo="' + photo.id + '"]');
      if (!figure) { return; }
      var status = figure.querySelector('[data-role="status"]');
      status.textContent = photo.status_display;
      // A photo with no face ran no search: a warning, not a green "done".
      status.className = "status status-" + (photo.no_face ? "noface" : photo.status);
      figure.querySelector('[data-role="reason"]').textContent = photo.failure_reason;
      figure.querySelector('[data-role="faces"]').textContent =
        photo.status === "done" && !photo.no_face ? photo.faces + (photo.faces === 1 ? " face" : " faces") : "";
    });
    Object.keys(data.counts).forEach(function (key) {
      var el = document.querySelector('[data-count="' + key + '"]');
      if (el) { el.textContent = data.counts[key]; }
    });
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (data) {
          render(data);
          // A newly confirmed match needs the full page to show its details.
          if (lastConfirmed !== null && data.counts.confirmed > lastConfirmed) { window.location.reload(); }
          lastConfirmed = data.counts.confirmed;
        }
        window.setTimeout(poll, data && data.finished ? 10000 : 1500);
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  poll();
})();
