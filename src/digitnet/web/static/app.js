// The draw-a-digit page: draw (mouse, touch or pen), ask /api/predict while drawing, show the answer,
// the 28x28 the network saw, the probabilities and the network's activity. With "Read a number" on, the
// pad widens and /api/predict?number=1 reads every digit: the number, each digit's box over the pad, and
// each digit's 28x28 and bars. No build step, no libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const pad = $("pad"), padCtx = pad.getContext("2d");
const seen = $("seen"), seenCtx = seen.getContext("2d");
const net = $("network"), netCtx = net.getContext("2d");
const boxes = $("boxes"), boxCtx = boxes.getContext("2d");
const state = { model: null, busy: false, dirty: false, last: null, units: [], inked: false,
                number: false, fit: { k: 1, x: 0, y: 0 } };

// ---------------------------------------------------------------- drawing
const BRUSH = 19;   // pixels on the 280-pixel pad: MNIST's strokes are about a tenth of the digit's height

function clearPad() {
  padCtx.fillStyle = "#000";
  padCtx.fillRect(0, 0, pad.width, pad.height);
  boxCtx.clearRect(0, 0, boxes.width, boxes.height);
  state.inked = false;
  state.fit = { k: 1, x: 0, y: 0 };   // where the image the server reads sits on the pad
}

function padPoint(event) {
  const r = pad.getBoundingClientRect();
  return [(event.clientX - r.left) * pad.width / r.width, (event.clientY - r.top) * pad.height / r.height];
}

let stroke = null;   // {id, x, y} while a pointer is down
pad.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  pad.setPointerCapture(e.pointerId);
  const [x, y] = padPoint(e);
  stroke = { id: e.pointerId, x, y };
  drawSegment(x, y, x, y, e);
});
pad.addEventListener("pointermove", (e) => {
  if (!stroke || e.pointerId !== stroke.id) return;
  // Coalesced events give every point a fast pen or finger passed through, not just one per frame.
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const ev of (events.length ? events : [e])) {
    const [x, y] = padPoint(ev);
    drawSegment(stroke.x, stroke.y, x, y, ev);
    stroke.x = x; stroke.y = y;
  }
});
const endStroke = (e) => {
  if (!stroke || e.pointerId !== stroke.id) return;
  stroke = null;
  requestPrediction();
};
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function drawSegment(x0, y0, x1, y1, e) {
  // A pen's pressure thins or thickens the line; mouse and touch report 0.5 while pressed.
  const pressure = e.pointerType === "pen" && e.pressure > 0 ? e.pressure : 0.5;
  padCtx.strokeStyle = "#fff";
  padCtx.lineCap = "round";
  padCtx.lineJoin = "round";
  padCtx.lineWidth = BRUSH * (0.6 + 0.8 * pressure);
  padCtx.beginPath();
  padCtx.moveTo(x0, y0);
  padCtx.lineTo(x1, y1);
  padCtx.stroke();
  state.inked = true;
  requestPrediction();
}

// ---------------------------------------------------------------- talking to the server
function setBusy(busy) {
  state.busy = busy;
  document.body.dataset.busy = busy ? "1" : "0";
}

// One request at a time; strokes made meanwhile are sent when it returns.
function requestPrediction() {
  if (!state.inked) return;
  if (state.busy) { state.dirty = true; return; }
  setBusy(true);
  state.dirty = false;
  state.fit = { k: 1, x: 0, y: 0 };
  pad.toBlob((blob) => send(blob, "image/png").finally(afterRequest), "image/png");
}

function afterRequest() {
  setBusy(false);
  if (state.dirty) requestPrediction();
}

async function send(body, type) {
  try {
    const url = state.number ? "/api/predict?number=1" : "/api/predict";
    const response = await fetch(url, { method: "POST", headers: { "Content-Type": type }, body });
    const data = await response.json();
    if (!response.ok) { showError(data.error || `the server answered ${response.status}`); return; }
    show(data);
  } catch (err) {
    showError(`cannot reach the server (${err.message})`);
  }
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function showError(message) {
  setStatus(message, true);
  $("prediction").textContent = "–";
  $("confidence").textContent = "";
  renderBars(null);
}

// ---------------------------------------------------------------- showing the answer
function show(data) {
  if (data.digits) { showNumber(data); return; }
  state.last = data;
  const p = data.probabilities[data.digit];
  $("prediction").textContent = data.label;
  $("confidence").textContent = `${(100 * p).toFixed(1)}% sure`;
  setStatus(data.inverted === undefined ? "" : "Keep drawing, or clear and try another.");
  renderSeen(data.pixels);
  renderBars(data.probabilities, data.digit);
  renderNetwork(data);
  document.body.dataset.predictions = String(Number(document.body.dataset.predictions) + 1);
}

// ---------------------------------------------------------------- a number
function showNumber(data) {
  state.last = data;
  $("prediction").textContent = data.number;
  const least = Math.min(...data.digits.map((d) => d.probabilities[d.digit]));
  $("confidence").textContent = `${data.digits.length} digit${data.digits.length === 1 ? "" : "s"}, ` +
    `the least sure ${(100 * least).toFixed(1)}%`;
  setStatus("Keep writing, or clear and try another.");
  renderBoxes(data.digits);
  renderDigits(data.digits);
  selectDigit(0);
  document.body.dataset.predictions = String(Number(document.body.dataset.predictions) + 1);
}

function renderBoxes(digits) {
  // Each digit's box (in the pixels of the image read) drawn over the pad, with its reading.
  boxCtx.clearRect(0, 0, boxes.width, boxes.height);
  const { k, x, y } = state.fit;
  boxCtx.lineWidth = 2;
  boxCtx.font = "bold 18px system-ui, sans-serif";
  digits.forEach((d) => {
    const bx = x + d.box.x * k, by = y + d.box.y * k;
    boxCtx.strokeStyle = "#ffb020";
    boxCtx.strokeRect(bx, by, d.box.width * k, d.box.height * k);
    boxCtx.fillStyle = "#ffb020";
    boxCtx.fillText(d.label, bx + 3, Math.max(16, by - 4));
  });
}

function renderDigits(digits) {
  // One card a digit: its reading, the 28x28 the network saw, ten small bars.
  $("digits").replaceChildren(...digits.map((d, i) => {
    const li = document.createElement("li");
    li.dataset.digit = String(d.digit);
    li.dataset.box = [d.box.x, d.box.y, d.box.width, d.box.height].join(",");
    li.innerHTML = '<span class="reading"></span><canvas width="28" height="28"></canvas><span class="mini"></span>';
    li.querySelector(".reading").textContent = d.label;
    const ctx = li.querySelector("canvas").getContext("2d"), img = ctx.createImageData(28, 28);
    d.pixels.forEach((v, j) => { img.data.set([v, v, v, 255], 4 * j); });
    ctx.putImageData(img, 0, 0);
    li.querySelector(".mini").replaceChildren(...d.probabilities.map((p, c) => {
      const bar = document.createElement("span");
      bar.style.height = `${Math.max(1, 100 * p).toFixed(1)}%`;
      bar.dataset.p = p.toFixed(6);
      bar.title = `${state.model ? state.model.class_names[c] : c}: ${(100 * p).toFixed(1)}%`;
      bar.classList.toggle("top", c === d.digit);
      return bar;
    }));
    li.addEventListener("click", () => selectDigit(i));
    return li;
  }));
  $("digits").hidden = false;
}

function selectDigit(i) {
  // The big bars and the 28x28 show one digit of the number: the first, or the one clicked.
  const d = state.last && state.last.digits && state.last.digits[i];
  if (!d) return;
  [...$("digits").children].forEach((li, j) => li.classList.toggle("selected", j === i));
  renderSeen(d.pixels);
  renderBars(d.probabilities, d.digit);
}

function setNumberMode(on) {
  state.number = on;
  $("number-mode").checked = on;
  document.body.classList.toggle("number", on);
  pad.width = on ? 560 : 280;
  boxes.width = pad.width;
  $("digits").replaceChildren();
  $("digits").hidden = true;
  $("clear").click();
  setStatus(on ? "Write a number: several digits side by side." : "Draw a digit with the mouse, a finger or a pen.");
}
$("number-mode").addEventListener("change", (e) => setNumberMode(e.target.checked));

function renderSeen(pixels) {
  const img = seenCtx.createImageData(28, 28);
  pixels.forEach((v, i) => { img.data.set([v, v, v, 255], 4 * i); });
  seenCtx.putImageData(img, 0, 0);
}

function buildBars(names) {
  const list = $("bars");
  list.replaceChildren(...names.map((name, k) => {
    const li = document.createElement("li");
    li.dataset.class = String(k);
    li.innerHTML = '<span class="name"></span><span class="bar"><span class="fill"></span></span><span class="value">–</span>';
    li.querySelector(".name").textContent = name;
    return li;
  }));
}

function renderBars(probabilities, top) {
  [...$("bars").children].forEach((li, k) => {
    const p = probabilities ? probabilities[k] : 0;
    li.querySelector(".fill").style.width = `${(100 * p).toFixed(2)}%`;
    li.querySelector(".value").textContent = probabilities ? `${(100 * p).toFixed(1)}%` : "–";
    li.dataset.p = p.toFixed(6);
    li.classList.toggle("top", k === top);
  });
}

// ---------------------------------------------------------------- the network's activity
// Columns: the input image, one grid of squares per hidden layer, the outputs. Lines: the strongest paths.
function layout(data) {
  const W = net.width, H = net.height, top = 24, usable = H - top - 10;
  const hidden = data.layers.map((a) => a.length);
  const inputSide = 112, outW = 90;
  const colW = (W - inputSide - outW - 40) / Math.max(1, hidden.length);
  const cols = [{ kind: "input", x: 10, y: top + (usable - inputSide) / 2, w: inputSide, h: inputSide }];
  hidden.forEach((n, i) => {
    const g = grid(n, colW - 40, usable);
    const x = 10 + inputSide + 20 + i * colW + (colW - g.cols * g.size) / 2;
    cols.push({ kind: "hidden", n, ...g, x, y: top + (usable - g.rows * g.size) / 2 });
  });
  const n = data.probabilities.length, size = Math.min(26, usable / n);
  cols.push({ kind: "output", n, size, x: W - outW + 8, y: top + (usable - n * size) / 2 });
  return cols;
}

function grid(n, w, h) {
  // The largest square size that fits n units in a w x h box.
  for (let size = 28; size > 1; size--) {
    const cols = Math.max(1, Math.floor(w / size)), rows = Math.ceil(n / cols);
    if (rows * size <= h) return { size, cols, rows };
  }
  return { size: 1, cols: Math.max(1, Math.floor(w)), rows: Math.ceil(n / Math.max(1, Math.floor(w))) };
}

function unitCentre(col, i) {
  if (col.kind === "input") {
    const s = col.w / 28;
    return [col.x + (i % 28 + 0.5) * s, col.y + (Math.floor(i / 28) + 0.5) * s];
  }
  if (col.kind === "output") return [col.x + col.size / 2, col.y + (i + 0.5) * col.size];
  return [col.x + (i % col.cols + 0.5) * col.size, col.y + (Math.floor(i / col.cols) + 0.5) * col.size];
}

function renderNetwork(data) {
  const cols = layout(data);
  netCtx.clearRect(0, 0, net.width, net.height);
  netCtx.font = "12px system-ui, sans-serif";
  netCtx.fillStyle = "#9aa3ad";
  netCtx.textAlign = "center";
  cols.forEach((col, l) => {
    const w = col.kind === "input" ? col.w : col.kind === "output" ? 60 : col.cols * col.size;
    const label = col.kind === "input" ? "input 784" : col.kind === "output" ? `output ${col.n}` : `hidden ${col.n}`;
    netCtx.fillText(label, col.x + w / 2, 14);
  });
  // The input image.
  const inCol = cols[0], s = inCol.w / 28;
  data.pixels.forEach((v, i) => {
    netCtx.fillStyle = `rgb(${v},${v},${v})`;
    netCtx.fillRect(inCol.x + (i % 28) * s, inCol.y + Math.floor(i / 28) * s, s, s);
  });
  // Hidden units, lit by activation (amber up, blue down), each layer scaled to its largest.
  state.units = [];
  data.layers.forEach((acts, h) => {
    const col = cols[h + 1], peak = Math.max(1e-9, ...acts.map(Math.abs));
    acts.forEach((a, i) => {
      const x = col.x + (i % col.cols) * col.size, y = col.y + Math.floor(i / col.cols) * col.size;
      netCtx.fillStyle = heat(a / peak);
      netCtx.fillRect(x, y, Math.max(1, col.size - 1), Math.max(1, col.size - 1));
      state.units.push({ layer: h + 1, unit: i, x, y, size: col.size });
    });
  });
  // The strongest paths, over the units, each unit on one outlined.
  const strongest = Math.max(1e-9, ...data.paths.map((p) => p.weight));
  const marked = new Set();
  for (const p of data.paths) {
    const [x0, y0] = unitCentre(cols[p.from[0]], p.from[1]);
    const [x1, y1] = unitCentre(cols[p.to[0]], p.to[1]);
    const s = p.weight / strongest;
    netCtx.strokeStyle = `rgba(255, 214, 120, ${0.25 + 0.65 * s})`;
    netCtx.lineWidth = 0.6 + 2.4 * s;
    netCtx.beginPath(); netCtx.moveTo(x0, y0); netCtx.lineTo(x1, y1); netCtx.stroke();
    for (const [l, i] of [p.from, p.to]) if (l > 0 && l <= data.layers.length) marked.add(`${l}/${i}`);
  }
  if (state.selected && state.selected.layer <= data.layers.length) marked.add("selected");
  netCtx.lineWidth = 1.5;
  for (const key of marked) {
    netCtx.strokeStyle = key === "selected" ? "#4aa3ff" : "#fff";
    const [l, i] = key === "selected" ? [state.selected.layer, state.selected.unit] : key.split("/").map(Number);
    const col = cols[l];
    netCtx.strokeRect(col.x + (i % col.cols) * col.size, col.y + Math.floor(i / col.cols) * col.size,
                      col.size - 1, col.size - 1);
  }
  // Outputs.
  const out = cols[cols.length - 1];
  data.probabilities.forEach((p, k) => {
    const [cx, cy] = unitCentre(out, k), r = out.size * 0.38;
    netCtx.beginPath(); netCtx.arc(cx, cy, r, 0, 2 * Math.PI);
    netCtx.fillStyle = heat(p);
    netCtx.fill();
    if (k === data.digit) { netCtx.lineWidth = 2; netCtx.strokeStyle = "#fff"; netCtx.stroke(); }
    netCtx.fillStyle = k === data.digit ? "#ffb020" : "#9aa3ad";
    netCtx.textAlign = "left";
    netCtx.fillText(state.model ? state.model.class_names[k] : String(k), cx + r + 6, cy + 4);
    state.units.push({ layer: data.layers.length + 1, unit: k, x: cx - r, y: cy - r, size: 2 * r });
  });
}

function heat(v) {
  // v in [-1, 1]: 0 is near black, 1 bright amber, -1 bright blue.
  const t = Math.min(1, Math.abs(v));
  return v >= 0 ? `rgb(${Math.round(30 + 225 * t)},${Math.round(32 + 144 * t)},${Math.round(38 + 0 * t)})`
                : `rgb(${Math.round(30 + 44 * t)},${Math.round(32 + 131 * t)},${Math.round(38 + 217 * t)})`;
}

net.addEventListener("click", async (e) => {
  const r = net.getBoundingClientRect();
  const x = (e.clientX - r.left) * net.width / r.width, y = (e.clientY - r.top) * net.height / r.height;
  const hit = state.units.find((u) => x >= u.x && x < u.x + u.size && y >= u.y && y < u.y + u.size);
  if (hit) await showUnit(hit.layer, hit.unit);
});

async function showUnit(layer, unit) {
  const response = await fetch(`/api/unit/${layer}/${unit}`);
  const data = await response.json();
  if (!response.ok) { setStatus(data.error, true); return; }
  const hiddenLayers = state.model.architecture.sizes.length - 2;
  const what = layer > hiddenLayers ? `output ${state.model.class_names[unit]}` : `hidden layer ${layer}, unit ${unit}`;
  $("unit-title").textContent = `Weights into ${what}`;
  const canvas = $("unit-weights"), ctx = canvas.getContext("2d"), w = data.weights;
  const peak = Math.max(1e-9, ...w.map(Math.abs));
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (w.length === 784) {
    // The first layer looks at pixels: its weights are a 28x28 picture (amber pushes up, blue down).
    canvas.width = 140; canvas.height = 140;
    const s = canvas.width / 28;
    w.forEach((v, i) => { ctx.fillStyle = heat(v / peak); ctx.fillRect((i % 28) * s, Math.floor(i / 28) * s, s, s); });
  } else {
    canvas.width = 280; canvas.height = 140;
    const bw = canvas.width / w.length, mid = canvas.height / 2;
    w.forEach((v, i) => {
      ctx.fillStyle = heat(v / peak);
      const h = (v / peak) * (mid - 4);
      ctx.fillRect(i * bw, v >= 0 ? mid - h : mid, Math.max(1, bw - (bw > 3 ? 1 : 0)), Math.abs(h));
    });
    ctx.fillStyle = "#555"; ctx.fillRect(0, mid, canvas.width, 1);
  }
  $("unit-note").textContent = `${w.length} weights, from ${(-peak).toFixed(3)} to ${peak.toFixed(3)} at most; bias ${data.bias.toFixed(3)}`;
  $("unit-panel").hidden = false;
  state.selected = { layer, unit };
  if (state.last) renderNetwork(state.last);
  document.body.dataset.unit = `${layer}/${unit}`;
}

// ---------------------------------------------------------------- buttons
$("clear").addEventListener("click", () => {
  clearPad();
  $("digits").replaceChildren();
  state.dirty = false;
  $("prediction").textContent = "–";
  $("confidence").textContent = "";
  renderBars(null);
  seenCtx.clearRect(0, 0, 28, 28);
  netCtx.clearRect(0, 0, net.width, net.height);
  setStatus("Draw a digit with the mouse, a finger or a pen.");
});

$("random").addEventListener("click", async () => {
  if (state.number) setNumberMode(false);   // a test image holds one digit
  const response = await fetch("/api/random");
  const data = await response.json();
  if (!response.ok) { setStatus(data.error, true); return; }
  drawPixels(data.pixels);
  setBusy(true);
  await send(JSON.stringify({ pixels: data.pixels }), "application/json").finally(() => setBusy(false));
  const names = state.model.class_names, read = state.last ? state.last.digit : data.label;
  setStatus(`Test image #${data.index}, labelled ${names[data.label]}` +
            (read === data.label ? "." : `; the network reads ${names[read]}.`));
});

function drawPixels(pixels) {
  // Show a 28x28 image on the pad, enlarged and smoothed, so that one can draw over it.
  const small = document.createElement("canvas");
  small.width = small.height = 28;
  const sctx = small.getContext("2d"), img = sctx.createImageData(28, 28);
  pixels.forEach((v, i) => { img.data.set([v, v, v, 255], 4 * i); });
  sctx.putImageData(img, 0, 0);
  clearPad();
  padCtx.imageSmoothingEnabled = true;
  padCtx.drawImage(small, 0, 0, pad.width, pad.height);
  state.inked = true;
}

$("upload").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  e.target.value = "";
  if (!file) return;
  if (file.size > 1024 * 1024) { showError(`${file.name} is larger than 1 MB`); return; }
  try {   // show it on the pad, fitted, on black
    const bitmap = await createImageBitmap(file);
    const k = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
    clearPad();
    const x = (pad.width - bitmap.width * k) / 2, y = (pad.height - bitmap.height * k) / 2;
    padCtx.drawImage(bitmap, x, y, bitmap.width * k, bitmap.height * k);
    state.fit = { k, x, y };
    state.inked = true;
  } catch (err) { /* the server says what is wrong with it */ }
  setBusy(true);
  await send(file, file.type || "application/octet-stream").finally(() => setBusy(false));
  if (!$("status").classList.contains("error")) setStatus(`Read from ${file.name}.`);
});

// ---------------------------------------------------------------- start
async function start() {
  clearPad();
  const response = await fetch("/api/model");
  const m = await response.json();
  state.model = m;
  buildBars(m.class_names);
  renderBars(null);
  const acc = m.test_accuracy == null ? "test accuracy unknown" : `test accuracy ${(100 * m.test_accuracy).toFixed(2)}%`;
  const sizes = m.architecture.sizes.join("-");
  $("model-line").textContent = `${m.dataset || "model"} · ${sizes} ${m.architecture.activation} · ${acc}`;
  const rows = [
    ["architecture", `${sizes}, ${m.architecture.activation}${m.architecture.dropout ? `, dropout ${m.architecture.dropout}` : ""}`],
    ["parameters", m.parameters.toLocaleString("en")],
    ["dataset", m.dataset || "–"],
    ["test accuracy", m.test_accuracy == null ? "–" : `${(100 * m.test_accuracy).toFixed(2)}%`],
    ["trained", m.config.optimizer ? `${m.config.optimizer}, lr ${m.config.lr}, batch ${m.config.batch_size}, ${m.epochs} epochs` : "–"],
    ["file", m.file || "–"],
  ];
  $("model-info").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k; dd.textContent = v;
    return [dt, dd];
  }));
  document.body.dataset.ready = "1";
}

start().catch((err) => setStatus(`cannot load the model (${err.message})`, true));
