// Batch: several photos, each sent to POST /api/v1/depth in turn (one at a time, so the server's
// queue is not flooded), each with its own progress bar (upload %, then computing, then done or its
// error; a busy server is a line to wait in, showing how many are ahead: static/queue.js); when all are done, one zip of them all (/api/v1/batch.zip) with the form's display options.
(() => {
  "use strict";
  const section = document.getElementById("batch");
  const form = document.getElementById("studio-form");
  if (!section || !form || !window.fetch) return;
  const input = document.getElementById("batch-files");
  const list = document.getElementById("batch-list");
  const zip = document.getElementById("batch-zip");
  const summary = document.getElementById("batch-summary");
  const api = form.dataset.api;
  const defaults = JSON.parse(form.dataset.defaults);
  const DEPTH_OPTIONS = JSON.parse(form.dataset.depthOptions);
  const t = window.studioT || ((s) => s);
  let run = 0;

  function formValue(name) {
    const el = form.elements[name];
    if (!el) return undefined;
    return el.type === "checkbox" ? el.checked : el.value;
  }
  function displayQuery() {
    const q = new URLSearchParams();
    for (const [name, def] of Object.entries(defaults)) {
      if (DEPTH_OPTIONS.includes(name)) continue;
      const v = formValue(name);
      if (typeof def === "boolean") { if (v !== def) q.set(name, v ? "on" : "off"); }
      else if (String(v) !== String(def)) q.set(name, v);
    }
    return q;
  }

  function row(file) {
    const li = document.createElement("li");
    li.className = "batch-item";
    const name = document.createElement("span");
    name.className = "batch-name";
    name.textContent = file.name;
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", file.name);
    const state = document.createElement("span");
    state.className = "batch-state muted";
    state.textContent = t("waiting");
    li.append(name, bar, state);
    list.appendChild(li);
    return { li, bar, state };
  }

  // XMLHttpRequest rather than fetch: only it reports upload progress
  function send(file, ui, ticket) {
    return new Promise((resolve) => {
      const body = new FormData();
      body.append("image", file, file.name);
      for (const n of DEPTH_OPTIONS) body.append(n, String(formValue(n)));
      body.append("views", "none");
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `${api}/depth`);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader(window.studioQueue.HEADER, ticket);
      xhr.responseType = "json";
      xhr.upload.onprogress = (ev) => {
        if (!ev.lengthComputable) return;
        const p = Math.round((ev.loaded / ev.total) * 90); // the last 10 % is the server's work
        ui.bar.value = p;
        ui.state.textContent = t("uploading {p}%", { p: Math.round((ev.loaded / ev.total) * 100) });
      };
      xhr.upload.onload = () => { ui.bar.value = 90; ui.state.textContent = t("computing…"); };
      xhr.onload = () => resolve({ status: xhr.status, json: xhr.response,
                                   retryAfter: xhr.getResponseHeader("Retry-After") });
      xhr.onerror = () => resolve({ status: 0, json: null });
      xhr.send(body);
    });
  }

  async function start(files) {
    const mine = ++run;
    list.replaceChildren();
    zip.hidden = true;
    const rows = files.map((f) => [f, row(f)]);
    const ids = [];
    let failed = 0;
    for (const [file, ui] of rows) {
      if (mine !== run) return; // a newer batch replaced this one
      ui.li.classList.add("active");
      const t0 = performance.now();
      // a busy server is a line to wait in, not an error (static/queue.js)
      const { status, json } = await window.studioQueue.retry((ticket) => send(file, ui, ticket), {
        line: `${api}/line`,
        onWait: ({ ahead, seconds }) => {
          ui.bar.value = 0;
          ui.state.textContent = ahead === undefined ? t("waiting in line: again in {s} s", { s: seconds })
            : ahead > 0 ? t("in line: {n} ahead", { n: ahead }) : t("in line: next");
        },
      });
      ui.li.classList.remove("active");
      if (status === 200 && json) {
        ids.push(json.depth_id);
        ui.bar.value = 100;
        ui.li.dataset.depthId = json.depth_id;
        ui.state.textContent = t("done in {ms} ms", { ms: Math.round(performance.now() - t0) });
        const link = document.createElement("a");
        link.href = `?depth_id=${json.depth_id}`;
        link.textContent = t("open");
        const thumb = document.createElement("img");
        thumb.alt = "";
        thumb.src = `${api}/depth/${json.depth_id}/heatmap.png?max_side=96&${displayQuery()}`;
        thumb.className = "batch-thumb";
        ui.li.append(thumb, link);
      } else {
        failed++;
        ui.li.classList.add("failed");
        ui.bar.value = 0;
        ui.state.textContent = (json && json.message) || t("Could not reach the server. Is it still running?");
      }
    }
    if (ids.length) {
      const q = displayQuery();
      for (const id of ids) q.append("depth_id", id);
      zip.href = `${api}/batch.zip?${q}`;
      zip.hidden = false;
    }
    summary.textContent = t("{ok} of {n} done", { ok: ids.length, n: files.length }) +
      (failed ? " · " + t("{failed} failed", { failed }) : "");
  }

  input.addEventListener("change", () => { if (input.files.length) start([...input.files]); });
})();
