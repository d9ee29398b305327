// Upgrades the studio form to in-place updates. Without this script the form still works: it posts,
// the server redirects to the result page, and "Apply" re-renders.
//
// Flow: a chosen, dropped or pasted photo goes to POST /api/v1/depth (views=none: inference only),
// which answers a depth_id. Each shown view is then an <img> whose URL is
// /api/v1/depth/<id>/<view>.png?<options>, rendered from the server's cache, so changing a colormap,
// mode or slider re-renders without a new inference. Size and square need one: POST /api/v1/render.
// Where static/live.js can, the heatmap, overlay and gray views are drawn in the page instead, from the
// depth fetched once: a control move then repaints with no request (with CLAHE on, the server renders).
(() => {
  "use strict";
  const form = document.getElementById("studio-form");
  if (!form || !window.fetch || !window.URLSearchParams) return;

  const api = form.dataset.api;
  const defaults = JSON.parse(form.dataset.defaults);
  const maxBytes = Number(form.dataset.maxBytes);
  const fileInput = form.elements.image;
  const drop = document.getElementById("drop");
  const statusEl = document.getElementById("status");
  const errorEl = document.getElementById("error");
  const results = document.getElementById("results");
  const grid = document.getElementById("grid");
  const fileNameEl = document.getElementById("file-name");
  const submit = form.querySelector("button[type=submit]");
  // options the raw depth depends on (size, square, flip, upsampling): changing one asks the server
  // for a new depth_id, the rest only re-render
  const DEPTH_OPTIONS = JSON.parse(form.dataset.depthOptions);
  const t = window.studioT || ((s) => s); // static/i18n.js: the page's language

  let depthId = form.elements.depth_id ? form.elements.depth_id.value : null;
  let inferredWith = depthId ? currentDepthOptions() : null; // size/square of depthId
  let inflight = null; // AbortController of the running inference
  let renderStarted = 0;
  let renderTimer = 0;
  let retried = null; // depth_id whose failed images already caused one re-upload
  // the views drawn in the page (static/live.js): the depth of live.id, once loaded; live.failed is the
  // depth_id it could not be had for (the server's PNGs are shown instead)
  const live = { id: null, depth: null, failed: null };
  let paintFrame = 0;

  function setStatus(text, busy) {
    statusEl.textContent = text;
    statusEl.classList.toggle("busy", !!busy);
    form.setAttribute("aria-busy", busy ? "true" : "false");
  }
  function setError(text) {
    errorEl.textContent = text || "";
    errorEl.hidden = !text;
  }

  function currentDepthOptions() {
    const v = values();
    return DEPTH_OPTIONS.map((n) => String(v[n])).join("|");
  }

  // the form's options as the server parses them: booleans from checkboxes, the rest as strings
  function values() {
    const out = {};
    for (const name of Object.keys(defaults)) {
      const el = form.elements[name];
      if (el) out[name] = el.type === "checkbox" ? el.checked : el.value;
    }
    return out;
  }

  // non-default options that change this view (the server builds the same URLs, see web.options_query)
  function viewQuery(view) {
    const v = values();
    const q = new URLSearchParams();
    if (view === "photo") return q;
    for (const [name, def] of Object.entries(defaults)) {
      if (DEPTH_OPTIONS.includes(name)) continue;
      if (name === "alpha" && view !== "overlay") continue;
      if (name === "colormap" && view === "gray") continue;
      const val = v[name];
      if (typeof def === "boolean") {
        if (val !== def) q.set(name, val ? "on" : "off");
      } else if (typeof def === "number") {
        if (Number(val) !== def) q.set(name, val);
      } else if (val !== def) {
        q.set(name, val);
      }
    }
    return q;
  }

  const previewSide = form.dataset.preview;

  // the page shows previews (a 12 MP view would be tens of MB of PNG); downloads are full size
  function url(view, q, download) {
    const params = new URLSearchParams(q);
    if (download) params.set("download", "1");
    else params.set("max_side", previewSide);
    const s = params.toString();
    return `${api}/depth/${depthId}/${view}.png${s ? "?" + s : ""}`;
  }

  function liveOptions() {
    const v = values();
    return { colormap: v.colormap, alpha: Number(v.alpha), log: v.log, clip: Number(v.clip),
             contrast: Number(v.contrast), brightness: Number(v.brightness), invert: v.invert };
  }

  // whether the views are drawn in the page: "ready", "loading" (the depth is on its way) or "" (the
  // server renders them: no live.js, CLAHE on, or the depth could not be had)
  function liveState() {
    if (!window.depthLive || values().clahe || live.failed === depthId) return "";
    if (live.id === depthId && live.depth) return "ready";
    if (live.id !== depthId) {
      const id = depthId;
      live.id = id;
      live.depth = null;
      window.depthLive.load(api, id, previewSide).then((depth) => {
        if (live.id === id) live.depth = depth;
      }, () => {
        if (live.id === id) live.failed = id;
      }).then(() => { if (depthId === id) show(); });
    }
    return "loading";
  }

  // point every shown <img> at its view's URL (the browser fetches only the ones that changed), or draw
  // the depth views in the page
  function show() {
    if (!depthId) return;
    const mode = form.elements.views.value;
    grid.dataset.mode = mode;
    const state = liveState();
    const options = liveOptions();
    const t0 = performance.now();
    const waiting = [];
    for (const fig of grid.querySelectorAll("figure[data-view]")) {
      const view = fig.dataset.view;
      const visible = view === "photo" || mode === "all" || mode === view;
      fig.hidden = !visible;
      const q = viewQuery(view);
      fig.querySelector("a.download").href = url(view, q, true);
      if (!visible) continue;
      const canvas = fig.querySelector("canvas");
      if (state && canvas) {
        fig.classList.add("live");
        if (state === "ready") {
          const t1 = performance.now();
          // this view's repaint time; 0 when its options did not change, so it was not repainted
          const repainted = window.depthLive.draw(canvas, live.depth, view, options);
          fig.dataset.paintMs = repainted ? (performance.now() - t1).toFixed(2) : "0";
          fig.classList.remove("loading");
        } else {
          fig.classList.add("loading");
          waiting.push(canvas);
        }
        continue;
      }
      fig.classList.remove("live");
      const img = fig.querySelector("img");
      const src = url(view, q, false);
      if (img.getAttribute("src") !== src) {
        fig.classList.add("loading");
        img.src = src;
        waiting.push(img);
      } else if (img.complete) {
        fig.classList.remove("loading"); // drawing in the page was given up; this image is already here
      }
    }
    if (state === "ready") {
      grid.dataset.paintMs = (performance.now() - t0).toFixed(2);
      grid.dataset.paints = String(Number(grid.dataset.paints || 0) + 1);
    }
    document.getElementById("npy").href = `${api}/depth/${depthId}.npy`;
    results.hidden = false;
    const page = new URLSearchParams({ depth_id: depthId, views: mode });
    for (const [k, v] of Object.entries(values())) {
      const def = defaults[k];
      if (typeof def === "boolean" ? v !== def : String(v) !== String(def)) page.set(k, v === true ? "on" : v === false ? "off" : v);
    }
    history.replaceState(null, "", `?${page}`);
    announce();
    if (waiting.length) {
      if (!renderStarted) renderStarted = performance.now();
      if (!statusEl.classList.contains("busy")) setStatus(t("Rendering…"), true);
    } else if (state === "ready") {
      if (!renderStarted) renderStarted = t0;
      renderDone();
    }
  }

  // every shown view is there: the status says how long it took
  function renderDone() {
    if (grid.querySelector("figure.loading:not([hidden])") || !renderStarted) return;
    const ms = Math.round(performance.now() - renderStarted);
    renderStarted = 0;
    setStatus(statusEl.dataset.done ? t("{done} · shown in {ms} ms", { done: statusEl.dataset.done, ms }) : t("Re-rendered from cache in {ms} ms", { ms }), false);
    statusEl.dataset.done = "";
  }

  function onImageDone(ev) {
    const img = ev.target;
    const fig = img.closest("figure");
    if (fig.classList.contains("live")) return; // an earlier server image; the page draws this view
    fig.classList.remove("loading");
    if (ev.type === "error" && img.getAttribute("src")) {
      // most likely the result left the server's cache: if the photo is still chosen here, send it
      // again (once per result) rather than asking the user to
      const file = fileInput.files[0];
      if (file && retried !== depthId) {
        retried = depthId;
        upload(file);
        return;
      }
      setError(t("This view could not be rendered: the result may have expired from the server's memory. " +
                 "Upload the photo again."));
    }
    renderDone();
  }
  for (const img of grid.querySelectorAll("img")) {
    img.addEventListener("load", onImageDone);
    img.addEventListener("error", onImageDone);
  }

  function setDepth(json) {
    depthId = json.depth_id;
    inferredWith = currentDepthOptions();
    let hidden = form.elements.depth_id;
    if (!hidden) {
      hidden = document.createElement("input");
      hidden.type = "hidden";
      hidden.name = "depth_id";
      form.appendChild(hidden);
    }
    hidden.value = depthId;
    document.getElementById("dims").textContent = `${json.width} × ${json.height} px`;
    for (const img of grid.querySelectorAll("img")) {
      img.width = json.width;
      img.height = json.height;
    }
    const ms = json.timings_ms;
    statusEl.dataset.done = json.cached
      ? t("Depth map from cache")
      : t("Depth map in {total} ms (decode {decode}, inference {infer})", { total: Math.round(ms.total), decode: Math.round(ms.decode), infer: Math.round(ms.infer) });
    submit.textContent = t("Apply");
  }

  // the status while waiting in line: how many are ahead (counting down), or the seconds until the next
  // try when the server gave no place
  function waiting({ ahead, seconds }) {
    if (ahead === undefined) return t("Waiting in line: trying again in {s} s…", { s: seconds });
    return ahead > 0 ? t("Waiting in line: {n} ahead of you…", { n: ahead }) : t("Waiting in line: you are next…");
  }

  async function post(path, body) {
    if (inflight) inflight.abort(); // a newer photo wins; the form stays usable meanwhile
    const ctrl = new AbortController();
    inflight = ctrl;
    setError("");
    setStatus(t("Generating depth map…"), true);
    try {
      // a busy server is a line to wait in, not an error (static/queue.js)
      const r = await window.studioQueue.fetch(api + path, { method: "POST", body, signal: ctrl.signal,
                                          headers: body instanceof FormData ? { Accept: "application/json" } : { Accept: "application/json", "Content-Type": "application/json" } },
                                               { line: `${api}/line`, onWait: (w) => setStatus(waiting(w), true) });
      const json = await r.json().catch(() => null);
      if (!r.ok) throw new Error((json && json.message) || t("The server answered {status}.", { status: `${r.status} ${r.statusText}` }));
      setDepth(json);
      setStatus(t("Rendering…"), true);
      show();
      if (!renderStarted) setStatus(statusEl.dataset.done, false);
    } catch (e) {
      if (e.name === "AbortError") return;
      setStatus("", false);
      setError(e instanceof TypeError ? t("Could not reach the server. Is it still running?") : e.message);
    } finally {
      if (inflight === ctrl) inflight = null;
    }
  }

  async function upload(file) {
    if (!file) return;
    fileNameEl.textContent = file.name;
    // videos (and animated GIFs) become background jobs: static/video.js
    if (window.depthVideo && (await window.depthVideo.take(file))) return;
    if (window.depthVideo) window.depthVideo.hide();
    if (file.size > maxBytes) {
      setError(t("That file is {size} MB; the limit is {limit} MB.", { size: (file.size / 1048576).toFixed(1), limit: +(maxBytes / 1048576).toFixed(1) }));
      return;
    }
    const body = new FormData();
    body.append("image", file, file.name);
    const v = values();
    for (const n of DEPTH_OPTIONS) body.append(n, String(v[n]));
    body.append("views", "none");
    post("/depth", body);
  }

  function reinfer() {
    const body = { depth_id: depthId, views: "none" };
    const v = values();
    for (const n of DEPTH_OPTIONS) body[n] = v[n];
    post("/render", JSON.stringify(body));
  }

  function onControl(ev) {
    const el = ev.target;
    if (el === fileInput) {
      if (ev.type === "change") upload(fileInput.files[0]);
      return;
    }
    const out = document.getElementById(`o-${el.name}`);
    if (out) out.textContent = el.value;
    if (!depthId || document.body.dataset.media === "video") return;
    if (DEPTH_OPTIONS.includes(el.name)) {
      if (ev.type === "change" && currentDepthOptions() !== inferredWith) reinfer();
      return;
    }
    setError("");
    clearTimeout(renderTimer);
    cancelAnimationFrame(paintFrame);
    if (liveState() === "ready") {
      paintFrame = requestAnimationFrame(show); // drawn in the page: at most once a frame
    } else {
      renderTimer = setTimeout(show, el.type === "range" ? 120 : 0); // sliders fire many events: render once they settle a little
    }
  }
  // each model takes its own input sizes: the size list shows the chosen model's, and a new model starts
  // at its usual size. Registered on the select itself, so it runs before the form's handler reinfers.
  const modelSelect = form.querySelector("select[name=model]");
  function matchSizes(pickDefault) {
    const size = form.elements.size;
    const model = modelSelect.value;
    for (const group of size.querySelectorAll("optgroup")) {
      group.hidden = group.disabled = group.dataset.model !== model;
    }
    if (pickDefault || size.selectedOptions[0].dataset.model !== model) {
      size.value = modelSelect.selectedOptions[0].dataset.defaultSize;
    }
  }
  if (modelSelect) {
    matchSizes(false);
    modelSelect.addEventListener("change", () => matchSizes(true));
  }
  form.addEventListener("input", onControl);
  form.addEventListener("change", onControl);

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (document.body.dataset.media === "video" && fileInput.files[0]) upload(fileInput.files[0]); // run again
    else if (fileInput.files[0] && !depthId) upload(fileInput.files[0]);
    else if (depthId && currentDepthOptions() !== inferredWith) reinfer();
    else if (depthId) show();
    else setError(t("Choose a photo first."));
  });

  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    const files = ev.dataTransfer && ev.dataTransfer.files;
    if (!files || !files.length) return;
    fileInput.files = files; // keeps the no-JS submit path consistent with what is shown
    upload(files[0]);
  });
  document.addEventListener("paste", (ev) => {
    const item = [...(ev.clipboardData ? ev.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
    if (item) upload(item);
  });
  // tells the studio's other scripts (compare.js, legend.js, exports.js, viewer3d.js) what is shown;
  // compare.js, legend.js and measure.js draw from the same depth as the views while the page draws them
  function announce() {
    // live: the depth the page draws from and the options, while the page draws the views itself
    const drawn = live.id === depthId && live.depth && !values().clahe;
    document.dispatchEvent(new CustomEvent("studio:result", { detail: {
      depthId, mode: form.elements.views.value, api,
      live: drawn ? { depth: live.depth, options: liveOptions() } : null,
      query: (view) => viewQuery(view),
      url: (view, download) => url(view, viewQuery(view), download),
    } }));
  }
  if (depthId) { setStatus("", false); announce(); if (window.depthLive) show(); }
})();
