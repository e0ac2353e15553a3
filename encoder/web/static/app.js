// The pages' one script: no framework, no build step. Each page is <body data-page="...">.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function status(msg, isError = false) {
  const s = $("status");
  s.textContent = msg || "";
  s.classList.toggle("error", isError);
}

async function api(url, options) {
  const r = await fetch(url, options);
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

function fmtBytes(n) {
  if (n == null) return "–";
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1048576).toFixed(2)} MB`;
}

function fmtDistance(d) {
  return Number.isInteger(d) ? `${d} bits` : d.toFixed(4);
}

// Drop anywhere on the page: calls onFile with the first dropped file.
function dropAnywhere(onFile) {
  const drop = $("drop");
  let depth = 0;
  window.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; drop.hidden = false; });
  window.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; drop.hidden = true; } });
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => {
    e.preventDefault(); depth = 0; drop.hidden = true;
    if (e.dataTransfer.files.length) onFile(e.dataTransfer.files[0]);
  });
}

async function loadIndexes(select, filter = () => true) {
  const info = await api("/api/indexes");
  $("nav-training").hidden = !info.training;
  const shown = info.indexes.filter(filter);
  for (const ix of shown) {
    select.append(el("option", { value: ix.name, text: `${ix.name} (${ix.method}, ${ix.count.toLocaleString()})` }));
  }
  return shown;
}

// ------------------------------------------------------------------ Search
function searchPage() {
  let indexes = [];
  let lastFile = null, lastId = null;
  const form = $("search-form");

  const current = () => indexes.find((x) => x.name === $("index").value);
  const syncMirror = () => {
    const ix = current();
    $("mirror").disabled = !(ix && ix.mirror);
    $("mirror-label").classList.toggle("disabled", !(ix && ix.mirror));
  };

  function tile(n, index) {
    const img = el("img", { src: n.url, alt: n.id, loading: "lazy" });
    const fig = el("figure", { class: "tile", tabindex: "0", title: `search from ${n.id}` }, [img]);
    if (n.recon) {
      fig.append(el("img", { src: n.recon, alt: `${n.id} decoded`, class: "recon", title: "decoded from its stored code" }));
    }
    fig.append(el("figcaption", {}, [
      el("span", { class: "rank", text: `#${n.rank}` }),
      el("span", { class: "dist", text: fmtDistance(n.distance) }),
      el("span", { class: "id", text: n.id }),
    ]));
    const go = () => similar(index, n.id);
    fig.addEventListener("click", go);
    fig.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
    return fig;
  }

  function show(res, querySrc) {
    $("query").hidden = false;
    $("query-img").src = querySrc;
    $("query-name").textContent = res.query;
    const tiles = $("tiles");
    tiles.replaceChildren(...res.neighbours.map((n) => tile(n, res.index)));
    tiles.classList.toggle("with-recon", res.neighbours.some((n) => n.recon));
    status(`top ${res.neighbours.length} of ${res.index} (${res.method}${res.mirror ? ", mirror" : ""})`);
  }

  async function queryFile(file) {
    lastFile = file; lastId = null;
    status(`searching ${file.name} …`);
    const fd = new FormData(form);
    fd.set("mirror", $("mirror").checked && !$("mirror").disabled ? "true" : "false");
    fd.append("image", file, file.name);
    try {
      show(await api("/api/query", { method: "POST", body: fd }), URL.createObjectURL(file));
    } catch (e) { status(e.message, true); }
  }

  async function similar(index, id) {
    lastId = id; lastFile = null;
    status(`searching ${id} …`);
    const q = new URLSearchParams({ index, id, k: $("k").value,
      mirror: $("mirror").checked && !$("mirror").disabled ? "true" : "false" });
    try {
      const res = await api(`/api/similar?${q}`);
      show(res, res.query_url);
    } catch (e) { status(e.message, true); }
  }

  const again = () => {
    if (lastFile) queryFile(lastFile);
    else if (lastId) similar($("index").value, lastId);
  };
  $("file").addEventListener("change", (e) => {
    if (e.target.files.length) queryFile(e.target.files[0]);
    e.target.value = "";  // picking the same file again searches again
  });
  $("index").addEventListener("change", () => { syncMirror(); again(); });
  $("k").addEventListener("change", again);
  $("mirror").addEventListener("change", again);
  form.addEventListener("submit", (e) => e.preventDefault());
  dropAnywhere(queryFile);
  loadIndexes($("index")).then((x) => {
    indexes = x; syncMirror();
    status(`${x.length} index${x.length === 1 ? "" : "es"} loaded: choose or drop a query image`);
  }).catch((e) => status(e.message, true));
}

// ------------------------------------------------------------------ Duplicates
function duplicatesPage() {
  let timer = null;
  async function refresh() {
    const q = new URLSearchParams({ index: $("index").value, threshold: $("threshold").value,
      include_flat: $("include-flat").checked ? "true" : "false", limit: "60" });
    status("grouping …");
    try {
      const res = await api(`/api/duplicates?${q}`);
      const shownCount = res.groups.length < res.total_groups ? ` (showing the ${res.groups.length} largest)` : "";
      status(`${res.total_groups.toLocaleString()} group${res.total_groups === 1 ? "" : "s"}, ${res.total_images.toLocaleString()} images at threshold ${res.threshold}${shownCount}`);
      $("groups").replaceChildren(...res.groups.map((g, n) => el("article", { class: "group" }, [
        el("h3", { text: `group ${n + 1} · ${g.ids.length} images · max distance ${g.max_distance} bits` }),
        el("div", { class: "thumbs" }, g.ids.map((id, i) => el("figure", { class: "thumb" }, [
          el("img", { src: g.urls[i], alt: id, loading: "lazy" }), el("figcaption", { text: id }),
        ]))),
      ])));
    } catch (e) { status(e.message, true); }
  }
  const later = () => { $("threshold-value").textContent = $("threshold").value; clearTimeout(timer); timer = setTimeout(refresh, 150); };
  $("threshold").addEventListener("input", later);
  $("include-flat").addEventListener("change", refresh);
  $("index").addEventListener("change", refresh);
  $("dup-form").addEventListener("submit", (e) => e.preventDefault());
  loadIndexes($("index"), (x) => x.dedup).then((x) => {
    if (x.length) refresh(); else status("no hash index loaded: duplicates need a phash/dhash/ahash index", true);
  }).catch((e) => status(e.message, true));
}

// ------------------------------------------------------------------ Palette
function palettePage() {
  let lastFile = null;
  const row = (k, v) => el("tr", {}, [el("th", { text: k }), el("td", { text: v })]);
  async function run(file) {
    lastFile = file;
    const fd = new FormData();
    fd.append("image", file, file.name);
    fd.append("n_colors", $("n-colors").value);
    fd.append("target_psnr", $("target-psnr").value);
    status(`quantizing ${file.name} …`);
    try {
      const r = await api("/api/quantize", { method: "POST", body: fd });
      $("side").hidden = false; $("stats").hidden = false;
      $("original").src = URL.createObjectURL(file);
      $("result").src = r.png;
      $("original-cap").textContent = `original · ${r.width}×${r.height} · ${r.colors_before.toLocaleString()} colours · ${fmtBytes(r.bytes_source)}`;
      $("result-cap").textContent = `K=${r.n_colors}${r.auto ? " (auto)" : ""} · ${r.colors_after} colours · ${fmtBytes(r.bytes_after)}`;
      $("swatches").replaceChildren(...r.palette.map((c) => { const s = el("span", { class: "swatch", title: c }); s.style.background = c; return s; }));
      $("stats-table").replaceChildren(
        row("PSNR", r.psnr == null ? "lossless" : `${r.psnr.toFixed(2)} dB`),
        row("CIEDE2000 (mean)", r.ciede2000 == null ? "–" : r.ciede2000.toFixed(2)),
        row("colours", `${r.colors_before.toLocaleString()} → ${r.colors_after}`),
        row("bytes", `${fmtBytes(r.bytes_source)} → ${fmtBytes(r.bytes_after)}`),
        row("ratio", r.ratio == null ? "–" : `${r.ratio.toFixed(2)}× (vs ${r.ratio_basis})`),
        row("time", `${r.seconds.toFixed(2)} s`));
      $("download").href = r.png;
      $("download").download = `${file.name.replace(/\.[^.]*$/, "")}_k${r.n_colors}.png`;
      status(`${file.name}: ${r.n_colors} colours`);
    } catch (e) { status(e.message, true); }
  }
  $("file").addEventListener("change", (e) => { if (e.target.files.length) run(e.target.files[0]); e.target.value = ""; });
  $("n-colors").addEventListener("change", () => { $("psnr-label").hidden = $("n-colors").value !== "auto"; if (lastFile) run(lastFile); });
  $("target-psnr").addEventListener("change", () => { if (lastFile) run(lastFile); });
  $("palette-form").addEventListener("submit", (e) => e.preventDefault());
  dropAnywhere(run);
  api("/api/indexes").then((i) => { $("nav-training").hidden = !i.training; }).catch(() => {});
  status("choose or drop a photo");
}

// ------------------------------------------------------------------ Training
function chart(title, series) {
  const W = 460, H = 240, L = 52, R = 12, T = 28, B = 34;
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  const pts = Object.values(series).flat();
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-9);
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R), sy = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  const add = (tag, attrs, text) => { const e = document.createElementNS(NS, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text != null) e.textContent = text; svg.append(e); return e; };
  add("text", { x: L, y: 16, class: "title" }, title);
  add("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" });
  add("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" });
  for (const y of [y0, (y0 + y1) / 2, y1]) add("text", { x: L - 6, y: sy(y) + 4, class: "tick", "text-anchor": "end" }, y.toPrecision(3));
  add("text", { x: (L + W - R) / 2, y: H - 6, class: "tick", "text-anchor": "middle" }, "epoch");
  Object.entries(series).forEach(([name, s], i) => {
    add("polyline", { points: s.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" "), class: `line c${i % 4}` });
    add("text", { x: W - R, y: T + 14 * i, class: `legend c${i % 4}`, "text-anchor": "end" }, name);
  });
  return svg;
}

function trainingPage() {
  $("nav-training").hidden = false;
  api("/api/training").then((t) => {
    const charts = [];
    for (const run of t.runs) {
      const groups = {};
      for (const [col, s] of Object.entries(run.curves)) {
        const key = /psnr/i.test(col) ? "PSNR (dB)" : /ssim/i.test(col) ? "SSIM" : "loss";
        (groups[key] = groups[key] || {})[col] = s;
      }
      for (const [key, series] of Object.entries(groups)) charts.push(chart(`${run.name} · ${key}`, series));
    }
    $("curves").replaceChildren(...charts);
    $("grids").replaceChildren(...t.grids.map((g) => el("figure", { class: "grid" }, [
      el("img", { src: g.url, alt: g.name, loading: "lazy" }), el("figcaption", { text: g.epoch == null ? g.name : `epoch ${g.epoch}` }),
    ])));
    status(`${t.runs.length} logged run(s), ${t.grids.length} reconstruction grid(s)`);
  }).catch((e) => status(e.message, true));
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === page));
  ({ search: searchPage, duplicates: duplicatesPage, palette: palettePage, training: trainingPage })[page]();
});
