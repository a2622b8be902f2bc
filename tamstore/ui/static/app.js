// tamstore's web UI: plain JavaScript modules, no build step. Pages are chosen by the URL's
// hash (#/flows, #/flows/{id} ...); everything they show comes from the TAMS API and tamstore's
// extensions (analytics, playback, the event stream).

import { ApiError, credentials, json, page, request, setCredentials, signIn, whenUnauthorised, withToken } from "./api.js";
import { NS, describe, durationText, formatTimerange, formatTimestamp, parseTimerange } from "./time.js";
import { Timeline } from "./timeline.js";

const main = document.getElementById("main");
let scopes = new Set(); // what the signed-in principal may do (/x-tamstore/whoami)

async function loadScopes() {
  try {
    const me = await json("/x-tamstore/whoami");
    scopes = new Set(me.scopes || []);
  } catch { scopes = new Set(); }
}

function may(action) {
  return scopes.has("tams-api/admin") || scopes.has(`tams-api/${action}`);
}
let leave = () => {}; // what the current page must stop (event streams, players) when left

// -- small helpers ----------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// A segment's get_urls are whatever its writer registered: only an http(s) URL becomes a link
// (a "javascript:" one would run in the page of whoever clicks it); any other is shown as text.
function mediaLink(getUrl) {
  const text = getUrl.label || "media";
  return /^https?:\/\//i.test(getUrl.url) ? h("a", { href: getUrl.url }, text) : h("span", { title: getUrl.url }, text);
}

function table(headings, rows) {
  return h("table", {}, h("thead", {}, h("tr", {}, headings.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))));
}

// Each route() is a new visit. A page renders through the ``show`` of its own visit, so a page
// still loading when the user moves on never paints over the next one, and ``gone`` tells it to
// stop (not open an event stream nobody will close).
let visits = 0;
function visit() {
  const mine = visits;
  return {
    show: (...children) => { if (mine === visits) main.replaceChildren(...children); },
    get gone() { return mine !== visits; },
  };
}

function failure(error) {
  return h("p", { class: "error", role: "alert" }, error instanceof ApiError ? `${error.status}: ${error.message}` : String(error));
}

function short(id) {
  return id ? id.slice(0, 8) : "";
}

// The containers tamstore's HLS carries; a Flow in another (WAV, say) is exported, not played here.
const HLS_CONTAINERS = ["video/mp2t", "video/mp4", "audio/mp4"];

function notPlayable(flow, id) {
  if (!flow.format.endsWith(":video") && !flow.format.endsWith(":audio")) return "";  // image, data
  return h("p", { class: "hint", id: "not-playable" }, `A Flow in ${flow.container || "no container"} does not play in a browser; `,
    "export it to a file: ", h("code", {}, `tamstore export --server ${location.origin} --flow-id ${id} -o out.mov`));
}

// -- sign in --------------------------------------------------------------------------------------

const dialog = document.getElementById("login");
whenUnauthorised(() => { if (!dialog.open) dialog.showModal(); });
document.getElementById("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  try {
    await signIn(form.get("kind"), form.get("user"), form.get("secret"));
    dialog.close();
    whoAmI();
    await loadScopes();
    route();
  } catch (error) {
    document.getElementById("login-error").textContent = error.message;
  }
});

function whoAmI() {
  const c = credentials();
  const who = document.getElementById("who");
  who.replaceChildren(c ? h("span", {}, `signed in as ${c.user} `, h("button", { onclick: () => { setCredentials(null); whoAmI(); loadScopes().then(route); } }, "sign out")) : "");
}

// -- Flows and Sources ------------------------------------------------------------------------

async function listPage(kind, params) {
  const { show } = visit();
  const query = new URLSearchParams();
  const label = params.get("label"), format = params.get("format"), codec = params.get("codec");
  const tag = params.get("tag"), sort = params.get("sort") || "created";
  if (label) query.set("label", label);
  if (format) query.set("format", format);
  if (codec && kind === "flows") query.set("codec", codec);
  if (tag && tag.includes("=")) query.set(`tag.${tag.split("=")[0]}`, tag.split("=").slice(1).join("="));
  query.set("sort_by", sort);
  if (params.get("reverse") === "1") query.set("reverse_order", "true");
  query.set("limit", "50");
  if (kind === "flows") query.set("include_timerange", "true");
  const form = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const next = new URLSearchParams();
    for (const [k, v] of f.entries()) if (v) next.set(k, v);
    location.hash = `#/${kind}?${next}`;
  } },
    h("input", { name: "label", placeholder: "label", value: label || "" }),
    h("select", { name: "format" }, ["", "video", "audio", "data", "image", "multi"].map((f) => {
      const urn = f === "image" ? "urn:x-tam:format:image" : f ? `urn:x-nmos:format:${f}` : "";  // (the spec's own URN)
      return h("option", { value: urn, selected: format === urn && urn !== "" }, f || "any format");
    })),
    kind === "flows" ? h("input", { name: "codec", placeholder: "codec (video/h264)", value: codec || "" }) : null,
    h("input", { name: "tag", placeholder: "tag name=value", value: tag || "" }),
    h("select", { name: "sort" }, ["created", kind === "flows" ? "metadata_updated" : "updated", "label"].map((s) =>
      h("option", { value: s, selected: s === sort }, `sort by ${s}`))),
    h("label", {}, h("input", { type: "checkbox", name: "reverse", value: "1", checked: params.get("reverse") === "1" }), " reversed"),
    h("button", {}, "Search"));
  const body = h("div", {}, h("p", {}, "Loading…"));
  show(h("h1", {}, kind === "flows" ? "Flows" : "Sources"), form, body);
  let url = `/${kind}?${query}`;
  const rows = [];
  const more = async () => {
    try {
      // A filtered listing may come back short, or empty, with more to follow (the server
      // looks at a bounded stretch of the table per page): go on until there is something new
      // to show, or twenty pages.
      let p;
      let added = 0;
      for (let tries = 0; url && added === 0 && tries < 20; tries++) {
        p = await page(url);
        for (const item of p.items) rows.push(item);
        added += p.items.length;
        url = p.next;
      }
      const headings = kind === "flows" ? ["label", "format", "codec", "container", "timerange", "id"] : ["label", "format", "created", "id"];
      const cells = rows.map((r) => kind === "flows"
        ? [h("a", { href: `#/flows/${r.id}` }, r.label || "(no label)"), (r.format || "").split(":").pop(), r.codec || "", r.container || "", r.timerange || "", short(r.id)]
        : [h("a", { href: `#/sources/${r.id}` }, r.label || "(no label)"), (r.format || "").split(":").pop(), r.created || "", short(r.id)]);
      body.replaceChildren(
        h("p", { class: "count" }, `${rows.length}${p.count ? ` of ${p.count}` : ""} shown`),
        table(headings, cells),
        url ? h("button", { onclick: more, class: "more" }, "More") : "");
    } catch (error) {
      body.replaceChildren(failure(error));
    }
  };
  await more();
}

async function sourcePage(id) {
  const { show } = visit();
  try {
    const source = await json(`/sources/${id}`);
    const flows = await json(`/flows?source_id=${id}&limit=100`);
    const tree = await collectionTree(source, 0);
    const tags = Object.entries(source.tags || {}).map(([k, v]) => [k, Array.isArray(v) ? v.join(", ") : String(v)]);
    show(h("h1", {}, source.label || "Source"), properties(source), h("h3", {}, "Tags"), table(["name", "value"], tags),
      may("write") ? editForm(`/sources/${id}`, source, true) : h("p", { class: "hint", id: "read-only" }, "Read only: your credentials do not allow changes."),
      h("h2", {}, "Flows"), table(["label", "format", "codec", "id"], flows.map((f) =>
        [h("a", { href: `#/flows/${f.id}` }, f.label || "(no label)"), f.format.split(":").pop(), f.codec || "", short(f.id)])),
      h("h2", {}, "Collection"), tree);
  } catch (error) { show(failure(error)); }
}

// Label, description and one tag of a Source or Flow at ``path``; an empty field removes the
// label or description.
function editForm(path, doc, withDescription) {
  async function put(name, value) {
    if (value) await request(`${path}/${name}`, { method: "PUT", body: value });
    else if (doc[name] !== undefined) await request(`${path}/${name}`, { method: "DELETE" });
  }
  return h("form", { class: "edit", onsubmit: async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    try {
      if (f.get("label") !== (doc.label || "")) await put("label", f.get("label"));
      if (withDescription && f.get("description") !== (doc.description || "")) await put("description", f.get("description"));
      if (f.get("tag_name")) await request(`${path}/tags/${encodeURIComponent(f.get("tag_name"))}`, { method: "PUT", body: f.get("tag_value") });
      route();
    } catch (error) { e.target.append(failure(error)); }
  } },
    h("label", {}, "Label ", h("input", { name: "label", value: doc.label || "" })),
    withDescription ? h("label", {}, "Description ", h("input", { name: "description", value: doc.description || "" })) : null,
    h("label", {}, "Tag ", h("input", { name: "tag_name", placeholder: "name" }), h("input", { name: "tag_value", placeholder: "value" })),
    h("button", {}, "Save"));
}

async function collectionTree(source, depth) {
  const items = source.source_collection || [];
  if (!items.length || depth > 4) return h("p", { class: "hint" }, depth ? "" : "collects nothing");
  const list = h("ul", { class: "tree" });
  for (const item of items) {
    let child = null;
    try { child = await json(`/sources/${item.id}`); } catch { /* hidden or gone */ }
    list.append(h("li", {}, h("a", { href: `#/sources/${item.id}` }, child?.label || item.id), item.role ? ` (${item.role})` : "",
      child ? await collectionTree(child, depth + 1) : ""));
  }
  return list;
}

function properties(doc) {
  const rows = Object.entries(doc).filter(([k]) => k !== "tags").map(([k, v]) =>
    [k, typeof v === "object" ? h("code", {}, JSON.stringify(v)) : String(v)]);
  return table(["property", "value"], rows);
}

// -- a Flow ---------------------------------------------------------------------------------------

async function flowPage(id) {
  const here = visit();
  const show = here.show;
  let flow;
  let drawn; // the Flow whose segments the timeline draws: a multi-essence Flow's first video (or first) Flow
  try {
    flow = await json(`/flows/${id}?include_timerange=true`);
    drawn = flow;
    if (flow.format.endsWith(":multi")) {
      const members = await Promise.all((flow.flow_collection || []).map((m) => json(`/flows/${m.id}?include_timerange=true`).catch(() => null)));
      const present = members.filter(Boolean);
      drawn = present.find((m) => m.format.endsWith(":video")) || present[0] || flow;
    }
  } catch (error) { show(failure(error)); return; }
  const stills = await imageFlowBeside(flow);
  const video = h("video", { controls: true, muted: true, playsinline: true, id: "player" });
  const segmentsBox = h("div", { id: "segments" });
  const status = h("p", { class: "hint", id: "live-status" });
  const canvas = h("canvas", { class: "timeline", id: "timeline" });
  const rangeText = h("code", { id: "selected-range" }, "");
  let player = null;
  const thumbs = h("div", { class: "thumbs", id: "thumbs" });
  const hasVideo = flow.format.endsWith(":video") || flow.format.endsWith(":multi");
  const timeline = new Timeline(canvas, drawn.id, { onSelect: (range) => select(range), onView: (view, data) => thumbnails(view, data) });

  // Stills along the view, where segments are: the pictures of an image Flow beside this one
  // where there is one, else frames the server extracts on request.
  function thumbnails(view, data) {
    if (stills) { stillsOf(stills, view); return; }
    if (!hasVideo) return;
    const n = 8;
    const step = (view.end - view.start) / BigInt(n);
    const buckets = data.coverage_buckets || [];
    thumbs.replaceChildren(...Array.from({ length: n }, (_, i) => {
      const at = view.start + step * BigInt(i) + step / 2n;
      const covered = data.items
        ? data.items.some((s) => s.start <= at && at < s.end)
        : (buckets.length ? buckets[Math.min(buckets.length - 1, Math.floor(((i + 0.5) * buckets.length) / n))] : 1) > 0;
      if (!covered) return h("span", { class: "thumb gap" }, "gap");
      const src = withToken(`/x-tamstore/frames/${id}.jpg?at=${formatTimestamp(at)}&width=160`);
      return h("img", { class: "thumb", src, alt: describe(at), title: describe(at), loading: "lazy" });
    }));
  }

  async function stillsOf(imageFlow, view) {
    const n = 8;
    const step = (view.end - view.start) / BigInt(n);
    const shown = await Promise.all(Array.from({ length: n }, async (_, i) => {
      const at = view.start + step * BigInt(i) + step / 2n;
      try {
        const [seg] = await json(`/flows/${imageFlow}/segments?timerange=${encodeURIComponent(formatTimerange(at, at + 1n))}&limit=1`);
        const url = seg && (seg.get_urls || [])[0];
        if (url) return h("img", { class: "thumb still", src: url.url, alt: describe(at), title: describe(at), loading: "lazy" });
      } catch { /* hidden or gone: a gap */ }
      return h("span", { class: "thumb gap" }, "gap");
    }));
    thumbs.replaceChildren(...shown);
  }

  async function select(range) {
    rangeText.textContent = formatTimerange(range.start, range.end);
    playRange(range);
    await listSegments(range);
  }

  // What HLS carries: a multi-essence Flow plays what of it can (the server leaves the rest out);
  // a video or audio Flow plays in MPEG-TS or fragmented MP4, not WAV (uncompressed audio).
  const playable = flow.format.endsWith(":multi") ||
    ((flow.format.endsWith(":video") || flow.format.endsWith(":audio")) && HLS_CONTAINERS.includes(flow.container));
  function playRange(range, live = false) {
    if (player) player.destroy();
    if (!playable) return;
    const tr = live ? `[${range.start / NS}:0_` : formatTimerange(range.start, range.end);
    player = play(video, withToken(`/x-tamstore/hls/${id}.m3u8?timerange=${encodeURIComponent(tr)}`), live);
  }

  async function listSegments(range) {
    const member = drawn.id;
    if (!member) { segmentsBox.replaceChildren(); return; }
    try {
      const segs = await json(`/flows/${member}/segments?timerange=${encodeURIComponent(formatTimerange(range.start, range.end))}&limit=50`);
      segmentsBox.replaceChildren(h("h2", {}, "Segments"), table(["timerange", "object", "URL"], segs.map((s) =>
        [s.timerange, short(s.object_id), (s.get_urls || [])[0] ? mediaLink(s.get_urls[0]) : ""])));
    } catch (error) { segmentsBox.replaceChildren(failure(error)); }
  }

  const editable = editForm(`/flows/${id}`, flow, true);
  const tags = Object.entries(flow.tags || {}).map(([k, v]) => [k, Array.isArray(v) ? v.join(", ") : String(v)]);
  show(h("h1", {}, flow.label || "Flow"),
    h("p", { class: "hint" }, `${flow.format} ${flow.codec || ""} ${flow.container || ""} — ${id}`),
    h("section", {}, h("h2", {}, "Timeline"), h("p", { class: "hint" }, "Wheel to zoom, drag to pan, click or shift-drag to play a range."),
      canvas, thumbs, h("p", {}, "Selected: ", rangeText, " ",
        h("button", { id: "follow", onclick: () => follow() }, "Follow live"))),
    h("section", { class: "player" }, playable ? video : notPlayable(flow, id), status),
    segmentsBox,
    h("section", {}, h("h2", {}, "Properties"), properties(flow), h("h3", {}, "Tags"), table(["name", "value"], tags),
      may("write") ? editable : h("p", { class: "hint", id: "read-only" }, "Read only: your credentials do not allow changes.")));
  if (here.gone) return;
  let events = null;
  leave = () => { if (events) events.close(); if (player) player.destroy(); };

  const extent = parseTimerange(drawn.timerange || "");
  if (extent && extent.start !== null && extent.end !== null) {
    await timeline.show(extent.start, extent.end);
    if (here.gone) return;
    const first = { start: extent.start, end: extent.start + 10n * NS < extent.end ? extent.start + 10n * NS : extent.end };
    timeline.selection = first;
    timeline.draw();
    rangeText.textContent = formatTimerange(first.start, first.end);
    playRange(first);
    listSegments(first);
  } else {
    canvas.replaceWith(h("p", { class: "hint" }, "No segments yet."));
  }

  // Live: new segments extend the timeline as they are registered (the event stream), and
  // "Follow live" plays the live edge.
  const watched = flow.format.endsWith(":multi") ? (flow.flow_collection || []).map((m) => m.id) : [id];
  events = new EventSource(withToken(`/x-tamstore/events?events=flows/segments_added&flow_ids=${watched.join(",")}`));
  let added = 0;
  events.onopen = () => { status.dataset.live = "open"; timeline.view && timeline.load(); };
  events.addEventListener("flows/segments_added", async (e) => {
    const body = JSON.parse(e.data);
    added += body.event.segments.length;
    status.textContent = `${added} segments added while watching`;
    status.dataset.added = String(added);
    const last = body.event.segments.map((s) => parseTimerange(s.timerange)).reduce((a, b) => (b.end > a.end ? b : a));
    const view = timeline.view;
    if (!view) { await timeline.show(last.start, last.end); return; }
    if (last.end > view.end) {
      const span = view.end - view.start;
      await timeline.show(last.end - span > view.start ? view.start + (last.end - view.end) : view.start, last.end);
    } else {
      await timeline.load();
    }
  });
  function follow() {
    const view = timeline.view;
    const start = view ? view.end - 30n * NS : 0n;
    playRange({ start: start > 0n ? start : 0n, end: null }, true);
    status.textContent = "following the live edge";
  }
}

// An image Flow giving stills for ``flow``: itself, one it collects, or one collected with it.
async function imageFlowBeside(flow) {
  if (flow.format.endsWith(":image")) return flow.id;
  const ids = (flow.flow_collection || []).map((m) => m.id);
  for (const parent of (flow.collected_by || []).slice(0, 4)) {
    try { ids.push(...((await json(`/flows/${parent}`)).flow_collection || []).map((m) => m.id)); } catch { /* hidden or gone */ }
  }
  for (const other of ids.filter((x) => x !== flow.id).slice(0, 16)) {
    try { if ((await json(`/flows/${other}`)).format.endsWith(":image")) return other; } catch { /* hidden or gone */ }
  }
  return null;
}

function play(video, url, live) {
  const Hls = window.Hls;
  if (Hls && Hls.isSupported()) {
    const c = credentials();
    const hls = new Hls({
      liveSyncDurationCount: 3,
      xhrSetup: (xhr) => { if (c && !c.token) xhr.setRequestHeader("Authorization", "Basic " + btoa(`${c.user}:${c.secret}`)); },
    });
    hls.loadSource(url);
    hls.attachMedia(video);
    hls.on(Hls.Events.MANIFEST_PARSED, () => { video.dataset.loaded = "true"; video.play().catch(() => {}); });
    hls.on(Hls.Events.ERROR, (_, data) => { if (data.fatal) video.dataset.error = data.details; });
    return { destroy: () => hls.destroy() };
  }
  video.src = url; // the browser's own HLS (Safari)
  video.dataset.loaded = "true";
  video.play().catch(() => {});
  return { destroy: () => { video.removeAttribute("src"); video.load(); } };
}

// -- the rest -------------------------------------------------------------------------------------

async function webhooksPage() {
  const { show } = visit();
  try {
    const hooks = await json("/service/webhooks?limit=100");
    show(h("h1", {}, "Webhooks"), table(["URL", "events", "status", "error"], hooks.map((w) =>
      [w.url, (w.events || []).join(", "), w.status || "", w.error ? w.error.summary : ""])));
  } catch (error) { show(h("h1", {}, "Webhooks"), failure(error)); }
}

async function deleteRequestsPage() {
  const { show } = visit();
  try {
    const requests = await json("/flow-delete-requests");
    show(h("h1", {}, "Delete requests"), table(["Flow", "status", "left to delete", "error"], requests.map((r) =>
      [short(r.flow_id), r.status, r.timerange_remaining || "", r.error ? r.error.summary : ""])));
  } catch (error) { show(h("h1", {}, "Delete requests"), failure(error)); }
}

async function storagePage() {
  const { show } = visit();
  try {
    const backends = await json("/service/storage-backends");
    const usage = await json("/x-tamstore/analytics/storage?days=30");
    const chart = h("canvas", { class: "chart", id: "usage-chart" });
    show(h("h1", {}, "Storage"), table(["label", "id", "default"], backends.map((b) => [b.label || "", short(b.id), b.default_storage ? "yes" : ""])),
      h("h2", {}, "Usage"), table(["backend", "objects", "bytes"], (usage.backends || []).map((b) => [b.label || short(b.storage_id), b.objects, b.bytes])),
      h("h2", {}, "Bytes stored, by day"), chart);
    drawUsage(chart, sumByDay(usage.backends || []));
  } catch (error) { show(h("h1", {}, "Storage"), failure(error)); }
}

function sumByDay(backends) {
  const days = new Map();
  for (const b of backends) for (const d of b.history || []) days.set(d.day, (days.get(d.day) || 0) + Number(d.bytes || 0));
  return [...days.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([day, bytes]) => ({ day, bytes }));
}

function drawUsage(canvas, history) {
  canvas.width = canvas.clientWidth || 600;
  canvas.height = canvas.clientHeight || 200;
  const g = canvas.getContext("2d");
  const values = history.map((d) => Number(d.bytes || 0));
  const top = Math.max(1, ...values);
  g.strokeStyle = "#2f7d4f";
  g.beginPath();
  values.forEach((v, i) => {
    const x = values.length > 1 ? (i * (canvas.width - 10)) / (values.length - 1) + 5 : canvas.width / 2;
    const y = canvas.height - 10 - (v / top) * (canvas.height - 20);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
  canvas.dataset.points = String(values.length);
}

async function servicePage() {
  const { show } = visit();
  try {
    const service = await json("/service");
    show(h("h1", {}, service.name || "Service"), properties(service));
  } catch (error) { show(failure(error)); }
}

// -- routing --------------------------------------------------------------------------------------

async function route() {
  leave();
  leave = () => {};
  visits += 1;
  main.replaceChildren(h("p", { class: "hint", id: "loading" }, "Loading…"));
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  if (parts.length === 0 || parts[0] === "flows") {
    if (parts[1]) return flowPage(parts[1]);
    return listPage("flows", params);
  }
  if (parts[0] === "sources") return parts[1] ? sourcePage(parts[1]) : listPage("sources", params);
  if (parts[0] === "webhooks") return webhooksPage();
  if (parts[0] === "delete-requests") return deleteRequestsPage();
  if (parts[0] === "storage") return storagePage();
  if (parts[0] === "service") return servicePage();
  visit().show(h("p", {}, "No such page."));
}

window.addEventListener("hashchange", route);
whoAmI();
loadScopes().then(route);
export { describe, durationText };
