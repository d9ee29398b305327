// Keeps the download links under the result in step with the shown depth, its display options (for the
// zip's views) and the 3D settings (depth scale, field of view, grid) for the .ply, .glb and .zip.
(() => {
  "use strict";
  const section = document.getElementById("exports");
  if (!section) return;
  const scene = ["depth_scale", "fov", "grid"].map((n) => section.querySelector(`[name=${n}]`));
  const DEFAULTS = { depth_scale: "1", fov: "60", grid: "512" };
  let state = null;

  // the 3D settings that differ from the server's defaults
  function sceneQuery() {
    const q = new URLSearchParams();
    for (const el of scene) if (el.value !== DEFAULTS[el.name]) q.set(el.name, el.value);
    return q;
  }

  function links() {
    if (!state) return;
    const base = `${state.api}/depth/${state.depthId}`;
    const sq = sceneQuery();
    const withScene = (path, extra) => {
      const q = new URLSearchParams(extra || "");
      for (const [k, v] of sq) q.set(k, v);
      const s = q.toString();
      return `${base}${path}${s ? "?" + s : ""}`;
    };
    document.getElementById("x-png16").href = `${base}.png`;
    document.getElementById("x-pfm").href = `${base}.pfm`;
    document.getElementById("x-exr").href = `${base}.exr`;
    document.getElementById("x-ply").href = withScene(".ply");
    document.getElementById("x-glb").href = withScene(".glb");
    // the overlay's options are every display option (colormap and alpha included)
    document.getElementById("x-zip").href = withScene(".zip", state.query("overlay"));
    document.dispatchEvent(new CustomEvent("studio:scene", { detail: { query: sq, base } }));
  }

  document.addEventListener("studio:result", (ev) => {
    state = ev.detail;
    section.hidden = false;
    links();
  });
  for (const el of scene) {
    el.addEventListener("input", () => {
      const o = document.getElementById(`o-${el.name}`);
      if (o) o.textContent = el.value;
    });
    el.addEventListener("change", links);
  }
})();
