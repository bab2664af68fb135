// predwatch UI enhancements. Every page works without this file: it adds the trend charts,
// live updates on a run page, and a few conveniences on forms.
const config = readPageConfig();

function readPageConfig() {
  const node = document.getElementById("page-config");
  return node ? JSON.parse(node.textContent) : {};
}

// Selects marked data-autosubmit submit their form on change (e.g. picking a run to compare);
// data-clears names a field that no longer applies (the step of the previously chosen run).
for (const select of document.querySelectorAll("select[data-autosubmit]")) {
  select.addEventListener("change", () => {
    const stale = select.dataset.clears && select.form.elements[select.dataset.clears];
    if (stale) stale.value = "";
    select.form.requestSubmit();
  });
}

// Example links in the config builder fill their textarea instead of reloading the page.
for (const link of document.querySelectorAll("a[data-example-target]")) {
  link.addEventListener("click", (event) => {
    const target = document.querySelector(`textarea[name="${link.dataset.exampleTarget}"]`);
    if (!target) return;
    event.preventDefault();
    target.value = link.dataset.example;
    target.dispatchEvent(new Event("input"));
  });
}

// JSON editors: say at once whether the text parses (the server still validates on submit).
for (const area of document.querySelectorAll("textarea[data-json-editor]")) {
  const note = document.createElement("span");
  note.className = "hint json-state";
  area.after(note);
  const check = () => {
    if (!area.value.trim()) { note.textContent = ""; return; }
    try { JSON.parse(area.value); note.textContent = "✓ valid JSON"; note.className = "hint json-state good"; }
    catch (err) { note.textContent = `✗ ${err.message}`; note.className = "hint json-state bad"; }
  };
  area.addEventListener("input", check);
  check();
}

// Ids get a copy button (the id itself is on the page in full, selectable without JavaScript).
const addCopyButtons = () => document.querySelectorAll("[data-copy]").forEach(addCopyButton);
addCopyButtons();

function addCopyButton(node) {
  if (node.dataset.copyReady) return;
  node.dataset.copyReady = "1";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy";
  button.textContent = "copy";
  button.title = `copy ${node.dataset.copy}`;
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(node.dataset.copy);
      button.textContent = "copied";
    } catch {
      getSelection().selectAllChildren(node); // no clipboard access: select it for Ctrl+C
      button.textContent = "selected";
    }
    setTimeout(() => { button.textContent = "copy"; }, 2000);
  });
  node.after(button);
}

// "Expand all" / "Collapse all": every <details> in the scope (clipped answers, diffs, errors);
// a scope marked data-collapsible (the prompt timeline) also folds each entry to its head line.
for (const tools of document.querySelectorAll("[data-expand-tools]")) {
  tools.hidden = false;
  const scope = () => document.querySelector(`[data-expand-scope="${tools.dataset.expandTools}"]`);
  for (const button of tools.querySelectorAll("button[data-expand]")) {
    button.addEventListener("click", () => {
      const target = scope();
      if (!target) return;
      const open = button.dataset.expand === "open";
      target.querySelectorAll("details").forEach((d) => { d.open = open; });
      if (target.hasAttribute("data-collapsible")) target.classList.toggle("is-collapsed", !open);
      target.dataset.expanded = open ? "all" : "none";
    });
  }
}

let charts = null;
let live = null;
const shownStep = () => document.querySelector("[data-shown-step]")?.dataset.shownStep ?? null;

// Picking an evaluation point on a chart: the page swaps in that point's headline, table and
// worst samples (the same server-rendered regions as live updates), the URL gets ?step=N (so
// reload, back and links keep it), and the predictions come into view.
async function selectStep(step) {
  const url = new URL(location.href);
  url.searchParams.set("step", step);
  url.searchParams.delete("page");
  url.hash = "";
  charts.setSelected(step);
  try {
    live ??= await import("predwatch/live.js");
    await live.showPage(url.toString());
  } catch (err) {
    console.warn("predwatch: showing step failed, loading it instead", err);
    location.href = url.toString();
    return;
  }
  history.pushState({ step }, "", url);
  afterSwap();
  const title = document.getElementById("predictions-title");
  title?.scrollIntoView({ block: "start" });
  title?.focus({ preventScroll: true });
}

function afterSwap() {
  charts?.updateCharts(charts.readTrends());
  charts?.setSelected(shownStep());
  addCopyButtons();
}

if (document.querySelector("[data-chart]")) {
  try {
    charts = await import("predwatch/charts.js");
    const selectable = config.page === "run";
    charts.drawCharts(charts.readTrends(), selectable ? { select: selectStep, step: shownStep() } : {});
    setUpSmoothing(charts);
  } catch (err) {
    console.error("predwatch: charts could not be drawn", err);
  }
}

// The smoothing slider (0 = off), remembered in this browser.
function setUpSmoothing(charts) {
  const tools = document.querySelector("[data-chart-tools]");
  const input = tools?.querySelector("[data-smoothing]");
  if (!input) return;
  tools.hidden = false;
  const out = tools.querySelector("[data-smoothing-value]");
  const show = () => { out.textContent = Number(input.value) > 0 ? Number(input.value).toFixed(2) : "off"; };
  let saved = null;
  try { saved = localStorage.getItem("predwatch.smoothing"); } catch { /* storage blocked */ }
  if (saved && Number(saved) > 0) {
    input.value = saved;
    charts.setSmoothing(input.value, charts.readTrends());
  }
  show();
  input.addEventListener("input", () => {
    show();
    charts.setSmoothing(input.value, charts.readTrends());
    try { localStorage.setItem("predwatch.smoothing", input.value); } catch { /* storage blocked */ }
  });
}

if (config.page === "run") {
  live = await import("predwatch/live.js");
  const run = live.startLive(config, { onRefresh: afterSwap });
  // Back / forward between picked evaluation points.
  window.addEventListener("popstate", async () => {
    try { await live.showPage(location.href); afterSwap(); } catch { location.reload(); }
  });
  // Checkpoint jobs change without answers arriving (a job fails): while some are pending or
  // running, the page also refetches itself now and then (only while the tab is visible).
  if (config.jobs_poll_ms) {
    setInterval(() => {
      if (!document.hidden && document.querySelector("[data-jobs-active]")) run.refresh();
    }, config.jobs_poll_ms);
  }
}
if (config.page === "runs" && config.poll_ms) {
  const live = await import("predwatch/live.js");
  window.predwatchRunsPoll = live.startPolling(config.poll_ms, { onRefresh: addCopyButtons });
}
