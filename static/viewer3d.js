// The 3D preview: the depth as a mesh (/api/v1/depth/<id>.glb with the page's depth scale and field of
// view) in three.js, loaded only when the user asks for it (the library is 630 KB). Orbit with the
// mouse or touch (OrbitControls); keyboard: arrow keys turn, + and - zoom, 0 resets, with the canvas
// focused. Renders on demand, not in a loop, so an idle page costs no CPU.
const section = document.getElementById("viewer");
const openBtn = document.getElementById("viewer-open");
const stage = document.getElementById("viewer-stage");
const canvas = document.getElementById("viewer-canvas");
const statusEl = document.getElementById("viewer-status");
const PREVIEW_GRID = 384;
const t = window.studioT || ((s) => s); // static/i18n.js runs first (deferred scripts keep their order) // enough for a screen; the .glb download keeps the chosen grid

let scene = null; // { base, query } from exports.js
let three = null; // the vendored module, once loaded
let view = null; // renderer, camera, controls, scene of the open viewer
let loaded = "";

function meshUrl() {
  const q = new URLSearchParams(scene.query);
  q.set("grid", String(Math.min(Number(q.get("grid") || 512), PREVIEW_GRID)));
  return `${scene.base}.glb?${q}`;
}

function render() {
  if (view) view.renderer.render(view.scene, view.camera);
}

function resize() {
  if (!view) return;
  const width = stage.clientWidth;
  const height = Math.round(width * 0.62);
  view.renderer.setSize(width, height, false);
  view.camera.aspect = width / height;
  view.camera.updateProjectionMatrix();
  render();
}

function setup() {
  const T = three;
  const renderer = new T.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
  const world = new T.Scene();
  world.background = new T.Color(0x202028);
  const camera = new T.PerspectiveCamera(50, 1.6, 0.01, 100);
  const controls = new T.OrbitControls(camera, canvas);
  controls.addEventListener("change", render);
  view = { renderer, scene: world, camera, controls, mesh: null, home: null };
  new ResizeObserver(resize).observe(stage);
  canvas.addEventListener("keydown", onKey);
}

function frame(gltf) {
  const T = three;
  if (view.mesh) {
    view.scene.remove(view.mesh);
    view.mesh.traverse((o) => { if (o.geometry) o.geometry.dispose(); if (o.material) o.material.dispose(); });
  }
  view.mesh = gltf.scene;
  view.scene.add(view.mesh);
  // start where the photo was taken from, looking at the middle of the scene: it looks like the photo
  // until the user turns it
  const box = new T.Box3().setFromObject(view.mesh);
  const centre = box.getCenter(new T.Vector3());
  const fovH = Number(new URLSearchParams(scene.query).get("fov") || 60);
  const aspect = view.camera.aspect || 1.6;
  view.camera.fov = (2 * Math.atan(Math.tan((fovH * Math.PI) / 360) / aspect) * 180) / Math.PI + 4;
  view.camera.position.set(0, 0, 0.05);
  view.controls.target.copy(centre);
  view.camera.updateProjectionMatrix();
  view.controls.update();
  view.home = { position: view.camera.position.clone(), target: centre.clone() };
  render();
}

function onKey(ev) {
  if (!view || !view.home) return;
  const T = three;
  const target = view.controls.target;
  const offset = view.camera.position.clone().sub(target);
  const step = Math.PI / 36; // 5 degrees
  const right = new T.Vector3().crossVectors(view.camera.up, offset).normalize();
  if (ev.key === "ArrowLeft") offset.applyAxisAngle(view.camera.up, -step);
  else if (ev.key === "ArrowRight") offset.applyAxisAngle(view.camera.up, step);
  else if (ev.key === "ArrowUp") offset.applyAxisAngle(right, -step);
  else if (ev.key === "ArrowDown") offset.applyAxisAngle(right, step);
  else if (ev.key === "+" || ev.key === "=") offset.multiplyScalar(0.9);
  else if (ev.key === "-" || ev.key === "_") offset.multiplyScalar(1 / 0.9);
  else if (ev.key === "0") {
    view.camera.position.copy(view.home.position);
    target.copy(view.home.target);
    view.controls.update();
    render();
    ev.preventDefault();
    return;
  } else return;
  ev.preventDefault();
  view.camera.position.copy(target).add(offset);
  view.camera.lookAt(target);
  view.controls.update();
  render();
}

async function load() {
  if (!scene || stage.hidden) return;
  const url = meshUrl();
  if (url === loaded) return;
  loaded = url;
  statusEl.textContent = t("Loading the 3D view…");
  try {
    if (!three) three = await import("./vendor/three-viewer.min.js");
    if (!view) setup();
    resize();
    const gltf = await new three.GLTFLoader().loadAsync(url);
    if (url !== loaded) return; // a newer setting won meanwhile
    frame(gltf);
    statusEl.textContent = t("3D view ready.");
    section.dataset.ready = url;
  } catch (e) {
    loaded = "";
    statusEl.textContent = t("The 3D view could not be shown: {error}", { error: e.message || e });
  }
}

if (section) {
  document.addEventListener("studio:scene", (ev) => {
    scene = ev.detail;
    section.hidden = false;
    load();
  });
  openBtn.addEventListener("click", () => {
    const open = stage.hidden;
    stage.hidden = !open;
    openBtn.textContent = open ? t("Hide 3D") : t("Show in 3D");
    openBtn.setAttribute("aria-expanded", String(open));
    if (open) load();
  });
  openBtn.setAttribute("aria-expanded", "false");
}
