// ferlab web page: live webcam mode over a WebSocket, photo mode over POST /v1/predict. No dependencies.
"use strict";

const MAX_UPLOAD = 10 * 1024 * 1024;
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

const state = { model: null, models: [] };

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

// ------------------------------------------------------------------------------------------- models
async function loadModels() {
  const select = $("model");
  try {
    const r = await fetch("/v1/models");
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const data = await r.json();
    state.models = data.models;
    state.model = data.default;
    select.replaceChildren();
    for (const m of data.models) {
      const o = el("option", null, m.name + (m.architecture ? ` · ${m.architecture}` : ""));
      o.value = m.name;
      o.title = `${m.classes.length} classes: ${m.classes.join(", ")}`;
      if (m.name === data.default) o.selected = true;
      select.append(o);
    }
  } catch (e) {
    select.replaceChildren(el("option", null, "models unavailable"));
    showMessage($("live-message"), `Cannot reach the ferlab server (${e.message}). Is \`ferlab serve\` running?`);
  }
}

$("model").addEventListener("change", (ev) => {
  state.model = ev.target.value;
  live.sendConfig();
  if (photo.file) photo.analyse(photo.file);
});

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
    const s = Math.min(1, CAPTURE_WIDTH / vw);
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
    this.connect();
  },

  stop() {
    this.running = false;
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
    if (msg.type === "result") {
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
    }
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
    if (file.size > MAX_UPLOAD) {
      this.fail(`${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MB; the limit is 10 MB.`);
      return;
    }
    $("photo-stats").textContent = "Analysing…";
    const form = new FormData();
    form.append("file", file, file.name);
    let data;
    try {
      const r = await fetch(`/v1/predict?model=${encodeURIComponent(state.model || "")}`, { method: "POST", body: form });
      data = await r.json().catch(() => ({ detail: `HTTP ${r.status}` }));
      if (!r.ok) throw new Error(data.detail || `HTTP ${r.status}`);
    } catch (e) {
      if (seq === this.seq) this.fail(e.message);
      return;
    }
    if (seq !== this.seq) return;
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch {
      bitmap = null;  // the server decoded it but this browser cannot display it (e.g. TIFF)
    }
    const c = this.canvas;
    c.width = data.width;
    c.height = data.height;
    const ctx = c.getContext("2d");
    if (bitmap) ctx.drawImage(bitmap, 0, 0, data.width, data.height);
    else { ctx.fillStyle = "#888"; ctx.fillRect(0, 0, c.width, c.height); }
    drawFaces(ctx, data.faces, data.width, data.height);
    $("dropzone").hidden = true;
    $("photo-viewport").hidden = false;
    $("photo-controls").hidden = false;
    const n = data.faces.filter((f) => !f.whole_image).length;
    const noFace = Boolean(data.no_face);
    const what = noFace ? "No face found" : `${n} face${n === 1 ? "" : "s"}`;
    $("photo-stats").textContent = `${what} · ${data.width}×${data.height} · ${data.model} · ${Math.round(data.ms)} ms`;
    renderFaces($("photo-faces"), data.faces, "No face found in this photo.");
    if (noFace && !data.faces.length) $("photo-faces").firstChild.classList.add("no-face");
    const top = data.faces[0];
    publish($("photo-result"), { status: "done", faces: n, label: top ? top.label : "",
                                 whole: top ? top.whole_image : false, noface: noFace });
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

loadModels();
