// tabserve playground: models and their cards, a form built from model metadata, live metrics.
// Everything comes from tabserve's own API; the API key (if any) is kept in sessionStorage only.
"use strict";

const KEY_STORAGE = "tabserve-api-key";
const HISTORY = 60;
const $ = (id) => document.getElementById(id);
let current = null; // {name, version, metadata}
let selections = 0; // the latest selectModel call: an earlier one whose answers come later gives way

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) throw new Error(body && body.error ? body.error : `${response.status} ${text.slice(0, 200)}`);
  return body === null ? text : body;
}

function show(element, visible) { element.hidden = !visible; }
function fmt(value, digits = 4) { return typeof value === "number" ? Number(value.toPrecision(digits)).toString() : String(value); }

async function loadModels() {
  show($("models-error"), false);
  let index;
  try {
    index = await api("/v2/repository/index", { method: "POST", body: "{}", headers: { "Content-Type": "application/json" } });
  } catch (error) {
    $("models-error").textContent = error.message;
    show($("models-error"), true);
    return;
  }
  const list = $("models");
  list.replaceChildren();
  for (const item of index.filter((entry) => entry.state === "READY")) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.model = item.name;
    button.dataset.version = item.version;
    button.innerHTML = `${item.name} <small>v${item.version}</small>`;
    button.addEventListener("click", () => selectModel(item.name, item.version, button));
    li.append(button);
    list.append(li);
  }
  // Open on a model rather than an empty page: the first one, until the user picks another.
  const first = list.querySelector("button");
  if (!current && selections === 0 && first) first.click();
}

async function selectModel(name, version, button) {
  const selection = ++selections;
  document.querySelectorAll("#models button").forEach((b) => b.classList.toggle("selected", b === button));
  const metadata = await api(`/v2/models/${encodeURIComponent(name)}/versions/${version}`);
  if (selection !== selections) return;
  current = { name, version, metadata };
  const p = metadata.parameters || {};
  $("model-title").textContent = `${name} v${version}`;
  $("model-description").textContent = p.description || "";
  renderCard(p);
  renderImportance(p.importance);
  renderFields(metadata.inputs, p.features || []);
  await refreshQuality();
  if (selection !== selections) return;
  show($("prediction"), false);
  show($("error"), false);
  show($("model-panel"), true);
}

function renderCard(p) {
  const rows = [["task", p.task], ["estimator", p.estimator]];
  const cv = (p.metrics || {}).cv || {};
  for (const [metric, value] of Object.entries(cv)) {
    if (value && typeof value === "object") rows.push([`CV ${metric}`, `${fmt(value.mean)} ± ${fmt(value.std, 2)} (${cv.folds} folds)`]);
  }
  const holdout = (p.metrics || {}).holdout;
  if (holdout) rows.push(["held-out score", `${fmt(holdout.score)} on ${holdout.rows} rows`]);
  const parity = p.parity || {};
  for (const [output, figures] of Object.entries(parity.outputs || {})) {
    rows.push([`parity ${output}`, `max abs ${fmt(figures.max_abs_error, 2)}, max rel ${fmt(figures.max_rel_error, 2)}`]);
  }
  if (parity.rows) rows.push(["parity rows", `${parity.rows} (${parity.edge_rows} edge), ${parity.passed ? "passed" : "FAILED"}`]);
  if (p.classes) rows.push(["classes", p.classes.join(", ")]);
  if (p.sha256) rows.push(["sha256", p.sha256.slice(0, 16) + "…"]);
  const dl = $("model-card");
  dl.replaceChildren();
  for (const [term, value] of rows) {
    if (value === undefined || value === null) continue;
    const dt = document.createElement("dt"); dt.textContent = term;
    const dd = document.createElement("dd"); dd.textContent = value;
    dl.append(dt, dd);
  }
}

// A signed bar: from the middle line, right for a push up, left for a push down, scaled to the largest.
function signedBar(name, value, largest, text) {
  const row = document.createElement("div");
  row.className = "bar signed";
  row.dataset.column = name;
  row.innerHTML = `<span></span><div class="track"><div class="fill"></div></div><span></span>`;
  row.children[0].textContent = name;
  const fill = row.querySelector(".fill");
  const share = largest > 0 ? (Math.abs(value) / largest) * 50 : 0;
  fill.style.width = `${share.toFixed(1)}%`;
  fill.style.left = value >= 0 ? "50%" : `${(50 - share).toFixed(1)}%`;
  fill.classList.toggle("down", value < 0);
  row.children[2].textContent = text;
  return row;
}

function renderImportance(importance) {
  const panel = $("importance");
  panel.replaceChildren();
  const columns = (importance && importance.columns) || [];
  const largest = Math.max(0, ...columns.map((c) => Math.abs(c.mean)));
  for (const c of columns) panel.append(signedBar(c.column, c.mean, largest, `${fmt(c.mean, 3)} ± ${fmt(c.std, 2)}`));
  show($("importance-panel"), columns.length > 0);
}

async function explain(model, record, prediction) {
  show($("why"), false);
  show($("why-error"), false);
  if (!model.metadata.parameters || !model.metadata.parameters.background_rows) return;
  const path = `/v1/models/${encodeURIComponent(model.name)}/versions/${model.version}:explain`;
  try {
    const body = await api(path, { method: "POST", body: JSON.stringify({ instances: [record] }), headers: { "Content-Type": "application/json" } });
    if (current !== model) return; // another model was chosen meanwhile: this one's explanation is not shown
    // A classifier: explain the class it chose; a regressor has one output.
    const index = prediction && typeof prediction === "object" ? Math.max(0, body.outputs.indexOf(String(prediction.label))) : 0;
    const values = body.values[0];
    const entries = Object.entries(values).map(([column, perOutput]) => [column, perOutput[index]]);
    entries.sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
    const largest = Math.max(0, ...entries.map(([, v]) => Math.abs(v)));
    const bars = $("contributions");
    bars.replaceChildren();
    for (const [column, value] of entries) bars.append(signedBar(column, value, largest, (value >= 0 ? "+" : "") + fmt(value, 3)));
    $("why-output").textContent = `on ${body.outputs[index]}`;
    $("why-note").textContent = `base ${fmt(body.base_values[index])} + contributions = ${fmt(body.prediction[0][index])} · ` +
      `${body.method}, ${body.rows_evaluated} rows scored in ${(body.seconds * 1000).toFixed(1)} ms`;
    show($("why"), true);
  } catch (error) {
    if (current !== model) return;
    $("why-error").textContent = `explanation: ${error.message}`;
    show($("why-error"), true);
  }
}

// A small histogram: the recent window's share per bin as filled bars, training's as outlines.
function histogram(recent, reference) {
  const canvas = document.createElement("canvas");
  canvas.width = 120; canvas.height = 28;
  const ctx = canvas.getContext("2d");
  const total = recent.reduce((a, b) => a + b, 0);
  const shares = recent.map((count) => (total ? count / total : 0));
  const top = Math.max(1e-9, ...shares, ...(reference || []));
  const width = canvas.width / Math.max(1, shares.length);
  shares.forEach((share, i) => {
    const h = (share / top) * (canvas.height - 2);
    ctx.fillStyle = "#2f6fde"; ctx.fillRect(i * width + 1, canvas.height - h, width - 2, h);
    if (reference) {
      const r = (reference[i] / top) * (canvas.height - 2);
      ctx.strokeStyle = "#5b6574"; ctx.strokeRect(i * width + 1.5, canvas.height - r + 0.5, width - 3, r);
    }
  });
  return canvas;
}

async function refreshQuality() {
  const model = current;
  if (!model) return;
  let report;
  try {
    report = await api(`/v2/models/${encodeURIComponent(model.name)}/versions/${model.version}/quality`);
  } catch (error) {
    if (current === model) show($("quality-panel"), false);  // monitoring off, or no key yet
    return;
  }
  if (current !== model) return; // another model was chosen meanwhile: its own refresh shows its figures
  const body = $("quality").tBodies[0];
  body.replaceChildren();
  for (const feature of report.features) {
    const row = body.insertRow();
    row.dataset.feature = feature.name;
    row.insertCell().textContent = feature.name;
    const status = row.insertCell();
    status.textContent = feature.status;
    status.className = `status ${feature.status}`;
    if (feature.reason) status.title = feature.reason;
    row.insertCell().textContent = feature.psi === null ? "-" : fmt(feature.psi, 3);
    row.insertCell().append(histogram(feature.window, feature.reference));
    row.insertCell().textContent = `${feature.missing} of ${feature.values}`;
    const odd = feature.kind === "categorical" ? `${feature.unseen_category} unseen`
      : `${feature.out_of_range.low} low, ${feature.out_of_range.high} high`;
    row.insertCell().textContent = odd;
  }
  show($("quality-panel"), true);
}

function renderFields(inputs, features) {
  const byName = Object.fromEntries(features.map((f) => [f.name, f]));
  const fields = $("fields");
  fields.replaceChildren();
  for (const input of inputs) {
    const feature = byName[input.name] || { kind: input.datatype === "BYTES" ? "categorical" : "numeric" };
    const label = document.createElement("label");
    label.textContent = input.name;
    let control;
    if (feature.kind === "categorical") {
      control = document.createElement("select");
      for (const category of feature.categories || []) control.add(new Option(category, category));
      if (feature.accepts_missing) control.add(new Option("(missing)", ""));
    } else {
      control = document.createElement("input");
      control.type = "number";
      control.step = "any";
      if (feature.minimum !== undefined && feature.minimum !== null) {
        control.placeholder = `${fmt(feature.minimum)} … ${fmt(feature.maximum)}`;
        control.value = fmt((feature.minimum + feature.maximum) / 2);
      }
    }
    control.name = input.name;
    control.dataset.kind = feature.kind;
    label.append(control);
    fields.append(label);
  }
}

async function predict(event) {
  event.preventDefault();
  const model = current;
  if (!model) return;
  const record = {};
  for (const control of $("fields").querySelectorAll("input, select")) {
    if (control.dataset.kind === "numeric") {
      if (control.value.trim() !== "") record[control.name] = Number(control.value);
    } else if (control.value !== "") {
      record[control.name] = control.value;
    }
  }
  const path = `/v1/models/${encodeURIComponent(model.name)}/versions/${model.version}:predict`;
  const started = performance.now();
  try {
    const body = await api(path, { method: "POST", body: JSON.stringify({ instances: [record] }), headers: { "Content-Type": "application/json" } });
    const elapsed = performance.now() - started;
    if (current !== model) return; // answered for a model no longer shown
    showPrediction(body.predictions[0], elapsed);
    await explain(model, record, body.predictions[0]);
  } catch (error) {
    if (current !== model) return;
    show($("prediction"), false);
    $("error").textContent = error.message;
    show($("error"), true);
  }
}

function showPrediction(prediction, elapsed) {
  show($("error"), false);
  const bars = $("probabilities");
  bars.replaceChildren();
  if (prediction && typeof prediction === "object") {
    $("prediction-value").textContent = prediction.label;
    for (const [name, probability] of Object.entries(prediction.probabilities)) {
      const row = document.createElement("div");
      row.className = "bar";
      row.dataset.class = name;
      row.innerHTML = `<span></span><div class="track"><div class="fill"></div></div><span></span>`;
      row.children[0].textContent = name;
      row.querySelector(".fill").style.width = `${(probability * 100).toFixed(1)}%`;
      row.children[2].textContent = `${(probability * 100).toFixed(1)} %`;
      bars.append(row);
    }
  } else {
    $("prediction-value").textContent = fmt(prediction, 7);
  }
  $("latency").textContent = `${elapsed.toFixed(1)} ms round trip`;
  show($("prediction"), true);
}

// ---- live panel: poll /metrics, turn counters and histograms into rates and percentiles ----

function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[2] || "").slice(1, -1).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

function total(samples, name) { return samples.filter((s) => s.name === name).reduce((sum, s) => sum + s.value, 0); }

function buckets(samples, name) {
  const byLe = new Map();
  for (const s of samples.filter((x) => x.name === name)) byLe.set(s.labels.le, (byLe.get(s.labels.le) || 0) + s.value);
  return [...byLe.entries()].map(([le, count]) => [le === "+Inf" ? Infinity : Number(le), count]).sort((a, b) => a[0] - b[0]);
}

function quantile(now, before, q) {
  const deltas = now.map(([le, count], i) => [le, count - (before[i] ? before[i][1] : 0)]);
  const count = deltas.length ? deltas[deltas.length - 1][1] : 0;
  if (count <= 0) return null;
  const rank = q * count;
  let previousLe = 0, previousCount = 0;
  for (const [le, cumulative] of deltas) {
    if (cumulative >= rank) {
      if (!Number.isFinite(le)) return previousLe;
      const share = cumulative === previousCount ? 0 : (rank - previousCount) / (cumulative - previousCount);
      return previousLe + (le - previousLe) * share;
    }
    previousLe = le; previousCount = cumulative;
  }
  return previousLe;
}

const series = { rps: [], p50: [], p99: [], rows: [] };
let last = null;

function push(name, value) { series[name].push(value); if (series[name].length > HISTORY) series[name].shift(); }

function draw(canvasId, lines) {
  const canvas = $(canvasId);
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const values = lines.flatMap((l) => l.data.filter((v) => v !== null));
  const max = Math.max(1e-9, ...values) * 1.15;
  // Newest point at the right edge, history scrolling left, as a monitoring chart reads.
  const xOf = (i, length) => ((HISTORY - length + i) / (HISTORY - 1)) * canvas.width;
  for (const { data, color } of lines) {
    ctx.fillStyle = color;
    data.forEach((v, i) => {  // a dot per point, so the first scrapes show before there is a line
      if (v === null) return;
      ctx.fillRect(xOf(i, data.length) - 1.5, canvas.height - (v / max) * (canvas.height - 4) - 3.5, 3, 3);
    });
    ctx.strokeStyle = color; ctx.lineWidth = 1.5; ctx.beginPath();
    data.forEach((v, i) => {
      if (v === null) return;
      const x = xOf(i, data.length), y = canvas.height - (v / max) * (canvas.height - 4) - 2;
      i === 0 || data[i - 1] === null ? ctx.moveTo(x, y) : ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

async function poll() {
  let text;
  try { text = await api("/metrics"); } catch (error) {
    $("live-error").textContent = error.message; show($("live-error"), true); return;
  }
  show($("live-error"), false);
  const samples = parseMetrics(text);
  const snapshot = {
    time: performance.now(),
    requests: total(samples, "tabserve_request_duration_seconds_count"),
    latency: buckets(samples, "tabserve_request_duration_seconds_bucket"),
    rows: total(samples, "tabserve_batch_rows_sum"),
    batches: total(samples, "tabserve_batch_rows_count"),
  };
  if (last) {
    const seconds = (snapshot.time - last.time) / 1000;
    const rps = Math.max(0, (snapshot.requests - last.requests) / seconds);
    const p50 = quantile(snapshot.latency, last.latency, 0.5), p99 = quantile(snapshot.latency, last.latency, 0.99);
    const batches = snapshot.batches - last.batches;
    const rows = batches > 0 ? (snapshot.rows - last.rows) / batches : null;
    push("rps", rps); push("p50", p50 === null ? null : p50 * 1000); push("p99", p99 === null ? null : p99 * 1000); push("rows", rows);
    $("live-rps").textContent = rps.toFixed(1);
    $("live-latency").textContent = p50 === null ? "-" : `${(p50 * 1000).toFixed(2)} / ${(p99 * 1000).toFixed(2)}`;
    $("live-rows").textContent = rows === null ? "-" : rows.toFixed(1);
    draw("chart-rps", [{ data: series.rps, color: "#2f6fde" }]);
    draw("chart-latency", [{ data: series.p50, color: "#2f6fde" }, { data: series.p99, color: "#d9822b" }]);
    draw("chart-rows", [{ data: series.rows, color: "#2e9e6b" }]);
  }
  last = snapshot;
  await refreshQuality();
}

function init() {
  const keyInput = $("api-key");
  keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
  keyInput.addEventListener("change", () => {
    keyInput.value ? sessionStorage.setItem(KEY_STORAGE, keyInput.value) : sessionStorage.removeItem(KEY_STORAGE);
    last = null;
    loadModels();
  });
  $("predict-form").addEventListener("submit", predict);
  loadModels();
  poll();
  setInterval(poll, 1000);
}

init();
