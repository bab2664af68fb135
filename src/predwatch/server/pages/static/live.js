// Live updates of a run page. The run's server-sent event stream says when answers arrive;
// the page then fetches itself again and swaps the regions marked data-live-region, so new
// evaluation points, rows, headline numbers and charts appear without a reload, rendered
// (and escaped) by the same server templates as on first load, honouring the filter in the URL.
// The stream resumes after a dropped connection from the last sequence number seen.

const REFRESH_DELAY_MS = 400; // coalesce a burst of rows (one evaluation point) into one refresh
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 15000;

export function startLive(config, { onRefresh } = {}) {
  const status = document.querySelector("[data-live-status]");
  let after = config.after ?? null; // sequence number of the last answer this page has
  let source = null;
  let retry = RETRY_MIN_MS;
  let refreshTimer = null;
  let refreshing = false;
  let again = false;
  let opened = false;

  function setStatus(state, text) {
    if (!status) return;
    status.hidden = false;
    status.dataset.state = state;
    status.textContent = text;
  }

  function connect() {
    const url = new URL(config.stream_url, location.href);
    if (after != null) url.searchParams.set("after", after);
    source = new EventSource(url);
    source.addEventListener("open", () => {
      setStatus("live", "live");
      if (opened) scheduleRefresh(); // reconnected: catch up on what happened meanwhile
      opened = true;
    });
    source.addEventListener("connected", () => { retry = RETRY_MIN_MS; setStatus("live", "live"); });
    source.addEventListener("prediction", (event) => {
      const seq = sequenceOf(event);
      if (seq != null) after = seq;
      scheduleRefresh();
    });
    // "error" is both the server's error event (with data) and the browser's connection error.
    source.addEventListener("error", (event) => {
      if (event.data) console.warn("predwatch stream:", event.data);
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. the server restarted or answered an error): retry ourselves.
        source.close();
        setStatus("reconnecting", "reconnecting…");
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, RETRY_MAX_MS);
      } else {
        setStatus("reconnecting", "reconnecting…"); // the browser retries with Last-Event-ID
      }
    });
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, REFRESH_DELAY_MS);
  }

  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const response = await fetch(location.href, { cache: "no-store", headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      swapRegions(fresh);
      if (onRefresh) onRefresh();
    } catch (err) {
      console.warn("predwatch: refresh failed", err);
    } finally {
      refreshing = false;
      if (again) { again = false; scheduleRefresh(); }
    }
  }

  connect();
  window.addEventListener("pagehide", () => source && source.close());
  return { refresh, get after() { return after; } };
}

// The runs list has no single stream to follow: it fetches itself every pollMs while the tab
// is visible and swaps its live regions (new runs, statuses, last-point metrics).
export function startPolling(pollMs, { onRefresh } = {}) {
  let busy = false;
  async function poll() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await fetch(location.href, { cache: "no-store", headers: { Accept: "text/html" } });
      if (response.ok) {
        swapRegions(new DOMParser().parseFromString(await response.text(), "text/html"));
        if (onRefresh) onRefresh();
      }
    } catch (err) {
      console.warn("predwatch: refresh failed", err);
    } finally {
      busy = false;
    }
  }
  const timer = setInterval(poll, pollMs);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  window.addEventListener("pagehide", () => clearInterval(timer));
  return { poll };
}

function sequenceOf(event) {
  if (event.lastEventId) {
    const n = Number(event.lastEventId);
    if (Number.isFinite(n)) return n;
  }
  try {
    const data = JSON.parse(event.data);
    return data.seq ?? data.sequence ?? data.id ?? null;
  } catch {
    return null;
  }
}

function rowKeys(root) {
  return new Set([...root.querySelectorAll("tr[data-key]")].map((row) => row.dataset.key));
}

function openDetails(root) {
  // Expanded parts of a row (e.g. its validation errors), by row key and position in the row.
  const open = new Set();
  for (const row of root.querySelectorAll("tr[data-key]")) {
    row.querySelectorAll("details").forEach((d, i) => { if (d.open) open.add(`${row.dataset.key}#${i}`); });
  }
  return open;
}

// Shows another view of the same page (an evaluation point picked on a chart): fetches ``url``
// and swaps the live regions, without flashing rows as new. Throws when the fetch fails.
export async function showPage(url) {
  const response = await fetch(url, { cache: "no-store", headers: { Accept: "text/html" } });
  if (!response.ok) throw new Error(`${response.status} ${url}`);
  swapRegions(new DOMParser().parseFromString(await response.text(), "text/html"), { flash: false });
}

function swapRegions(fresh, { flash = true } = {}) {
  const seen = rowKeys(document);
  const open = openDetails(document);
  // Ticked checkboxes (runs chosen to overlay or compare) stay ticked.
  const ticked = new Set([...document.querySelectorAll("[data-live-region] input[type=checkbox]:checked")]
    .map((box) => `${box.name}=${box.value}`));
  for (const region of document.querySelectorAll("[data-live-region]")) {
    const name = region.dataset.liveRegion;
    const next = fresh.querySelector(`[data-live-region="${name}"]`);
    if (!next || region.innerHTML === next.innerHTML) continue;
    if (region.tagName === "SELECT" && document.activeElement === region) continue;
    region.innerHTML = next.innerHTML;
    if (region.tagName === "SCRIPT") region.textContent = next.textContent;
  }
  for (const box of document.querySelectorAll("[data-live-region] input[type=checkbox]")) {
    if (ticked.has(`${box.name}=${box.value}`)) box.checked = true;
  }
  // What the reader had expanded stays expanded.
  for (const row of document.querySelectorAll("tr[data-key]")) {
    row.querySelectorAll("details").forEach((d, i) => { if (open.has(`${row.dataset.key}#${i}`)) d.open = true; });
  }
  if (flash && (seen.size || document.querySelector("tr[data-key]"))) {
    for (const row of document.querySelectorAll("tr[data-key]")) {
      if (!seen.has(row.dataset.key)) row.classList.add("is-new");
    }
  }
}
