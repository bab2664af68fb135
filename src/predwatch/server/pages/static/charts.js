// Trend charts of a run, drawn with uPlot (vendored; served by predwatch, no CDN) from the
// trends JSON embedded in the page. One point per evaluation point; x = step, epoch shown
// under the step and in the legend. Clicking a chart opens that evaluation point's answers.
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

const charts = {};
// Tests and the console can reach the drawn charts (uPlot instances) here.
window.predwatchCharts = charts;

export function readTrends() {
  const node = document.getElementById("trends-data");
  return node ? JSON.parse(node.textContent) : [];
}

function columns(spec, trends) {
  return [trends.map((t) => t.step), ...spec.series.map((s) => trends.map((t) => valueOf(s, t)))];
}

function options(spec, state, width) {
  const series = [
    {
      label: "point",
      value: (u, v, si, i) => (i == null || v == null ? "—"
        : `step ${v}${state.epochs[i] != null ? ` · epoch ${epochText(state.epochs[i])}` : ""}`),
    },
    ...spec.series.map((s) => ({
      label: s.label,
      stroke: s.color,
      width: s.thin ? 1 : 2,
      dash: s.thin ? [3, 3] : undefined,
      scale: s.scale || "y",
      spanGaps: true,
      points: { show: !s.thin, size: 6, fill: "#fff" },
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
    axes.push({ scale: a.scale, values: (u, t) => t.map((v) => String(+v.toFixed(1))), size: 50, stroke: a.color, label: a.label, labelSize: 16 });
    axes.push({ scale: b.scale, side: 1, grid: { show: false }, values: (u, t) => t.map(ms), size: 64, stroke: b.color, label: b.label, labelSize: 16 });
  } else {
    scales.y = spec.range ? { range: spec.range } : { auto: true };
    axes.push({ values: (u, t) => t.map((v) => (spec.fmt === pct ? `${Math.round(v * 100)}%` : String(+v.toFixed(2)))), size: 50,
      label: spec.title, labelSize: 16 });
  }
  // Axis text and grid follow the page's colours (dark mode included).
  const ink = getComputedStyle(document.body).color;
  const grid = getComputedStyle(document.documentElement).getPropertyValue("--border-soft").trim();
  for (const axis of axes) {
    axis.stroke = axis.stroke || ink;
    axis.grid = { stroke: grid || undefined, width: 1, ...(axis.grid || {}) };
    axis.ticks = { stroke: grid || undefined, width: 1 };
  }
  return {
    width, height: HEIGHT, series, axes, scales,
    bands: spec.band ? [{ series: spec.band, fill: "rgba(207, 34, 46, 0.08)" }] : [],
    cursor: { drag: { x: false, y: false }, points: { size: 7 } },
    legend: { live: true },
  };
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

export function drawCharts(trends) {
  const specs = readSpecs();
  for (const figure of document.querySelectorAll("figure[data-chart]")) {
    const key = figure.dataset.chart;
    const spec = specs[key];
    if (!spec) continue;
    const box = figure.querySelector(".chart-box");
    const state = { steps: trends.map((t) => t.step), epochs: trends.map((t) => t.epoch) };
    const u = new uPlot(options(spec, state, box.clientWidth || 360), columns(spec, trends), box);
    u.predwatch = { spec, state, figure, box };
    charts[key] = u;
    figure.dataset.points = String(trends.length);
    markEmpty(box, spec, trends);
    u.over.addEventListener("click", () => {
      if (spec.noclick) return; // an overlay of several runs: a step belongs to none of them
      const i = u.cursor.idx;
      if (i == null || state.steps[i] == null) return;
      const url = new URL(location.href);
      url.searchParams.set("step", state.steps[i]);
      url.searchParams.delete("page");
      location.href = url.toString();
    });
    new ResizeObserver(() => {
      const width = box.clientWidth;
      if (width && width !== u.width) u.setSize({ width, height: HEIGHT });
    }).observe(box);
  }
}

export function updateCharts(trends) {
  for (const u of Object.values(charts)) {
    const { spec, state, figure, box } = u.predwatch;
    state.steps = trends.map((t) => t.step);
    state.epochs = trends.map((t) => t.epoch);
    u.setData(columns(spec, trends));
    figure.dataset.points = String(trends.length);
    markEmpty(box, spec, trends);
  }
}
