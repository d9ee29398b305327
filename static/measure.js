// Measure: the raw relative depth under the cursor (read from a downscaled copy,
// /api/v1/depth/<id>/preview.npy), and after a calibration (two or more clicked points with known
// distances, fitted by the server: POST /api/v1/depth/<id>/calibrate) the distance in metres, with
// a metric-depth download. Keyboard: focus the picture, arrows move a cross, Enter adds a point.
(() => {
  "use strict";
  const section = document.getElementById("measure");
  if (!section) return;
  const stage = document.getElementById("measure-stage");
  const img = document.getElementById("measure-img");
  const canvas = document.getElementById("measure-live"); // the heatmap drawn in the page (static/live.js)
  const cross = document.getElementById("measure-cross");
  const readout = document.getElementById("measure-readout");
  const toggle = document.getElementById("calib-toggle");
  const list = document.getElementById("calib-points");
  const fitBtn = document.getElementById("calib-fit");
  const clearBtn = document.getElementById("calib-clear");
  const result = document.getElementById("calib-result");
  const metricLink = document.getElementById("metric-npy");
  const t = window.studioT || ((s) => s);
  let state = null;
  let probe = null; // { w, h, data: Float32Array }
  let fitted = null; // { scale, shift }
  let points = []; // { u, v, input, marker }
  let cursor = { u: 0.5, v: 0.5 };

  // .npy version 1: magic, version, little-endian header length, a Python dict header, the data
  function parseNpy(buf) {
    const view = new DataView(buf);
    const hlen = view.getUint16(8, true);
    const header = new TextDecoder().decode(new Uint8Array(buf, 10, hlen));
    const shape = /'shape': \((\d+), (\d+)\)/.exec(header);
    if (!shape || !header.includes("'<f4'")) throw new Error("unexpected .npy");
    return { h: Number(shape[1]), w: Number(shape[2]), data: new Float32Array(buf, 10 + hlen) };
  }

  const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3));

  function valueAt(u, v) {
    if (!probe) return null;
    const x = Math.min(probe.w - 1, Math.max(0, Math.floor(u * probe.w)));
    const y = Math.min(probe.h - 1, Math.max(0, Math.floor(v * probe.h)));
    return probe.data[y * probe.w + x];
  }

  function show(u, v) {
    cursor = { u, v };
    const d = valueAt(u, v);
    if (d === null) return;
    let text = t("relative depth {value}", { value: fmt(d) });
    if (fitted) {
      const inv = fitted.scale * d + fitted.shift;
      text = inv > 0 ? t("≈ {m} m ({rel})", { m: (1 / inv).toFixed(2), rel: text })
        : t("beyond the calibrated range ({rel})", { rel: text });
    }
    readout.textContent = text;
    readout.dataset.u = u.toFixed(4);
    readout.dataset.v = v.toFixed(4);
  }

  function place(el, u, v) {
    el.style.left = `${(u * 100).toFixed(3)}%`;
    el.style.top = `${(v * 100).toFixed(3)}%`;
  }

  function refreshFit() {
    const ready = points.length >= 2 && points.every((p) => Number(p.input.value) > 0);
    fitBtn.disabled = !ready;
  }

  function addPoint(u, v) {
    const n = points.length + 1;
    const marker = document.createElement("span");
    marker.className = "calib-marker";
    marker.textContent = String(n);
    marker.setAttribute("aria-hidden", "true");
    place(marker, u, v);
    stage.appendChild(marker);
    const li = document.createElement("li");
    const id = `calib-d${n}-${Date.now()}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = t("Point {n} ({value}): distance in metres", { n, value: fmt(valueAt(u, v)) });
    const input = document.createElement("input");
    input.type = "number";
    input.id = id;
    input.min = "0.01";
    input.step = "any";
    input.required = true;
    input.addEventListener("input", refreshFit);
    li.append(label, input);
    list.appendChild(li);
    points.push({ u, v, input, marker, li });
    refreshFit();
    input.focus();
  }

  function clearPoints() {
    for (const p of points) { p.marker.remove(); p.li.remove(); }
    points = [];
    fitted = null;
    result.textContent = "";
    metricLink.hidden = true;
    refreshFit();
  }

  async function fit() {
    const body = { points: points.map((p) => ({ u: p.u, v: p.v, metres: Number(p.input.value) })) };
    result.textContent = "…";
    const r = await fetch(`${state.api}/depth/${state.depthId}/calibrate`, {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body) });
    const json = await r.json().catch(() => null);
    if (!r.ok) {
      fitted = null;
      metricLink.hidden = true;
      result.textContent = (json && json.message) || `${r.status}`;
      return;
    }
    fitted = { scale: json.scale, shift: json.shift };
    result.textContent = t("fitted: RMSE {rmse} m at the {n} points", {
      rmse: json.rmse_m === null ? "—" : json.rmse_m.toFixed(3), n: json.points.length });
    metricLink.href = `${state.api}/depth/${state.depthId}/metric.npy?scale=${json.scale}&shift=${json.shift}`;
    metricLink.hidden = false;
    section.dataset.fitted = "true";
    show(cursor.u, cursor.v);
  }

  function rel(ev) {
    const box = (stage.classList.contains("live") ? canvas : img).getBoundingClientRect();
    return { u: Math.min(1, Math.max(0, (ev.clientX - box.left) / box.width)),
             v: Math.min(1, Math.max(0, (ev.clientY - box.top) / box.height)) };
  }

  stage.addEventListener("pointermove", (ev) => { const p = rel(ev); cross.hidden = true; show(p.u, p.v); });
  stage.addEventListener("click", (ev) => {
    if (toggle.getAttribute("aria-pressed") !== "true") return;
    const p = rel(ev);
    addPoint(p.u, p.v);
  });
  stage.addEventListener("keydown", (ev) => {
    const step = ev.shiftKey ? 0.05 : 0.01;
    let { u, v } = cursor;
    if (ev.key === "ArrowLeft") u -= step;
    else if (ev.key === "ArrowRight") u += step;
    else if (ev.key === "ArrowUp") v -= step;
    else if (ev.key === "ArrowDown") v += step;
    else if ((ev.key === "Enter" || ev.key === " ") && toggle.getAttribute("aria-pressed") === "true") {
      ev.preventDefault();
      addPoint(cursor.u, cursor.v);
      return;
    } else return;
    ev.preventDefault();
    u = Math.min(1, Math.max(0, u));
    v = Math.min(1, Math.max(0, v));
    cross.hidden = false;
    place(cross, u, v);
    show(u, v);
  });
  toggle.addEventListener("click", () => {
    const on = toggle.getAttribute("aria-pressed") !== "true";
    toggle.setAttribute("aria-pressed", String(on));
    stage.classList.toggle("calibrating", on);
  });
  fitBtn.addEventListener("click", fit);
  clearBtn.addEventListener("click", clearPoints);

  // the heatmap as the page shows it: drawn in the page from the same depth while the page draws the
  // views, else the server's PNG; off screen, nothing is drawn or fetched until it comes into view
  let onScreen = false;
  function picture() {
    if (!state || !onScreen) return;
    stage.classList.toggle("live", !!state.live);
    if (state.live) {
      window.depthLive.draw(canvas, state.live.depth, "heatmap", state.live.options);
    } else {
      const src = state.url("heatmap", false);
      if (img.getAttribute("src") !== src) img.src = src;
    }
  }
  new IntersectionObserver((entries) => {
    onScreen = entries[entries.length - 1].isIntersecting;
    picture();
  }).observe(stage);

  document.addEventListener("studio:result", async (ev) => {
    const fresh = !state || state.depthId !== ev.detail.depthId;
    state = ev.detail;
    section.hidden = false;
    picture();
    if (!fresh) return;
    clearPoints();
    probe = null;
    const id = state.depthId;
    try {
      const r = await fetch(`${state.api}/depth/${id}/preview.npy?max_side=512`);
      if (r.ok && state.depthId === id) {
        probe = parseNpy(await r.arrayBuffer());
        section.dataset.ready = id;
      }
    } catch (e) {
      readout.textContent = "—";
    }
  });
})();
