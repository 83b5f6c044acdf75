// The controller's topology page: reads /debug/topology.json, draws it
// with Cytoscape.js laid out by dagre (left to right: Gateways, servers,
// route sets, routes, clusters, endpoints), refreshes it, and lists every
// node in a table the headless-browser test reads.
import cytoscape from "cytoscape";
import dagre from "cytoscape-dagre";

cytoscape.use(dagre);

const JSON_URL = "/debug/topology.json";
const REFRESH_MS = 5000;

const kindRank = { Gateway: 0, Server: 1, RouteSet: 2, Route: 3, Cluster: 4, Endpoint: 5 };
const kindShape = { Gateway: "round-hexagon", Server: "round-rectangle", RouteSet: "round-tag", Route: "round-rectangle", Cluster: "barrel", Endpoint: "ellipse" };
const kindColor = { Gateway: "#dbeafe", Server: "#e0f2fe", RouteSet: "#ede9fe", Route: "#f5f3ff", Cluster: "#dcfce7", Endpoint: "#f0fdf4" };

let cy = null;
let lastShape = "";
let selected = null;
let graph = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, String(v));
    else if (k === "onclick") e.addEventListener("click", v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export function fmtRate(m) {
  if (!m) return "–";
  const unit = m.unit === "cx" ? "cx/s" : "rq/s";
  const r = m.rps;
  const s = r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2);
  return (m.shared ? "≤ " : "") + s + " " + unit;
}

export function fmtPct(v) {
  if (v === undefined || v === null) return "–";
  return (v * 100).toFixed(v >= 0.1 ? 0 : 1) + "%";
}

export function fmtMs(v) {
  if (v === undefined || v === null) return "–";
  return v >= 100 ? v.toFixed(0) + " ms" : v.toFixed(1) + " ms";
}

function metricLine(m) {
  if (!m) return "";
  let s = fmtRate(m);
  if (m.rps > 0) s += " · err " + fmtPct(m.errorRate);
  if (m.p99Ms !== undefined && m.p99Ms !== null) s += " · p99 " + fmtMs(m.p99Ms);
  return s;
}

// Long names (outbound|80||counter.default.svc.cluster.local) get places
// to wrap after their separators.
function breakable(s) {
  return s.length > 28 ? s.replace(/([|.\/:])/g, "$1\u200b") : s;
}

function nodeLabel(n) {
  const lines = [breakable(n.label)];
  if (n.detail) lines.push(n.detail.length > 48 ? n.detail.slice(0, 47) + "…" : n.detail);
  const m = metricLine(n.metrics);
  if (m) lines.push(m);
  if (n.problems && n.problems.length) lines.push("⚠ " + n.problems.length + " problem" + (n.problems.length > 1 ? "s" : ""));
  return lines.join("\n");
}

function elements(g) {
  const els = [];
  for (const n of g.nodes) {
    els.push({ group: "nodes", data: { id: n.id, kind: n.kind, health: n.health, label: nodeLabel(n), rank: kindRank[n.kind] ?? 9, hot: n.metrics && n.metrics.rps > 0 ? 1 : 0, errs: n.metrics && n.metrics.errorRate > 0.05 ? 1 : 0 } });
  }
  g.edges.forEach((e, i) => {
    els.push({ group: "edges", data: { id: "e" + i, source: e.source, target: e.target, label: e.weight && e.weight < 100 ? e.weight + "%" : "" } });
  });
  return els;
}

const style = [
  { selector: "node", style: {
    shape: (n) => kindShape[n.data("kind")] || "round-rectangle",
    "background-color": (n) => kindColor[n.data("kind")] || "#f8fafc",
    "border-width": 1.5, "border-color": "#64748b",
    label: "data(label)", "text-wrap": "wrap", "text-valign": "center", "text-halign": "center",
    "font-size": 12, "font-family": "DejaVu Sans, sans-serif", color: "#0f172a",
    width: "label", height: "label", padding: 10, "text-max-width": 210,
  } },
  { selector: "node[hot = 1]", style: { "border-color": "#2563eb", "border-width": 2.5 } },
  { selector: "node[errs = 1]", style: { "border-color": "#ea580c", "border-width": 3 } },
  { selector: "node[health = 'warning']", style: { "background-color": "#fef3c7", "border-color": "#d97706", "border-width": 3, "border-style": "dashed" } },
  { selector: "node[health = 'error']", style: { "background-color": "#fee2e2", "border-color": "#dc2626", "border-width": 3.5 } },
  { selector: "node:selected", style: { "overlay-color": "#2563eb", "overlay-opacity": 0.15, "overlay-padding": 4 } },
  { selector: "edge", style: {
    width: 1.5, "line-color": "#94a3b8", "target-arrow-color": "#94a3b8", "target-arrow-shape": "triangle",
    "curve-style": "bezier", label: "data(label)", "font-size": 10, "text-background-color": "#fff", "text-background-opacity": 1,
  } },
];

function render(g) {
  graph = g;
  const container = document.getElementById("graph");
  // Lay out again only when nodes or edges change; numbers update in place.
  const shape = g.nodes.map((n) => n.id).join("\n") + "\n--\n" + g.edges.map((e) => e.source + ">" + e.target).join("\n");
  if (!cy || shape !== lastShape) {
    if (cy) cy.destroy();
    cy = cytoscape({ container, elements: elements(g), style, wheelSensitivity: 0.3, minZoom: 0.1, maxZoom: 3 });
    cy.layout({ name: "dagre", rankDir: "LR", nodeSep: 18, rankSep: 70, edgeSep: 8 }).run();
    cy.fit(undefined, 20);
    if (cy.zoom() > 1.4) { cy.zoom(1.4); cy.center(); }
    cy.on("tap", "node", (ev) => select(ev.target.id()));
    cy.on("tap", (ev) => { if (ev.target === cy) select(null); });
    lastShape = shape;
  } else {
    for (const n of g.nodes) {
      const c = cy.getElementById(n.id);
      c.data({ health: n.health, label: nodeLabel(n), hot: n.metrics && n.metrics.rps > 0 ? 1 : 0, errs: n.metrics && n.metrics.errorRate > 0.05 ? 1 : 0 });
    }
  }
  renderProblems(g);
  renderTable(g);
  renderScrapes(g);
  if (!selected && location.hash.startsWith("#node=")) {
    // A link to one node: /debug/topology#node=<id> opens its details.
    selected = decodeURIComponent(location.hash.slice("#node=".length));
    cy.getElementById(selected).select();
  }
  if (selected) select(selected);
  document.body.dataset.renderedNodes = String(cy.nodes().length);
  document.body.dataset.renderedEdges = String(cy.edges().length);
  document.body.dataset.ready = "1";
}

function renderProblems(g) {
  const box = document.getElementById("problems");
  box.replaceChildren();
  const items = [];
  for (const p of g.problems) items.push({ where: p.resource || "configuration", p });
  for (const n of g.nodes) for (const p of n.problems || []) items.push({ where: (n.resource && n.kind !== "Route" ? n.resource.kind : n.kind) + " " + n.label, p, id: n.id });
  if (!items.length) {
    box.append(el("p", { class: "ok" }, "No problems reported."));
    return;
  }
  const ul = el("ul", {});
  for (const it of items) {
    const li = el("li", { class: "problem " + (it.p.level || "").toLowerCase(), "data-level": it.p.level },
      el("b", {}, it.p.level + (it.p.code ? " [" + it.p.code + "]" : "")), " ", it.where, ": ", (it.p.field ? it.p.field + ": " : "") + it.p.message);
    if (it.id) li.addEventListener("click", () => { select(it.id); cy.getElementById(it.id).select(); cy.center(cy.getElementById(it.id)); });
    ul.append(li);
  }
  box.append(ul);
}

function renderTable(g) {
  const tbody = document.querySelector("#nodes tbody");
  tbody.replaceChildren();
  const nodes = [...g.nodes].sort((a, b) => (kindRank[a.kind] - kindRank[b.kind]) || a.id.localeCompare(b.id));
  for (const n of nodes) {
    const m = n.metrics;
    const tr = el("tr", {
      class: "health-" + n.health, "data-id": n.id, "data-kind": n.kind, "data-health": n.health,
      "data-rps": m ? m.rps : "", "data-error-rate": m ? m.errorRate : "", "data-error-rate-5xx": m ? m.errorRate5xx : "",
      "data-p99": m && m.p99Ms !== undefined ? m.p99Ms : "",
    },
    el("td", {}, n.kind === "RouteSet" && n.resource ? n.resource.kind : n.kind),
    el("td", {}, el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); select(n.id); } }, n.label)),
    el("td", { class: "num" }, fmtRate(m)),
    el("td", { class: "num" }, m && m.rps > 0 ? fmtPct(m.errorRate) : "–"),
    el("td", { class: "num" }, m ? fmtMs(m.p99Ms) : "–"),
    el("td", {}, (n.problems || []).length ? String(n.problems.length) : ""),
    );
    tbody.append(tr);
  }
}

function renderScrapes(g) {
  const box = document.getElementById("scrapes");
  const parts = [];
  if (g.window) parts.push("rates over the last " + g.window);
  for (const s of g.scrapes) parts.push(s.proxy + (s.error ? " (cannot read: " + s.error + ")" : " (" + s.readings + " readings)"));
  if (!g.scrapes.length) parts.push("no proxy stats read");
  box.textContent = "Built " + new Date(g.builtAt).toLocaleTimeString() + " · " + parts.join(" · ");
}

function select(id) {
  selected = id;
  if (id && location.hash !== "#node=" + encodeURIComponent(id)) history.replaceState(null, "", "#node=" + encodeURIComponent(id));
  const panel = document.getElementById("details");
  const n = graph && graph.nodes.find((x) => x.id === id);
  if (!n) {
    panel.replaceChildren(el("p", { class: "hint" }, "Click a node for its status, numbers, source YAML and Envoy configuration."));
    return;
  }
  const kind = n.kind === "RouteSet" && n.resource ? n.resource.kind : n.kind;
  const kids = [el("h2", {}, n.label), el("p", { class: "kind" }, kind + (n.class ? " · " + n.class : "") + (n.resource ? " · " + n.resource.kind + " " + n.resource.namespace + "/" + n.resource.name : ""))];
  if (n.detail) kids.push(el("p", {}, n.detail));
  if (n.metrics) {
    const m = n.metrics;
    kids.push(el("table", { class: "metrics" },
      el("tr", {}, el("th", {}, "rate"), el("td", {}, fmtRate(m))),
      el("tr", {}, el("th", {}, "errors (4xx+5xx)"), el("td", {}, fmtPct(m.errorRate))),
      el("tr", {}, el("th", {}, "5xx"), el("td", {}, fmtPct(m.errorRate5xx))),
      el("tr", {}, el("th", {}, "p99"), el("td", {}, fmtMs(m.p99Ms))),
      el("tr", {}, el("th", {}, "total"), el("td", {}, String(m.total))),
    ));
    if (m.shared) kids.push(el("p", { class: "hint" }, "Totals of the clusters this node sends to, which other routes share: the proxy counts per cluster."));
  }
  for (const p of n.problems || []) kids.push(el("p", { class: "problem " + p.level.toLowerCase() }, el("b", {}, p.level + (p.code ? " [" + p.code + "]" : "")), " ", (p.field ? p.field + ": " : "") + p.message));
  if (n.conditions && n.conditions.length) {
    const t = el("ul", { class: "conditions" });
    for (const c of n.conditions) {
      t.append(el("li", { class: c.status === "False" ? "false" : "" }, el("b", {}, c.type + "=" + c.status), " " + c.reason, el("br", {}), el("span", { class: "msg" }, c.message)));
    }
    kids.push(el("h3", {}, "Conditions"), t);
  }
  const pre = el("pre", { id: "viewer" });
  const links = el("p", { class: "links" });
  const show = (url) => (ev) => {
    ev.preventDefault();
    pre.textContent = "loading " + url + " …";
    fetch(url).then((r) => r.text().then((t) => { pre.textContent = (r.ok ? "" : r.status + " ") + t; })).catch((e) => { pre.textContent = String(e); });
  };
  if (n.links.yaml) links.append(el("a", { href: n.links.yaml, target: "_blank", onclick: show(n.links.yaml) }, "Source YAML"), " ");
  if (n.links.envoy) links.append(el("a", { href: n.links.envoy, target: "_blank", onclick: show(n.links.envoy) }, "Envoy config"));
  kids.push(links, pre);
  panel.replaceChildren(...kids);
}

async function refresh() {
  try {
    const r = await fetch(JSON_URL, { cache: "no-store" });
    if (!r.ok) throw new Error(r.status + " " + (await r.text()));
    render(await r.json());
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "Cannot read " + JSON_URL + ": " + e.message;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
