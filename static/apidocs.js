// The interactive API reference: renders /api/v1/openapi.json (operations, parameters, schemas' ranges
// and defaults) and sends a request from each operation's form to this server, showing the answer (JSON,
// an image, or a file to save). Written for this page's strict CSP: no inline code, no eval.
(() => {
  "use strict";
  const root = document.getElementById("apidocs");
  if (!root) return;
  const statusEl = document.getElementById("apidocs-status");
  const list = document.getElementById("operations");
  let spec = null;

  const el = (tag, props, ...kids) => {
    const e = document.createElement(tag);
    Object.assign(e, props || {});
    for (const k of kids) if (k != null) e.append(k);
    return e;
  };
  const resolve = (s) => {
    while (s && s.$ref) s = s.$ref.split("/").slice(1).reduce((o, k) => o[k], spec);
    return s || {};
  };
  const describe = (s) => {
    s = resolve(s);
    const bits = [s.type || ""];
    if (s.enum) bits.push(`one of ${s.enum.join(", ")}`);
    if (s.minimum !== undefined) bits.push(`${s.minimum} … ${s.maximum}`);
    if (s.default !== undefined) bits.push(`default ${JSON.stringify(s.default)}`);
    return bits.filter(Boolean).join("; ");
  };
  let uid = 0;

  function field(name, schema, where, required) {
    const s = resolve(schema);
    const id = `p${++uid}`;
    let input;
    if (s.format === "binary") input = el("input", { type: "file", id });
    else if (s.enum) {
      input = el("select", { id });
      input.append(el("option", { value: "", textContent: required ? "(choose)" : "(not sent)" }));
      for (const v of s.enum) input.append(el("option", { value: String(v), textContent: String(v) }));
    } else input = el("input", { type: "text", id, placeholder: required ? "required" : "(not sent)" });
    input.dataset.name = name;
    input.dataset.where = where;
    const help = [describe(s), s.description].filter(Boolean).join(" — ");
    return el("div", { className: "param" },
      el("label", { htmlFor: id }, el("code", { textContent: name }), required ? " *" : "", ` (${where})`),
      input, el("small", { className: "muted", textContent: help }));
  }

  function operation(path, method, op) {
    const params = op.parameters || [];
    const body = op.requestBody && op.requestBody.content;
    const bodyType = body ? Object.keys(body)[0] : null;
    const form = el("form", { className: "try" });
    for (const p of params) form.append(field(p.name, p.schema, p.in, p.required));
    if (bodyType === "multipart/form-data") {
      const s = resolve(body[bodyType].schema);
      for (const [n, ps] of Object.entries(s.properties || {})) {
        form.append(field(n, ps, "form", (s.required || []).includes(n)));
      }
    } else if (bodyType) {
      const id = `p${++uid}`;
      const area = el("textarea", { id, rows: 4, value: '{"depth_id": "", "colormap": "viridis", "views": "heatmap"}' });
      area.dataset.where = "json";
      form.append(el("div", { className: "param" }, el("label", { htmlFor: id, textContent: "JSON body" }), area,
        el("small", { className: "muted", textContent: `Any of the options (schema Options) plus ${Object.keys(resolve(body[bodyType].schema).properties || {}).filter((k) => k === "depth_id" || k === "views").join(", ")}` })));
    }
    const out = el("div", { className: "answer", role: "region", ariaLabel: `Answer of ${method.toUpperCase()} ${path}` });
    form.append(el("button", { type: "submit", className: "primary", textContent: "Send" }));
    form.addEventListener("submit", (ev) => { ev.preventDefault(); send(path, method, form, bodyType, out); });
    const responses = el("ul", { className: "responses" });
    for (const [code, r] of Object.entries(op.responses || {})) {
      responses.append(el("li", {}, el("code", { textContent: code }), ` ${r.description || ""}`));
    }
    return el("details", { className: "op panel" },
      el("summary", {}, el("span", { className: `method m-${method}`, textContent: method.toUpperCase() }),
        " ", el("code", { textContent: path }), " ", el("span", { className: "muted", textContent: op.summary || "" })),
      op.description ? el("p", { textContent: op.description }) : null,
      el("h3", { textContent: "Responses" }), responses,
      el("h3", { textContent: "Try it" }), form, out);
  }

  async function send(path, method, form, bodyType, out) {
    let url = path;
    const query = new URLSearchParams();
    const data = new FormData();
    const headers = { Accept: "application/json" };
    let json = null;
    for (const input of form.querySelectorAll("[data-where]")) {
      const { name, where } = input.dataset;
      if (where === "json") { json = input.value; continue; }
      if (input.type === "file") { if (input.files[0]) data.append(name, input.files[0]); continue; }
      if (input.value === "") continue;
      if (where === "path") url = url.replace(`{${name}}`, encodeURIComponent(input.value));
      else if (where === "query") query.set(name, input.value);
      else if (where === "header") headers[name] = input.value; // X-Owner-Token
      else data.append(name, input.value);
    }
    if (query.toString()) url += `?${query}`;
    const init = { method: method.toUpperCase(), headers };
    if (bodyType === "multipart/form-data") init.body = data;
    else if (bodyType) { init.body = json; init.headers["Content-Type"] = "application/json"; }
    out.replaceChildren(el("p", { className: "muted", textContent: `${init.method} ${url} …` }));
    try {
      const r = await fetch(url, init);
      const type = r.headers.get("Content-Type") || "";
      const head = el("p", {}, el("strong", { textContent: `${r.status} ${r.statusText}` }), ` ${type}`);
      const kids = [el("p", { className: "muted" }, el("code", { textContent: `${init.method} ${url}` })), head];
      if (type.startsWith("application/json")) {
        const text = JSON.stringify(await r.json(), (k, v) => (typeof v === "string" && v.length > 200 ? `${v.slice(0, 80)}… (${v.length} characters)` : v), 2);
        kids.push(el("pre", { textContent: text }));
      } else {
        const blob = await r.blob();
        const href = URL.createObjectURL(blob);
        if (type.startsWith("image/")) kids.push(el("img", { src: href, alt: "the answer", className: "answer-img" }));
        kids.push(el("p", {}, `${blob.size.toLocaleString()} bytes `, el("a", { href, download: "", textContent: "save" })));
      }
      out.replaceChildren(...kids);
    } catch (e) {
      out.replaceChildren(el("p", { className: "error", textContent: `No answer: ${e.message}` }));
    }
  }

  fetch(root.dataset.spec).then((r) => r.json()).then((s) => {
    spec = s;
    for (const [path, ops] of Object.entries(s.paths)) {
      for (const [method, op] of Object.entries(ops)) list.append(operation(path, method, op));
    }
    statusEl.textContent = `${s.info.title}, ${list.children.length} operations.`;
  }).catch((e) => { statusEl.textContent = `The API description could not be loaded: ${e.message}`; });
})();
