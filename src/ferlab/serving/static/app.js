// ferlab web page.  Two engines: "device" (default) runs the whole pipeline in a Web Worker (worker.js:
// onnxruntime-web, vendored; pipeline.js: BlazeFace decoding, crops, tracking), so camera frames and photos never
// leave the browser; "server" sends them to `ferlab serve` (live frames over a WebSocket, photos with POST
// /v1/predict).  The server engine is chosen when the browser lacks WebAssembly SIMD, and by the "Runs" picker.
// Query flags: ?engine=server|device, ?threads=N (worker threads), ?nosimd=1 (behave as without SIMD: tests).
import { checkSize, hasSimd, sniffImage } from "./pipeline.js";

const MAX_UPLOAD = 10 * 1024 * 1024;
const MAX_FILE = 200 * 1024 * 1024;  // imageio.MAX_FILE_BYTES: what the device engine reads
const CAPTURE_WIDTH = 640;         // frames are scaled to this width before JPEG compression
const JPEG_QUALITY = 0.8;
const COLORS = {
  angry: "#ef4444", anger: "#ef4444", disgust: "#22a35a", fear: "#8b5cf6", happy: "#f59e0b",
  happiness: "#f59e0b", sad: "#3b82f6", sadness: "#3b82f6", surprise: "#06b6d4", neutral: "#64748b",
  contempt: "#b45f5f",
};
const FALLBACK = ["#0ea5e9", "#84cc16", "#f97316", "#a855f7", "#06b6d4", "#e11d48"];

const $ = (id) => document.getElementById(id);
const colorOf = (label, i = 0) => COLORS[label] || FALLBACK[i % FALLBACK.length];
const pct = (p) => `${Math.round(p * 100)}%`;

const PARAMS = new URLSearchParams(location.search);
const state = { model: null, models: [], manifest: null, engine: null, server: false, loaded: null };

/** WebAssembly SIMD, feature-detected (pipeline.hasSimd); ?nosimd=1 behaves as a browser without it (tests) */
export function simdSupported() {
  if (PARAMS.get("nosimd") === "1") return false;
  return hasSimd(globalThis.WebAssembly);
}
window.ferlabSimdProbe = () => hasSimd(globalThis.WebAssembly);

// ------------------------------------------------------------------------------------------ helpers
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function showMessage(box, text, kind = "error") {
  if (!text) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = text;
  box.classList.toggle("info", kind === "info");
  box.hidden = false;
}

function renderFaces(container, faces, emptyText) {
  container.replaceChildren();
  if (!faces.length) { container.append(el("p", "empty", emptyText)); return; }
  faces.forEach((f, i) => {
    const card = el("div", "face");
    const head = el("div", "face-head");
    const label = el("span", "face-label");
    const sw = el("span", "swatch");
    sw.style.background = colorOf(f.label, i);
    label.append(sw, document.createTextNode(f.label));
    const who = f.track_id != null ? `face #${f.track_id}` : (faces.length > 1 ? `face ${i + 1}` : "");
    head.append(label, el("span", "face-meta", [who, pct(f.confidence)].filter(Boolean).join(" · ")));
    card.append(head);
    if (f.whole_image) {
      card.append(el("p", "note", f.no_face ? "No face found: the whole image was classified."
                                            : "The whole image was classified as one face."));
    }
    const bars = el("div", "bars");
    const entries = Object.entries(f.probabilities).sort((a, b) => b[1] - a[1]);
    entries.forEach(([name, p], k) => {
      const row = el("div", "bar-row" + (k === 0 ? " top" : ""));
      const track = el("div", "bar-track");
      const fill = el("div", "bar-fill");
      fill.style.width = `${(p * 100).toFixed(1)}%`;
      fill.style.background = colorOf(name, k);
      track.append(fill);
      row.append(el("span", "bar-name", name), track, el("span", "bar-value", pct(p)));
      bars.append(row);
    });
    card.append(bars);
    container.append(card);
  });
}

// Boxes and labels on a canvas whose pixel size equals the analysed image's size.
function drawFaces(ctx, faces, w, h, mirror = false) {
  const scale = Math.max(w, h) / 640;
  const lw = Math.max(2, Math.round(3 * scale));
  const font = Math.max(13, Math.round(16 * scale));
  ctx.lineJoin = "round";
  faces.forEach((f, i) => {
    if (f.whole_image) return;
    let [x, y, bw, bh] = f.box;
    if (mirror) x = w - x - bw;
    const c = colorOf(f.label, i);
    ctx.lineWidth = lw;
    ctx.strokeStyle = c;
    ctx.beginPath();
    if (ctx.roundRect) ctx.roundRect(x, y, bw, bh, 6 * scale); else ctx.rect(x, y, bw, bh);
    ctx.stroke();
    const text = `${f.label} ${pct(f.confidence)}`;
    ctx.font = `600 ${font}px system-ui, sans-serif`;
    const tw = ctx.measureText(text).width + font * 0.9;
    const th = font * 1.6;
    const ty = y - th - 4 >= 0 ? y - th - 4 : y + bh + 4;
    ctx.fillStyle = c;
    ctx.beginPath();
    if (ctx.roundRect) ctx.roundRect(x - lw / 2, ty, tw, th, 5 * scale); else ctx.rect(x - lw / 2, ty, tw, th);
    ctx.fill();
    ctx.fillStyle = "#fff";
    ctx.textBaseline = "middle";
    ctx.fillText(text, x - lw / 2 + font * 0.45, ty + th / 2 + 1);
  });
}

function publish(out, data) {
  for (const [k, v] of Object.entries(data)) out.dataset[k] = String(v);
  out.textContent = JSON.stringify(data);
}

// ------------------------------------------------------------------------------------------- engine
/** The device engine: one Web Worker, one request at a time per caller, answers matched by id */
const device = {
  worker: null, ready: null, seq: 0, pending: new Map(), threads: 1, readyMs: null, modelName: null,

  start() {
    if (this.ready) return this.ready;
    const t0 = performance.now();
    const cores = navigator.hardwareConcurrency || 1;
    // half the cores, at most 4: the page's own thread and the camera need the rest (bench_browser.py on 2 busy
    // cores: 1 thread ran 23.5 frames/s, 2 threads 8.5)
    const wanted = Number(PARAMS.get("threads")) || Math.max(1, Math.min(4, Math.floor(cores / 2)));
    this.worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    this.worker.onmessage = (ev) => this.onMessage(ev.data);
    this.worker.onerror = (ev) => {
      ev.preventDefault();
      this.fail(new Error(`the inference worker failed (${ev.message || "unknown error"})`));
    };
    const m = state.manifest;
    const base = new URL(".", location.href);
    const detectors = Object.fromEntries(Object.entries(m.detectors).map(([k, d]) =>
      [k, { url: new URL(d.file, base).href, card: d.card }]));
    const first = m.models.find((x) => x.name === state.model);
    const model = first && { name: first.name, url: new URL(first.file, base).href, card: first.card };
    this.ready = this.call({ type: "init", threads: wanted, detectors, detection: m.detection, model }).then((r) => {
      this.threads = r.threads;
      this.initMs = performance.now() - t0;
      return r;
    });
    return this.ready;
  },

  call(msg, transfer = []) {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id }, transfer);
    });
  },

  onMessage(msg) {
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    if (msg.type === "error") p.reject(Object.assign(new Error(msg.detail), { scope: msg.scope }));
    else p.resolve(msg);
  },

  fail(err) {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  },

  async useModel(name) {
    await this.start();
    const entry = state.manifest.models.find((x) => x.name === name);
    if (!entry) throw new Error(`unknown model ${name}`);
    const r = await this.call({ type: "model", name, url: new URL(entry.file, new URL(".", location.href)).href,
                                card: entry.card });
    this.modelName = name;
    return r;
  },

  analyse(source, mode, extra = {}) {
    const transfer = source instanceof ImageBitmap ? [source] : [source.data.buffer];
    const msg = source instanceof ImageBitmap ? { bitmap: source } : { data: source.data, width: source.width, height: source.height };
    return this.call({ type: "analyse", mode, ...msg, ...extra }, transfer);
  },

  reset() { return this.worker ? this.call({ type: "reset" }) : Promise.resolve(); },
};

function describeEngine() {
  const where = $("where");
  where.dataset.engine = state.engine || "";
  document.body.dataset.engine = state.engine || "";
  if (state.engine === "device") {
    where.textContent = `Inference runs on this device (WebAssembly, ${device.threads} thread${device.threads === 1 ? "" : "s"}): ` +
                        "what the camera sees and the photos you choose never leave this browser.";
  } else if (state.engine === "server") {
    where.textContent = "Inference runs on the server: camera frames and photos go only to the ferlab server this " +
                        "page came from and are processed in memory.";
  } else {
    where.textContent = "Inference is unavailable.";
  }
}

// ------------------------------------------------------------------------------------------- models
async function loadManifest() {
  const r = await fetch("models.json", { cache: "no-cache" });
  if (!r.ok) throw new Error(`models.json: HTTP ${r.status}`);
  return r.json();
}

function fillModels(models, chosen) {
  const select = $("model");
  select.replaceChildren();
  for (const m of models) {
    const card = m.card || m;
    const o = el("option", null, m.name + (card.architecture ? ` · ${card.architecture}` : ""));
    o.value = m.name;
    o.title = `${card.classes.length} classes: ${card.classes.join(", ")}`;
    if (m.name === chosen) o.selected = true;
    select.append(o);
  }
}

/** Chooses the engine: ?engine=..., else the device when it can (SIMD), else the server */
async function setup() {
  const t0 = performance.now();
  try {
    state.manifest = await loadManifest();
  } catch (e) {
    $("model").replaceChildren(el("option", null, "models unavailable"));
    showMessage($("live-message"), `Cannot load the list of models (${e.message}). Is \`ferlab serve\` running, or ` +
                "was this folder written by `ferlab site`?");
    state.engine = null;
    describeEngine();
    return;
  }
  state.server = Boolean(state.manifest.server);
  state.models = state.manifest.models;
  state.model = state.manifest.default;
  fillModels(state.models, state.model);
  if (state.manifest.search) $("search").value = state.manifest.search;
  const engine = $("engine");
  engine.querySelector("option[value=server]").disabled = !state.server;
  const simd = simdSupported();
  engine.querySelector("option[value=device]").disabled = !simd;
  let wanted = PARAMS.get("engine") || "device";
  let note = "";
  if (wanted === "device" && !simd) {
    wanted = state.server ? "server" : null;
    note = state.server ? "This browser lacks WebAssembly SIMD, so inference runs on the server."
                        : "This browser lacks WebAssembly SIMD, which on-device inference needs, and this page has no server behind it.";
  }
  if (wanted === "server" && !state.server) wanted = simd ? "device" : null;
  await switchEngine(wanted, note);
  state.readyMs = performance.now() - t0;
  document.body.dataset.ready = "true";
  window.__ferlabReady = { ms: state.readyMs, sinceNavigation: performance.now(), engine: state.engine };
}

async function switchEngine(name, note = "") {
  live.stop();
  state.engine = name;
  $("engine").value = name || "device";
  if (name === "device") {
    try {
      await device.start();
      await loadDeviceModel(state.model);
    } catch (e) {
      if (state.server) {  // the server can still do the work
        state.engine = "server";
        $("engine").value = "server";
        note = `On-device inference failed to start (${e.message}), so inference runs on the server.`;
      } else {
        note = "";
        showMessage($("live-message"), `On-device inference failed to start: ${e.message}`);
      }
    }
  }
  describeEngine();
  if (note) showMessage($("live-message"), note, "info");
}

async function loadDeviceModel(name) {
  const select = $("model");
  select.disabled = true;
  try {
    await device.useModel(name);
    state.loaded = name;
    showMessage($("live-message"), "");
  } catch (e) {
    const msg = e.message;
    showMessage($("live-message"), msg);
    showMessage($("photo-message"), msg);
    if (state.loaded && state.loaded !== name) {  // keep the model that works
      state.model = state.loaded;
      select.value = state.loaded;
    }
    throw e;
  } finally {
    select.disabled = false;
  }
}

$("model").addEventListener("change", async (ev) => {
  state.model = ev.target.value;
  if (state.engine === "device") {
    try {
      await loadDeviceModel(state.model);
    } catch {
      return;
    }
  } else {
    live.sendConfig();
  }
  if (photo.file) photo.analyse(photo.file);
});

$("engine").addEventListener("change", (ev) => switchEngine(ev.target.value));
$("search").addEventListener("change", () => { if (photo.file && !$("photo-viewport").hidden) photo.analyse(photo.file); });

// ---------------------------------------------------------------------------------------------- tabs
const TABS = ["live", "photo"];
function selectTab(name, focus = false) {
  for (const t of TABS) {
    const tab = $(`tab-${t}`);
    tab.setAttribute("aria-selected", String(t === name));
    tab.tabIndex = t === name ? 0 : -1;  // roving tabindex: Tab reaches the selected tab, arrows move
    $(`panel-${t}`).hidden = t !== name;
  }
  if (focus) $(`tab-${name}`).focus();
  if (name !== "live") live.stop();
}
$("tab-live").addEventListener("click", () => selectTab("live"));
$("tab-photo").addEventListener("click", () => selectTab("photo"));
// WAI-ARIA tabs: Left / Right arrows move to the previous / next tab (wrapping), Home / End to the ends
document.querySelector(".tabs").addEventListener("keydown", (ev) => {
  const i = TABS.findIndex((t) => $(`tab-${t}`).getAttribute("aria-selected") === "true");
  const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: TABS.length - 1 }[ev.key];
  if (next === undefined) return;
  ev.preventDefault();
  selectTab(TABS[(next + TABS.length) % TABS.length], true);
});

// ---------------------------------------------------------------------------------------- live mode
const live = {
  stream: null, ws: null, running: false, inflight: false, frames: 0, answers: [],
  capture: document.createElement("canvas"),
  video: $("video"), overlay: $("overlay"), msg: $("live-message"),

  cameraError(err) {
    const name = err && err.name;
    if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
      return "Camera access was denied. Allow the camera for this page in your browser's site settings, " +
             "then press Start camera again. Photo mode works without a camera.";
    }
    if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
      return "No camera was found. Connect a webcam and press Start camera, or use Photo mode.";
    }
    if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError") {
      return "The camera could not be started: another application may be using it.";
    }
    return `The camera could not be started (${(err && err.message) || err}).`;
  },

  async start() {
    showMessage(this.msg, "");
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showMessage(this.msg, "The camera is only available to pages served from localhost or over https. Open " +
                  "this page as http://localhost:PORT on the machine running ferlab, or use Photo mode.");
      return;
    }
    $("start").disabled = true;
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: "user" }, audio: false });
    } catch (err) {
      $("start").disabled = false;
      showMessage(this.msg, this.cameraError(err));
      document.body.dataset.camera = "error";
      return;
    }
    this.video.srcObject = this.stream;
    await this.video.play().catch(() => {});
    if (!this.video.videoWidth) await new Promise((r) => this.video.addEventListener("loadedmetadata", r, { once: true }));
    const vw = this.video.videoWidth, vh = this.video.videoHeight;
    const s = state.engine === "device" ? 1 : Math.min(1, CAPTURE_WIDTH / vw);  // the device sees full frames
    this.capture.width = Math.round(vw * s);
    this.capture.height = Math.round(vh * s);
    this.overlay.width = this.capture.width;
    this.overlay.height = this.capture.height;
    $("live-viewport").style.aspectRatio = `${vw} / ${vh}`;
    $("live-viewport").style.setProperty("--ar", String(vw / vh));
    $("live-placeholder").hidden = true;
    $("live-badge").hidden = false;
    $("stop").disabled = false;
    document.body.dataset.camera = "on";
    this.running = true;
    this.frames = 0;
    this.answers = [];
    if (state.engine === "device") this.deviceLoop(++this.gen);
    else if (state.engine === "server") this.connect();
    else showMessage(this.msg, "Inference is unavailable on this page.");
  },

  gen: 0,

  /** Waits for the camera's next frame (or the next paint where requestVideoFrameCallback is missing) */
  nextFrame() {
    return new Promise((resolve) => {
      if (this.video.requestVideoFrameCallback) this.video.requestVideoFrameCallback(() => resolve());
      else requestAnimationFrame(() => resolve());
    });
  },

  // The device engine: one frame in the worker at a time; a frame arriving meanwhile is skipped, never queued.
  async deviceLoop(gen) {
    await device.reset().catch(() => {});
    while (this.running && gen === this.gen) {
      if (this.video.readyState < 2) { await this.nextFrame(); continue; }
      let bitmap;
      try {
        bitmap = await createImageBitmap(this.video);
      } catch {
        await this.nextFrame();
        continue;
      }
      if (!this.running || gen !== this.gen) { bitmap.close(); return; }
      let res;
      try {
        res = await device.analyse(bitmap, "live");
      } catch (e) {
        if (!this.running || gen !== this.gen) return;
        showMessage(this.msg, e.message);
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      if (!this.running || gen !== this.gen) return;
      this.onResult({ ...res, ms: res.ms.total });
      await this.nextFrame();
    }
  },

  onResult(msg) {
    if (this.msg.classList.contains("info")) showMessage(this.msg, "");
    this.frames += 1;
    const now = performance.now();
    this.answers.push(now);
    while (this.answers.length && now - this.answers[0] > 2000) this.answers.shift();
    if (this.answers.length > 1) {
      const fps = (this.answers.length - 1) / ((now - this.answers[0]) / 1000);
      $("fps").textContent = fps.toFixed(1);
    }
    $("latency").textContent = Math.round(msg.ms);
    this.draw(msg);
  },

  stop() {
    this.running = false;
    this.gen += 1;
    this.inflight = false;
    if (this.ws) { this.ws.onclose = null; this.ws.close(); this.ws = null; }
    if (this.stream) { this.stream.getTracks().forEach((t) => t.stop()); this.stream = null; }
    this.video.srcObject = null;
    this.overlay.getContext("2d").clearRect(0, 0, this.overlay.width, this.overlay.height);
    $("live-placeholder").hidden = false;
    $("live-badge").hidden = true;
    renderFaces($("live-faces"), [], "Start the camera to see the expressions of the faces in view.");
    $("start").disabled = false;
    $("stop").disabled = true;
    $("fps").textContent = "–";
    $("latency").textContent = "–";
    document.body.dataset.camera = "off";
  },

  connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/v1/stream`);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.inflight = false;
    let opened = false;
    ws.onopen = () => { opened = true; this.failures = 0; };
    ws.onmessage = (ev) => this.onMessage(JSON.parse(ev.data));
    ws.onerror = () => {};
    ws.onclose = () => {
      if (!this.running) return;
      this.failures = opened ? 1 : (this.failures || 0) + 1;
      if (this.failures >= 3) {
        showMessage(this.msg, "Cannot open the live stream (a WebSocket to /v1/stream) to the ferlab server. Is it " +
                    "still running? If its log says \"No supported WebSocket library\", run: pip install websockets");
      } else {
        showMessage(this.msg, "Lost the connection to the server; reconnecting…", "info");
      }
      setTimeout(() => { if (this.running) this.connect(); }, 1000 * Math.min(this.failures, 5));
    };
  },

  sendConfig() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && state.model) {
      this.ws.send(JSON.stringify({ type: "config", model: state.model }));
    }
  },

  onMessage(msg) {
    if (msg.type === "hello") {
      if (state.model && state.model !== msg.model) this.sendConfig();  // answered by "config", then frames
      else this.pump();
      return;
    }
    if (msg.type === "config") { showMessage(this.msg, ""); if (!this.inflight) this.pump(); return; }
    if (msg.type === "error") {
      showMessage(this.msg, msg.detail);
      if (msg.frame === undefined) return;  // a control error: the frame loop continues anyway
    }
    this.inflight = false;
    if (msg.type === "result") this.onResult(msg);
    if (this.running) requestAnimationFrame(() => this.pump());
  },

  draw(msg) {
    const faces = msg.faces.filter((f) => !f.whole_image);
    const ctx = this.overlay.getContext("2d");
    ctx.clearRect(0, 0, this.overlay.width, this.overlay.height);
    drawFaces(ctx, faces, this.overlay.width, this.overlay.height, $("mirror").checked);
    renderFaces($("live-faces"), faces, "No face in view.");
    const top = faces[0];
    publish($("live-result"), {
      frames: this.frames, faces: faces.length, label: top ? top.label : "",
      track: top && top.track_id != null ? top.track_id : "", box: top ? top.box.join(",") : "",
    });
  },

  // Sends one frame, only when the previous one has been answered: frames are dropped, never queued.
  async pump() {
    if (!this.running || this.inflight || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    if (this.video.readyState < 2) { requestAnimationFrame(() => this.pump()); return; }
    this.inflight = true;
    const c = this.capture;
    c.getContext("2d").drawImage(this.video, 0, 0, c.width, c.height);
    const blob = await new Promise((r) => c.toBlob(r, "image/jpeg", JPEG_QUALITY));
    const buf = blob ? await blob.arrayBuffer() : null;
    // re-checked after every await: Stop (or a lost connection) may have closed the socket meanwhile
    if (!buf || !this.running || !this.ws || this.ws.readyState !== WebSocket.OPEN) { this.inflight = false; return; }
    this.ws.send(buf);
  },
};

$("start").addEventListener("click", () => live.start());
$("stop").addEventListener("click", () => live.stop());
$("mirror").addEventListener("change", (ev) => live.video.classList.toggle("mirrored", ev.target.checked));
live.video.classList.toggle("mirrored", $("mirror").checked);

// --------------------------------------------------------------------------------------- photo mode
const photo = {
  file: null, msg: $("photo-message"), canvas: $("photo-canvas"), seq: 0,

  async analyse(file) {
    const seq = ++this.seq;
    this.file = file;
    showMessage(this.msg, "");
    publish($("photo-result"), { status: "busy", faces: 0, label: "" });
    $("photo-stats").textContent = "Analysing…";
    let data, bitmap = null;
    try {
      if (state.engine === "device") {
        ({ data, bitmap } = await this.onDevice(file));
      } else if (state.engine === "server") {
        data = await this.onServer(file);
      } else {
        throw new Error("Inference is unavailable on this page.");
      }
    } catch (e) {
      if (seq === this.seq) this.fail(e.message);
      return;
    }
    if (seq !== this.seq) return;
    this.show(file, data, bitmap);
  },

  /** The device engine: the size and shape are read from the header before anything is decoded (the CLI's
   * limits and messages), then the browser decodes and the worker analyses. */
  async onDevice(file) {
    const name = file.name || "image";
    if (file.size > MAX_FILE) {
      throw new Error(`${name}: file of ${(file.size / 2 ** 20).toFixed(0)} MB is too large (limit ${MAX_FILE / 2 ** 20} MB)`);
    }
    const bytes = new Uint8Array(await file.arrayBuffer());
    const info = sniffImage(bytes, name);
    if (info.error) throw new Error(info.error);
    if (info.width == null) {
      throw new Error(`${name}: ${info.format} images are decoded by the server only` +
                      (state.server ? ": choose \"Runs on the server\" above" : ""));
    }
    const bad = checkSize(info.width, info.height, name);
    if (bad) throw new Error(bad);
    let bitmap;
    try {
      bitmap = await createImageBitmap(new Blob([bytes]), { imageOrientation: "from-image",
                                                           colorSpaceConversion: "none", premultiplyAlpha: "none" });
    } catch {
      throw new Error(`${name}: image is corrupt or truncated (this browser cannot decode it)`);
    }
    const shown = await createImageBitmap(bitmap);  // kept for display; the other one goes to the worker
    const res = await device.analyse(bitmap, "photo", { search: $("search").value });
    return { data: { ...res, ms: res.ms.total }, bitmap: shown };
  },

  async onServer(file) {
    if (file.size > MAX_UPLOAD) {
      throw new Error(`${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MB; the limit is 10 MB.`);
    }
    const form = new FormData();
    form.append("file", file, file.name);
    const q = `model=${encodeURIComponent(state.model || "")}&search=${encodeURIComponent($("search").value)}`;
    const r = await fetch(`/v1/predict?${q}`, { method: "POST", body: form });
    const data = await r.json().catch(() => ({ detail: `HTTP ${r.status}` }));
    if (!r.ok) throw new Error(data.detail || `HTTP ${r.status}`);
    return data;
  },

  async show(file, data, bitmap) {
    if (!bitmap) {
      try {
        bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
      } catch {
        bitmap = null;  // the server decoded it but this browser cannot display it (e.g. TIFF)
      }
    }
    const c = this.canvas;
    c.width = data.width;
    c.height = data.height;
    const ctx = c.getContext("2d");
    if (bitmap) { ctx.drawImage(bitmap, 0, 0, data.width, data.height); bitmap.close(); }
    else { ctx.fillStyle = "#888"; ctx.fillRect(0, 0, c.width, c.height); }
    drawFaces(ctx, data.faces, data.width, data.height);
    $("dropzone").hidden = true;
    $("photo-viewport").hidden = false;
    $("photo-controls").hidden = false;
    const n = data.faces.filter((f) => !f.whole_image).length;
    const noFace = Boolean(data.no_face);
    const what = noFace ? "No face found" : `${n} face${n === 1 ? "" : "s"}`;
    const where = state.engine === "device" ? "on this device" : "on the server";
    $("photo-stats").textContent = `${what} · ${data.width}×${data.height} · ${data.model} · ${Math.round(data.ms)} ms ${where}`;
    renderFaces($("photo-faces"), data.faces, "No face found in this photo.");
    if (noFace && !data.faces.length) $("photo-faces").firstChild.classList.add("no-face");
    const top = data.faces[0];
    publish($("photo-result"), { status: "done", faces: n, label: top ? top.label : "",
                                 whole: top ? top.whole_image : false, noface: noFace, engine: state.engine });
  },

  fail(text) {
    showMessage(this.msg, text);
    $("photo-stats").textContent = "";
    $("dropzone").hidden = false;
    $("photo-viewport").hidden = true;
    $("photo-controls").hidden = true;
    $("file").value = "";
    renderFaces($("photo-faces"), [], "Results appear here.");
    publish($("photo-result"), { status: "error", faces: 0, label: "" });
  },

  reset() {
    $("dropzone").hidden = false;
    $("photo-viewport").hidden = true;
    $("photo-controls").hidden = true;
    $("file").value = "";
    $("file").click();
  },
};

$("file").addEventListener("change", (ev) => { if (ev.target.files[0]) photo.analyse(ev.target.files[0]); });
$("photo-another").addEventListener("click", () => photo.reset());
const dz = $("dropzone");
["dragenter", "dragover"].forEach((t) => dz.addEventListener(t, (ev) => { ev.preventDefault(); dz.classList.add("dragging"); }));
["dragleave", "drop"].forEach((t) => dz.addEventListener(t, () => dz.classList.remove("dragging")));
dz.addEventListener("drop", (ev) => {
  ev.preventDefault();
  const f = ev.dataTransfer.files[0];
  if (f) photo.analyse(f);
});
// a photo dropped anywhere on the photo panel works too; elsewhere the browser must not navigate to it
window.addEventListener("dragover", (ev) => ev.preventDefault());
window.addEventListener("drop", (ev) => {
  ev.preventDefault();
  const f = ev.dataTransfer && ev.dataTransfer.files[0];
  if (f && !$("panel-photo").hidden && !dz.contains(ev.target)) photo.analyse(f);
});

setup();

// ------------------------------------------------------------------------------ programmatic access
// For tests and benchmarks: the same device pipeline the page runs, on bytes or pixels given here.
window.ferlab = {
  device, state, simdSupported,
  /** analyse an image (Blob or {data: RGBA, width, height}) with the device engine; mode "photo" | "live" */
  async analyse(source, mode = "photo", search = undefined) {
    const src = source instanceof Blob
      ? await createImageBitmap(source, { colorSpaceConversion: "none", premultiplyAlpha: "none" }) : source;
    return device.analyse(src, mode, { search });
  },
  reset: () => device.reset(),
  useModel: (name) => device.useModel(name),
};
