// Scanner dashboard. Everything a user or the feed wrote (rule names, symbols, values) enters the
// page as text (textContent / text nodes), never as HTML; the page's CSP allows no inline script.
// DOM work is queued and applied once per animation frame; alert rows are capped.
"use strict";

const $ = (id) => document.getElementById(id);
function el(tag, props = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);  // strings become text nodes
  return e;
}
const store = {
  get(k, d) { try { const v = localStorage.getItem(k); return v === null ? d : JSON.parse(v); } catch (e) { return d; } },
  set(k, v) { try { localStorage.setItem(k, JSON.stringify(v)); } catch (e) { /* private mode */ } },
};

// API key: from the URL fragment (#key=...) once, then remembered in this browser
const frag = new URLSearchParams(location.hash.slice(1));
if (frag.get("key")) { localStorage.setItem("scannerKey", frag.get("key")); history.replaceState(null, "", location.pathname); }
const KEY = localStorage.getItem("scannerKey") || "";
const api = (path, opts = {}) => fetch(path, {...opts, headers: {...(opts.headers || {}),
  ...(KEY ? {"Authorization": `Bearer ${KEY}`} : {}), "Content-Type": "application/json"}});
const getJSON = async (path) => { const r = await api(path); if (!r.ok) throw new Error(`${path}: ${r.status}`); return r.json(); };

const fmt = (v, c) => v === null || v === undefined ? "–" :
  (c.includes("volume") && !c.startsWith("relative") ? Math.round(v).toLocaleString() : Number(v).toFixed(2));

// ---- one render queue, flushed per animation frame ----
const jobs = new Map();
let frameRequested = false;
function later(key, fn) {
  jobs.set(key, fn);
  if (!frameRequested) { frameRequested = true; requestAnimationFrame(flush); }
}
function flush() {
  frameRequested = false;
  const todo = [...jobs.values()]; jobs.clear();
  for (const fn of todo) { try { fn(); } catch (e) { console.error(e); } }
}

// ---- catalogue ----
let METRICS = [], F8 = [], HAS_HALTED = false;
async function loadCatalogue() {
  METRICS = await getJSON("/api/metrics");
  F8 = METRICS.filter(m => m.dtype === "f8").map(m => m.name);
  HAS_HALTED = METRICS.some(m => m.name === "halted");
  $("halt-note").textContent = HAS_HALTED ? "" : "halts: not reported by this feed";
  const sel = $("f-metric"); sel.replaceChildren();
  for (const m of METRICS) sel.append(el("option", {value: m.name, title: m.description || "", text: m.name}));
  sel.value = "change_pct";
}

// ---- top-list panels ----
const PRESETS = {
  gainers: {title: "Gainers", metric: "change_pct", order: "desc"},
  losers: {title: "Losers", metric: "change_pct", order: "asc"},
  relvol: {title: "Relative volume", metric: "relative_volume", order: "desc"},
  gappers: {title: "Gappers", metric: "gap_pct", order: "desc"},
  halted: {title: "Halted", metric: "halted", order: "desc"},
  custom: {title: "Custom", metric: "day_volume", order: "desc"},
};
const DEFAULT_LAYOUT = ["gainers", "losers", "relvol", "gappers", "halted"].map(p =>
  ({preset: p, metric: PRESETS[p].metric, order: PRESETS[p].order, minPrice: 1, minVolume: 0, size: 15}));
let layout = store.get("scannerPanels", DEFAULT_LAYOUT);
const panels = [];
const saveLayout = () => store.set("scannerPanels", panels.map(p => p.cfg));

class Panel {
  constructor(cfg) {
    this.cfg = {...cfg};
    const c = this.cfg;
    this.title = el("span", {text: PRESETS[c.preset]?.title || "Custom"});
    const presetSel = el("select", {title: "list"},
      ...Object.entries(PRESETS).map(([k, p]) => el("option", {value: k, text: p.title})));
    presetSel.value = c.preset;
    this.metricSel = el("select", {title: "metric"}, ...F8.map(m => el("option", {value: m, text: m})));
    this.metricSel.value = c.metric;
    const orderSel = el("select", {title: "order"}, el("option", {value: "desc", text: "top"}),
      el("option", {value: "asc", text: "bottom"}));
    orderSel.value = c.order;
    const minPrice = el("input", {type: "number", step: "any", title: "min price", value: String(c.minPrice ?? "")});
    const minVol = el("input", {type: "number", step: "any", title: "min day volume", value: String(c.minVolume ?? "")});
    const size = el("select", {title: "rows"}, ...[5, 10, 15, 25, 50].map(n => el("option", {value: String(n), text: String(n)})));
    size.value = String(c.size);
    const close = el("button", {text: "×", title: "remove panel"});
    const changed = () => {
      c.metric = this.metricSel.value; c.order = orderSel.value; c.size = Number(size.value);
      c.minPrice = minPrice.value === "" ? null : Number(minPrice.value);
      c.minVolume = minVol.value === "" ? null : Number(minVol.value);
      saveLayout(); this.refresh();
    };
    presetSel.addEventListener("change", () => {
      c.preset = presetSel.value; const p = PRESETS[c.preset];
      this.title.textContent = p.title; this.metricSel.value = p.metric; orderSel.value = p.order; changed();
    });
    for (const x of [this.metricSel, orderSel, size, minPrice, minVol]) x.addEventListener("change", changed);
    close.addEventListener("click", () => { this.root.remove(); panels.splice(panels.indexOf(this), 1); saveLayout(); });
    this.body = el("tbody");
    this.note = el("div", {class: "note"});
    this.head = el("tr");
    this.root = el("section", {class: "panel", "data-preset": c.preset},
      el("h2", {}, this.title, el("span", {class: "grow"}), close),
      el("div", {class: "controls"}, presetSel, this.metricSel, orderSel, "≥$", minPrice, "vol≥", minVol, size),
      this.note, el("table", {}, el("thead", {}, this.head), this.body));
    $("panels").append(this.root);
  }
  columns() {
    const cols = ["price", "change_pct", "gap_pct", "day_volume", "relative_volume"];
    if (HAS_HALTED) cols.push("halted");
    return [...new Set([this.cfg.metric, ...cols])].filter(c => F8.includes(c));
  }
  async refresh() {
    const c = this.cfg;
    this.root.dataset.preset = c.preset;
    if (!F8.includes(c.metric)) {
      later(this, () => { this.note.textContent = c.preset === "halted"
        ? "No halts reported: this feed has no trading-status column." : `unknown metric ${c.metric}`;
        this.body.replaceChildren(); });
      return;
    }
    const cols = this.columns();
    const q = new URLSearchParams({metric: c.metric, order: c.order, limit: String(c.size), columns: cols.join(",")});
    if (c.minPrice !== null && c.minPrice !== undefined && !Number.isNaN(c.minPrice)) q.set("min_price", String(c.minPrice));
    if (c.minVolume) q.set("min_volume", String(c.minVolume));
    let data;
    try { data = await getJSON(`/api/top?${q}`); } catch (e) { return; }
    let rows = data.rows;
    if (c.preset === "halted") rows = rows.filter(r => r.halted);
    later(this, () => this.render(cols, rows));
  }
  render(cols, rows) {
    this.note.textContent = rows.length ? "" : "nothing matches";
    this.head.replaceChildren(el("th", {text: "symbol"}), ...cols.map(c => el("th", {text: c})));
    this.body.replaceChildren(...rows.map(r => {
      const sym = el("td", {class: "sym", text: r.symbol});
      if (r.halted) sym.append(el("span", {class: "badge", text: "HALT"}));
      sym.addEventListener("click", () => openChart(r.symbol));
      const tr = el("tr", {class: r.halted ? "halted" : ""}, sym, ...cols.map(c => {
        const v = r[c];
        return el("td", {class: c.endsWith("pct") && v !== null ? (v >= 0 ? "up" : "down") : "", text: fmt(v, c)});
      }));
      return tr;
    }));
  }
}
function buildPanels() {
  $("panels").replaceChildren(); panels.length = 0;
  for (const cfg of layout) panels.push(new Panel(cfg));
}
$("add-panel").addEventListener("click", () => {
  const p = new Panel({preset: "custom", metric: "day_volume", order: "desc", minPrice: 1, minVolume: 0, size: 15});
  panels.push(p); saveLayout(); p.refresh();
});
$("reset-panels").addEventListener("click", () => { layout = DEFAULT_LAYOUT; buildPanels(); saveLayout(); refreshPanels(); });
const refreshPanels = () => panels.forEach(p => p.refresh());

// ---- sparklines: the symbol's last 30 one-minute closes, cached a minute ----
const sparkCache = new Map();
// At most 4 sparkline requests at once and 10 started a second: a page of new symbols (or a burst
// of alerts) must not flood the API, nor spend the client's REST rate limit (50/s by default) that
// the panels and the user's own actions (saving a rule) need.
const SPARK_CONCURRENT = 4, SPARK_PER_S = 10;
let inFlight = 0, sparkTimer = null;
const waiting = [], started = [];
function pump() {
  while (waiting.length && inFlight < SPARK_CONCURRENT) {
    const now = Date.now();
    while (started.length && now - started[0] >= 1000) started.shift();
    if (started.length >= SPARK_PER_S) {
      if (!sparkTimer) sparkTimer = setTimeout(() => { sparkTimer = null; pump(); }, 1000 - (now - started[0]));
      return;
    }
    started.push(now);
    waiting.shift()();
  }
}
function limited(fn) {
  return new Promise((resolve, reject) => {
    waiting.push(() => { inFlight++; fn().then(resolve, reject).finally(() => { inFlight--; pump(); }); });
    pump();
  });
}
async function sparkData(sym) {
  const hit = sparkCache.get(sym);
  if (hit && Date.now() - hit.at < 60_000) return hit.promise;
  const promise = limited(() => getJSON(`/api/bars/${encodeURIComponent(sym)}?limit=30`))
    .then(d => d.bars.map(b => b.close)).catch(() => []);
  sparkCache.set(sym, {at: Date.now(), promise});
  if (sparkCache.size > 500) sparkCache.delete(sparkCache.keys().next().value);
  return promise;
}
function drawSpark(canvas, closes) {
  const w = canvas.width = 90, h = canvas.height = 22, ctx = canvas.getContext("2d");
  if (closes.length < 2) return;
  const lo = Math.min(...closes), hi = Math.max(...closes), span = hi - lo || 1;
  ctx.strokeStyle = closes[closes.length - 1] >= closes[0] ? "#2ecc71" : "#ff5c5c"; ctx.lineWidth = 1.2;
  ctx.beginPath();
  closes.forEach((c, i) => { const x = i * (w - 1) / (closes.length - 1), y = h - 2 - (c - lo) / span * (h - 4);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
  ctx.stroke();
}

// ---- alerts ----
const MAX_ROWS = 200;
const seen = new Set(), seenOrder = [];
const pending = [];
let nAlerts = 0, lastAlertTs = 0;
const rulesSeen = new Set();
const alertKey = a => `${a.host}|${a.worker}|${a.seq}|${a.rule}|${a.symbol}`;
function takeAlerts(list) {
  for (const a of list) {
    if (!a || typeof a !== "object") continue;
    const k = alertKey(a);
    if (seen.has(k)) continue;
    seen.add(k); seenOrder.push(k);
    if (seenOrder.length > 5000) seen.delete(seenOrder.shift());
    lastAlertTs = Math.max(lastAlertTs, Number(a.event_ts) || 0);
    pending.push(a);
    chartAlert(a);
  }
  if (pending.length > MAX_ROWS) pending.splice(0, pending.length - MAX_ROWS);
  later("alerts", renderAlerts);
}
function renderAlerts() {
  const box = $("alerts"), filter = $("rule-filter").value;
  const batch = pending.splice(0);
  const frag = document.createDocumentFragment();
  for (const a of batch) {
    if (!rulesSeen.has(a.rule)) {
      rulesSeen.add(a.rule);
      $("rule-filter").append(el("option", {value: String(a.rule), text: String(a.rule_name ?? a.rule)}));
    }
    if (filter && filter !== a.rule) continue;
    nAlerts++;
    const vals = Object.entries(a.values || {}).map(([k, v]) => `${k}=${v === null ? "–" : Number(v).toFixed(2)}`).join(" ");
    const sym = el("span", {class: "sym", text: String(a.symbol)});
    sym.addEventListener("click", () => openChart(String(a.symbol)));
    const spark = el("canvas", {class: "spark", width: "90", height: "22"});
    const row = el("div", {class: `alert ${a.kind === "exit" ? "exit" : ""} sev-${String(a.severity)}`},
      el("span", {class: "t", text: new Date(Number(a.event_ts) * 1000).toLocaleTimeString()}), sym,
      el("span", {}, el("span", {class: "rule", text: String(a.rule_name ?? a.rule) + (a.kind === "exit" ? " (exit)" : "")}),
        el("div", {class: "vals", text: vals})), spark);
    frag.prepend(row);
    sparkData(String(a.symbol)).then(c => later(spark, () => drawSpark(spark, c)));
  }
  box.prepend(frag);
  while (box.childElementCount > MAX_ROWS) box.lastElementChild.remove();
  $("alert-count").textContent = `(${nAlerts})`;
  if (batch.length) { ring(batch); notify(batch); }
}
$("rule-filter").addEventListener("change", () => { $("alerts").replaceChildren(); });

// sound per severity, with a mute (kept in localStorage); at most one cue per 300 ms
const TONES = {info: [660], low: [660], medium: [880], high: [880, 1100], critical: [1200, 900, 1200]};
const SEV = ["info", "low", "medium", "high", "critical"];
let soundOn = store.get("scannerSound", false), lastRing = 0, audio = null;
function showSound() { $("mute").textContent = soundOn ? "sound on" : "sound off"; $("mute").classList.toggle("on", soundOn); }
$("mute").addEventListener("click", () => { soundOn = !soundOn; store.set("scannerSound", soundOn); showSound(); });
function ring(batch) {
  if (!soundOn || performance.now() - lastRing < 300) return;
  const worst = batch.reduce((w, a) => Math.max(w, SEV.indexOf(a.severity)), 0);
  lastRing = performance.now();
  try {
    audio = audio || new AudioContext();
    TONES[SEV[worst]].forEach((f, i) => {
      const o = audio.createOscillator(), g = audio.createGain();
      o.frequency.value = f; g.gain.value = 0.15; o.connect(g); g.connect(audio.destination);
      const t = audio.currentTime + i * 0.12; o.start(t); o.stop(t + 0.09);
    });
  } catch (e) { /* no audio device */ }
}
// desktop notifications for high and critical alerts, if the user allows them
let lastNote = 0;
function showNotify() { $("notify").classList.toggle("on", "Notification" in window && Notification.permission === "granted"); }
$("notify").addEventListener("click", async () => { if ("Notification" in window) await Notification.requestPermission(); showNotify(); });
function notify(batch) {
  if (!("Notification" in window) || Notification.permission !== "granted" || Date.now() - lastNote < 2000) return;
  const a = batch.find(x => x.severity === "high" || x.severity === "critical");
  if (!a) return;
  lastNote = Date.now();
  new Notification(`${a.symbol}: ${a.rule_name}`, {body: `${a.severity} alert`, tag: String(a.rule)});  // plain text
}

// ---- live feed with reconnect; missed alerts fetched on reconnect ----
let ws = null, retry = 0;
function connect() {
  const conn = $("conn");
  ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws${KEY ? "?token=" + encodeURIComponent(KEY) : ""}`);
  ws.onopen = () => {
    conn.textContent = "live"; conn.className = "ok"; $("offline").classList.remove("show");
    catchUp();  // the recent alerts on first open, the missed ones after a reconnect
    retry = 0;
  };
  ws.onclose = () => {
    conn.textContent = "offline"; conn.className = "bad"; $("offline").classList.add("show");
    setTimeout(connect, Math.min(10_000, 500 * 2 ** retry++));
  };
  ws.onmessage = ev => {
    let m; try { m = JSON.parse(ev.data); } catch (e) { return; }
    if (m.type === "alerts") takeAlerts(m.alerts);
    else if (m.type === "dropped") $("stats").dataset.dropped = String(m.count);
  };
}
async function catchUp() {
  try {
    const recent = await getJSON("/api/alerts/recent?limit=1000");
    takeAlerts(recent.filter(a => Number(a.event_ts) >= lastAlertTs - 1).reverse());  // oldest first
  } catch (e) { /* next reconnect tries again */ }
}

async function stats() {
  try {
    const s = await getJSON("/api/status");
    const dropped = $("stats").dataset.dropped ? ` · ${$("stats").dataset.dropped} frames dropped` : "";
    $("stats").textContent = `${s.symbols} symbols · ${Math.round(s.ticks_per_s)} ticks/s · ` +
      `scan p99 ${Number(s.scan_p99_ms).toFixed(2)} ms · ${Number(s.alerts_per_s).toFixed(1)} alerts/s${dropped}`;
  } catch (e) { /* the connection badge shows the state */ }
}

// ---- chart: 1-minute candles of the day, VWAP, EMA 9/20, volume, alert markers; live ----
let chart = null, chartSym = null, chartTimer = null, series = {}, chartBars = [], chartMarks = [];
const LWC = () => window.LightweightCharts;
function ema(values, n) { const k = 2 / (n + 1); let e = null; return values.map(v => (e = e === null ? v : v * k + e * (1 - k))); }
async function openChart(sym) {
  sym = String(sym).toUpperCase();
  chartSym = sym; chartMarks = [];
  $("chart-title").textContent = sym; $("chart-info").textContent = "";
  $("chart-pane").classList.add("show");
  const box = $("chart"); box.replaceChildren();
  if (chart) { chart.remove(); chart = null; }
  if (!LWC()) {
    box.append(el("div", {class: "note", id: "chart-unavailable",
      text: "Charts are unavailable: the charting library was not installed (run `make`, which fetches it with npm)."}));
    return;
  }
  chart = LWC().createChart(box, {autoSize: true, layout: {background: {color: "#161d26"}, textColor: "#d8dee6"},
    grid: {vertLines: {color: "#202a36"}, horzLines: {color: "#202a36"}}, timeScale: {timeVisible: true, secondsVisible: false}});
  series = {
    candles: chart.addCandlestickSeries({upColor: "#2ecc71", downColor: "#ff5c5c", borderVisible: false,
      wickUpColor: "#2ecc71", wickDownColor: "#ff5c5c"}),
    volume: chart.addHistogramSeries({priceScaleId: "vol", priceFormat: {type: "volume"}}),
    vwap: chart.addLineSeries({color: "#f0b429", lineWidth: 1, priceLineVisible: false, lastValueVisible: false}),
    ema9: chart.addLineSeries({color: "#4aa3ff", lineWidth: 1, priceLineVisible: false, lastValueVisible: false}),
    ema20: chart.addLineSeries({color: "#c678dd", lineWidth: 1, priceLineVisible: false, lastValueVisible: false}),
  };
  chart.priceScale("vol").applyOptions({scaleMargins: {top: 0.8, bottom: 0}});
  try {
    const recent = await getJSON(`/api/alerts/recent?symbol=${encodeURIComponent(sym)}&limit=200`);
    recent.forEach(chartAlert);
  } catch (e) { /* markers come live */ }
  await loadBars();
  chart.timeScale().fitContent();
  clearInterval(chartTimer);
  chartTimer = setInterval(liveBar, 2000);
}
async function loadBars() {
  const sym = chartSym;
  let data;
  try { data = await getJSON(`/api/bars/${encodeURIComponent(sym)}?limit=390`); } catch (e) { return; }
  if (sym !== chartSym || !chart) return;
  const day = data.bars.length ? new Date(data.bars[data.bars.length - 1].t).toISOString().slice(0, 10) : "";
  chartBars = data.bars.filter(b => b.t.slice(0, 10) === day).map(b => ({time: Math.floor(Date.parse(b.t) / 1000),
    open: b.open, high: b.high, low: b.low, close: b.close, volume: b.volume}));
  later("chart", drawChart);
}
function drawChart() {
  if (!chart) return;
  const bars = chartBars;
  series.candles.setData(bars.map(({time, open, high, low, close}) => ({time, open, high, low, close})));
  series.volume.setData(bars.map(b => ({time: b.time, value: b.volume, color: b.close >= b.open ? "#2ecc7166" : "#ff5c5c66"})));
  let pv = 0, v = 0;
  series.vwap.setData(bars.map(b => { pv += (b.high + b.low + b.close) / 3 * b.volume; v += b.volume;
    return {time: b.time, value: v ? pv / v : b.close}; }));
  const closes = bars.map(b => b.close);
  series.ema9.setData(ema(closes, 9).map((x, i) => ({time: bars[i].time, value: x})));
  series.ema20.setData(ema(closes, 20).map((x, i) => ({time: bars[i].time, value: x})));
  const times = new Set(bars.map(b => b.time));
  series.candles.setMarkers(chartMarks.filter(m => times.has(m.time)).sort((a, b) => a.time - b.time).slice(-200));
  $("chart").dataset.candles = String(bars.length);
  $("chart-info").textContent = bars.length ? `${bars.length} one-minute bars · last ${bars[bars.length - 1].close}` : "no closed bars yet";
}
async function liveBar() {  // the forming minute from the live row; closed minutes from the bars endpoint
  if (!chart || !chartSym) return;
  const sym = chartSym;
  let s; try { s = await getJSON(`/api/symbols/${encodeURIComponent(sym)}`); } catch (e) { return; }
  if (sym !== chartSym || !chart || !s.bar_start_ns || s.bar_open === null) return;
  const time = Math.floor(s.bar_start_ns / 1e9);
  const last = chartBars[chartBars.length - 1];
  if (last && time > last.time + 60) { await loadBars(); return; }  // minutes closed meanwhile
  const bar = {time, open: s.bar_open, high: s.bar_high, low: s.bar_low, close: s.bar_close, volume: s.bar_volume || 0};
  if (last && last.time === time) chartBars[chartBars.length - 1] = bar;
  else if (!last || time > last.time) chartBars.push(bar);
  later("chart", drawChart);
}
function chartAlert(a) {
  if (!chartSym || String(a.symbol) !== chartSym) return;
  chartMarks.push({time: Math.floor(Number(a.event_ts) / 60) * 60, position: a.kind === "exit" ? "belowBar" : "aboveBar",
    color: a.kind === "exit" ? "#7a8694" : "#f0b429", shape: a.kind === "exit" ? "arrowUp" : "arrowDown",
    text: String(a.rule_name ?? a.rule).slice(0, 24)});
  if (chart) later("chart", drawChart);
}
function closeChart() {
  $("chart-pane").classList.remove("show"); clearInterval(chartTimer); chartSym = null;
  if (chart) { chart.remove(); chart = null; }
}
$("chart-close").addEventListener("click", closeChart);

// ---- keyboard: "/" focuses the symbol search, Esc closes the chart ----
document.addEventListener("keydown", e => {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement?.tagName);
  if (e.key === "/" && !typing) { e.preventDefault(); $("search").focus(); $("search").select(); }
  else if (e.key === "Escape") { closeChart(); if (document.activeElement === $("search")) $("search").blur(); }
});
$("search").addEventListener("keydown", e => { if (e.key === "Enter" && $("search").value.trim()) openChart($("search").value.trim()); });
async function loadSymbols() {
  try {
    const syms = await getJSON("/api/symbols");
    $("symbols").replaceChildren(...syms.map(s => el("option", {value: s})));
  } catch (e) { /* search still opens any typed symbol */ }
}

// ---- rule editor: form mode (single condition) beside JSON mode ----
let mode = "json";
function setMode(m) {
  mode = m;
  $("rule-form").classList.toggle("show", m === "form"); $("rule-json-box").classList.toggle("hide", m === "form");
  $("mode-form").classList.toggle("on", m === "form"); $("mode-json").classList.toggle("on", m === "json");
  if (m === "form") fillForm(); else $("rule-json").value = JSON.stringify(formRule(), null, 1);
}
function formRule() {
  const rule = {id: $("f-id").value.trim(), name: $("f-name").value.trim() || $("f-id").value.trim(), type: "numeric",
    metric: $("f-metric").value, operator: $("f-op").value, value: Number($("f-value").value), severity: $("f-severity").value};
  if ($("f-minprice").value !== "") rule.universe = {min_price: Number($("f-minprice").value)};
  return rule;
}
function fillForm() {
  let r; try { r = JSON.parse($("rule-json").value); } catch (e) { return; }
  if (!r || typeof r !== "object" || r.condition) return;  // groups stay in JSON mode
  $("f-id").value = r.id ?? ""; $("f-name").value = r.name ?? "";
  if (r.metric) $("f-metric").value = r.metric;
  if (r.operator) $("f-op").value = r.operator;
  if (typeof r.value === "number") $("f-value").value = String(r.value);
  if (r.severity) $("f-severity").value = r.severity;
  $("f-minprice").value = r.universe?.min_price ?? "";
}
$("mode-form").addEventListener("click", () => setMode("form"));
$("mode-json").addEventListener("click", () => setMode("json"));
function showErrors(detail) {
  const box = $("rule-errors");
  if (!Array.isArray(detail)) { box.textContent = typeof detail === "string" ? detail : JSON.stringify(detail); return; }
  box.textContent = detail.map(e => `${(e.loc || []).filter(x => x !== "body").join(".") || "rule"}: ${e.msg}`).join("\n");
}
async function sendRule(path) {
  $("rule-errors").textContent = ""; $("rule-ok").textContent = "";
  let body;
  if (mode === "form") body = formRule();
  else { try { body = JSON.parse($("rule-json").value); } catch (e) { showErrors(`not JSON: ${e.message}`); return false; } }
  const r = await api(path, {method: "POST", body: JSON.stringify(body)});
  const data = await r.json().catch(() => ({detail: `HTTP ${r.status}`}));
  if (!r.ok) { showErrors(data.detail); return false; }
  $("rule-ok").textContent = path.endsWith("validate") ? "valid" : `saved (generation ${data.generation})`;
  return true;
}
async function loadRules() {
  let rules; try { rules = await getJSON("/api/rules"); } catch (e) { return; }
  $("rule-list").replaceChildren(...rules.map(rule => {
    const b = el("button", {text: "delete"});
    b.addEventListener("click", async () => { await api(`/api/rules/${encodeURIComponent(rule.id)}`, {method: "DELETE"}); loadRules(); });
    return el("div", {class: "rule-row"}, el("span", {class: "rule-name", text: String(rule.name || rule.id)}), b);
  }));
}
$("rule-validate").addEventListener("click", () => sendRule("/api/rules/validate"));
$("rule-save").addEventListener("click", async () => { if (await sendRule("/api/rules")) loadRules(); });

// ---- start ----
(async function start() {
  showSound(); showNotify();
  try { await loadCatalogue(); } catch (e) { /* retried by the panels' refresh */ }
  buildPanels(); refreshPanels(); stats(); connect(); loadRules(); loadSymbols();
  setInterval(refreshPanels, 1000); setInterval(stats, 2000);
})();
