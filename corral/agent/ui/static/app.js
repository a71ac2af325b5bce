// corral's host view: vanilla JS and SVG, no build step, nothing loaded from elsewhere.
// Polls /ui/api/host and /ui/api/history; the API token (when the agent wants one) is asked
// once and kept in sessionStorage, sent as "Authorization: Bearer <token>".
"use strict";

(function () {
  const POLL_MS = 2000;
  const TOKEN_KEY = "corral.token";
  const SVGNS = "http://www.w3.org/2000/svg";
  const POOL_SHARED = "#7c8496";
  const state = {
    host: null, topoKey: "", byCpu: new Map(), workloads: new Map(), colours: new Map(),
    poolColours: new Map(), points: [], events: [], since: null, after: 0, control: false,
    selected: null, pinnedCpu: null, paused: false, timer: null, sort: { key: "id", asc: true },
    colourBy: "workload",
  };

  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const fmt = (v, digits = 2) => (v == null || Number.isNaN(v) ? "–" : Number(v).toFixed(digits));
  const pct = (v) => (v == null ? "–" : `${Math.round(v * 100)}%`);

  // --- CPU lists ("0-3,8") -----------------------------------------------------------
  function parseCpus(text) {
    const out = [];
    if (!text) return out;
    for (const part of String(text).split(",")) {
      if (!part) continue;
      const [a, b] = part.split("-").map(Number);
      for (let c = a; c <= (b === undefined ? a : b); c++) out.push(c);
    }
    return out;
  }

  // --- colours -------------------------------------------------------------------------
  // One colour per workload, distinct by construction: golden-angle hues, two lightnesses.
  function workloadColour(index) {
    const hue = (index * 137.508 + 15) % 360;
    const light = index % 2 === 0 ? 46 : 60;
    return `hsl(${hue.toFixed(2)}, 68%, ${light}%)`;
  }
  function poolColour(pool, numaCount) {
    if (pool === "shared") return POOL_SHARED;
    const n = Number(String(pool).replace("numa-", ""));
    const hue = (20 + (n * 360) / Math.max(numaCount, 1)) % 360;
    return `hsl(${hue.toFixed(1)}, 45%, 42%)`;
  }
  function heat(u) {
    // white -> amber -> red
    const t = Math.max(0, Math.min(1, u));
    const hue = 50 - 50 * t;
    const light = 96 - 46 * t;
    return `hsl(${hue.toFixed(1)}, 90%, ${light.toFixed(1)}%)`;
  }

  // --- fetching --------------------------------------------------------------------------
  function token() { return sessionStorage.getItem(TOKEN_KEY); }
  async function api(path) {
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    const response = await fetch(path, { headers, cache: "no-store" });
    if (response.status === 401) {
      const err = new Error("the agent wants its API token");
      err.unauthorised = true;
      throw err;
    }
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(`${path}: ${response.status} ${detail}`);
    }
    return response.json();
  }

  function askToken(message) {
    $("token-panel").hidden = false;
    $("token-error").textContent = message || "";
    $("token-input").focus();
  }

  function banner(text) {
    const el = $("banner");
    el.hidden = !text;
    el.textContent = text || "";
  }

  async function poll() {
    state.timer = null;
    if (state.paused) return;
    try {
      const query = new URLSearchParams({ after: String(state.after) });
      if (state.since != null) query.set("since", String(state.since));
      const [host, history] = await Promise.all([
        api("/ui/api/host"), api(`/ui/api/history?${query}`),
      ]);
      $("token-panel").hidden = true;
      $("forget-token").hidden = !token();
      banner("");
      updateHost(host);
      updateHistory(history);
      $("updated").textContent = `updated ${clock(Date.now() / 1000)}`;
    } catch (err) {
      if (err.unauthorised) {
        const refused = token();
        sessionStorage.removeItem(TOKEN_KEY);
        askToken(refused ? "that token was refused" : "");
        return; // resumes when a token is entered
      }
      banner(`cannot reach the agent: ${err.message}; retrying`);
    }
    schedule();
  }
  function schedule() {
    if (!state.paused && state.timer == null) state.timer = setTimeout(poll, POLL_MS);
  }

  // --- the host ----------------------------------------------------------------------------
  function updateHost(host) {
    state.host = host;
    const topo = host.topology;
    $("host-name").textContent = topo.name || "host";
    $("host-describe").textContent = topo.describe;
    const badge = $("agent-state");
    badge.textContent = host.dry_run ? "dry run" : "enforcing";
    badge.className = host.dry_run ? "badge dry" : "badge";
    badge.title = host.enforcer || "";

    // Stable colours: a workload keeps its colour; a new one takes the next index.
    for (const id of host.workloads.map((w) => w.id).sort()) {
      if (!state.colours.has(id)) state.colours.set(id, { index: state.colours.size });
    }
    state.workloads = new Map(host.workloads.map((w) => [w.id, w]));
    const numaCount = new Set(topo.cpus.map((c) => c[3])).size;
    state.poolColours = new Map(Object.keys(host.pools).filter((p) => p !== "exclusive")
      .map((p) => [p, poolColour(p, numaCount)]));

    const key = `${topo.name}|${topo.cpus.length}|${topo.cpus.map((c) => c.join(":")).join(",")}`;
    if (key !== state.topoKey) {
      state.topoKey = key;
      drawMap();
    }
    paintMap();
    drawLegend();
    renderTable();
    renderControlSummary();
    refreshDetails();
  }

  function colourOf(id) {
    const entry = state.colours.get(id);
    return entry ? workloadColour(entry.index) : "#999";
  }

  // What holds each CPU: exclusive and immovable workloads solid, numa and shared pools
  // hatched in the pool's colour, nothing: free.
  function holdersByCpu() {
    const out = new Map();
    for (const w of state.host.workloads) {
      for (const cpu of parseCpus(w.cpuset)) {
        if (!out.has(cpu)) out.set(cpu, []);
        out.get(cpu).push(w);
      }
    }
    return out;
  }
  function cpuState(holders) {
    const by = (p) => holders.filter((w) => w.policy === p);
    const ex = by("exclusive"), im = by("immovable"), nu = by("numa"), sh = by("shared");
    if (ex.length) return { kind: "exclusive", owner: ex[0] };
    if (im.length) return { kind: "immovable", owner: im[0] };
    if (nu.length) return { kind: "numa", pool: nu[0].pool || "shared" };
    if (sh.length) return { kind: "shared", pool: "shared" };
    return { kind: "free" };
  }

  // --- the map layout --------------------------------------------------------------------
  function tree(cpus) {
    const sockets = new Map();
    for (const [id, core, socket, numa, l3] of cpus) {
      if (!sockets.has(socket)) sockets.set(socket, new Map());
      const numas = sockets.get(socket);
      if (!numas.has(numa)) numas.set(numa, new Map());
      const l3s = numas.get(numa);
      if (!l3s.has(l3)) l3s.set(l3, new Map());
      const cores = l3s.get(l3);
      if (!cores.has(core)) cores.set(core, []);
      cores.get(core).push(id);
    }
    const sorted = (m) => [...m.entries()].sort((a, b) => a[0] - b[0]);
    return sorted(sockets).map(([s, numas]) => ({
      id: s,
      numas: sorted(numas).map(([n, l3s]) => ({
        id: n,
        l3s: sorted(l3s).map(([l, cores]) => ({
          id: l,
          cores: [...cores.entries()].map(([c, t]) => ({ id: c, threads: t.sort((a, b) => a - b) }))
            .sort((a, b) => a.threads[0] - b.threads[0]),
        })),
      })),
    }));
  }

  const LABEL = 13, PAD = 4, GAP = 4;
  function grid(count, columns, w, h, gap) {
    const cols = Math.max(1, Math.min(columns, count));
    const rows = Math.ceil(count / cols);
    return { cols, rows, w: cols * w + (cols - 1) * gap, h: rows * h + (rows - 1) * gap };
  }
  // Sizes of every level for cell width cw, l3 columns a, numa columns b.
  function measure(t, tpc, cw, a, b) {
    const ch = Math.round(cw * 0.72);
    const stack = Math.min(tpc, 2);
    const coreCols = Math.ceil(tpc / 2);
    const coreW = coreCols * cw + 1, coreH = stack * ch + 1;
    const maxCores = Math.max(...t.flatMap((s) => s.numas.flatMap((n) => n.l3s.map((l) => l.cores.length))));
    const perRow = Math.min(maxCores, 8);
    const cg = grid(maxCores, perRow, coreW, coreH, 2);
    const l3W = cg.w + 2 * PAD, l3H = cg.h + LABEL + PAD;
    const maxL3 = Math.max(...t.flatMap((s) => s.numas.map((n) => n.l3s.length)));
    const lg = grid(maxL3, a, l3W, l3H, GAP);
    const numaW = lg.w + 2 * PAD, numaH = lg.h + LABEL + PAD;
    const maxNuma = Math.max(...t.map((s) => s.numas.length));
    const ng = grid(maxNuma, b, numaW, numaH, GAP);
    const socketW = ng.w + 2 * PAD, socketH = ng.h + LABEL + 2 + PAD;
    return { cw, ch, coreW, coreH, perRow, l3W, l3H, a: lg.cols, numaW, numaH, b: ng.cols, socketW, socketH };
  }
  function chooseLayout(t, tpc, width) {
    const sockets = t.length;
    const across = sockets <= 4 ? sockets : 2;
    const socketRoom = (width - (across - 1) * 8) / across;
    const maxL3 = Math.max(...t.flatMap((s) => s.numas.map((n) => n.l3s.length)));
    const maxNuma = Math.max(...t.map((s) => s.numas.length));
    const heightBudget = Math.max(260, window.innerHeight * 0.62);
    let best = null;
    for (let cw = 26; cw >= 7; cw--) {
      for (let b = 1; b <= maxNuma; b++) {
        for (let a = 1; a <= maxL3; a++) {
          const m = measure(t, tpc, cw, a, b);
          if (m.socketW > socketRoom) continue;
          const rows = Math.ceil(sockets / across);
          const h = rows * m.socketH + (rows - 1) * 8;
          const score = { m, h, fits: h <= heightBudget };
          if (!best || (score.fits && !best.fits) ||
              (score.fits === best.fits && (score.fits ? cw > best.m.cw || (cw === best.m.cw && h < best.h) : h < best.h))) {
            best = score;
          }
        }
      }
      if (best && best.fits && best.m.cw > cw) break;
    }
    return { ...best.m, across, height: best.h };
  }

  function drawMap() {
    const host = state.host;
    const topo = host.topology;
    const container = $("map");
    const width = Math.max(320, container.clientWidth || 900);
    const t = tree(topo.cpus);
    const tpc = topo.threads_per_core || 1;
    const L = chooseLayout(t, tpc, width);
    const parts = [];
    const patterns = [];
    for (const [pool, colour] of state.poolColours) {
      patterns.push(hatch(`hatch-${pool}`, colour));
    }
    patterns.push(hatch("hatch-free-reserved", "#9aa4b8"));
    let y0 = 0;
    t.forEach((socket, si) => {
      const sx = (si % L.across) * (L.socketW + 8);
      const sy = Math.floor(si / L.across) * (L.socketH + 8);
      parts.push(`<g class="socket" data-socket="${socket.id}">`);
      parts.push(`<rect class="box-socket" x="${sx}" y="${sy}" width="${L.socketW}" height="${L.socketH}" rx="5"/>`);
      parts.push(`<text class="socket" x="${sx + PAD + 2}" y="${sy + 12}">socket ${socket.id}</text>`);
      socket.numas.forEach((numa, ni) => {
        const nx = sx + PAD + (ni % L.b) * (L.numaW + GAP);
        const ny = sy + LABEL + 2 + Math.floor(ni / L.b) * (L.numaH + GAP);
        parts.push(`<g class="numa" data-numa="${numa.id}"><rect class="box-numa" x="${nx}" y="${ny}" width="${L.numaW}" height="${L.numaH}" rx="4"/>`);
        parts.push(`<text class="numa" x="${nx + PAD}" y="${ny + 11}">NUMA ${numa.id}</text>`);
        numa.l3s.forEach((l3, li) => {
          const lx = nx + PAD + (li % L.a) * (L.l3W + GAP);
          const ly = ny + LABEL + Math.floor(li / L.a) * (L.l3H + GAP);
          parts.push(`<g class="l3" data-l3="${l3.id}"><rect class="box-l3" x="${lx}" y="${ly}" width="${L.l3W}" height="${L.l3H}" rx="3"/>`);
          parts.push(`<text x="${lx + PAD}" y="${ly + 10}">L3 ${l3.id}</text>`);
          l3.cores.forEach((core, ci) => {
            const cx = lx + PAD + (ci % L.perRow) * (L.coreW + 2);
            const cy = ly + LABEL - 2 + Math.floor(ci / L.perRow) * (L.coreH + 2);
            parts.push(`<g class="core" data-core="${core.id}">`);
            core.threads.forEach((cpu, ti) => {
              const tx = cx + Math.floor(ti / 2) * L.cw;
              const ty = cy + (ti % 2) * L.ch;
              parts.push(`<rect class="cpu" data-cpu="${cpu}" x="${tx + 0.5}" y="${ty + 0.5}" width="${L.cw - 1}" height="${L.ch - 1}" rx="1.5"/>`);
              parts.push(`<path class="be-mark" data-be-cpu="${cpu}" d="M${tx + L.cw - 0.5} ${ty + L.ch - 0.5}h-${(L.ch * 0.45).toFixed(1)}l${(L.ch * 0.45).toFixed(1)} -${(L.ch * 0.45).toFixed(1)}z" visibility="hidden"/>`);
              parts.push(`<circle class="reserved-mark" data-reserved-cpu="${cpu}" cx="${tx + 3}" cy="${ty + 3}" r="1.6" visibility="hidden"/>`);
            });
            parts.push(`<rect class="core" x="${cx}" y="${cy}" width="${L.coreW - 1}" height="${L.coreH - 1}" rx="2"/></g>`);
          });
          parts.push("</g>");
        });
        parts.push("</g>");
      });
      parts.push("</g>");
      y0 = Math.max(y0, sy + L.socketH);
    });
    const totalW = Math.min(L.across, t.length) * (L.socketW + 8) - 8;
    container.innerHTML = `<svg xmlns="${SVGNS}" width="${totalW}" height="${y0 + 1}" viewBox="0 0 ${totalW} ${y0 + 1}" role="img" aria-label="CPU map">` +
      `<defs>${patterns.join("")}</defs>${parts.join("")}</svg>`;
    state.byCpu = new Map([...container.querySelectorAll("rect.cpu")].map((el) => [Number(el.dataset.cpu), el]));
    state.beMarks = new Map([...container.querySelectorAll("path.be-mark")].map((el) => [Number(el.dataset.beCpu), el]));
    state.reservedMarks = new Map([...container.querySelectorAll("circle.reserved-mark")].map((el) => [Number(el.dataset.reservedCpu), el]));
  }
  function hatch(id, colour) {
    return `<pattern id="${esc(id)}" patternUnits="userSpaceOnUse" width="5" height="5" patternTransform="rotate(45)">` +
      `<rect width="5" height="5" fill="${colour}" fill-opacity="0.22"/><rect width="2.2" height="5" fill="${colour}"/></pattern>`;
  }

  function paintMap() {
    const host = state.host;
    if (!state.byCpu.size) return;
    // New pools (a numa workload on a new node) need their pattern: redraw once.
    const defs = $("map").querySelector("defs");
    for (const pool of state.poolColours.keys()) {
      if (!defs.querySelector(`#hatch-${CSS.escape(pool)}`)) { drawMap(); break; }
    }
    const holders = holdersByCpu();
    const usage = host.cpu_usage || {};
    const reserved = new Set(parseCpus(host.reserved));
    const beCpus = new Set(host.control ? parseCpus(host.control.be_cpus) : []);
    const selected = state.selected ? new Set(parseCpus((state.workloads.get(state.selected) || {}).cpuset)) : null;
    for (const [cpu, el] of state.byCpu) {
      const hs = holders.get(cpu) || [];
      const st = cpuState(hs);
      const u = usage[String(cpu)];
      let fill = "#ffffff";
      if (state.colourBy === "usage") {
        fill = u == null ? (st.kind === "free" ? "#ffffff" : "#eceff4") : heat(u);
        el.setAttribute("fill-opacity", "1");
      } else {
        if (st.kind === "exclusive" || st.kind === "immovable") fill = colourOf(st.owner.id);
        else if (st.kind === "numa" || st.kind === "shared") fill = `url(#hatch-${st.pool})`;
        else if (reserved.has(cpu)) fill = "url(#hatch-free-reserved)";
        el.setAttribute("fill-opacity", u == null || st.kind === "free" ? "1" : (0.35 + 0.65 * u).toFixed(3));
      }
      el.setAttribute("fill", fill);
      el.dataset.kind = st.kind;
      if (st.owner) el.dataset.workload = st.owner.id;
      else if (hs.length === 1) el.dataset.workload = hs[0].id;
      else delete el.dataset.workload;
      if (hs.length) el.dataset.workloads = hs.map((w) => w.id).join(" ");
      else delete el.dataset.workloads;
      if (st.pool) el.dataset.pool = st.pool; else delete el.dataset.pool;
      if (u != null) el.dataset.usage = String(u); else delete el.dataset.usage;
      el.classList.toggle("sel", !!selected && selected.has(cpu));
      el.classList.toggle("pinned", state.pinnedCpu === cpu);
      const mark = state.beMarks.get(cpu);
      if (mark) mark.setAttribute("visibility", beCpus.has(cpu) ? "visible" : "hidden");
      const rmark = state.reservedMarks.get(cpu);
      if (rmark) rmark.setAttribute("visibility", reserved.has(cpu) ? "visible" : "hidden");
    }
  }

  function drawLegend() {
    const legend = $("legend");
    legend.textContent = "";
    const item = (draw, label) => {
      const span = document.createElement("span");
      span.className = "item";
      span.appendChild(draw);
      span.appendChild(document.createTextNode(label));
      legend.appendChild(span);
    };
    const box = (fill, extra) => {
      const svg = document.createElementNS(SVGNS, "svg");
      svg.setAttribute("width", "14"); svg.setAttribute("height", "11");
      const rect = document.createElementNS(SVGNS, "rect");
      rect.setAttribute("x", "0.5"); rect.setAttribute("y", "0.5");
      rect.setAttribute("width", "13"); rect.setAttribute("height", "10");
      rect.setAttribute("fill", fill); rect.setAttribute("stroke", "#9aa4b8");
      svg.appendChild(rect);
      if (extra) svg.appendChild(extra);
      return svg;
    };
    if (state.colourBy === "usage") {
      for (const u of [0, 0.25, 0.5, 0.75, 1]) item(box(heat(u)), pct(u));
      item(box("#eceff4"), "held, no usage sample");
      item(box("#ffffff"), "free");
      return;
    }
    const solid = state.host.workloads.find((w) => w.policy === "exclusive" || w.policy === "immovable");
    if (solid) item(box(colourOf(solid.id)), "exclusive / immovable: the workload's own colour");
    const used = new Set(state.host.workloads.filter((w) => w.pool && w.pool !== "exclusive" && w.pool !== "immovable").map((w) => w.pool));
    for (const [pool, colour] of state.poolColours) {
      if (!used.has(pool)) continue;
      const svg = box(`url(#lg-${pool})`);
      const defs = document.createElementNS(SVGNS, "defs");
      defs.innerHTML = hatch(`lg-${pool}`, colour);
      svg.insertBefore(defs, svg.firstChild);
      item(svg, `${pool} pool`);
    }
    if ([...state.byCpu.values()].some((el) => el.dataset.kind === "free")) item(box("#ffffff"), "free");
    const mark = document.createElementNS(SVGNS, "path");
    mark.setAttribute("d", "M13.5 10.5h-5l5 -5z"); mark.setAttribute("fill", "#1d2330");
    if (state.host.control) item(box("#ffffff", mark), "BE may run here (controller)");
    const dot = document.createElementNS(SVGNS, "circle");
    dot.setAttribute("cx", "3.5"); dot.setAttribute("cy", "3.5"); dot.setAttribute("r", "1.6");
    dot.setAttribute("fill", "#1d2330");
    if (state.host.reserved) item(box("#ffffff", dot), "reserved for the system");
    const note = document.createElement("span");
    note.className = "muted";
    note.textContent = "intensity: CPU usage (each workload's sampled cores spread over its CPUs)";
    legend.appendChild(note);
  }

  // --- details and tooltip -----------------------------------------------------------------
  function kv(rows) {
    return `<dl class="kv">${rows.filter((r) => r[1] !== undefined).map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join("")}</dl>`;
  }
  function predictedText(w) {
    if (w.predicted_cpus != null) return `${fmt(w.predicted_cpus)} cores (given in the spec)`;
    if (w.prediction) return `${fmt(w.prediction.cores)} cores <span class="muted">(${esc(w.prediction.source)}${w.prediction.reason ? `: ${esc(w.prediction.reason)}` : ""})</span>`;
    return "–";
  }
  function workloadHtml(w) {
    return `<div class="wl-title"><span class="swatch" data-colour="${esc(w.id)}"></span>${esc(w.id)}</div>` + kv([
      ["policy", esc(w.policy)],
      ["QoS", esc(w.qos)],
      ["request", `${fmt(w.cpus)} cores`],
      ["predicted P95", predictedText(w)],
      ["cpuset", `<code>${esc(w.cpuset || "none")}</code>`],
      ["runs on", w.be_box && w.runs_on !== w.cpuset ? `<code>${esc(w.runs_on)}</code> (the controller's BE CPUs)` : undefined],
      ["pool", esc(w.pool || "–")],
      ["why these CPUs", esc(w.reason || w.status_reason || "–")],
      ["status", `${esc(w.status)}${w.status_reason ? ` <span class="muted">${esc(w.status_reason)}</span>` : ""}`],
      ["usage", w.usage_cores == null ? "no sample yet" : `${fmt(w.usage_cores, 3)} cores (${pct(w.utilisation)} of its request)`],
      ["enforcement", esc(w.enforcement) + (w.enforcement_errors.length ? `<br><span class="error-text">${w.enforcement_errors.map(esc).join("<br>")}</span>` : "")],
    ]);
  }
  function paintSwatches(root) {
    for (const el of root.querySelectorAll("[data-colour]")) el.style.background = colourOf(el.dataset.colour);
  }
  function cpuHtml(cpu, full) {
    const host = state.host;
    const rec = host.topology.cpus.find((c) => c[0] === cpu);
    if (!rec) return "";
    const siblings = host.topology.cpus.filter((c) => c[1] === rec[1]).map((c) => c[0]);
    const el = state.byCpu.get(cpu);
    const ids = el && el.dataset.workloads ? el.dataset.workloads.split(" ") : [];
    const u = (host.cpu_usage || {})[String(cpu)];
    let html = `<div class="wl-title">CPU ${cpu}</div>` + kv([
      ["core", `${rec[1]} (threads ${siblings.join(", ")})`],
      ["socket / NUMA / L3", `${rec[2]} / ${rec[3]} / ${rec[4]}`],
      ["usage", u == null ? "no sample" : pct(u)],
      ["held by", el ? esc(el.dataset.kind) + (el.dataset.pool ? ` (${esc(el.dataset.pool)} pool)` : "") : ""],
      ["reserved", parseCpus(host.reserved).includes(cpu) ? "yes: kept for the system" : undefined],
    ]);
    const ws = ids.map((id) => state.workloads.get(id)).filter(Boolean);
    if (ws.length === 1 || (el && el.dataset.workload && full)) {
      html += workloadHtml(state.workloads.get(el.dataset.workload) || ws[0]);
    } else if (ws.length) {
      const shown = full ? ws : ws.slice(0, 12);
      html += `<div>${ws.length} workloads share it:</div><div>` + shown.map((w) => (full
        ? `<button type="button" class="linklike" data-select="${esc(w.id)}">${esc(w.id)}</button> <span class="muted">${esc(w.qos)} ${esc(w.policy)} ${fmt(w.cpus)}</span>`
        : `${esc(w.id)} <span class="muted">${esc(w.qos)} ${esc(w.policy)}</span>`)).join("<br>") +
        (ws.length > shown.length ? `<br>… ${ws.length - shown.length} more` : "") + "</div>";
    }
    return html;
  }
  function showDetails(html) {
    const body = $("details-body");
    body.classList.remove("muted");
    body.innerHTML = html;
    paintSwatches(body);
  }
  function refreshDetails() {
    if (state.pinnedCpu != null) showDetails(cpuHtml(state.pinnedCpu, true));
    else if (state.selected && state.workloads.has(state.selected)) showDetails(workloadHtml(state.workloads.get(state.selected)));
  }
  function select(id) {
    state.selected = id;
    state.pinnedCpu = null;
    paintMap();
    renderTable();
    if (id && state.workloads.has(id)) showDetails(workloadHtml(state.workloads.get(id)));
  }

  function wireMap() {
    const map = $("map");
    const tip = $("tooltip");
    map.addEventListener("mousemove", (ev) => {
      const el = ev.target.closest && ev.target.closest("rect.cpu");
      if (!el) { tip.hidden = true; return; }
      tip.innerHTML = cpuHtml(Number(el.dataset.cpu), false);
      paintSwatches(tip);
      tip.hidden = false;
      const x = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
      const y = Math.min(ev.clientY + 14, window.innerHeight - tip.offsetHeight - 8);
      tip.style.left = `${x}px`;
      tip.style.top = `${y}px`;
    });
    map.addEventListener("mouseleave", () => { tip.hidden = true; });
    map.addEventListener("click", (ev) => {
      const el = ev.target.closest && ev.target.closest("rect.cpu");
      if (!el) return;
      const cpu = Number(el.dataset.cpu);
      state.selected = el.dataset.workload || null;
      state.pinnedCpu = cpu;
      paintMap();
      renderTable();
      showDetails(cpuHtml(cpu, true));
    });
    $("details").addEventListener("click", (ev) => {
      const b = ev.target.closest && ev.target.closest("[data-select]");
      if (b) select(b.dataset.select);
    });
  }

  // --- the workload table --------------------------------------------------------------
  function sortValue(w, key) {
    if (key === "predicted") return w.predicted_cpus != null ? w.predicted_cpus : (w.prediction ? w.prediction.cores : -1);
    const v = w[key];
    return v == null ? "" : v;
  }
  function shortCpus(text) {
    if (!text) return "";
    const n = parseCpus(text).length;
    return text.length <= 28 ? text : `${n} CPUs: ${text.slice(0, 22).replace(/,[^,]*$/, "")},…`;
  }
  const clock = (s) => new Date(s * 1000).toLocaleTimeString([], { hour12: false });
  function renderTable() {
    if (!state.host) return;
    const text = $("workload-filter").value.trim().toLowerCase();
    const qos = $("filter-qos").value, policy = $("filter-policy").value, status = $("filter-status").value;
    const all = state.host.workloads;
    const rows = all.filter((w) => (!qos || w.qos === qos) && (!policy || w.policy === policy) &&
      (!status || w.status === status) &&
      (!text || [w.id, w.cpuset, w.reason, w.status, w.qos, w.policy, w.pool].some((v) => String(v || "").toLowerCase().includes(text))));
    const { key, asc } = state.sort;
    rows.sort((a, b) => {
      const x = sortValue(a, key), y = sortValue(b, key);
      const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
      return asc ? c : -c;
    });
    $("workload-count").textContent = rows.length === all.length ? `${all.length}` : `${rows.length} of ${all.length}`;
    const tbody = $("workloads").querySelector("tbody");
    tbody.innerHTML = rows.map((w) => `<tr data-workload="${esc(w.id)}" class="${w.id === state.selected ? "sel" : ""}">` +
      `<td><span class="swatch" data-colour="${esc(w.id)}"></span>${esc(w.id)}</td><td>${esc(w.qos)}</td><td>${esc(w.policy)}</td>` +
      `<td class="num">${fmt(w.cpus)}</td><td class="num">${w.predicted_cpus != null ? fmt(w.predicted_cpus) : (w.prediction ? fmt(w.prediction.cores) : "–")}</td>` +
      `<td class="num">${w.usage_cores == null ? "–" : fmt(w.usage_cores, 3)}</td>` +
      `<td class="status-${esc(w.status)}">${esc(w.status)}</td><td class="cpuset" title="${esc(w.cpuset || "")}">${esc(shortCpus(w.cpuset))}</td>` +
      `<td class="reason">${esc(w.reason || w.status_reason || "")}</td></tr>`).join("");
    paintSwatches(tbody);
    for (const th of $("workloads").querySelectorAll("th")) {
      th.classList.toggle("sorted", th.dataset.sort === key);
      th.classList.toggle("asc", th.dataset.sort === key && asc);
    }
  }
  function wireTable() {
    for (const id of ["workload-filter", "filter-qos", "filter-policy", "filter-status"]) {
      $(id).addEventListener("input", renderTable);
    }
    $("workloads").querySelector("thead").addEventListener("click", (ev) => {
      const th = ev.target.closest("th");
      if (!th) return;
      const key = th.dataset.sort;
      state.sort = { key, asc: state.sort.key === key ? !state.sort.asc : true };
      renderTable();
    });
    $("workloads").querySelector("tbody").addEventListener("click", (ev) => {
      const tr = ev.target.closest("tr");
      if (tr) select(tr.dataset.workload === state.selected ? null : tr.dataset.workload);
    });
  }

  // --- the time view -------------------------------------------------------------------------
  function updateHistory(history) {
    if (history.last_seq < state.after) { // the agent restarted: its history starts again
      Object.assign(state, { points: [], events: [], since: null, after: 0 });
      return;
    }
    state.control = !!history.control;
    $("time-section").hidden = !state.control;
    $("no-control").hidden = state.control;
    if (history.points.length) {
      state.points.push(...history.points);
      state.since = history.points[history.points.length - 1].t;
      const cutoff = state.since - history.keep_s;
      while (state.points.length && state.points[0].t < cutoff) state.points.shift();
    }
    if (history.events.length) {
      state.events.push(...history.events);
      if (state.events.length > 2000) state.events.splice(0, state.events.length - 2000);
    }
    state.after = history.last_seq;
    if (state.control) {
      drawCharts();
      renderLog();
    }
  }

  function renderControlSummary() {
    const c = state.host && state.host.control;
    const el = $("control-summary");
    if (!c) { el.textContent = ""; return; }
    const lc = (c.lc || []).map((w) => `<span><b>${esc(w.name)}</b> p${esc(w.slo && w.slo.percentile)} ${fmt(w.latency_ms, 3)} ms / SLO ${fmt(w.slo && w.slo.target_ms, 3)} ms` +
      `${w.signal && w.signal !== "ok" ? ` <span class="error-text">${esc(w.signal)}: ${esc(w.signal_reason)}</span>` : ""}</span>`).join("");
    el.innerHTML = `<span>mode <span class="mode mode-${esc(c.mode)}">${esc(c.mode)}</span> <span class="muted">${esc(c.reason)}</span></span>` +
      `<span>slack <b>${fmt(c.slack, 3)}</b></span><span>LC load <b>${pct(c.load)}</b></span>` +
      `<span title="${esc(c.be_cpus)}">BE <b>${esc(c.be_cores)}</b> cores <code>${esc(shortCpus(c.be_cpus))}</code>, ${esc(c.be_weight)}</span>${lc}`;
  }

  function timeAxis(t0, t1, x, y, height) {
    const out = [];
    const span = t1 - t0;
    const step = [10, 30, 60, 120, 300, 600, 900, 1800].find((s) => span / s <= 7) || 3600;
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
      const px = x(t).toFixed(1);
      const label = new Date(t * 1000).toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit", second: step < 60 ? "2-digit" : undefined });
      out.push(`<line class="grid" x1="${px}" x2="${px}" y1="${y}" y2="${y + height}"/><text x="${px}" y="${y + height + 12}" text-anchor="middle">${esc(label)}</text>`);
    }
    return out.join("");
  }
  function line(points, x, y, colour, dash) {
    const segs = [];
    let cur = [];
    for (const [t, v] of points) {
      if (v == null) { if (cur.length) segs.push(cur); cur = []; continue; }
      cur.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
    }
    if (cur.length) segs.push(cur);
    return segs.map((s) => (s.length === 1 ? `<circle cx="${s[0].split(",")[0]}" cy="${s[0].split(",")[1]}" r="1.8" fill="${colour}"/>` :
      `<polyline fill="none" stroke="${colour}" stroke-width="1.6" ${dash ? 'stroke-dasharray="5 3"' : ""} points="${s.join(" ")}"/>`)).join("");
  }
  function chartFrame(el, draw) {
    const width = Math.max(300, el.clientWidth || 500);
    const height = 150, left = 44, right = 10, top = 8, bottom = 30;
    const plotW = width - left - right, plotH = height - top - bottom;
    const pts = state.points;
    const t1 = pts.length ? pts[pts.length - 1].t : Date.now() / 1000;
    const t0 = Math.min(pts.length ? pts[0].t : t1 - 60, t1 - 60);
    const x = (t) => left + ((t - t0) / Math.max(t1 - t0, 1)) * plotW;
    const body = draw({ x, t0, t1, left, top, plotW, plotH });
    el.innerHTML = `<svg xmlns="${SVGNS}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">` +
      timeAxis(t0, t1, x, top, plotH) +
      `<line class="axis" x1="${left}" x2="${left}" y1="${top}" y2="${top + plotH}"/>` +
      `<line class="axis" x1="${left}" x2="${left + plotW}" y1="${top + plotH}" y2="${top + plotH}"/>${body}</svg>`;
  }
  function yTicks(y, max, left, plotW, label) {
    let out = "";
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      const py = y(v).toFixed(1);
      out += `<line class="grid" x1="${left}" x2="${left + plotW}" y1="${py}" y2="${py}"/><text x="${left - 4}" y="${Number(py) + 3}" text-anchor="end">${esc(label(v))}</text>`;
    }
    return out;
  }
  function legendRow(items, left, top) {
    return items.map(([label, colour, dash], i) => `<g transform="translate(${left + 8 + i * 130},${top + 4})"><line x1="0" x2="16" y1="4" y2="4" stroke="${colour}" stroke-width="2" ${dash ? 'stroke-dasharray="4 2"' : ""}/><text x="20" y="8">${esc(label)}</text></g>`).join("");
  }
  const SERIES = ["#2458c5", "#8e3fb5", "#138a72", "#b5651d"];
  function drawCharts() {
    const pts = state.points;
    const names = [...new Set(pts.flatMap((p) => p.lc.map((w) => w.name)))];
    chartFrame($("chart-latency"), ({ x, left, top, plotW, plotH }) => {
      let max = 0;
      for (const p of pts) for (const w of p.lc) max = Math.max(max, w.latency_ms || 0, w.target_ms || 0);
      max = max > 0 ? max * 1.15 : 1;
      const y = (v) => top + plotH - (Math.min(v, max) / max) * plotH;
      let out = yTicks(y, max, left, plotW, (v) => `${v < 10 ? v.toFixed(2) : v.toFixed(0)} ms`);
      // mode band along the bottom
      const modeColour = { grow: "#2e8b57", hold: "#6c7387", shrink: "#d27a12", disable: "#c62f2f" };
      for (let i = 0; i < pts.length - 1; i++) {
        const c = modeColour[pts[i].mode];
        if (!c) continue;
        out += `<rect x="${x(pts[i].t).toFixed(1)}" y="${top + plotH - 3}" width="${Math.max(x(pts[i + 1].t) - x(pts[i].t), 0.5).toFixed(1)}" height="3" fill="${c}"/>`;
      }
      // controller actions as ticks
      for (const e of state.events) {
        if (!String(e.kind).startsWith("control") || e.at_s < pts[0]?.t) continue;
        const px = x(e.at_s).toFixed(1);
        out += `<line x1="${px}" x2="${px}" y1="${top + plotH - 10}" y2="${top + plotH - 4}" stroke="${e.kind === "control-mode" ? "#1d2330" : "#d27a12"}" stroke-width="1"/>`;
      }
      const legend = [];
      names.forEach((name, i) => {
        const colour = SERIES[i % SERIES.length];
        out += line(pts.map((p) => [p.t, (p.lc.find((w) => w.name === name) || {}).target_ms]), x, y, "#c62f2f", true);
        out += line(pts.map((p) => [p.t, (p.lc.find((w) => w.name === name) || {}).latency_ms]), x, y, colour, false);
        legend.push([`${name} p99`, colour, false]);
      });
      legend.push(["SLO", "#c62f2f", true]);
      return out + legendRow(legend, left, top);
    });
    chartFrame($("chart-share"), ({ x, left, top, plotW, plotH }) => {
      const y = (v) => top + plotH - Math.max(0, Math.min(v, 1)) * plotH;
      let out = yTicks(y, 1, left, plotW, (v) => `${Math.round(v * 100)}%`);
      out += line(pts.map((p) => [p.t, p.load]), x, y, SERIES[0], false);
      out += line(pts.map((p) => [p.t, p.be_share]), x, y, "#d27a12", false);
      out += line(pts.map((p) => [p.t, p.be_usage_share]), x, y, "#d27a12", true);
      return out + legendRow([["LC load", SERIES[0], false], ["BE CPUs", "#d27a12", false], ["BE usage", "#d27a12", true]], left, top);
    });
  }

  function renderLog() {
    const text = $("log-filter").value.trim().toLowerCase();
    const rows = [];
    for (let i = state.events.length - 1; i >= 0 && rows.length < 300; i--) {
      const e = state.events[i];
      if (text && ![e.kind, e.workload_id, e.detail].some((v) => String(v || "").toLowerCase().includes(text))) continue;
      const cls = String(e.kind).startsWith("control") ? (e.kind === "control-refused" ? "control refused" : "control") : "";
      rows.push(`<tr class="${cls}"><td class="muted">${esc(clock(e.at_s))}</td><td class="kind">${esc(e.kind)}</td>` +
        `<td>${esc(e.workload_id || "")}</td><td>${esc(e.detail)}</td></tr>`);
    }
    $("log").innerHTML = rows.length ? `<table>${rows.join("")}</table>` : '<p class="muted">no events yet</p>';
  }

  // --- start ---------------------------------------------------------------------------------
  function start() {
    wireMap();
    wireTable();
    $("log-filter").addEventListener("input", renderLog);
    $("colour-by").addEventListener("change", (ev) => {
      state.colourBy = ev.target.value;
      if (state.host) { paintMap(); drawLegend(); }
    });
    $("pause").addEventListener("click", () => {
      state.paused = !state.paused;
      $("pause").textContent = state.paused ? "resume" : "pause";
      if (!state.paused) poll();
    });
    $("forget-token").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      $("forget-token").hidden = true;
      askToken("");
    });
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
      $("token-input").value = "";
      $("token-panel").hidden = true;
      if (state.timer) { clearTimeout(state.timer); state.timer = null; }
      poll();
    });
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => {
        if (state.host) { drawMap(); paintMap(); }
        if (state.control) drawCharts();
      }, 150);
    });
    poll();
  }
  document.addEventListener("DOMContentLoaded", start);
})();
