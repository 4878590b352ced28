// The reviewer's comparison: synchronised zoom and pan over the two aligned faces, a fade and a flicker
// overlay, and the keyboard (j/k items, arrows and 1/2/3 for the worksheet). Served from 'self' (CSP).
(function () {
  "use strict";

  function ready(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  ready(function () {
    var views = Array.prototype.slice.call(document.querySelectorAll("[data-face-view]"));
    var state = { scale: 1, x: 0, y: 0 };
    var zoomOut = document.getElementById("face-zoom");

    function apply() {
      views.forEach(function (view) {
        view.querySelectorAll(".face-img").forEach(function (img) {
          img.style.transform = "translate(" + state.x + "px," + state.y + "px) scale(" + state.scale + ")";
        });
        view.dataset.scale = String(state.scale);
      });
      if (zoomOut) zoomOut.textContent = Math.round(state.scale * 100) + "%";
    }

    function zoomAt(factor, px, py) {
      var next = Math.min(8, Math.max(1, state.scale * factor));
      var ratio = next / state.scale;
      // Keep the point under the cursor where it is.
      state.x = px - (px - state.x) * ratio;
      state.y = py - (py - state.y) * ratio;
      state.scale = next;
      if (next === 1) { state.x = 0; state.y = 0; }
      apply();
    }

    views.forEach(function (view) {
      view.addEventListener("wheel", function (event) {
        event.preventDefault();
        var box = view.getBoundingClientRect();
        zoomAt(event.deltaY < 0 ? 1.2 : 1 / 1.2, event.clientX - box.left, event.clientY - box.top);
      }, { passive: false });
      view.addEventListener("pointerdown", function (event) {
        var startX = event.clientX, startY = event.clientY, fromX = state.x, fromY = state.y;
        view.setPointerCapture(event.pointerId);
        view.classList.add("dragging");
        function move(e) {
          state.x = fromX + e.clientX - startX;
          state.y = fromY + e.clientY - startY;
          apply();
        }
        function up() {
          view.removeEventListener("pointermove", move);
          view.removeEventListener("pointerup", up);
          view.removeEventListener("pointercancel", up);
          view.classList.remove("dragging");
        }
        view.addEventListener("pointermove", move);
        view.addEventListener("pointerup", up);
        view.addEventListener("pointercancel", up);
      });
    });

    function reset() { state = { scale: 1, x: 0, y: 0 }; apply(); }
    var resetButton = document.getElementById("face-reset");
    if (resetButton) resetButton.addEventListener("click", reset);

    // Fade: the gallery face over the probe face, in the left pane.
    var overlay = document.getElementById("face-overlay");
    var fade = document.getElementById("face-fade");
    var fadeOut = document.getElementById("face-fade-value");
    var flickerButton = document.getElementById("face-flicker");
    var flickerTimer = null;
    function setFade() {
      if (!overlay || !fade) return;
      overlay.style.opacity = String(fade.value / 100);
      if (fadeOut) fadeOut.textContent = fade.value + "%";
    }
    if (fade) fade.addEventListener("input", setFade);
    function toggleFlicker() {
      if (!overlay || !flickerButton) return;
      if (flickerTimer) {
        clearInterval(flickerTimer);
        flickerTimer = null;
        flickerButton.setAttribute("aria-pressed", "false");
        setFade();
        return;
      }
      var on = false;
      flickerButton.setAttribute("aria-pressed", "true");
      flickerTimer = setInterval(function () {
        on = !on;
        overlay.style.opacity = on ? "1" : "0";
      }, 500);
    }
    if (flickerButton) flickerButton.addEventListener("click", toggleFlicker);
    setFade();
    apply();

    // The worksheet's rows: one is focused; 1/2/3 mark it, the arrows move.
    var rows = Array.prototype.slice.call(document.querySelectorAll("#worksheet-grid tr.feature-row"));
    var focused = 0;
    function focusRow(index) {
      if (!rows.length) return;
      focused = Math.max(0, Math.min(rows.length - 1, index));
      rows.forEach(function (row, i) { row.classList.toggle("focused", i === focused); });
    }
    rows.forEach(function (row, i) {
      row.addEventListener("click", function () { focusRow(i); });
    });
    focusRow(0);

    function typing(target) {
      var tag = target && target.tagName;
      return tag === "TEXTAREA" || tag === "SELECT" || (tag === "INPUT" && !/^(radio|checkbox|range|button|submit)$/.test(target.type));
    }

    document.addEventListener("keydown", function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
      var key = event.key;
      if (key === "j" || key === "k") {
        var link = document.getElementById(key === "j" ? "review-next" : "review-previous");
        if (link) { event.preventDefault(); window.location.href = link.href; }
      } else if (key === "ArrowDown" || key === "ArrowUp") {
        if (!rows.length) return;
        event.preventDefault();
        focusRow(focused + (key === "ArrowDown" ? 1 : -1));
      } else if (key === "1" || key === "2" || key === "3") {
        var row = rows[focused];
        if (!row) return;
        var radio = row.querySelectorAll("input[type=radio]")[Number(key) - 1];
        if (radio && !radio.disabled) {
          event.preventDefault();
          radio.checked = true;
          radio.dispatchEvent(new Event("change", { bubbles: true }));
          focusRow(focused + 1);
        }
      } else if (key === "f") {
        toggleFlicker();
      } else if (key === "+" || key === "=" || key === "-") {
        var view = views[0];
        if (!view) return;
        var box = view.getBoundingClientRect();
        zoomAt(key === "-" ? 1 / 1.2 : 1.2, box.width / 2, box.height / 2);
      } else if (key === "0") {
        reset();
      }
    });
  });
})();
