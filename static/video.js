// Videos on the studio page: a chosen or dropped video (or animated GIF) becomes a background job.
// POST /api/v1/video with the file and every option of the form -> a job id; GET /api/v1/jobs/<id>
// twice a second drives the progress bar and the time left; "Cancel" is DELETE /api/v1/jobs/<id>.
// When the job is done the depth video plays here, with its downloads.
//
// studio.js calls window.depthVideo.take(file) for every file and hide() for every photo.
(() => {
  "use strict";
  const form = document.getElementById("studio-form");
  const box = document.getElementById("video-results");
  if (!form || !box || !window.fetch) return;

  const api = form.dataset.api;
  const maxBytes = Number(box.dataset.maxBytes);
  const optionNames = JSON.parse(box.dataset.options);
  const bar = document.getElementById("video-progress");
  const statusEl = document.getElementById("video-status");
  const cancelButton = document.getElementById("video-cancel");
  const player = document.getElementById("video-player");
  const downloads = document.getElementById("video-downloads");
  const mp4Link = document.getElementById("video-download");
  const zipLink = document.getElementById("video-zip");
  const dims = document.getElementById("video-dims");
  const errorEl = document.getElementById("error");
  const submit = form.querySelector("button[type=submit]");
  const VIDEO_NAME = /\.(mp4|m4v|webm|mkv|mov|avi)$/i;
  const POLL_MS = 500;

  let job = null; // the job shown: its JSON as last polled
  let timer = 0;

  function setError(text) {
    errorEl.textContent = text || "";
    errorEl.hidden = !text;
  }
  function setStatus(text, busy) {
    statusEl.textContent = text;
    statusEl.classList.toggle("busy", !!busy);
  }

  // an animated GIF has a graphic control extension (21 F9 04) per frame; a still one has at most one
  async function animatedGif(file) {
    const bytes = new Uint8Array(await file.slice(0, 4 << 20).arrayBuffer());
    let found = 0;
    for (let i = 0; i + 2 < bytes.length; i++) {
      if (bytes[i] === 0x21 && bytes[i + 1] === 0xf9 && bytes[i + 2] === 0x04 && ++found > 1) return true;
    }
    return false;
  }

  async function isVideo(file) {
    if (file.type.startsWith("video/")) return true;
    if (file.type === "image/gif" || /\.gif$/i.test(file.name)) return animatedGif(file);
    return !file.type && VIDEO_NAME.test(file.name);
  }

  function seconds(s) {
    if (s == null) return "";
    if (s < 60) return `${Math.max(1, Math.round(s))} s`;
    return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  }

  function describe(j) {
    const p = j.progress;
    if (j.state === "queued") return "Waiting for the server to start this video…";
    if (j.state === "running") {
      if (j.cancel_requested) return "Cancelling…";
      const what = p.passes === 2 ? (p.pass === 1 ? "Depth (pass 1 of 2)" : "Rendering (pass 2 of 2)") : "Depth";
      const left = p.eta_s == null ? "" : ` · about ${seconds(p.eta_s)} left`;
      return `${what}: ${p.frames_done} / ${p.frames_total} frames${left}`;
    }
    if (j.state === "done") {
      const r = j.result;
      const fps = r.frames && p.elapsed_s ? ` (${(r.frames / p.elapsed_s).toFixed(1)} frames/s)` : "";
      return `Done: ${r.frames} frames in ${seconds(p.elapsed_s)}${fps}` + (r.warning ? `. Note: ${r.warning}.` : "");
    }
    if (j.state === "cancelled") return "Cancelled.";
    return "The video could not be processed.";
  }

  function render(j) {
    job = j;
    const busy = j.state === "queued" || j.state === "running";
    bar.value = j.progress.fraction;
    setStatus(describe(j), busy);
    cancelButton.hidden = !busy;
    cancelButton.disabled = j.cancel_requested;
    if (j.state === "failed") setError(j.error ? j.error.message : "The video could not be processed.");
    if (j.state === "done") {
      const files = j.result.files;
      if (player.getAttribute("src") !== files.video) player.src = files.video;
      player.hidden = false;
      mp4Link.href = `${files.video}?download=1`;
      zipLink.hidden = !files.depth_zip;
      if (files.depth_zip) zipLink.href = `${files.depth_zip}?download=1`;
      dims.textContent = `${j.result.width} × ${j.result.height} px, ${j.result.fps} fps`;
      downloads.hidden = false;
    }
  }

  async function poll() {
    if (!job) return;
    const id = job.id;
    try {
      const r = await fetch(`${api}/jobs/${id}`, { headers: { Accept: "application/json" } });
      const json = await r.json().catch(() => null);
      if (!job || job.id !== id) return; // another video replaced this one meanwhile
      if (!r.ok) throw new Error((json && json.message) || `The server answered ${r.status}.`);
      render(json);
      if (json.state === "queued" || json.state === "running") timer = setTimeout(poll, POLL_MS);
    } catch (e) {
      setStatus("", false);
      setError(e instanceof TypeError ? "Could not reach the server. Is it still running?" : e.message);
    }
  }

  function formData(file) {
    const body = new FormData();
    body.append("video", file, file.name);
    for (const name of optionNames) {
      // the stereo settings (layout, strength, ...) live in the "Stereo 3D" panel, outside the form
      const el = form.elements[name] || document.getElementById(`st-${name}`);
      if (!el) continue;
      body.append(name, el.type === "checkbox" ? (el.checked ? "on" : "off") : el.value);
    }
    return body;
  }

  function stop() {
    clearTimeout(timer);
    if (job && (job.state === "queued" || job.state === "running")) {
      fetch(`${api}/jobs/${job.id}`, { method: "DELETE" }).catch(() => {}); // free the server's worker
    }
    job = null;
  }

  async function start(file) {
    stop();
    document.body.dataset.media = "video";
    box.hidden = false;
    player.hidden = true;
    player.removeAttribute("src");
    player.load(); // drop the previous video
    downloads.hidden = true;
    bar.value = 0;
    setError("");
    submit.textContent = "Generate depth video";
    if (file.size > maxBytes) {
      setStatus("", false);
      setError(`That video is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${+(maxBytes / 1048576).toFixed(1)} MB.`);
      return;
    }
    setStatus("Uploading…", true);
    cancelButton.hidden = true;
    try {
      const r = await fetch(`${api}/video`, { method: "POST", body: formData(file), headers: { Accept: "application/json" } });
      const json = await r.json().catch(() => null);
      if (!r.ok) throw new Error((json && json.message) || `The server answered ${r.status} ${r.statusText}.`);
      render(json);
      timer = setTimeout(poll, POLL_MS);
    } catch (e) {
      setStatus("", false);
      setError(e instanceof TypeError ? "Could not reach the server. Is it still running?" : e.message);
    }
  }

  cancelButton.addEventListener("click", async () => {
    if (!job) return;
    cancelButton.disabled = true;
    try {
      const r = await fetch(`${api}/jobs/${job.id}`, { method: "DELETE", headers: { Accept: "application/json" } });
      if (r.status === 202) render(await r.json());
    } catch (e) {
      setError("Could not reach the server. Is it still running?");
    }
  });

  window.depthVideo = {
    // true if ``file`` is a video: its job is started and the photo flow should stop there
    async take(file) {
      if (!(await isVideo(file))) return false;
      start(file);
      return true;
    },
    // a photo replaces the video: stop following (and cancel) the job, show the photo's result
    hide() {
      stop();
      box.hidden = true;
      delete document.body.dataset.media;
    },
  };
})();
