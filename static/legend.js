// The colour key of the shown result: the legend of the current view and options, which follows clip, log,
// contrast, brightness and invert exactly and drops its values under CLAHE, whose colours mean different
// depths in different places. While the page draws the views itself (static/live.js), the key is worked
// out in the page from the same depth, with no request; otherwise the server's
// /api/v1/depth/<id>/legend.json gives it.
(() => {
  "use strict";
  const box = document.getElementById("legend");
  if (!box) return;
  const bar = document.getElementById("legend-bar");
  const ticksEl = document.getElementById("legend-ticks");
  const left = document.getElementById("legend-left");
  const right = document.getElementById("legend-right");
  const mapName = document.getElementById("legend-map");
  const note = document.getElementById("legend-note");
  const baseNote = note.innerHTML;
  const t = window.studioT || ((s) => s);
  let wanted = "";
  let ctrl = null;

  // every label of one bar with the same decimals, enough to tell neighbouring ticks apart
  let decimals = 2;
  const fmt = (v) => {
    const text = v.toFixed(decimals);
    return /^-0(\.0*)?$/.test(text) ? text.slice(1) : text;
  };

  function draw(lg) {
    bar.style.background = `linear-gradient(to right, ${lg.stops.join(", ")})`;
    const near = lg.near === "right" ? right : left;
    const far = lg.near === "right" ? left : right;
    near.textContent = t("near");
    far.textContent = t("far");
    mapName.textContent = `(${lg.colormap})`;
    ticksEl.replaceChildren();
    const n = lg.ticks.length;
    if (n > 1) {
      const step = Math.abs(lg.ticks[1].value - lg.ticks[0].value) || 1;
      decimals = Math.max(0, Math.min(6, 1 - Math.floor(Math.log10(step))));
    }
    lg.ticks.forEach((t, i) => {
      const el = document.createElement("span");
      el.className = "legend-tick";
      // the far end tick is the smallest value: with clipping it also covers everything farther
      const sat = (i === 0 && lg.saturated.includes("far")) ? "≤ " : (i === n - 1 && lg.saturated.includes("near")) ? "≥ " : "";
      el.textContent = sat + fmt(t.value);
      el.style.left = `${(t.pos * 100).toFixed(2)}%`;
      ticksEl.appendChild(el);
    });
    const ends = lg.near === "right" ? `${t("far")} → ${t("near")}` : `${t("near")} → ${t("far")}`;
    bar.setAttribute("aria-label", `${t("Colour bar")}, ${lg.colormap}: ${ends}` + (n ? "; " + t(
      "relative values from {far} (far) to {near} (near)", { far: fmt(lg.ticks[0].value), near: fmt(lg.ticks[n - 1].value) }) : ""));
    box.dataset.near = lg.near;
    box.dataset.local = lg.local ? "true" : "false";
    note.innerHTML = baseNote;
    if (lg.local) {
      const p = document.createElement("span");
      p.className = "legend-local";
      p.textContent = " " + t("Local contrast (CLAHE) is on: each area is stretched on its own, so a colour means " +
        "nearer or farther only compared with its surroundings; no values are shown.");
      note.appendChild(p);
    }
    box.hidden = false;
  }

  document.addEventListener("studio:result", async (ev) => {
    const { depthId, mode, api, query, live } = ev.detail;
    const view = mode === "gray" ? "gray" : "heatmap";
    if (live) {
      wanted = "";
      if (ctrl) ctrl.abort();
      draw(window.depthLive.legend(live.depth, view, live.options));
      return;
    }
    const q = query(view);
    q.set("view", view);
    const url = `${api}/depth/${depthId}/legend.json?${q}`;
    if (url === wanted) return;
    wanted = url;
    if (ctrl) ctrl.abort();
    ctrl = new AbortController();
    try {
      const r = await fetch(url, { signal: ctrl.signal, headers: { Accept: "application/json" } });
      if (!r.ok) return; // the image itself reports errors; a stale key is hidden rather than wrong
      const lg = await r.json();
      if (url === wanted) draw(lg);
    } catch (e) {
      if (e.name !== "AbortError") box.hidden = true;
    }
  });
})();
