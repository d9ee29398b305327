// Before/after slider: the photo over the chosen depth view, cut at a divider the user drags (pointer:
// mouse, pen, touch) or moves with the range input (arrow keys, Page Up/Down, Home/End). While the page
// draws the views itself (static/live.js), the depth view here is drawn in the page too, from the same
// depth, and only while the slider is on screen; otherwise it is the server's PNG.
(() => {
  "use strict";
  const section = document.getElementById("compare");
  if (!section) return;
  const stage = document.getElementById("compare-stage");
  const before = document.getElementById("compare-before");
  const after = document.getElementById("compare-after");
  const afterLive = document.getElementById("compare-after-live");
  const divider = document.getElementById("compare-divider");
  const range = document.getElementById("compare-pos");
  const out = document.getElementById("compare-out");
  const pick = document.getElementById("compare-view");
  let state = null;
  const t = window.studioT || ((s) => s);

  function setPos(p) {
    p = Math.max(0, Math.min(100, Math.round(p)));
    range.value = String(p);
    out.textContent = `${p}%`;
    range.setAttribute("aria-valuetext", t("{p}% photo, {q}% {view}", { p, q: 100 - p, view: pick.options[pick.selectedIndex].text.toLowerCase() }));
    // the photo shows left of the divider, the depth view right of it
    before.style.clipPath = `inset(0 ${100 - p}% 0 0)`;
    divider.style.left = `${p}%`;
  }

  // off screen, nothing is drawn or fetched until it comes into view: a control move costs only what is seen
  let onScreen = false;
  function images() {
    if (!state || !onScreen) return;
    const view = pick.value;
    const b = state.url("photo", false);
    if (before.getAttribute("src") !== b) before.src = b;
    const label = pick.options[pick.selectedIndex].text;
    stage.classList.toggle("live", !!state.live);
    stage.dataset.view = view;
    if (state.live) {
      afterLive.setAttribute("aria-label", label);
      window.depthLive.draw(afterLive, state.live.depth, view, state.live.options);
    } else {
      const a = state.url(view, false);
      if (after.getAttribute("src") !== a) after.src = a;
      after.alt = label;
    }
    setPos(Number(range.value));
  }
  new IntersectionObserver((entries) => {
    onScreen = entries[entries.length - 1].isIntersecting;
    if (onScreen) images();
  }).observe(stage);

  document.addEventListener("studio:result", (ev) => {
    state = ev.detail;
    // follow the page's mode when it shows one view, so the comparison is with what the user looks at
    if (["heatmap", "overlay", "gray"].includes(state.mode)) pick.value = state.mode;
    section.hidden = false;
    images();
  });
  pick.addEventListener("change", images);
  range.addEventListener("input", () => setPos(Number(range.value)));

  let dragging = false;
  function fromPointer(ev) {
    const box = stage.getBoundingClientRect();
    setPos(((ev.clientX - box.left) / box.width) * 100);
  }
  stage.addEventListener("pointerdown", (ev) => {
    dragging = true;
    stage.setPointerCapture(ev.pointerId);
    fromPointer(ev);
    ev.preventDefault();
  });
  stage.addEventListener("pointermove", (ev) => { if (dragging) fromPointer(ev); });
  for (const type of ["pointerup", "pointercancel"]) {
    stage.addEventListener(type, () => { dragging = false; range.focus({ preventScroll: true }); });
  }
  setPos(50);
})();
