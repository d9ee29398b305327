// The stereo 3D image and the normal map of the shown result (templates/studio/stereo.html): server
// renderings of the cached depth (GET /api/v1/depth/<id>/stereo.png and normals.png), a preview in the
// page and the full size behind each download link, following the controls.
(() => {
  "use strict";
  const section = document.getElementById("stereo");
  if (!section) return;
  const PREVIEW = 800; // the previews' longer side: the photo's, so a side-by-side image is twice as wide
  const controls = [...section.querySelectorAll("select, input")];
  const initial = (el) => {
    if (el.type === "checkbox") return String(el.defaultChecked);
    if (el.tagName === "SELECT") return ([...el.options].find((o) => o.defaultSelected) || el.options[0]).value;
    return el.defaultValue;
  };
  const DEFAULTS = Object.fromEntries(controls.map((el) => [el.name, initial(el)]));
  for (const fs of section.querySelectorAll("fieldset")) fs.hidden = false; // the controls need this script
  let state = null;
  let timer = null;

  function value(el) {
    return el.type === "checkbox" ? String(el.checked) : el.value;
  }

  // the settings that differ from the server's defaults, for the route that takes them
  function query(names, extra) {
    const q = new URLSearchParams(extra);
    for (const el of controls) if (names.includes(el.name) && value(el) !== DEFAULTS[el.name]) q.set(el.name, value(el));
    return q.toString();
  }

  function refresh() {
    if (!state) return;
    const base = `${state.api}/depth/${state.depthId}`;
    const stereo = ["layout", "divergence", "convergence", "swap_eyes"];
    const normals = ["normal_convention", "normal_strength", "normal_smooth"];
    document.getElementById("stereo-img").src = `${base}/stereo.png?${query(stereo, { max_side: PREVIEW })}`;
    document.getElementById("stereo-download").href = `${base}/stereo.png?${query(stereo, { download: 1 })}`;
    document.getElementById("normals-img").src = `${base}/normals.png?${query(normals, { max_side: PREVIEW })}`;
    document.getElementById("normals-download").href = `${base}/normals.png?${query(normals, { download: 1 })}`;
  }

  function onControl(ev) {
    const out = document.getElementById(`o-${ev.target.name}`);
    if (out) out.value = ev.target.value;
    clearTimeout(timer);
    timer = setTimeout(refresh, ev.target.type === "range" ? 150 : 0); // a slider: once it settles
  }
  // a select changed by script or keyboard may fire only "change"; the debounce makes two events one
  section.addEventListener("input", onControl);
  section.addEventListener("change", onControl);
  document.addEventListener("studio:result", (ev) => {
    state = ev.detail;
    section.hidden = false;
    refresh();
  });
})();
