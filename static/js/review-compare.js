// The reviewer's comparison: synchronised zoom and pan over the two aligned faces, a fade and a flicker
// overlay, image tools (brightness, contrast, gamma, greyscale, mirror, 1:1 pixels) for both faces or each
// alone, every reference photo of the subject, marks tied to FISWG features, and the keyboard (j/k items,
// arrows and 1/2/3 for the worksheet). Tools change only the view; the form records which were used and the
// marks made. Served from 'self' (CSP): no inline script, styles set through the CSSOM.
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var ALIGNED = { width: 480, height: 576 };  // matching/alignment.py
  var TOOL_ORDER = ["brightness", "contrast", "gamma", "greyscale", "mirror", "pixels"];

  function ready(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  function readJSON(id, fallback) {
    var node = document.getElementById(id);
    if (!node) return fallback;
    try { return JSON.parse(node.textContent); } catch (e) { return fallback; }
  }

  ready(function () {
    var views = Array.prototype.slice.call(document.querySelectorAll("[data-face-view]"));
    var bySide = {};
    views.forEach(function (view) { bySide[view.dataset.side] = view; });
    var state = { scale: 1, x: 0, y: 0 };
    var zoomOut = document.getElementById("face-zoom");

    // Each face's tools: what is drawn, and what has ever been used (the worksheet's record).
    function freshTools() {
      return { brightness: 100, contrast: 100, gamma: 100, greyscale: false, mirror: false, pixels: false };
    }
    var tools = { probe: freshTools(), gallery: freshTools() };
    var used = { probe: {}, gallery: {} };
    var toolsInput = document.querySelector("input[name=tools]");
    var annotationsInput = document.querySelector("input[name=annotations]");

    function recordTools() {
      if (!toolsInput) return;
      var record = {};
      ["probe", "gallery"].forEach(function (side) {
        var names = TOOL_ORDER.filter(function (name) { return used[side][name]; });
        if (names.length) record[side] = names;
      });
      toolsInput.value = JSON.stringify(record);
    }

    function transformFor(view) {
      var width = view.clientWidth;
      var t = "translate(" + state.x + "px," + state.y + "px) scale(" + state.scale + ")";
      var side = view.dataset.side;
      // Mirror about the pane's vertical centre (the transform origin is the top left corner).
      if (side && tools[side] && tools[side].mirror) t += " translate(" + width + "px,0) scale(-1,1)";
      return t;
    }

    function apply() {
      views.forEach(function (view) {
        var t = transformFor(view);
        view.querySelectorAll(".face-img, .face-marks").forEach(function (el) { el.style.transform = t; });
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

    // Marks: points and regions on either face, in the aligned image's coordinates (0 to 1).
    var markMode = null;  // null, "point" or "region"
    var marks = [];  // this reviewer's own, editable
    var shown = readJSON("marks-shown", []);
    var others = shown.filter(function (m) { return !m.own; });
    shown.filter(function (m) { return m.own; }).forEach(function (m) {
      marks.push({ face: m.face, kind: m.kind, x: m.x, y: m.y, w: m.w, h: m.h, feature: m.feature, note: m.note || "" });
    });
    if (annotationsInput && annotationsInput.value) {
      try {
        var posted = JSON.parse(annotationsInput.value);
        if (Array.isArray(posted)) marks = posted;
      } catch (e) { /* keep what the page drew */ }
    }
    var features = readJSON("fiswg-features", []);
    var editable = !!annotationsInput && !annotationsInput.disabled;

    // From a point on the screen to the aligned image's coordinates (0 to 1), undoing pan, zoom and mirror
    // and the letterbox that fits the 480 x 576 image into the pane.
    function toImage(view, clientX, clientY) {
      var box = view.getBoundingClientRect();
      var width = view.clientWidth, height = view.clientHeight;
      var px = (clientX - box.left - state.x) / state.scale;
      var py = (clientY - box.top - state.y) / state.scale;
      var side = view.dataset.side;
      if (tools[side] && tools[side].mirror) px = width - px;
      var fit = Math.min(width / ALIGNED.width, height / ALIGNED.height);
      var left = (width - ALIGNED.width * fit) / 2, top = (height - ALIGNED.height * fit) / 2;
      return { x: (px - left) / fit / ALIGNED.width, y: (py - top) / fit / ALIGNED.height };
    }

    function clamp01(v) { return Math.min(1, Math.max(0, v)); }

    function drawMark(svg, mark, label, css) {
      var g = document.createElementNS(SVG, "g");
      g.setAttribute("class", "mark " + css);
      var x = mark.x * ALIGNED.width, y = mark.y * ALIGNED.height;
      if (mark.kind === "region") {
        var rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("x", x);
        rect.setAttribute("y", y);
        rect.setAttribute("width", mark.w * ALIGNED.width);
        rect.setAttribute("height", mark.h * ALIGNED.height);
        g.appendChild(rect);
      } else {
        var circle = document.createElementNS(SVG, "circle");
        circle.setAttribute("cx", x);
        circle.setAttribute("cy", y);
        circle.setAttribute("r", 7);
        g.appendChild(circle);
      }
      var text = document.createElementNS(SVG, "text");
      text.setAttribute("x", x + (mark.kind === "region" ? 3 : 9));
      text.setAttribute("y", y + (mark.kind === "region" ? 16 : -8));
      text.textContent = label;
      g.appendChild(text);
      svg.appendChild(g);
    }

    function featureLabel(value) {
      var found = features.filter(function (f) { return f.value === value; })[0];
      return found ? found.label : "choose a feature";
    }

    function renderMarks() {
      views.forEach(function (view) {
        var svg = view.querySelector(".face-marks");
        if (!svg) return;
        while (svg.firstChild) svg.removeChild(svg.firstChild);
        var faceId = Number(view.dataset.faceId);
        marks.forEach(function (mark, i) {
          if (mark.face === faceId) drawMark(svg, mark, String(i + 1), "own");
        });
        others.forEach(function (mark, i) {
          if (mark.face === faceId) drawMark(svg, mark, mark.by + " " + (i + 1), "other");
        });
      });
      var list = document.getElementById("mark-list");
      if (list) {
        while (list.firstChild) list.removeChild(list.firstChild);
        marks.forEach(function (mark, i) {
          var item = document.createElement("li");
          item.className = "mark-item";
          item.dataset.index = String(i);
          var where = document.createElement("span");
          where.className = "mark-where";
          where.textContent = (mark.face === Number(bySide.probe && bySide.probe.dataset.faceId) ? "probe" : "gallery") +
            " · " + mark.kind;
          item.appendChild(where);
          var select = document.createElement("select");
          select.setAttribute("aria-label", "Feature of mark " + (i + 1));
          select.setAttribute("form", "no-form");
          var blank = document.createElement("option");
          blank.value = "";
          blank.textContent = "feature…";
          select.appendChild(blank);
          features.forEach(function (f) {
            var option = document.createElement("option");
            option.value = f.value;
            option.textContent = f.label;
            if (f.value === mark.feature) option.selected = true;
            select.appendChild(option);
          });
          select.disabled = !editable;
          select.addEventListener("change", function () { mark.feature = select.value; saveMarks(); });
          item.appendChild(select);
          var note = document.createElement("input");
          note.type = "text";
          note.maxLength = 500;
          note.placeholder = "what you see here";
          note.value = mark.note || "";
          note.setAttribute("aria-label", "Note on mark " + (i + 1));
          note.setAttribute("form", "no-form");
          note.disabled = !editable;
          note.addEventListener("input", function () { mark.note = note.value; saveMarks(false); });
          item.appendChild(note);
          if (editable) {
            var remove = document.createElement("button");
            remove.type = "button";
            remove.textContent = "remove";
            remove.addEventListener("click", function () { marks.splice(i, 1); saveMarks(); });
            item.appendChild(remove);
          }
          list.appendChild(item);
        });
      }
      var othersNote = document.getElementById("mark-others");
      if (othersNote) {
        othersNote.hidden = !others.length;
        othersNote.textContent = others.map(function (m, i) {
          return m.by + " " + (i + 1) + ": " + featureLabel(m.feature) + (m.note ? " — " + m.note : "");
        }).join(" · ");
      }
    }

    function saveMarks(redraw) {
      if (annotationsInput) {
        annotationsInput.value = JSON.stringify(marks.map(function (m) {
          var out = { face: m.face, kind: m.kind, x: m.x, y: m.y, feature: m.feature || "", note: m.note || "" };
          if (m.kind === "region") { out.w = m.w; out.h = m.h; }
          return out;
        }));
      }
      if (redraw !== false) renderMarks();
    }

    function setMarkMode(mode) {
      markMode = markMode === mode ? null : mode;
      ["point", "region"].forEach(function (m) {
        var button = document.getElementById("mark-" + m);
        if (button) button.setAttribute("aria-pressed", String(markMode === m));
      });
      views.forEach(function (view) { view.classList.toggle("marking", !!markMode); });
    }
    var markHelp = document.querySelector(".mark-head .help");
    if (markHelp && !editable) markHelp.textContent = "Marks are made while comparing; these are the recorded ones.";
    ["point", "region"].forEach(function (m) {
      var button = document.getElementById("mark-" + m);
      if (!button) return;
      if (!editable) { button.disabled = true; return; }
      button.addEventListener("click", function () { setMarkMode(m); });
    });

    views.forEach(function (view) {
      view.addEventListener("wheel", function (event) {
        event.preventDefault();
        var box = view.getBoundingClientRect();
        zoomAt(event.deltaY < 0 ? 1.2 : 1 / 1.2, event.clientX - box.left, event.clientY - box.top);
      }, { passive: false });
      view.addEventListener("pointerdown", function (event) {
        var startX = event.clientX, startY = event.clientY, fromX = state.x, fromY = state.y;
        view.setPointerCapture(event.pointerId);
        var side = view.dataset.side;
        var marking = markMode && view.querySelector(".face-marks") && !(tools[side] && tools[side].pixels);
        var start = marking ? toImage(view, startX, startY) : null;
        var draft = null;
        if (!marking) view.classList.add("dragging");
        function move(e) {
          if (marking) {
            if (markMode !== "region") return;
            var here = toImage(view, e.clientX, e.clientY);
            draft = {
              x: clamp01(Math.min(start.x, here.x)), y: clamp01(Math.min(start.y, here.y)),
              w: Math.abs(here.x - start.x), h: Math.abs(here.y - start.y),
            };
            return;
          }
          state.x = fromX + e.clientX - startX;
          state.y = fromY + e.clientY - startY;
          apply();
        }
        function up() {
          view.removeEventListener("pointermove", move);
          view.removeEventListener("pointerup", up);
          view.removeEventListener("pointercancel", up);
          view.classList.remove("dragging");
          if (!marking) return;
          var faceId = Number(view.dataset.faceId);
          if (markMode === "point" && start.x >= 0 && start.x <= 1 && start.y >= 0 && start.y <= 1) {
            marks.push({ face: faceId, kind: "point", x: round(start.x), y: round(start.y), feature: "", note: "" });
          } else if (markMode === "region" && draft && draft.w > 0.01 && draft.h > 0.01) {
            marks.push({
              face: faceId, kind: "region", x: round(draft.x), y: round(draft.y),
              w: round(Math.min(draft.w, 1 - draft.x)), h: round(Math.min(draft.h, 1 - draft.y)),
              feature: "", note: "",
            });
          } else {
            return;
          }
          saveMarks();
          var selects = document.querySelectorAll("#mark-list select");
          if (selects.length) selects[selects.length - 1].focus();
        }
        view.addEventListener("pointermove", move);
        view.addEventListener("pointerup", up);
        view.addEventListener("pointercancel", up);
      });
    });

    function round(v) { return Math.round(v * 10000) / 10000; }

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

    // Image tools: for both faces, or the one chosen.
    function targets() {
      var chosen = document.querySelector("input[name=tool-target]:checked");
      var value = chosen ? chosen.value : "both";
      var sides = value === "both" ? ["probe", "gallery"] : [value];
      return sides.filter(function (side) { return bySide[side]; });
    }

    function drawTools(side) {
      var view = bySide[side];
      if (!view) return;
      var t = tools[side];
      var gamma = document.getElementById("gamma-" + side);
      if (gamma) {
        gamma.querySelectorAll("feFuncR, feFuncG, feFuncB").forEach(function (fn) {
          fn.setAttribute("exponent", String(100 / t.gamma));
        });
      }
      var filter = "brightness(" + t.brightness / 100 + ") contrast(" + t.contrast / 100 + ")" +
        (t.greyscale ? " grayscale(1)" : "") + (t.gamma !== 100 ? " url(#gamma-" + side + ")" : "");
      var images = view.querySelectorAll(".face-img, .face-pixels");
      images.forEach(function (img) {
        // The overlay is the gallery face: it takes the gallery's tools, in the probe's pane.
        var own = img.id === "face-overlay" ? tools.gallery : t;
        var ownSide = img.id === "face-overlay" ? "gallery" : side;
        img.style.filter = "brightness(" + own.brightness / 100 + ") contrast(" + own.contrast / 100 + ")" +
          (own.greyscale ? " grayscale(1)" : "") + (own.gamma !== 100 ? " url(#gamma-" + ownSide + ")" : "");
      });
      view.dataset.filter = filter;
      view.classList.toggle("pixels", t.pixels);
      var pixels = view.querySelector(".face-pixels");
      if (pixels) {
        if (t.pixels && !pixels.getAttribute("src")) pixels.setAttribute("src", pixels.dataset.src);
        pixels.hidden = !t.pixels;
        sizePixels(pixels);
      }
      view.classList.toggle("mirrored", t.mirror);
    }

    // 1:1: one image pixel to one device pixel, centred in the pane, never stretched to fill it.
    function sizePixels(img) {
      if (img.hidden || !img.naturalWidth) return;
      var ratio = window.devicePixelRatio || 1;
      img.style.width = img.naturalWidth / ratio + "px";
      img.style.height = img.naturalHeight / ratio + "px";
    }
    document.querySelectorAll(".face-pixels").forEach(function (img) {
      img.addEventListener("load", function () { sizePixels(img); });
    });

    function syncControls() {
      var side = targets()[0];
      if (!side) return;
      var t = tools[side];
      ["brightness", "contrast", "gamma"].forEach(function (name) {
        var input = document.getElementById("tool-" + name);
        if (input) input.value = t[name];
        showValue(name, t[name]);
      });
      ["greyscale", "mirror", "pixels"].forEach(function (name) {
        var button = document.getElementById("tool-" + name);
        if (button) button.setAttribute("aria-pressed", String(targets().every(function (s) { return tools[s][name]; })));
      });
    }

    function showValue(name, value) {
      var out = document.getElementById("tool-" + name + "-value");
      if (!out) return;
      out.textContent = name === "gamma" ? (value / 100).toFixed(2) : value + "%";
    }

    function setTool(name, value) {
      targets().forEach(function (side) {
        tools[side][name] = value;
        if (value !== freshTools()[name]) used[side][name] = true;
        drawTools(side);
      });
      recordTools();
      apply();
      syncControls();
    }

    ["brightness", "contrast", "gamma"].forEach(function (name) {
      var input = document.getElementById("tool-" + name);
      if (input) input.addEventListener("input", function () { setTool(name, Number(input.value)); });
    });
    ["greyscale", "mirror", "pixels"].forEach(function (name) {
      var button = document.getElementById("tool-" + name);
      if (!button) return;
      button.addEventListener("click", function () {
        var on = button.getAttribute("aria-pressed") !== "true";
        setTool(name, on);
      });
    });
    document.querySelectorAll("input[name=tool-target]").forEach(function (radio) {
      radio.addEventListener("change", syncControls);
    });
    var toolReset = document.getElementById("tool-reset");
    if (toolReset) toolReset.addEventListener("click", function () {
      targets().forEach(function (side) { tools[side] = freshTools(); drawTools(side); });
      apply();
      syncControls();
    });

    // Every reference photo of the subject: choosing one puts it in the gallery pane (and the overlay).
    document.querySelectorAll(".strip-photo").forEach(function (button) {
      button.addEventListener("click", function () {
        var view = bySide.gallery;
        if (!view) return;
        view.dataset.faceId = button.dataset.faceId;
        document.getElementById("face-gallery").setAttribute("src", button.dataset.aligned);
        if (overlay) overlay.setAttribute("src", button.dataset.aligned);
        var pixels = view.querySelector(".face-pixels");
        if (pixels) {
          pixels.dataset.src = button.dataset.crop;
          if (tools.gallery.pixels) pixels.setAttribute("src", button.dataset.crop);
          else pixels.removeAttribute("src");
        }
        var photoLink = document.getElementById("gallery-photo-link");
        if (photoLink) photoLink.href = button.dataset.photo;
        var cropLink = document.getElementById("gallery-crop-link");
        if (cropLink) cropLink.href = button.dataset.crop;
        var taken = document.getElementById("gallery-taken");
        if (taken) taken.textContent = button.dataset.label;
        document.querySelectorAll(".strip-photo").forEach(function (other) {
          var on = other === button;
          other.classList.toggle("selected", on);
          other.setAttribute("aria-pressed", String(on));
        });
        renderMarks();
      });
    });

    setFade();
    ["probe", "gallery"].forEach(drawTools);
    syncControls();
    apply();
    saveMarks();
    recordTools();
    window.addEventListener("resize", apply);

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
