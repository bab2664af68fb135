// Trend charts of a run, drawn with uPlot (vendored; served by predwatch, no CDN) from the
// trends JSON embedded in the page. One point per evaluation point; x = step, epoch shown
// under the step and in the legend. Clicking a point (or, with the chart focused, ← → and
// Enter) selects that evaluation point: a marker on every chart, and the page shows its
// answers (app.js). Optional smoothing (an exponential moving average) draws a smoothed line
// over the raw one, which stays visible, faint. Rates are in %, axes carry their unit.
import uPlot from "uplot";

const C = { blue: "#0969da", red: "#cf222e", green: "#1a7f37", purple: "#8250df", amber: "#bf8700", teal: "#1b7c83" };
const HEIGHT = 190;

const pct = (v) => (v == null ? "—" : `${(v * 100).toFixed(1)}%`);
const num = (digits) => (v) => (v == null ? "—" : v.toFixed(digits));
const ms = (v) => (v == null ? "—" : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(0)} ms`);
const epochText = (e) => (e == null ? "" : String(Number(e.toFixed(2))));

// The epoch at step v: an evaluation point's own, else interpolated between the two around it
// (a tick between points of a dense axis); null outside the run's points or without epochs.
function epochAt(state, v) {
  const { steps, epochs } = state;
  const i = steps.indexOf(v);
  if (i >= 0) return epochs[i];
  for (let j = 0; j + 1 < steps.length; j++) {
    if (steps[j] < v && v < steps[j + 1] && epochs[j] != null && epochs[j + 1] != null) {
      return epochs[j] + ((epochs[j + 1] - epochs[j]) * (v - steps[j])) / (steps[j + 1] - steps[j]);
    }
  }
  return null;
}

// What each chart (a figure[data-chart=KEY] in the page) plots from a trends entry: specs come
// from the page (JSON built from the server's metric registry), so a registered metric gets its
// chart without a change here. A series reads t.averages[metric] or the entry's field key.
const FORMATS = { pct, num: num(3), num1: num(1), ms };

function readSpecs() {
  const node = document.getElementById("chart-specs");
  const specs = {};
  for (const spec of node ? JSON.parse(node.textContent) : []) {
    specs[spec.key] = {
      ...spec,
      fmt: FORMATS[spec.fmt] || num(3),
      series: spec.series.map((s) => ({ ...s, color: C[s.color] || s.color, fmt: s.fmt ? FORMATS[s.fmt] : undefined })),
    };
  }
  return specs;
}

const valueOf = (s, t) => (s.metric != null ? (t.averages || {})[s.metric] : t[s.key]) ?? null;

// Smoothing weight in [0, 1): 0 is off. A debiased exponential moving average (as TensorBoard's),
// so the first points are not pulled towards 0; gaps (null) stay gaps.
let smoothing = 0;
export function smooth(values, weight) {
  let last = 0;
  let n = 0;
  return values.map((v) => {
    if (v == null) return null;
    n += 1;
    last = last * weight + (1 - weight) * v;
    return last / (1 - weight ** n);
  });
}

// A colour made faint (the raw line under a smoothed one).
function faint(color) {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(color || "");
  return m ? `rgba(${parseInt(m[1], 16)}, ${parseInt(m[2], 16)}, ${parseInt(m[3], 16)}, 0.3)` : color;
}

// The evaluation point shown on the page: a marker on every chart.
let selected = null;

const charts = {};
// Tests and the console can reach the drawn charts (uPlot instances) here.
window.predwatchCharts = charts;

export function readTrends() {
  const node = document.getElementById("trends-data");
  return node ? JSON.parse(node.textContent) : [];
}

// The series smoothing adds: one per main (not thin) series, appended after the raw ones so
// the band's series indexes stay as they are.
const smoothable = (spec) => (smoothing > 0 ? spec.series.filter((s) => !s.thin) : []);

function columns(spec, trends) {
  const raw = spec.series.map((s) => trends.map((t) => valueOf(s, t)));
  const smoothed = smoothable(spec).map((s) => smooth(trends.map((t) => valueOf(s, t)), smoothing));
  return [trends.map((t) => t.step), ...raw, ...smoothed];
}

function options(spec, state, width) {
  const series = [
    {
      label: "point",
      value: (u, v, si, i) => (i == null || v == null ? "—"
        : `step ${v}${state.epochs[i] != null ? ` · epoch ${epochText(state.epochs[i])}` : ""}`),
    },
    ...spec.series.map((s) => {
      const under = smoothing > 0 && !s.thin; // drawn faint under its smoothed line
      return {
        label: under ? `${s.label} (raw)` : s.label,
        stroke: under ? faint(s.color) : s.color,
        width: s.thin || under ? 1 : 2,
        dash: s.thin ? [3, 3] : undefined,
        scale: s.scale || "y",
        spanGaps: true,
        points: { show: !s.thin, size: under ? 4 : 6, fill: "#fff", stroke: under ? faint(s.color) : s.color },
        value: (u, v) => (s.fmt || spec.fmt)(v),
      };
    }),
    ...smoothable(spec).map((s) => ({
      label: `${s.label} (smoothed)`,
      stroke: s.color,
      width: 2,
      scale: s.scale || "y",
      spanGaps: true,
      points: { show: false },
      value: (u, v) => (s.fmt || spec.fmt)(v),
    })),
  ];
  const few = () => state.steps.length <= 10;
  const axes = [
    {
      splits: (u, axisIdx, min, max, incr) => {
        if (few()) return state.steps.slice();
        const out = [];
        for (let v = Math.ceil(min / incr) * incr; v <= max; v += incr) out.push(v);
        return out;
      },
      values: (u, splits) => splits.map((v) => {
        const e = epochAt(state, v);
        return e != null ? `${v}\nep ${epochText(e)}` : String(v);
      }),
      size: 44,
      gap: 4,
      label: "step (epoch)",
      labelSize: 16,
    },
  ];
  const scales = { x: { time: false, range: (u, min, max) => (min === max ? [min - 1, max + 1] : [min, max]) } };
  if (spec.series.some((s) => s.scale)) {
    const [a, b] = spec.series;
    scales[a.scale] = { auto: true };
    scales[b.scale] = { auto: true };
    axes.push({ scale: a.scale, values: (u, t) => t.map((v) => String(+v.toFixed(1))), size: 50, stroke: a.color, label: a.axis || a.label, labelSize: 16 });
    axes.push({ scale: b.scale, side: 1, grid: { show: false }, values: (u, t) => t.map(ms), size: 64, stroke: b.color, label: b.axis || b.label, labelSize: 16 });
  } else {
    scales.y = spec.range ? { range: spec.range } : { auto: true };
    axes.push({ values: (u, t) => t.map((v) => (spec.fmt === pct ? `${Math.round(v * 100)}%` : String(+v.toFixed(2)))), size: 50,
      label: spec.axis || spec.title, labelSize: 16 });
  }
  // Axis text and grid follow the page's colours (dark mode included).
  const ink = getComputedStyle(document.body).color;
  const grid = getComputedStyle(document.documentElement).getPropertyValue("--border-soft").trim();
  for (const axis of axes) {
    axis.stroke = axis.stroke || ink;
    axis.grid = { stroke: grid || undefined, width: 1, ...(axis.grid || {}) };
    axis.ticks = { stroke: grid || undefined, width: 1 };
  }
  const accent = getComputedStyle(document.documentElement).getPropertyValue("--accent").trim() || "#0969da";
  return {
    width, height: HEIGHT, series, axes, scales,
    bands: spec.band ? [{ series: spec.band, fill: "rgba(207, 34, 46, 0.08)" }] : [],
    cursor: { drag: { x: false, y: false }, points: { size: 7 } },
    legend: { live: true },
    hooks: { draw: [(u) => drawMarker(u, state, accent)] },
  };
}

// A dashed vertical line at the selected evaluation point, with a ring on each main series.
function drawMarker(u, state, color) {
  if (selected == null || !state.steps.includes(selected)) return;
  const { ctx, bbox } = u;
  const x = Math.round(u.valToPos(selected, "x", true));
  const px = devicePixelRatio || 1;
  ctx.save();
  ctx.strokeStyle = color;
  ctx.lineWidth = 2 * px;
  ctx.setLineDash([5 * px, 4 * px]);
  ctx.beginPath();
  ctx.moveTo(x, bbox.top);
  ctx.lineTo(x, bbox.top + bbox.height);
  ctx.stroke();
  ctx.setLineDash([]);
  const i = state.steps.indexOf(selected);
  for (let si = 1; si < u.series.length; si++) {
    const v = u.data[si][i];
    if (v == null || !u.series[si].show) continue;
    const y = u.valToPos(v, u.series[si].scale, true);
    ctx.beginPath();
    ctx.arc(x, y, 5 * px, 0, 2 * Math.PI);
    ctx.stroke();
  }
  ctx.restore();
}

// Marks ``step`` on every chart (null: no marker).
export function setSelected(step) {
  selected = step == null || step === "" ? null : Number(step);
  for (const u of Object.values(charts)) {
    u.predwatch.figure.dataset.selectedStep = selected == null ? "" : String(selected);
    u.redraw(false, false);
  }
}

export function getSelected() {
  return selected;
}

function markEmpty(box, spec, trends) {
  const main = spec.series[0];
  const empty = !trends.some((t) => valueOf(main, t) != null);
  let note = box.querySelector(".no-data");
  if (empty && !note) {
    note = document.createElement("div");
    note.className = "no-data";
    box.append(note);
  }
  if (note) {
    note.hidden = !empty;
    note.textContent = trends.length ? "not recorded for this run" : "waiting for the first evaluation point";
  }
}

let onSelect = null;

// Draws every chart of the page. ``select(step)`` is called when a point is picked; without it
// (or on an overlay of several runs, ``noclick``) picking does nothing.
export function drawCharts(trends, { select, step } = {}) {
  if (select) onSelect = select;
  if (step !== undefined) selected = step == null || step === "" ? null : Number(step);
  const specs = readSpecs();
  for (const figure of document.querySelectorAll("figure[data-chart]")) {
    const key = figure.dataset.chart;
    const spec = specs[key];
    if (!spec) continue;
    const box = figure.querySelector(".chart-box");
    const state = { steps: trends.map((t) => t.step), epochs: trends.map((t) => t.epoch), kbd: null };
    const u = new uPlot(options(spec, state, box.clientWidth || 360), columns(spec, trends), box);
    const resize = new ResizeObserver(() => {
      const width = box.clientWidth;
      if (width && width !== u.width) u.setSize({ width, height: HEIGHT });
    });
    resize.observe(box);
    u.predwatch = { spec, state, figure, box, resize };
    charts[key] = u;
    figure.dataset.points = String(trends.length);
    figure.dataset.selectedStep = selected == null ? "" : String(selected);
    figure.dataset.smoothing = String(smoothing);
    markEmpty(box, spec, trends);
    if (spec.noclick || !onSelect) continue; // an overlay of several runs: a step belongs to none
    u.over.addEventListener("click", () => {
      const i = u.cursor.idx;
      if (i != null && state.steps[i] != null) onSelect(state.steps[i]);
    });
    if (!figure.hasAttribute("tabindex")) {
      figure.tabIndex = 0;
      figure.setAttribute("aria-label", `${spec.title} trend chart: use the left and right arrow keys to move between evaluation points, Enter to show one`);
    }
    figure.onkeydown = (event) => keyboard(event, charts[key]);
  }
}

// ← → move the cursor between evaluation points, Home/End to the ends, Enter or Space picks.
function keyboard(event, u) {
  const { state } = u.predwatch;
  const n = state.steps.length;
  if (!n) return;
  let i = state.kbd ?? Math.max(state.steps.indexOf(selected), 0);
  if (event.key === "ArrowLeft") i = Math.max(i - 1, 0);
  else if (event.key === "ArrowRight") i = Math.min(i + 1, n - 1);
  else if (event.key === "Home") i = 0;
  else if (event.key === "End") i = n - 1;
  else if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    onSelect?.(state.steps[i]);
    return;
  } else return;
  event.preventDefault();
  state.kbd = i;
  u.setCursor({ left: u.valToPos(state.steps[i], "x"), top: u.bbox.height / (devicePixelRatio || 1) / 2 });
}

// Redraws every chart with smoothing ``weight`` (0: off).
export function setSmoothing(weight, trends) {
  smoothing = Math.min(Math.max(Number(weight) || 0, 0), 0.99);
  for (const [key, u] of Object.entries(charts)) {
    u.predwatch.resize.disconnect();
    u.destroy();
    delete charts[key];
  }
  drawCharts(trends);
}

export function updateCharts(trends) {
  for (const u of Object.values(charts)) {
    const { spec, state, figure, box } = u.predwatch;
    state.steps = trends.map((t) => t.step);
    state.epochs = trends.map((t) => t.epoch);
    state.kbd = null;
    u.setData(columns(spec, trends));
    figure.dataset.points = String(trends.length);
    markEmpty(box, spec, trends);
  }
}
