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

// What each chart (a figure[data-chart=KEY] in the page) plots from a trends entry.
const SPECS = {
  exact_match: { range: [0, 1], fmt: pct, series: [{ key: "avg_exact_match", label: "exact match", color: C.blue }] },
  char_error_rate: {
    range: [0, 1], fmt: num(3),
    series: [
      { key: "avg_char_error_rate", label: "mean CER", color: C.red },
      { key: "min_char_error_rate", label: "min", color: C.red, thin: true },
      { key: "max_char_error_rate", label: "max", color: C.red, thin: true },
    ],
    band: [3, 2],
  },
  word_overlap: { range: [0, 1], fmt: num(3), series: [{ key: "avg_word_overlap", label: "word overlap", color: C.teal }] },
  token_f1: { range: [0, 1], fmt: num(3), series: [{ key: "avg_token_f1", label: "token F1", color: C.purple }] },
  validation: { range: [0, 1], fmt: pct, series: [{ key: "validation_pass_rate", label: "pass rate", color: C.green }] },
  cost: {
    fmt: num(1),
    series: [
      { key: "avg_completion_tokens", label: "tokens", color: C.blue, scale: "tokens" },
      { key: "avg_latency_ms", label: "latency", color: C.amber, scale: "ms", fmt: ms },
    ],
  },
};

const charts = {};
// Tests and the console can reach the drawn charts (uPlot instances) here.
window.predwatchCharts = charts;

export function readTrends() {
  const node = document.getElementById("trends-data");
  return node ? JSON.parse(node.textContent) : [];
}

function columns(spec, trends) {
  return [trends.map((t) => t.step), ...spec.series.map((s) => trends.map((t) => t[s.key] ?? null))];
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
    },
  ];
  const scales = { x: { time: false, range: (u, min, max) => (min === max ? [min - 1, max + 1] : [min, max]) } };
  if (spec.series.some((s) => s.scale)) {
    const [a, b] = spec.series;
    scales[a.scale] = { auto: true };
    scales[b.scale] = { auto: true };
    axes.push({ scale: a.scale, values: (u, t) => t.map((v) => String(+v.toFixed(1))), size: 50, stroke: a.color });
    axes.push({ scale: b.scale, side: 1, grid: { show: false }, values: (u, t) => t.map(ms), size: 64, stroke: b.color });
  } else {
    scales.y = { range: spec.range };
    axes.push({ values: (u, t) => t.map((v) => (spec.fmt === pct ? `${Math.round(v * 100)}%` : String(+v.toFixed(2)))), size: 50 });
  }
  return {
    width, height: HEIGHT, series, axes, scales,
    bands: spec.band ? [{ series: spec.band, fill: "rgba(207, 34, 46, 0.08)" }] : [],
    cursor: { drag: { x: false, y: false }, points: { size: 7 } },
    legend: { live: true },
  };
}

function markEmpty(box, spec, trends) {
  const main = spec.series[0].key;
  const empty = !trends.some((t) => t[main] != null);
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
  for (const figure of document.querySelectorAll("figure[data-chart]")) {
    const key = figure.dataset.chart;
    const spec = SPECS[key];
    if (!spec) continue;
    const box = figure.querySelector(".chart-box");
    const state = { steps: trends.map((t) => t.step), epochs: trends.map((t) => t.epoch) };
    const u = new uPlot(options(spec, state, box.clientWidth || 360), columns(spec, trends), box);
    u.predwatch = { spec, state, figure, box };
    charts[key] = u;
    figure.dataset.points = String(trends.length);
    markEmpty(box, spec, trends);
    u.over.addEventListener("click", () => {
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
