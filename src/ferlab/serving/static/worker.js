// ferlab's inference worker: onnxruntime-web (wasm SIMD, threads when the page is cross-origin isolated) runs
// BlazeFace and the expression classifier; pipeline.js does everything around them.  Nothing leaves the
// device: frames and photos arrive as ImageBitmaps from the page, models as bytes fetched from the page's own
// origin, each checked against the sha256 of its card before a session is made.
//
// Messages in:  {type: "init", threads, detectors: {short: {url, card}, full: {url, card}}, detection}
//               {type: "model", name, url, card}         load (or switch to) a classifier
//               {type: "analyse", id, mode: "live" | "photo", bitmap | {data, width, height}, search}
//               (live: inference.live + video.StreamRecognizer: windows, searches, tracks, smoothing;
//                photo: Recognizer.predict: the photo search, every face)
//               {type: "reset"}                          forget the live tracks
// Messages out: {type: "ready", threads, ms} · {type: "model", name, ms} · {type: "result", id, ...}
//               {type: "error", id?, scope, detail}
import * as ort from "./vendor/ort/ort.wasm.min.mjs";
import * as P from "./pipeline.js";

const state = { specs: {}, sessions: {}, classifier: null, tracker: new P.Tracker(), live: new P.LiveFaces(),
                canvas: null, models: {} };

function hex(buf) {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The bytes of a model file, refused when their sha256 differs from the card's */
async function fetchVerified(url, card, what) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${what}: cannot load ${url} (HTTP ${r.status})`);
  const bytes = await r.arrayBuffer();
  if (!bytes.byteLength) throw new Error(`${what}: model file is empty (0 bytes)`);
  const digest = hex(await crypto.subtle.digest("SHA-256", bytes));
  const want = String(card.sha256 || "");
  if (!want) throw new Error(`${what}: its card has no sha256: the model cannot be checked, so it is not loaded`);
  if (digest !== want) {
    throw new Error(`${what}: sha256 ${digest.slice(0, 12)}... does not match its card (${want.slice(0, 12)}...): ` +
                    "the model file is corrupt or was replaced; it is not loaded");
  }
  return new Uint8Array(bytes);
}

async function session(bytes) {
  // no busy-waiting threads (as session.cpu_session does in Python): the detector and the classifier take turns,
  // and spinning threads steal the cores the page and the camera need
  return ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all",
                                              extra: { session: { intra_op: { allow_spinning: "0" } } } });
}

async function loadDetector(range) {
  if (state.sessions[range]) return;
  const d = state.detectors[range];
  const bytes = await fetchVerified(d.url, d.card, `face detector blazeface_${range}`);
  state.sessions[range] = await session(bytes);
  state.specs[range] = P.detectorSpec(range, d.card);
}

async function init(msg) {
  const t0 = performance.now();
  ort.env.wasm.wasmPaths = new URL("./vendor/ort/", import.meta.url).href;
  const threads = self.crossOriginIsolated ? Math.max(1, msg.threads | 0) : 1;
  ort.env.wasm.numThreads = threads;
  ort.env.logLevel = "error";
  state.detectors = msg.detectors;
  P.configure(msg.detection);
  // the detectors and the first model are fetched and checked together (the page is ready sooner)
  await Promise.all([loadDetector("short"), loadDetector("full"), msg.model ? loadModel(msg.model) : null]);
  return { type: "ready", threads, isolated: Boolean(self.crossOriginIsolated), ms: performance.now() - t0 };
}

async function loadModel(msg) {
  const t0 = performance.now();
  let m = await state.models[msg.name];
  if (!m) {
    const loading = (async () => {
      const bytes = await fetchVerified(msg.url, msg.card, `model ${msg.name}`);
      const s = await session(bytes);
      return { name: msg.name, session: s, card: msg.card, classes: msg.card.classes, size: msg.card.input_size || 48,
               temperature: Number(msg.card.temperature ?? 1.0), margin: msg.card.face_margin ?? P.FACE_MARGIN };
    })();
    state.models[msg.name] = loading;
    try {
      m = await loading;
    } catch (e) {
      delete state.models[msg.name];  // a refused model can be tried again (its file may be replaced)
      throw e;
    }
  }
  if (state.classifier !== m) resetLive();  // tracks smooth one model's probabilities
  state.classifier = m;
  return { type: "model", name: msg.name, ms: performance.now() - t0 };
}

async function runDetector(spec, prep) {
  const s = state.sessions[spec.range];
  const feeds = { [s.inputNames[0]]: new ort.Tensor("float32", prep.tensor, [prep.batch || 1, 3, prep.height, prep.width]) };
  const out = await s.run(feeds);
  const names = spec.outputs;
  let boxes = out[names.boxes], logits = out[names.scores];
  if (!boxes || !logits) {  // the 16-wide output holds the boxes
    const [a, b] = s.outputNames.map((n) => out[n]);
    [boxes, logits] = a.dims[a.dims.length - 1] === 16 ? [a, b] : [b, a];
  }
  const r = { boxes: boxes.data, logits: logits.data };
  for (const t of Object.values(out)) t.dispose && t.dispose();
  return r;
}

/** Recognizer.classify: probabilities of the crops; with `tta` "flip" each crop and its mirror image go through
 * the model in one batch and their probabilities are averaged (photos, where Python's Recognizer does so) */
async function classify(crops, tta = "none") {
  const m = state.classifier, n = crops.length;
  if (tta === "flip" && n && m.card.tta !== "flip") {
    const p = await classifyViews(crops.concat(crops.map((c) => P.mirrored(c, m.size))));
    return p.slice(0, n).map((a, i) => a.map((v, k) => (v + p[n + i][k]) / 2));
  }
  return classifyViews(crops);
}

async function classifyViews(crops) {
  const m = state.classifier, n = crops.length, S = m.size;
  if (!n) return [];
  const x = new Float32Array(n * S * S);
  crops.forEach((c, i) => x.set(c, i * S * S));
  const s = m.session;
  const out = await s.run({ [s.inputNames[0]]: new ort.Tensor("float32", x, [n, 1, S, S]) });
  const logits = out[s.outputNames[0]].data, C = m.classes.length;
  const probs = [];
  for (let i = 0; i < n; i++) probs.push(P.softmax(logits.subarray(i * C, i * C + C), m.temperature));
  return probs;
}

function pixels(msg) {
  if (!msg.bitmap) return { data: msg.data, width: msg.width, height: msg.height, channels: 4 };
  const b = msg.bitmap, w = b.width, h = b.height;
  if (!state.canvas || state.canvas.width !== w || state.canvas.height !== h) state.canvas = new OffscreenCanvas(w, h);
  const ctx = state.canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(b, 0, 0);
  b.close();
  return { data: ctx.getImageData(0, 0, w, h).data, width: w, height: h, channels: 4 };
}

function face(det, probs, classes, extra = {}) {
  const k = P.argmax(probs);
  return {
    box: det.box, label: classes[k], confidence: probs[k],
    probabilities: Object.fromEntries(classes.map((c, i) => [c, probs[i]])),
    whole_image: false, track_id: null, detection_score: det.score ?? null, keypoints: det.keypoints ?? null,
    no_face: false, ...extra,
  };
}

async function analyse(msg) {
  const t0 = performance.now();
  if (!state.classifier) throw new Error("no model loaded yet");
  const img = pixels(msg);
  const tPix = performance.now() - t0;
  const m = state.classifier, W = img.width, H = img.height;
  const ms = { pixels: tPix, prepare: 0, detect: 0, decode: 0, crop: 0, classify: 0 };
  let faces = [], noFace = false, t;
  if (msg.mode === "photo" && Math.max(W, H) <= P.FACE_CROP_PX) {  // a face crop already: classified whole
    t = performance.now();
    const crop = P.wholeImageCrop(P.toGray(img), W, H, m.size);
    ms.crop = performance.now() - t;
    t = performance.now();
    const [p] = await classify([crop], P.DETECTION.photo_tta || "none");
    ms.classify = performance.now() - t;
    faces = [face({ box: [0, 0, W, H] }, p, m.classes, { whole_image: true })];
  } else {
    const found = msg.mode === "photo"
      ? await P.detectPhoto(state.specs, img, P.SEARCH_MODES.includes(msg.search) ? msg.search : P.DETECTION.default_search, runDetector)
      : await state.live.step(state.specs, img, runDetector);
    Object.assign(ms, found.ms);
    t = performance.now();
    let items = found.detections, pairs = null;
    if (msg.mode === "live") {
      pairs = state.tracker.update(items.map((d) => d.box));
      items = pairs.map(([, bi]) => items[bi]);
    }
    const gray = P.toGrayAround(img, items, m.margin);  // only where the crops read
    const crops = items.map((d) => P.cropDetection(gray, W, H, d, m.margin, m.size));
    ms.crop = performance.now() - t;
    t = performance.now();
    const probs = await classify(crops, msg.mode === "photo" ? P.DETECTION.photo_tta || "none" : "none");
    ms.classify = performance.now() - t;
    if (pairs) {
      pairs.forEach(([track], i) => {
        const p = state.tracker.smooth(track, probs[i]);
        if (track.confirmed) faces.push(face(items[i], p, m.classes, { track_id: track.id }));
      });
    } else {
      faces = items.map((d, i) => face(d, probs[i], m.classes));
      noFace = faces.length === 0;
    }
  }
  ms.total = performance.now() - t0;
  return { type: "result", id: msg.id, mode: msg.mode, model: m.name, faces, no_face: noFace, width: W, height: H, ms };
}

function resetLive() {
  state.tracker = new P.Tracker();
  state.live.reset();
}

const handlers = { init, model: loadModel, analyse, reset: async () => { resetLive(); return { type: "reset" }; } };

// one message at a time, in order (a model switch never races a frame)
let queue = Promise.resolve();
self.onmessage = (ev) => {
  const msg = ev.data;
  queue = queue.then(async () => {
    try {
      self.postMessage({ ...(await handlers[msg.type](msg)), id: msg.id });
    } catch (e) {
      if (msg.bitmap) msg.bitmap.close();
      self.postMessage({ type: "error", id: msg.id, scope: msg.type, name: msg.name, detail: String((e && e.message) || e) });
    }
  });
};
