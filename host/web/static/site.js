// slm serve: the page of a site. Reads /api/sites/SITE (meters, plan), /api/sites/SITE/history (the last hour of
// minutes) and the server-sent events of /api/sites/SITE/live (once a second), and draws the plan, the meter cards
// and the charts in plain SVG. No library, nothing from another server.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const site = document.getElementById("site").dataset.site;
const api = "/api/sites/" + encodeURIComponent(site);
const STATE_TEXT = {under: "UNDER LIMIT", near: "NEAR LIMIT", over: "OVER LIMIT", overload: "OVERLOAD",
                    mic_fault: "MIC FAULT", no_measurement: "NO MEASUREMENT", no_clock: "CLOCK NOT SET",
                    offline: "OFFLINE"};
const HOUR_MS = 3600 * 1000;

let plan = null;
let history = {};       // device -> [{start, laeq, limit, over, overload, local}] (the last hour of minutes)
let newestEnd = null;   // the end of the site's newest minute (UTC text): the charts end there
const cards = {};       // device -> {el, fields...}
const marks = {};       // device -> plan mark {circle, text}

function el(tag, attrs, parent, ns) {
  const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  if (parent) parent.appendChild(e);
  return e;
}

function svg(tag, attrs, parent) { return el(tag, attrs, parent, SVG); }

function displayName(device) {
  return plan && plan.meters[device] ? plan.meters[device].name : device;
}

function localOffsetMin(minute) {  // the meter's local time minus UTC, from a minute's start and local HH:MM
  const start = new Date(Date.parse(minute.start));
  const [hh, mm] = minute.local.split(":").map(Number);
  let offset = (hh * 60 + mm - (start.getUTCHours() * 60 + start.getUTCMinutes())) % 1440;
  if (offset < 0) offset += 1440;
  return offset > 840 ? offset - 1440 : offset;
}

function minuteState(m) {  // a past minute's colour on the chart: the judge's verdict, near within 3 dB
  if (m.overload) return "overload";
  if (m.laeq === null) return "no_measurement";
  if (m.limit === null) return "under";
  if (m.over) return "over";
  return Math.round(m.laeq * 10) >= Math.round(m.limit * 10) - 30 ? "near" : "under";
}

// -- plan -----------------------------------------------------------------------------------------------------------
function drawPlan(meters) {
  const box = document.getElementById("plan");
  box.textContent = "";
  const unplaced = meters.filter(m => !(plan && plan.meters[m.device])).map(m => m.device);
  document.getElementById("unplaced").textContent = plan
    ? (unplaced.length ? "Not placed (not in --positions): " + unplaced.join(", ") : "")
    : "No plan for this site (give its meters' positions with slm serve --positions FILE).";
  if (!plan) { box.style.display = "none"; return; }
  const [x0, y0, x1, y1] = plan.bounds;
  const pad = Math.max(x1 - x0, y1 - y0) * 0.08;
  box.setAttribute("viewBox", `${x0 - pad} ${y0 - pad} ${x1 - x0 + 2 * pad} ${y1 - y0 + 2 * pad}`);
  const unit = Math.max(x1 - x0, y1 - y0) / 100;  // 1 % of the plan: sizes of marks and text
  svg("rect", {x: 0, y: 0, width: plan.size_m[0], height: plan.size_m[1], class: "square"}, box);
  svg("text", {x: unit, y: -unit, class: "plan-note", "font-size": 2.2 * unit,
               text: `${plan.scenario || "site"}: ${plan.size_m[0]} m x ${plan.size_m[1]} m`}, box);
  for (const s of plan.sources) {
    svg("rect", {x: s.x - unit, y: s.y - unit, width: 2 * unit, height: 2 * unit, class: "source"}, box);
    svg("text", {x: s.x, y: s.y + 3.6 * unit, class: "source-label", "font-size": 2.2 * unit, "text-anchor": "middle",
                 text: s.id}, box);
  }
  for (const m of meters) {
    const p = plan.meters[m.device];
    if (!p) continue;
    const g = svg("g", {class: "plan-meter", "data-device": m.device}, box);
    const circle = svg("circle", {cx: p.x, cy: p.y, r: 3 * unit, class: "mark"}, g);
    svg("text", {x: p.x + 4 * unit, y: p.y - 0.5 * unit, "font-size": 3 * unit, class: "mark-name", text: p.name}, g);
    const level = svg("text", {x: p.x + 4 * unit, y: p.y + 3 * unit, "font-size": 3.4 * unit, class: "mark-level"}, g);
    marks[m.device] = {g, circle, level};
  }
}

// -- meter cards ----------------------------------------------------------------------------------------------------
function card(m) {
  if (cards[m.device]) return cards[m.device];
  const root = el("article", {class: "meter", "data-device": m.device}, document.getElementById("meters"));
  const h = el("h3", {}, root);
  el("span", {class: "name", text: displayName(m.device)}, h);
  if (displayName(m.device) !== m.device) el("small", {class: "device", text: " " + m.device}, h);
  const live = el("div", {class: "live"}, root);
  const level = el("span", {class: "level", text: "--.-"}, live);
  el("span", {class: "unit", text: " dB(A) live"}, live);
  const state = el("div", {class: "state"}, root);
  const judged = el("div", {class: "judged"}, root);
  el("span", {text: "last minute "}, judged);
  const minuteTime = el("span", {class: "minute-time"}, judged);
  el("span", {text: ": "}, judged);
  const minuteLevel = el("span", {class: "minute-level"}, judged);
  el("span", {text: " dB, limit in force "}, judged);
  const limit = el("span", {class: "limit"}, judged);
  el("span", {text: " "}, judged);
  const band = el("span", {class: "band"}, judged);
  const seen = el("div", {class: "seen note"}, root);
  const chart = svg("svg", {class: "chart", viewBox: "0 0 400 150", role: "img",
                            "aria-label": "the last hour of 1-minute LAeq and the limit"}, root);
  cards[m.device] = {root, level, state, minuteTime, minuteLevel, limit, band, seen, chart};
  return cards[m.device];
}

function update(view) {
  if (!view) return;
  newestEnd = view.newest_minute_end;
  document.getElementById("newest").textContent = newestEnd ? newestEnd.slice(0, 16).replace("T", " ") : "-";
  for (const m of view.meters) {
    const c = card(m);
    const d = c.root.dataset;
    d.state = m.state;
    d.liveUtc = m.live ? m.live.utc : "";
    d.liveLaeq = m.live && m.live.laeq !== null ? m.live.laeq : "";
    d.minuteStart = m.minute ? m.minute.start : "";
    d.minuteLaeq = m.minute && m.minute.laeq !== null ? m.minute.laeq : "";
    d.limit = m.minute && m.minute.limit !== null ? m.minute.limit : "";
    c.level.textContent = m.live ? m.live.text : "--.-";
    c.state.textContent = STATE_TEXT[m.state] || m.state;
    c.state.className = "state " + m.state;
    c.minuteTime.textContent = m.minute ? (m.minute.local || "") + " local" : "none yet";
    c.minuteLevel.textContent = m.minute ? m.minute.text : "--.-";
    c.limit.textContent = m.minute ? (m.minute.limit === null ? "none" : m.minute.limit_text + " dB") : "-";
    c.band.textContent = m.minute && m.minute.band ? "(" + m.minute.band + ")" : "";
    c.seen.textContent = (m.live ? "interval " + m.live.utc.slice(11, 19) + " UTC" : "no interval records") +
      (m.faults.length ? " · faults: " + m.faults.join(", ") : "") + (m.online === false ? " · offline" : "");
    const mark = marks[m.device];
    if (mark) {
      mark.g.setAttribute("class", "plan-meter " + m.state);
      mark.level.textContent = (m.live ? m.live.text : "--.-") + " dB";
    }
    if (m.minute) addMinute(m.device, m.minute);
    if (m.minute && m.minute.local) c.offsetMin = localOffsetMin(m.minute);
    drawChart(m.device);
  }
}

// -- charts ---------------------------------------------------------------------------------------------------------
function addMinute(device, minute) {
  const list = history[device] || (history[device] = []);
  if (list.length && list[list.length - 1].start >= minute.start) return;
  list.push({start: minute.start, laeq: minute.laeq, limit: minute.limit, over: minute.over,
             overload: minute.overload, band: minute.band});
}

function drawChart(device) {
  const c = cards[device];
  const box = c.chart;
  box.textContent = "";
  const W = 400, H = 150, L = 34, R = 6, T = 8, B = 20;
  if (!newestEnd) { svg("text", {x: L, y: H / 2, class: "axis", text: "no minutes yet"}, box); return; }
  const t1 = Date.parse(newestEnd), t0 = t1 - HOUR_MS;
  const rows = (history[device] || []).filter(m => Date.parse(m.start) >= t0);
  history[device] = rows;
  const values = rows.flatMap(m => [m.laeq, m.limit]).filter(v => v !== null);
  let lo = values.length ? Math.floor((Math.min(...values) - 3) / 10) * 10 : 30;
  let hi = values.length ? Math.ceil((Math.max(...values) + 3) / 10) * 10 : 80;
  if (hi - lo < 20) hi = lo + 20;
  const x = t => L + (t - t0) / HOUR_MS * (W - L - R);
  const y = v => T + (hi - v) / (hi - lo) * (H - T - B);
  for (let v = lo; v <= hi; v += 10) {
    svg("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid"}, box);
    svg("text", {x: L - 4, y: y(v) + 4, class: "axis", "text-anchor": "end", text: v}, box);
  }
  for (let k = 0; k <= 4; k++) {
    const t = t0 + k * HOUR_MS / 4;
    svg("text", {x: x(t), y: H - 5, class: "axis", "text-anchor": k === 0 ? "start" : (k === 4 ? "end" : "middle"),
                 text: new Date(t + (c.offsetMin || 0) * 60000).toISOString().slice(11, 16)}, box);
  }
  const limitPts = [];
  for (const m of rows) {
    if (m.limit === null) continue;
    const s = Date.parse(m.start);
    limitPts.push(`${x(s)},${y(m.limit)}`, `${x(s + 60000)},${y(m.limit)}`);
  }
  if (limitPts.length) svg("polyline", {points: limitPts.join(" "), class: "limit-line"}, box);
  const pts = rows.filter(m => m.laeq !== null).map(m => `${x(Date.parse(m.start) + 30000)},${y(m.laeq)}`);
  if (pts.length) svg("polyline", {points: pts.join(" "), class: "level-line"}, box);
  for (const m of rows) {
    if (m.laeq === null) continue;
    svg("circle", {cx: x(Date.parse(m.start) + 30000), cy: y(m.laeq), r: 2.6, class: "pt " + minuteState(m)}, box);
  }
  svg("text", {x: W - R, y: T + 8, class: "axis", "text-anchor": "end",
               text: "1-min LAeq dB, limit dashed; " + (c.offsetMin === undefined ? "UTC" : "local time")}, box);
}

// -- report form: the last hour of the site, in the meters' local time, as a default ----------------------------------
function defaultPeriod(view) {
  const withMinute = view.meters.find(m => m.minute && m.minute.local);
  if (!withMinute) return;
  const start = new Date(Date.parse(withMinute.minute.start));
  const localNow = new Date(start.getTime() + localOffsetMin(withMinute.minute) * 60000);
  const to = new Date(Date.UTC(localNow.getUTCFullYear(), localNow.getUTCMonth(), localNow.getUTCDate(),
                               localNow.getUTCHours() + 1));
  const from = new Date(to.getTime() - 2 * HOUR_MS);
  const f = d => d.toISOString().slice(0, 16);
  const inFrom = document.getElementById("report-from"), inTo = document.getElementById("report-to");
  if (!inFrom.value) inFrom.value = f(from);
  if (!inTo.value) inTo.value = f(to);
}

// -- start ----------------------------------------------------------------------------------------------------------
async function start() {
  const conn = document.getElementById("connection");
  const first = await (await fetch(api)).json();
  plan = first.plan;
  drawPlan(first.meters);
  const hist = await (await fetch(api + "/history")).json();
  history = hist.minutes || {};
  update(first);
  defaultPeriod(first);
  const source = new EventSource(api + "/live");
  let updates = 0;
  source.addEventListener("live", ev => {
    const view = JSON.parse(ev.data);
    if (view === null) return;
    for (const m of view.meters) {  // a meter that appeared since the page loaded: add it to the plan
      if (!cards[m.device] && plan && plan.meters[m.device]) drawPlan(view.meters);
    }
    update(view);
    updates += 1;
    conn.textContent = "live";
    conn.dataset.state = "live";
    conn.dataset.updates = updates;
  });
  source.onerror = () => { conn.textContent = "reconnecting"; conn.dataset.state = "reconnecting"; };
}

start().catch(e => {
  const conn = document.getElementById("connection");
  conn.textContent = "error: " + e;
  conn.dataset.state = "error";
});
