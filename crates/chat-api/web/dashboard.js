"use strict";
// chat-api cache dashboard: reads /dashboard/stream (SSE over fetch, so a bearer token can be sent)
// and renders the frames. No framework, no innerHTML with data: DOM + textContent only (CSP).

(() => {
  const STREAM_URL = "/dashboard/stream";
  const TOKEN_KEY = "chat-api.dashboard-token";
  const HISTORY_MS = 120_000;       // charts cover the last 2 minutes
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15_000;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);

  // Pass ?interval_ms=… through from the page URL (server clamps it to 200..=5000).
  const pageParams = new URLSearchParams(location.search);
  const intervalMs = clampInt(pageParams.get("interval_ms"), 200, 5000, 500);
  // No frame for this long on an open stream: treat it as dead and reconnect.
  const STALL_MS = Math.max(5_000, intervalMs * 4 + 2_000);

  // ---------------------------------------------------------------- formatting

  function clampInt(s, lo, hi, dflt) {
    const n = Number.parseInt(s ?? "", 10);
    return Number.isFinite(n) ? Math.min(hi, Math.max(lo, n)) : dflt;
  }
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const nfCache = new Map();
  function nf(digits) {
    let f = nfCache.get(digits);
    if (!f) {
      f = new Intl.NumberFormat("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
      nfCache.set(digits, f);
    }
    return f;
  }
  /** A rate or count with sensible precision: 0, 0.25, 3.5, 12.3, 1,234. */
  function fmtNum(v) {
    if (!isNum(v)) return "–";
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (a < 1) return nf(2).format(v);
    if (a < 100) return nf(1).format(v);
    return nf(0).format(v);
  }
  function fmtInt(v) { return isNum(v) ? nf(0).format(v) : "–"; }
  function fmtMs(v) {
    if (!isNum(v)) return "–";
    if (v < 1) return nf(2).format(v);
    if (v < 100) return nf(1).format(v);
    return nf(0).format(v);
  }
  function fmtMsUnit(v) { return isNum(v) ? `${fmtMs(v)} ms` : "–"; }
  function fmtPct(v) { return isNum(v) ? `${nf(1).format(v * 100)} %` : "–"; }
  function fmtBytes(v) {
    if (!isNum(v)) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0, x = v;
    while (x >= 1024 && i < units.length - 1) { x /= 1024; i++; }
    return i === 0 ? `${nf(0).format(x)} B` : `${nf(x < 10 ? 2 : x < 100 ? 1 : 0).format(x)} ${units[i]}`;
  }
  function fmtUsd(v) {
    if (!isNum(v)) return "–";
    return "$" + nf(v < 0.01 && v > 0 ? 4 : 2).format(v);
  }
  function fmtDuration(secs) {
    if (!isNum(secs)) return "–";
    const s = Math.floor(secs);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), r = s % 60;
    if (d) return `${d}d ${h}h ${m}m`;
    if (h) return `${h}h ${m}m ${r}s`;
    if (m) return `${m}m ${r}s`;
    return `${r}s`;
  }
  const KIND_LABELS = {
    user_auth: "user auth", channel: "channel",
    user_channels: "user channels", latest_page: "latest page", older_page: "older pages",
    around_page: "around pages",
  };

  function setText(id, text) {
    const el = typeof id === "string" ? $(id) : id;
    if (el && el.textContent !== text) el.textContent = text;
  }
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  // ---------------------------------------------------------------- status / notices

  const statusEl = $("status");
  const statusDetailEl = $("status-detail");
  // #status holds only the state word (it is a live region); details/countdowns go next to it.
  function setStatus(state, detail) {
    statusEl.dataset.state = state;
    document.body.dataset.state = state;  // lets the CSS dim stale numbers
    setText(statusEl, state);
    setText(statusDetailEl, detail ?? "");
  }
  const noticeEl = $("notice");
  function showNotice(text, kind = "error") {
    if (!text) { noticeEl.hidden = true; noticeEl.textContent = ""; return; }
    noticeEl.dataset.kind = kind;
    setText(noticeEl, text);
    noticeEl.hidden = false;
  }

  // ---------------------------------------------------------------- token

  function getToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
  }
  function setToken(t) {
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
    } catch { /* storage disabled: the token lives only in memory */ }
    memToken = t;
  }
  let memToken = getToken();

  const tokenForm = $("token-form");
  const tokenInput = $("token-input");
  tokenForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = tokenInput.value.trim();
    if (!t) { tokenInput.focus(); return; }
    setToken(t);
    tokenInput.value = "";
    tokenForm.hidden = true;
    showNotice("");
    connectNow();
  });
  function askForToken(rejected) {
    tokenForm.hidden = false;
    showNotice(rejected
      ? "The dashboard token was rejected. Enter the server's DASHBOARD_TOKEN."
      : "This dashboard needs a token: enter the server's DASHBOARD_TOKEN.", "warn");
    tokenInput.focus();
  }

  // ---------------------------------------------------------------- history + charts

  /** @type {{t:number, rps:?number, hit:?number, db:?number, l2p99:?number, cmd:?number}[]} */
  const history = [];

  const CHARTS = [
    { key: "rps", title: "requests/s", fmt: fmtNum, always: true },
    { key: "hit", title: "cache hit ratio", fmt: fmtPct, axisFmt: () => "100 %", fixedMax: 1, always: true },
    { key: "db", title: "DB queries/s", fmt: fmtNum, always: true },
    { key: "l2p99", title: "remote cache p99 (ms)", fmt: fmtMsUnit },
    { key: "cmd", title: "Upstash commands/min", fmt: fmtNum },
  ];
  const W = 300, H = 80;   // SVG user units; the SVG scales to the box (non-scaling strokes)

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  const chartsEl = $("charts");
  for (const c of CHARTS) {
    const titleId = `chart-${c.key}-title`;
    const valueEl = el("span", { class: "chart-value", id: `chart-${c.key}-value`, text: "–" });
    const maxEl = el("span", { class: "axis axis-max", text: "" });
    const s = svg("svg", {
      viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img",
      class: "chart-svg", focusable: "false",
    });
    // The SVG <title> is the chart's text alternative (and a tooltip): latest, min and max.
    const desc = svg("title", {});
    desc.textContent = `${c.title}: no data yet`;
    s.append(desc);
    for (const f of [0.25, 0.5, 0.75]) {
      s.append(svg("line", { x1: 0, x2: W, y1: H * f, y2: H * f, class: "grid", "vector-effect": "non-scaling-stroke" }));
    }
    const area = svg("path", { class: "area", d: "" });
    const line = svg("path", { class: "line", d: "", "vector-effect": "non-scaling-stroke" });
    s.append(area, line);
    const dot = el("span", { class: "cursor-dot", "aria-hidden": "true", hidden: true });
    const rule = el("span", { class: "cursor-rule", "aria-hidden": "true", hidden: true });
    const box = el("div", { class: "chart-box" }, s, maxEl, rule, dot);
    const fig = el("figure", { class: "chart", "data-key": c.key },
      el("figcaption", null,
        el("span", { class: "chart-title", id: titleId, text: c.title }),
        valueEl),
      box,
      el("div", { class: "chart-axis", "aria-hidden": "true" },
        el("span", { text: "−2 min" }), el("span", { text: "now" })));
    if (!c.always) fig.hidden = true;
    chartsEl.append(fig);
    c.fig = fig; c.valueEl = valueEl; c.maxEl = maxEl; c.area = area; c.line = line; c.desc = desc;
    c.dot = dot; c.rule = rule; c.hoverFrac = null;
    // Pointer readout: the value nearest to the pointer replaces the latest value in the caption.
    box.addEventListener("pointermove", (ev) => {
      const r = box.getBoundingClientRect();
      c.hoverFrac = Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width));
      updateHover(c);
    });
    box.addEventListener("pointerleave", () => { c.hoverFrac = null; updateHover(c); });
  }

  function updateHover(c) {
    const latest = history.length ? history[history.length - 1] : null;
    if (c.hoverFrac === null || !latest || !c.max) {
      c.dot.hidden = true; c.rule.hidden = true;
      c.valueEl.classList.remove("hovering");
      setText(c.valueEl, c.fmt(latest ? latest[c.key] : null));
      return;
    }
    const t = latest.t - HISTORY_MS + c.hoverFrac * HISTORY_MS;
    let best = null;
    for (const p of history) {
      if (!isNum(p[c.key])) continue;
      if (!best || Math.abs(p.t - t) < Math.abs(best.t - t)) best = p;
    }
    if (!best || Math.abs(best.t - t) > HISTORY_MS / 20) {
      c.dot.hidden = true; c.rule.hidden = true;
      c.valueEl.classList.add("hovering");
      setText(c.valueEl, "no data");
      return;
    }
    const fx = (best.t - (latest.t - HISTORY_MS)) / HISTORY_MS;
    const v = best[c.key];
    const fy = (3 + (1 - Math.min(Math.max(v, 0), c.max) / c.max) * (H - 6)) / H;
    c.dot.style.left = `${fx * 100}%`;
    c.dot.style.top = `${fy * 100}%`;
    c.rule.style.left = `${fx * 100}%`;
    c.dot.hidden = false; c.rule.hidden = false;
    c.valueEl.classList.add("hovering");
    const ago = Math.round((latest.t - best.t) / 1000);
    setText(c.valueEl, `${c.fmt(v)} · ${ago ? `${ago} s ago` : "now"}`);
  }

  function pushHistory(f) {
    const tiers = f.cache?.tiers ?? [];
    const remote = tiers.find((t) => t.backend && t.backend !== "memory");
    const point = {
      t: isNum(f.time_ms) ? f.time_ms : Date.now(),
      gapBefore: false,
      rps: f.http?.requests_per_sec ?? null,
      hit: f.cache?.hit_ratio ?? null,
      db: f.db?.queries_per_sec ?? null,
      l2p99: remote ? (remote.p99_ms ?? null) : undefined,
      cmd: f.upstash ? (f.upstash.commands_per_min ?? null) : undefined,
    };
    const prev = history[history.length - 1];
    if (prev && point.t < prev.t) history.length = 0;   // server clock went back: start over
    else if (prev && point.t - prev.t > Math.max(3 * intervalMs, 5_000)) point.gapBefore = true;
    history.push(point);
    const cutoff = point.t - HISTORY_MS;
    while (history.length && history[0].t < cutoff) history.shift();
  }

  function drawCharts() {
    if (!history.length) return;
    const now = history[history.length - 1].t;
    const x = (t) => ((t - (now - HISTORY_MS)) / HISTORY_MS) * W;
    for (const c of CHARTS) {
      const pts = history.filter((p) => p[c.key] !== undefined);
      const present = pts.length > 0;
      if (!c.always) {
        // Only shown when the frames carry it (remote tier / Upstash).
        const latestHas = history[history.length - 1][c.key] !== undefined;
        c.fig.hidden = !(present && latestHas);
        if (c.fig.hidden) continue;
      }
      const max = c.fixedMax ?? niceMax(Math.max(0, ...pts.map((p) => (isNum(p[c.key]) ? p[c.key] : 0))));
      const y = (v) => H - 3 - (Math.min(Math.max(v, 0), max) / max) * (H - 6);
      let d = "", a = "", segStart = null, lastX = null, pen = false;
      const closeArea = () => { if (segStart !== null) a += `L${lastX.toFixed(1)},${H}L${segStart.toFixed(1)},${H}Z`; segStart = null; };
      for (let i = 0; i < history.length; i++) {
        const p = history[i];
        const v = p[c.key];
        if (p.gapBefore) { pen = false; closeArea(); }
        if (!isNum(v)) { pen = false; closeArea(); continue; }
        const px = x(p.t), py = y(v);
        if (!pen) {
          d += `M${px.toFixed(1)},${py.toFixed(1)}`;
          a += `M${px.toFixed(1)},${H}L${px.toFixed(1)},${py.toFixed(1)}`;
          segStart = px;
        } else {
          d += `L${px.toFixed(1)},${py.toFixed(1)}`;
          a += `L${px.toFixed(1)},${py.toFixed(1)}`;
        }
        lastX = px;
        pen = true;
      }
      closeArea();
      c.line.setAttribute("d", d);
      c.area.setAttribute("d", a);
      setText(c.maxEl, (c.axisFmt ?? c.fmt)(max));

      // Text alternative: latest value + range over the window.
      c.max = max;
      updateHover(c);
      const latest = history[history.length - 1][c.key];
      const vals = pts.map((p) => p[c.key]).filter(isNum);
      const span = Math.round((now - history[0].t) / 1000);
      c.desc.textContent = vals.length
        ? `${c.title} over the last ${span} s: latest ${c.fmt(latest)}, min ${c.fmt(Math.min(...vals))}, max ${c.fmt(Math.max(...vals))}`
        : `${c.title}: no data in the last ${span} s`;
    }
  }

  // ---------------------------------------------------------------- frame rendering

  function render(f) {
    const http = f.http ?? {};
    const cache = f.cache ?? {};

    setText("uptime", fmtDuration(f.uptime_secs));
    setText("window", isNum(f.window_secs) ? `${nf(1).format(f.window_secs)} s` : "–");
    const updated = $("updated");
    const when = new Date(isNum(f.time_ms) ? f.time_ms : Date.now());
    updated.dateTime = when.toISOString();
    setText(updated, when.toLocaleTimeString());

    // Headline
    setText("rps", fmtNum(http.requests_per_sec));
    setText("errors-rps", fmtNum(http.server_errors_per_sec));
    $("errors-rps").classList.toggle("bad", isNum(http.server_errors_per_sec) && http.server_errors_per_sec > 0);
    const hr = $("hit-ratio");
    setText(hr, fmtPct(cache.hit_ratio));
    hr.dataset.value = isNum(cache.hit_ratio) ? String(cache.hit_ratio) : "";
    setText("hit-ratio-total", fmtPct(cache.hit_ratio_total));
    setText("db-qps", fmtNum(f.db?.queries_per_sec));
    setText("loads-ps", fmtNum(cache.loads_per_sec));
    setText("ws-sessions", fmtInt(f.ws_sessions));
    setText("lookups-ps", fmtNum(cache.lookups_per_sec));
    setText("backend", f.cache_backend ?? "–");
    setText("pending-inv", fmtInt(cache.pending_invalidations));
    $("pending-inv").classList.toggle("warn", isNum(cache.pending_invalidations) && cache.pending_invalidations > 0);

    renderRoutes(http.routes ?? []);
    renderKinds(cache.kinds ?? []);
    renderTiers(cache.tiers ?? []);
    renderBreaker(cache.breaker);
    renderBackplane(f.backplane);
    renderUpstash(f.upstash, f.cache_backend);
  }

  /** "/a/b/c" as text nodes with <wbr> after each "/" so long routes wrap at slashes on phones. */
  function breakablePath(path) {
    const out = [];
    for (const part of path.split(/(?<=\/)/)) {
      if (out.length) out.push(document.createElement("wbr"));
      out.push(document.createTextNode(part));
    }
    return out;
  }

  function numCell(text) { return el("td", { class: "num", text }); }

  let lastRoutes = [];
  const showIdle = $("show-idle");
  showIdle.addEventListener("change", () => renderRoutes(lastRoutes));

  function renderRoutes(routes) {
    lastRoutes = routes;
    const body = $("routes-body");
    const active = routes.filter((r) => r.requests_per_sec > 0);
    const idle = routes.length - active.length;
    const shown = showIdle.checked ? routes : active;
    const rows = shown.map((r) => el("tr", { class: r.requests_per_sec > 0 ? null : "idle" },
      el("th", { scope: "row", class: "route" },
        el("span", { class: `method m-${String(r.method ?? "").toLowerCase()}`, text: r.method ?? "" }),
        " ",
        el("code", null, ...breakablePath(r.route ?? ""))),
      numCell(fmtNum(r.requests_per_sec)),
      numCell(fmtMs(r.p50_ms)),
      numCell(fmtMs(r.p99_ms))));
    body.replaceChildren(...rows);
    const note = $("routes-empty");
    if (!routes.length) setText(note, "no requests yet");
    else if (!showIdle.checked && idle) {
      setText(note, `${active.length ? "" : "no requests in the window; "}${idle} idle route${idle === 1 ? "" : "s"} hidden`);
    } else setText(note, "");
    note.hidden = note.textContent === "";
    $("routes-table").hidden = shown.length === 0;
  }

  function ratioBar(v, label) {
    const fill = el("span", { class: "bar-fill" });
    fill.style.inlineSize = isNum(v) ? `${Math.max(0, Math.min(1, v)) * 100}%` : "0";
    fill.dataset.level = !isNum(v) ? "none" : v >= 0.9 ? "good" : v >= 0.6 ? "ok" : "bad";
    return el("span", { class: "bar-cell" },
      el("span", { class: "bar", "aria-hidden": "true" }, fill),
      el("span", { class: "bar-text", text: label }));
  }

  function renderKinds(kinds) {
    const rows = kinds.map((k) => el("tr", { class: k.lookups_per_sec > 0 ? null : "idle" },
      el("th", { scope: "row", text: KIND_LABELS[k.kind] ?? k.kind ?? "?" }),
      numCell(fmtNum(k.lookups_per_sec)),
      el("td", null, ratioBar(k.hit_ratio, fmtPct(k.hit_ratio))),
      numCell(fmtPct(k.hit_ratio_total))));
    $("kinds-body").replaceChildren(...rows);
  }

  function kv(label, value, cls) {
    return el("div", cls ? { class: cls } : null, el("dt", { text: label }), el("dd", { text: value }));
  }

  function renderTiers(tiers) {
    const cards = tiers.map((t) => {
      const remote = t.backend && t.backend !== "memory";
      const items = [
        kv("hit ratio", fmtPct(t.hit_ratio)),
        kv("hits/s", fmtNum(t.hits_per_sec)),
        kv("misses/s", fmtNum(t.misses_per_sec)),
        kv("errors/s", fmtNum(t.errors_per_sec), isNum(t.errors_per_sec) && t.errors_per_sec > 0 ? "bad" : null),
      ];
      if (t.entries !== null && t.entries !== undefined) items.push(kv("entries", fmtInt(t.entries)));
      if (t.bytes !== null && t.bytes !== undefined) items.push(kv("size", fmtBytes(t.bytes)));
      if (t.evictions !== null && t.evictions !== undefined) items.push(kv("evictions", fmtInt(t.evictions)));
      if (remote) {
        items.push(kv("p50", fmtMsUnit(t.p50_ms)), kv("p99", fmtMsUnit(t.p99_ms)));
      }
      const name = t.tier === t.backend || !t.backend ? t.tier : `${t.tier} · ${t.backend}`;
      return el("article", { class: "tier" },
        el("h3", null, el("span", { text: name ?? "?" })),
        ratioBar(t.hit_ratio, fmtPct(t.hit_ratio)),
        el("dl", { class: "kv" }, ...items));
    });
    $("tiers").replaceChildren(...cards);
    $("tiers-empty").hidden = tiers.length > 0;
  }

  const BREAKER_TEXT = { closed: "closed (healthy)", open: "open (remote cache bypassed)", half_open: "half-open (probing)" };
  function renderBreaker(b) {
    $("breaker").hidden = !b;
    $("breaker-none").hidden = !!b;
    if (!b) return;
    const st = $("breaker-state");
    st.dataset.state = b.state ?? "";
    setText(st, BREAKER_TEXT[b.state] ?? String(b.state ?? "–"));
    setText("breaker-opened", fmtInt(b.opened));
    setText("breaker-closed", fmtInt(b.closed));
  }

  function renderBackplane(bp) {
    $("backplane").hidden = !bp;
    $("backplane-none").hidden = !!bp;
    if (!bp) return;
    const st = $("bp-state");
    st.dataset.state = bp.state ?? "";
    setText(st, bp.state ?? "–");
    setText("bp-lag", fmtMsUnit(bp.lag_ms));
    setText("bp-pub", fmtNum(bp.published_per_sec));
    setText("bp-recv", fmtNum(bp.received_per_sec));
    setText("bp-gaps", fmtInt(bp.gaps));
    setText("bp-int", fmtInt(bp.interruptions));
    setText("bp-resets", fmtInt(bp.resets));
  }

  function renderUpstash(u, backend) {
    $("upstash").hidden = !u;
    $("upstash-none").hidden = !!u;
    if (!u) {
      setText("upstash-none", backend === "none" ? "no Upstash: cache off"
        : backend === "memory" ? "no Upstash: memory cache" : "no Upstash");
      return;
    }
    setText("up-req", fmtNum(u.requests_per_min));
    setText("up-cmd", fmtNum(u.commands_per_min));
    setText("up-cost", isNum(u.monthly_cost_usd) ? `${fmtUsd(u.monthly_cost_usd)} / month at this rate` : "cost: –");
  }

  // ---------------------------------------------------------------- stream

  let backoffMs = BACKOFF_MIN_MS;
  let retryTimer = 0;
  let controller = null;
  let generation = 0;

  function connectNow() {
    clearTimeout(retryTimer);
    retryTimer = 0;
    backoffMs = BACKOFF_MIN_MS;
    void connect();
  }

  function scheduleRetry(delayMs, label) {
    clearTimeout(retryTimer);
    const jittered = Math.round(delayMs * (0.8 + Math.random() * 0.4));
    const at = Date.now() + jittered;
    setStatus("offline", `${label} · retry in ${Math.ceil(jittered / 1000)} s`);
    const tick = () => {
      const left = at - Date.now();
      if (left <= 0) { retryTimer = 0; void connect(); return; }
      setText(statusDetailEl, `${label} · retry in ${Math.ceil(left / 1000)} s`);
      retryTimer = setTimeout(tick, Math.min(1000, left));
    };
    retryTimer = setTimeout(tick, Math.min(1000, jittered));
  }

  function retryWithBackoff(label) {
    scheduleRetry(backoffMs, label);
    backoffMs = Math.min(BACKOFF_MAX_MS, backoffMs * 2);
  }

  async function connect() {
    const gen = ++generation;
    if (controller) controller.abort();
    const ctl = new AbortController();
    controller = ctl;
    setStatus("connecting");

    const headers = { accept: "text/event-stream" };
    if (memToken) headers.authorization = `Bearer ${memToken}`;
    let stallTimer = 0;
    const armStall = () => {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(() => ctl.abort(new DOMException("stalled", "TimeoutError")), STALL_MS);
    };

    let gotFrame = false;
    try {
      armStall();
      const res = await fetch(`${STREAM_URL}?interval_ms=${intervalMs}`, {
        headers, cache: "no-store", credentials: "same-origin", signal: ctl.signal,
      });
      if (gen !== generation) return;
      if (res.status === 401) {
        clearTimeout(stallTimer);
        const hadToken = !!memToken;
        setToken("");
        setStatus("offline", "token required");
        askForToken(hadToken);
        return; // wait for the form
      }
      if (res.status === 403) {
        clearTimeout(stallTimer);
        showNotice("The dashboard is local-only: open it from the server's own machine, or set " +
          "DASHBOARD_TOKEN on the server to open it remotely.");
        scheduleRetry(30_000, "forbidden");
        return;
      }
      if (res.status === 404) {
        clearTimeout(stallTimer);
        showNotice("The dashboard is off on this server (DASHBOARD=off).");
        scheduleRetry(30_000, "dashboard off");
        return;
      }
      if (!res.ok || !res.body) {
        clearTimeout(stallTimer);
        showNotice(`The stream answered HTTP ${res.status}.`);
        retryWithBackoff(`HTTP ${res.status}`);
        return;
      }
      tokenForm.hidden = true;

      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (gen !== generation) { reader.cancel().catch(() => {}); return; }
        if (done) break;
        armStall(); // any bytes (frames or keep-alive comments) keep the stream alive
        buf += decoder.decode(value, { stream: true });
        // Events are separated by a blank line; accept \n, \r\n and \r line ends.
        let m;
        while ((m = /\r\n\r\n|\n\n|\r\r/.exec(buf))) {
          const block = buf.slice(0, m.index);
          buf = buf.slice(m.index + m[0].length);
          const data = [];
          for (const line of block.split(/\r\n|\n|\r/)) {
            if (line.startsWith("data:")) data.push(line.slice(line[5] === " " ? 6 : 5));
            // comments (":…") and other fields (event:, id:, retry:) are ignored
          }
          if (!data.length) continue;
          let frame;
          try { frame = JSON.parse(data.join("\n")); } catch { continue; }
          if (!frame || typeof frame !== "object") continue;
          if (!gotFrame) {
            gotFrame = true;
            backoffMs = BACKOFF_MIN_MS;
            showNotice("");
          }
          if (statusEl.dataset.state !== "live") setStatus("live");
          try {
            pushHistory(frame);
            render(frame);
            drawCharts();
          } catch (e) {
            console.error("dashboard: cannot render frame", e, frame);
          }
        }
      }
      clearTimeout(stallTimer);
      if (gen !== generation) return;
      retryWithBackoff("stream ended");
    } catch (e) {
      clearTimeout(stallTimer);
      if (gen !== generation) return;
      const stalled = ctl.signal.aborted;
      retryWithBackoff(stalled ? "no data" : "server unreachable");
    }
  }

  // Reconnect right away when the network comes back.
  window.addEventListener("online", () => { if (retryTimer) connectNow(); });

  void connect();
})();
