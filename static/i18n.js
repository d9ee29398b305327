// The page's scripts' strings in the page's language: the server puts the translated catalog in
// <body data-i18n> (empty in English). t("Depth map in {total} ms", {total: 80}) fills placeholders.
(() => {
  "use strict";
  let catalog = {};
  try { catalog = JSON.parse(document.body.dataset.i18n || "{}"); } catch (e) { catalog = {}; }
  window.studioT = (text, values) => (catalog[text] || text).replace(/\{(\w+)\}/g,
    (whole, key) => (values && key in values ? String(values[key]) : whole));
})();
