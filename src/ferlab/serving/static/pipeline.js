// ferlab's recognition pipeline in JavaScript: the same steps, constants and rounding as the Python package
// (ferlab.inference.blazeface, crop, recognizer, video; ferlab.calibration), so that the page gives on the
// device what `ferlab predict` and the server give.  Pure functions on pixel arrays: no DOM, no ONNX Runtime
// (the worker passes a `run` callback), so Node can import this module too.
//
// Images are {data, width, height, channels}: interleaved uint8 (RGBA from a canvas: 4 channels, R first).
// The detector passes are data: a *plan* (searchPlan: which model at which scale, as blazeface.search_plan) and
// one engine runs any plan (runSearch: each pass prepared, run, decoded, its implausible rows dropped by
// `plausible`, mapped back to image pixels); `merge` blends all passes by weighted NMS and drops the boxes
// around smaller faces (`contained`).  The live path (LiveFaces, as inference.live) adds windows around the
// known faces.
"use strict";

// ------------------------------------------------------------------------------------------ constants
/** BlazeFace box -> FER2013 framing (blazeface.FRAMING) */
export const FRAMING = { short: { scale: 1.209, dx: 0.0, dy: -0.094 }, full: { scale: 1.201, dx: 0.006, dy: -0.042 } };
/** The detection constants of ferlab.inference.blazeface and .live (models.json carries Python's own values
 * as `detection`; `configure` takes them, so the two cannot drift apart silently) */
export const DETECTION = {
  // the photo searches (blazeface.SEARCHES): smallest face sought (px), bound on the finest level's input
  // pixels, rotations tried in turn while none found a face
  searches: {
    fast: { min_face: 64, max_pixels: 600_000, rotations: [0] },
    balanced: { min_face: 40, max_pixels: 2_000_000, rotations: [0] },
    thorough: { min_face: 24, max_pixels: 4_000_000, rotations: [0, 90, 270, 180] },
  },
  default_search: "balanced",
  live_search: { min_face: 48, max_pixels: 200_000, rotations: [0] },  // blazeface.LIVE_SEARCH
  face_in_min: 20, level_step: 3.0, pyramid_range: "full",           // the pyramid (search_plan)
  native: { short: 128, full: 192 },
  window: 2.5, search_every: 4,                                        // blazeface.WINDOW, live.SEARCH_EVERY
  eyes_apart: [0.2, 0.65], mouth_drop: [0.6, 2.0], max_skew: 0.5, max_nose_off: 0.4, contain: 0.8,
  upright_score: 0.8,  // blazeface.UPRIGHT_SCORE: the rotations stop at a face this sure
  search_min_score: 0.6,  // blazeface.SEARCH_MIN_SCORE: the score a merged face of a search needs
  sideways: null,      // crop.SIDEWAYS: eye-line angle from which a face is cropped upright (null: never)
  max_side: null,      // BlazeFaceAuto.max_side (--max-side): bounds the finest pyramid level of every search
  photo_tta: null,     // recognizer.PHOTO_TTA: "flip" averages each photo face with its mirror image (null: none)
};
export const SEARCH_MODES = Object.keys(DETECTION.searches);

/** Takes the constants models.json carries (Python's), keeping these defaults for what it lacks */
export function configure(detection) {
  if (!detection) return DETECTION;
  for (const [k, v] of Object.entries(detection)) if (k in DETECTION && v != null) DETECTION[k] = v;
  if (detection.framing) Object.assign(FRAMING, detection.framing);
  SEARCH_MODES.splice(0, SEARCH_MODES.length, ...Object.keys(DETECTION.searches));
  return DETECTION;
}
export const LOGIT_CLIP = 100.0;
export const MAX_FACES = 200;
/** crop.CROP_MAX_SIDE, crop.FACE_CROP_PX, card.FACE_MARGIN */
export const CROP_MAX_SIDE = 2048;
export const FACE_CROP_PX = 64;
export const FACE_MARGIN = 0.02;
/** video.StreamRecognizer as `ferlab serve` makes it (stream_every 3: max_missed = max(5, 2 * 3)) */
export const TRACKING = { iou: 0.3, maxMissed: 6, minHits: 3, smoothing: 0.6 };
/** imageio limits: the same one-line messages as the CLI */
export const LIMITS = { maxPixels: 40_000_000, maxSide: 16_384, maxAspect: 50 };

// ---------------------------------------------------------------------------------------- arithmetic
/** Python's round(): halves to even */
export function pyRound(x) {
  const f = Math.floor(x), d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}
/** round(x, 1) as Python prints it (near enough: the values only frame crops) */
const round1 = (x) => pyRound(x * 10) / 10;
/** OpenCV's saturate_cast<uchar>(float): rounds halves to even, clamps */
const sat8 = (v) => (v <= 0 ? 0 : v >= 255 ? 255 : pyRound(v));

// ---------------------------------------------------------------------------------------- features
/** A WebAssembly module whose one function returns i8x16.splat(0): it validates only where WebAssembly SIMD
 * is supported (onnxruntime-web 1.30 ships no build without SIMD) */
export const SIMD_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,  // magic, version 1
  0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b,        // type section: () -> v128
  0x03, 0x02, 0x01, 0x00,                          // function section: one function of type 0
  0x0a, 0x08, 0x01, 0x06, 0x00, 0x41, 0x00, 0xfd, 0x0f, 0x0b,  // code: i32.const 0; i8x16.splat; end
]);

/** Whether `wasm` (the WebAssembly namespace) supports SIMD */
export function hasSimd(wasm) {
  try {
    return Boolean(wasm) && typeof wasm.validate === "function" && wasm.validate(SIMD_PROBE);
  } catch {
    return false;
  }
}

// ------------------------------------------------------------------------------------- image checks
/** imageio.check_size: null, or the CLI's one-line message for an image of w x h */
export function checkSize(w, h, name = "image") {
  if (w <= 0 || h <= 0) return `${name}: image has no pixels (${w}x${h})`;
  if (w * h > LIMITS.maxPixels) {
    return `${name}: ${w}x${h} = ${(w * h / 1e6).toFixed(1)} megapixels, more than the ` +
           `${(LIMITS.maxPixels / 1e6).toFixed(0)} megapixel limit`;
  }
  if (Math.max(w, h) > LIMITS.maxSide) return `${name}: ${w}x${h} has a side over the ${LIMITS.maxSide} pixel limit`;
  if (Math.max(w, h) > LIMITS.maxAspect * Math.min(w, h)) {
    return `${name}: ${w}x${h} is a strip, not a picture (more elongated than ${LIMITS.maxAspect}:1)`;
  }
  return null;
}

const ALLOWED = "BMP, GIF, JPEG, PNG, PPM, TIFF, WEBP";

/** The format and size of an image from its first bytes (no decoding): {format, width, height} or
 * {error}.  PNG, JPEG (SOF marker), GIF, BMP, WebP (VP8, VP8L, VP8X); TIFF and PPM: format only. */
export function sniffImage(bytes, name = "image") {
  const b = bytes, n = b.length;
  if (!n) return { error: `${name}: empty file (0 bytes)` };
  const u16be = (i) => (b[i] << 8) | b[i + 1], u16le = (i) => b[i] | (b[i + 1] << 8);
  const u32be = (i) => ((b[i] << 24) >>> 0) + (b[i + 1] << 16) + (b[i + 2] << 8) + b[i + 3];
  const u32le = (i) => b[i] + (b[i + 1] << 8) + (b[i + 2] << 16) + ((b[i + 3] << 24) >>> 0);
  const notImage = { error: `${name}: not an image in a supported format (${ALLOWED})` };
  const truncated = { error: `${name}: unreadable image size` };
  if (n >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) {
    if (n < 24) return truncated;
    return { format: "PNG", width: u32be(16), height: u32be(20) };
  }
  if (n >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) {
    let i = 2;
    while (i + 9 < n) {
      if (b[i] !== 0xff) { i += 1; continue; }
      const m = b[i + 1];
      if (m === 0xff) { i += 1; continue; }
      if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7)) { i += 2; continue; }
      const len = u16be(i + 2);
      if ((m >= 0xc0 && m <= 0xcf) && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
        return { format: "JPEG", width: u16be(i + 7), height: u16be(i + 5) };
      }
      if (m === 0xda || len < 2) break;
      i += 2 + len;
    }
    return truncated;
  }
  if (n >= 10 && b[0] === 0x47 && b[1] === 0x49 && b[2] === 0x46) return { format: "GIF", width: u16le(6), height: u16le(8) };
  if (n >= 26 && b[0] === 0x42 && b[1] === 0x4d) {
    const w = u32le(18) | 0, h = u32le(22) | 0;
    return { format: "BMP", width: Math.abs(w), height: Math.abs(h) };
  }
  if (n >= 30 && u32be(0) === 0x52494646 && u32be(8) === 0x57454250) {
    const kind = String.fromCharCode(b[12], b[13], b[14], b[15]);
    if (kind === "VP8 ") return { format: "WEBP", width: u16le(26) & 0x3fff, height: u16le(28) & 0x3fff };
    if (kind === "VP8L") {
      const v = u32le(21);
      return { format: "WEBP", width: (v & 0x3fff) + 1, height: ((v >>> 14) & 0x3fff) + 1 };
    }
    if (kind === "VP8X") {
      return { format: "WEBP", width: 1 + (b[24] | (b[25] << 8) | (b[26] << 16)), height: 1 + (b[27] | (b[28] << 8) | (b[29] << 16)) };
    }
    return truncated;
  }
  if (n >= 4 && ((b[0] === 0x49 && b[1] === 0x49 && b[2] === 0x2a) || (b[0] === 0x4d && b[1] === 0x4d && b[3] === 0x2a))) {
    return { format: "TIFF", width: null, height: null };
  }
  if (n >= 3 && b[0] === 0x50 && b[1] >= 0x31 && b[1] <= 0x36) return { format: "PPM", width: null, height: null };
  return notImage;
}

// ---------------------------------------------------------------------------------------- resampling
/** grey levels of an interleaved RGB(A) image: OpenCV's BGR2GRAY fixed point (R 4899, G 9617, B 1868 / 2^14) */
export function toGray(img) {
  const { data, width, height } = img, c = img.channels || 4;
  const out = new Uint8Array(width * height);
  if (c === 1) { out.set(data.subarray(0, width * height)); return out; }
  for (let i = 0, j = 0; i < out.length; i++, j += c) {
    out[i] = (data[j] * 4899 + data[j + 1] * 9617 + data[j + 2] * 1868 + 8192) >> 14;
  }
  return out;
}

/** toGray, computed only in the squares the crops of `dets` read (the rest stays 0): the same crops, less work */
export function toGrayAround(img, dets, margin = FACE_MARGIN) {
  const { data, width: W, height: H } = img, c = img.channels || 4;
  if (c === 1 || !dets.length) return c === 1 ? toGray(img) : new Uint8Array(W * H);
  const out = new Uint8Array(W * H);
  for (const d of dets) {
    let cx, cy, side;
    if (d.frame) [cx, cy, side] = d.frame;
    else { cx = d.box[0] + d.box[2] / 2; cy = d.box[1] + d.box[3] / 2; side = Math.max(d.box[2], d.box[3]); }
    const r = side * (1 + 2 * Math.max(margin, 0)) * 0.7072 + 4;  // covers the square, turned or not
    const x0 = Math.max(0, Math.floor(cx - r)), x1 = Math.min(W, Math.ceil(cx + r));
    const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(H, Math.ceil(cy + r));
    for (let y = y0; y < y1; y++) {
      for (let x = x0, i = y * W + x0, j = (y * W + x0) * c; x < x1; x++, i++, j += c) {
        out[i] = (data[j] * 4899 + data[j + 1] * 9617 + data[j + 2] * 1868 + 8192) >> 14;
      }
    }
  }
  return out;
}

/** OpenCV INTER_AREA by a whole factor k (the fast path): block means; the right / bottom pixels that do not
 * fill a block are dropped.  Colour images: the first three channels (alpha is set opaque). */
function areaWhole(src, w, h, c, k) {
  const ow = Math.floor(w / k), oh = Math.floor(h / k);
  const out = new Uint8Array(ow * oh * c);
  const nc = c === 4 ? 3 : c;
  const acc = new Int32Array(ow * nc);
  const inv = 1 / (k * k);
  for (let oy = 0; oy < oh; oy++) {
    acc.fill(0);
    for (let dy = 0; dy < k; dy++) {
      let p = (oy * k + dy) * w * c;
      for (let ox = 0, a = 0; ox < ow; ox++, a += nc) {
        for (let dx = 0; dx < k; dx++, p += c) {
          for (let ch = 0; ch < nc; ch++) acc[a + ch] += src[p + ch];
        }
      }
    }
    let o = oy * ow * c;
    for (let ox = 0, a = 0; ox < ow; ox++, a += nc, o += c) {
      for (let ch = 0; ch < nc; ch++) out[o + ch] = k === 2 ? (acc[a + ch] + 2) >> 2 : sat8(acc[a + ch] * inv);
      if (c === 4) out[o + 3] = 255;
    }
  }
  return { data: out, width: ow, height: oh, channels: c };
}

/** OpenCV's computeResizeAreaTab: per output index, the (source index, weight) pairs */
function areaTab(ssize, dsize, scale) {
  const tab = [];
  for (let d = 0; d < dsize; d++) {
    const f1 = d * scale, f2 = f1 + scale, cell = Math.min(scale, ssize - f1);
    let s2 = Math.floor(f2), s1 = Math.ceil(f1);
    s2 = Math.min(s2, ssize - 1);
    s1 = Math.min(s1, s2);
    const row = [];
    if (s1 - f1 > 1e-3) row.push([s1 - 1, (s1 - f1) / cell]);
    for (let s = s1; s < s2; s++) row.push([s, 1 / cell]);
    if (f2 - s2 > 1e-3) row.push([s2, Math.min(Math.min(f2 - s2, 1), cell) / cell]);
    tab.push(row);
  }
  return tab;
}

/** OpenCV INTER_AREA shrinking to dw x dh (any factor) */
export function resizeArea(img, dw, dh) {
  const { data, width: w, height: h } = img, c = img.channels || 4;
  const sx = w / dw, sy = h / dh;
  if (Math.abs(sx - Math.round(sx)) < 1e-12 && Math.abs(sy - Math.round(sy)) < 1e-12 && Math.round(sx) === Math.round(sy)
      && Math.round(sx) >= 1) {
    if (Math.round(sx) === 1) return { data: data.slice(0, w * h * c), width: w, height: h, channels: c };
    return areaWhole(data, w, h, c, Math.round(sx));
  }
  const tx = areaTab(w, dw, sx), ty = areaTab(h, dh, sy);
  const out = new Uint8Array(dw * dh * c);
  const rowAcc = new Float64Array(dw * c);
  for (let oy = 0; oy < dh; oy++) {
    const acc = new Float64Array(dw * c);
    for (const [syi, wy] of ty[oy]) {
      rowAcc.fill(0);
      const base = syi * w * c;
      for (let ox = 0; ox < dw; ox++) {
        for (const [sxi, wx] of tx[ox]) {
          const p = base + sxi * c;
          for (let ch = 0; ch < c; ch++) rowAcc[ox * c + ch] += data[p + ch] * wx;
        }
      }
      for (let i = 0; i < acc.length; i++) acc[i] += rowAcc[i] * wy;
    }
    const o = oy * dw * c;
    for (let i = 0; i < acc.length; i++) out[o + i] = sat8(acc[i]);
  }
  return { data: out, width: dw, height: dh, channels: c };
}

/** OpenCV's INTER_LINEAR coefficient table along one axis (11-bit fixed point) */
function linearTab(ssize, dsize) {
  const scale = ssize / dsize;
  const idx = new Int32Array(dsize), a0 = new Int32Array(dsize);
  for (let d = 0; d < dsize; d++) {
    let f = Math.fround((d + 0.5) * scale - 0.5);
    let s = Math.floor(f);
    f -= s;
    if (s < 0) { f = 0; s = 0; }
    if (s >= ssize - 1) { f = 0; s = ssize - 1; }
    idx[d] = s;
    a0[d] = Math.round((1 - f) * 2048);
  }
  return { idx, a0 };
}

/** OpenCV INTER_LINEAR resize of uint8 (fixed point: 11-bit coefficients, SIMD rounding of the vertical pass).
 * Colour images: the first three channels (alpha is set opaque). */
export function resizeLinear(img, dw, dh) {
  const { data, width: w, height: h } = img, c = img.channels || 4;
  const nc = c === 4 ? 3 : c;
  const tx = linearTab(w, dw), ty = linearTab(h, dh);
  const out = new Uint8Array(dw * dh * c);
  const x0 = new Int32Array(dw), x1 = new Int32Array(dw), b0s = new Int32Array(dw);
  for (let x = 0; x < dw; x++) {
    x0[x] = tx.idx[x] * c;
    x1[x] = Math.min(tx.idx[x] + 1, w - 1) * c;
    b0s[x] = tx.a0[x];
  }
  const rowLen = dw * nc;
  let rA = new Int32Array(rowLen), rB = new Int32Array(rowLen), yA = -1, yB = -1;
  const hrow = (y, r) => {
    const base = y * w * c;
    for (let x = 0, q = 0; x < dw; x++, q += nc) {
      const b0 = b0s[x], b1 = 2048 - b0, p0 = base + x0[x], p1 = base + x1[x];
      for (let ch = 0; ch < nc; ch++) r[q + ch] = data[p0 + ch] * b0 + data[p1 + ch] * b1;
    }
  };
  for (let y = 0; y < dh; y++) {
    const s0 = ty.idx[y], s1 = Math.min(s0 + 1, h - 1), b0 = ty.a0[y], b1 = 2048 - b0;
    // the two source rows, each filtered once (rows advance monotonically)
    if (yA !== s0) {
      if (yB === s0) { [rA, rB] = [rB, rA]; yA = s0; yB = -1; } else { hrow(s0, rA); yA = s0; }
    }
    if (yB !== s1) { if (s1 === s0) { rB.set(rA); } else { hrow(s1, rB); } yB = s1; }
    let o = y * dw * c;
    for (let x = 0, q = 0; x < dw; x++, q += nc, o += c) {
      for (let ch = 0; ch < nc; ch++) {
        const v = (((b0 * (rA[q + ch] >> 4)) >> 16) + ((b1 * (rB[q + ch] >> 4)) >> 16) + 2) >> 2;
        out[o + ch] = v < 0 ? 0 : v > 255 ? 255 : v;
      }
      if (c === 4) out[o + 3] = 255;
    }
  }
  return { data: out, width: dw, height: dh, channels: c };
}

/** blazeface._shrunk: the image resized to nw x nh (whole-factor INTER_AREA first, then bilinear) and the
 * scales (x, y) from the image's pixels to the result's */
export function shrunk(img, nw, nh) {
  let { width: w, height: h } = img;
  if (nw === w && nh === h) return { img, sx: 1, sy: 1 };
  const k = Math.min(Math.floor(w / nw), Math.floor(h / nh));
  let cur = img;
  if (k >= 2) {
    w = Math.floor(w / k) * k;
    h = Math.floor(h / k) * k;
    cur = areaWhole(img.data, img.width, img.height, img.channels || 4, k);  // drops the same edge pixels
  }
  if (cur.width !== nw || cur.height !== nh) cur = resizeLinear(cur, nw, nh);
  return { img: cur, sx: nw / w, sy: nh / h };
}

/** blazeface._to_input: the image at (ox, oy) on a black H x W canvas, planar RGB float32 in [-1, 1] */
function toInput(img, H, W, ox, oy) {
  const x = new Float32Array(3 * H * W).fill(-1);
  const { data, width: nw, height: nh } = img, c = img.channels || 4, plane = H * W;
  const k = Math.fround(1 / 127.5);
  for (let y = 0; y < nh; y++) {
    for (let xx = 0; xx < nw; xx++) {
      const p = (y * nw + xx) * c, q = (y + oy) * W + xx + ox;
      if (c === 1) { const v = Math.fround(data[p] * k) - 1; x[q] = v; x[plane + q] = v; x[2 * plane + q] = v; continue; }
      x[q] = Math.fround(data[p] * k) - 1;
      x[plane + q] = Math.fround(data[p + 1] * k) - 1;
      x[2 * plane + q] = Math.fround(data[p + 2] * k) - 1;
    }
  }
  return x;
}

/** blazeface.letterbox: {tensor, height, width, map: [sx, sy, ox, oy]} (input px = image px * s + o) */
export function letterbox(img, size) {
  const { width: w, height: h } = img;
  const s = size / Math.max(h, w);
  const nw = Math.min(size, Math.max(1, pyRound(w * s))), nh = Math.min(size, Math.max(1, pyRound(h * s)));
  const ox = Math.floor((size - nw) / 2), oy = Math.floor((size - nh) / 2);
  const r = shrunk(img, nw, nh);
  return { tensor: toInput(r.img, size, size, ox, oy), height: size, width: size, map: [r.sx, r.sy, ox, oy] };
}

/** blazeface.enlarged: the whole image resized by `scale` onto a canvas of multiples of `multiple` */
export function enlarged(img, scale, multiple) {
  const { width: w, height: h } = img;
  const nw = Math.max(1, pyRound(w * scale)), nh = Math.max(1, pyRound(h * scale));
  const cw = Math.ceil(nw / multiple) * multiple, ch = Math.ceil(nh / multiple) * multiple;
  const r = shrunk(img, nw, nh);
  return { tensor: toInput(r.img, ch, cw, 0, 0), height: ch, width: cw, map: [r.sx, r.sy, 0, 0] };
}

// ------------------------------------------------------------------------------------------- decoding
/** blazeface.grid_anchors: anchor centres (x, y) in input pixels, in the graph's output order */
export function gridAnchors(height, width, strides, interp = 1.0, offset = 0.5) {
  const out = [];
  let i = 0;
  while (i < strides.length) {
    let j = i, repeats = 0;
    while (j < strides.length && strides[j] === strides[i]) { repeats += interp === 1.0 ? 2 : 1; j += 1; }
    const st = strides[i];
    for (let y = 0; y < Math.floor(height / st); y++) {
      for (let x = 0; x < Math.floor(width / st); x++) {
        for (let r = 0; r < repeats; r++) out.push(Math.fround((x + offset) * st), Math.fround((y + offset) * st));
      }
    }
    i = j;
  }
  return Float32Array.from(out);
}

/** A detector's description from its card (blazeface.BlazeFaceDetector.__init__) */
export function detectorSpec(range, card, minScore = null) {
  const a = card.anchors;
  const ms = minScore != null ? minScore : (card.min_score != null ? card.min_score : 0.5);
  return {
    range, card, size: card.input_size, multiple: card.stride_multiple || 0,
    strides: a.strides, interp: a.interpolated_scale_aspect_ratio ?? 1.0, offset: a.anchor_offset ?? 0.5,
    minScore: ms, nmsIou: (card.nms && card.nms.iou) ?? 0.3, framing: FRAMING[range] || { scale: 1, dx: 0, dy: 0 },
    outputs: card.outputs || {}, anchorCache: new Map(),
  };
}

function anchorsOf(spec, h, w) {
  const key = `${h}x${w}`;
  let a = spec.anchorCache.get(key);
  if (!a) {
    if (spec.anchorCache.size > 16) spec.anchorCache.clear();
    a = gridAnchors(h, w, spec.strides, spec.interp, spec.offset);
    spec.anchorCache.set(key, a);
  }
  return a;
}

/** IoU of two rows (x0, y0, x1, y1, ...) */
function rowIou(a, b, areaA, areaB) {
  const iw = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
  const ih = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
  const inter = Math.max(iw, 0) * Math.max(ih, 0);
  const union = areaA + areaB - inter;
  return union > 0 ? inter / Math.max(union, 1e-12) : 0;
}

/** blazeface.weighted_nms (MediaPipe's blending): rows (x0, y0, x1, y1, keypoints...), scores ->
 * {rows, scores}, best first */
export function weightedNms(rows, scores, iouThreshold = 0.3, maxOut = null) {
  const order = scores.map((s, i) => i).sort((i, j) => (scores[j] - scores[i]) || (i - j));
  const b = order.map((i) => rows[i]), s = order.map((i) => scores[i]);
  const area = b.map((r) => Math.max(0, r[2] - r[0]) * Math.max(0, r[3] - r[1]));
  const alive = new Array(b.length).fill(true);
  const outR = [], outS = [];
  for (let i = 0; i < b.length; i++) {
    if (!alive[i]) continue;
    let grp = [];
    for (let j = 0; j < b.length; j++) {
      if (alive[j] && rowIou(b[j], b[i], area[j], area[i]) > iouThreshold) grp.push(j);
    }
    if (!grp.length) grp = [i];
    const n = b[i].length, acc = new Float64Array(n);
    let tw = 0;
    for (const j of grp) {
      tw += s[j];
      for (let k = 0; k < n; k++) acc[k] += b[j][k] * s[j];
    }
    for (let k = 0; k < n; k++) acc[k] = Math.fround(acc[k] / tw);
    outR.push(acc);
    outS.push(s[i]);
    for (const j of grp) alive[j] = false;
    alive[i] = false;
    if (maxOut != null && outR.length >= maxOut) break;
  }
  return { rows: outR, scores: outS };
}

/** blazeface._run after the graph: decoded detections (x0, y0, x1, y1 + 6 keypoints) in image pixels.
 * `boxes` (N * 16) and `logits` (N) are the graph's outputs; `prep` the prepared input (letterbox / enlarged);
 * `nmsInput`: weighted NMS in input pixels before mapping back (the one-pass live path). */
export function decode(spec, boxes, logits, prep, minScore, nmsInput = false) {
  const logitMin = Math.log(minScore / (1 - minScore));
  const anc = anchorsOf(spec, prep.height, prep.width);
  let rows = [], scores = [];
  for (let i = 0; i < logits.length; i++) {
    if (!(logits[i] > logitMin)) continue;
    const z = Math.min(Math.max(logits[i], -LOGIT_CLIP), LOGIT_CLIP);
    const r = boxes.subarray(16 * i, 16 * i + 16), ax = anc[2 * i], ay = anc[2 * i + 1];
    const bw = r[2], bh = r[3];
    if (!(bw > 0 && bh > 0)) continue;
    const cx = Math.fround(r[0] + ax), cy = Math.fround(r[1] + ay);
    const d = new Float64Array(16);
    d[0] = Math.fround(cx - bw / 2); d[1] = Math.fround(cy - bh / 2);
    d[2] = Math.fround(cx + bw / 2); d[3] = Math.fround(cy + bh / 2);
    for (let k = 0; k < 6; k++) {
      d[4 + 2 * k] = Math.fround(r[4 + 2 * k] + ax);
      d[5 + 2 * k] = Math.fround(r[5 + 2 * k] + ay);
    }
    rows.push(d);
    scores.push(Math.fround(1 / (1 + Math.exp(-z))));
  }
  if (nmsInput) ({ rows, scores } = weightedNms(rows, scores, spec.nmsIou, MAX_FACES));
  const [sx, sy, ox, oy] = prep.map;
  for (const d of rows) {
    for (let k = 0; k < 16; k += 2) {
      d[k] = Math.fround((d[k] - ox) / sx);
      d[k + 1] = Math.fround((d[k + 1] - oy) / sy);
    }
  }
  return { rows, scores };
}

/** blazeface.framed: raw rows (16) -> (20): the FER face frame (square), the 6 keypoints, the raw box */
export function framed(rows, framing) {
  return rows.map((d) => {
    const side = Math.max(d[2] - d[0], d[3] - d[1]);
    const cx = (d[0] + d[2]) / 2 + framing.dx * side, cy = (d[1] + d[3]) / 2 + framing.dy * side;
    const fs = side * framing.scale;
    const o = new Float64Array(20);
    o[0] = Math.fround(cx - fs / 2); o[1] = Math.fround(cy - fs / 2);
    o[2] = Math.fround(cx + fs / 2); o[3] = Math.fround(cy + fs / 2);
    for (let k = 4; k < 16; k++) o[k] = d[k];
    for (let k = 0; k < 4; k++) o[16 + k] = d[k];
    return o;
  });
}

/** blazeface.detections_from_framed: framed rows -> detections {box [x, y, w, h] clipped, score, keypoints,
 * rawBox, frame [cx, cy, side]}, left to right */
export function detectionsFromFramed(rows, scores, W, H, minSize = 0) {
  const out = [];
  rows.forEach((d, i) => {
    const [fx0, fy0, fx1, fy1] = d;
    const [rx0, ry0, rx1, ry1] = [d[16], d[17], d[18], d[19]];
    if (Math.max(rx1 - rx0, ry1 - ry0) < minSize) return;
    const fs = Math.max(fx1 - fx0, fy1 - fy0);
    const cx = (fx0 + fx1) / 2, cy = (fy0 + fy1) / 2;
    const bx0 = Math.max(0, pyRound(fx0)), by0 = Math.max(0, pyRound(fy0));
    const bx1 = Math.min(W, pyRound(fx1)), by1 = Math.min(H, pyRound(fy1));
    if (bx1 - bx0 < 2 || by1 - by0 < 2) return;
    const kps = [];
    for (let k = 0; k < 6; k++) kps.push([round1(d[4 + 2 * k]), round1(d[5 + 2 * k])]);
    out.push({ box: [bx0, by0, bx1 - bx0, by1 - by0], score: Math.round(scores[i] * 1e4) / 1e4, keypoints: kps,
               rawBox: [round1(rx0), round1(ry0), round1(rx1 - rx0), round1(ry1 - ry0)],
               frame: [round1(cx), round1(cy), round1(fs)] });
  });
  return out.sort((a, b) => (a.box[0] - b.box[0]) || (a.box[1] - b.box[1]));
}

// ------------------------------------------------------------------------------------ plans and passes
/** blazeface.plausible: which raw rows (16) have keypoints that make a face (eyes, nose, mouth inside the box
 * grown by a tenth, eyes apart by EYES_APART of the side, the mouth below the eyes by MOUTH_DROP of the eye
 * distance, roughly square to the eye line, the nose near the eyes-mouth axis) */
export function plausible(d) {
  const D = DETECTION;
  const side = Math.max(Math.max(d[2] - d[0], d[3] - d[1]), 1e-6), pad = side * 0.1;
  for (let k = 0; k < 4; k++) {
    const x = d[4 + 2 * k], y = d[5 + 2 * k];
    if (!(x >= d[0] - pad && x <= d[2] + pad && y >= d[1] - pad && y <= d[3] + pad)) return false;
  }
  const ex = d[6] - d[4], ey = d[7] - d[5];
  const dEye = Math.max(Math.hypot(ex, ey), 1e-6);
  const mx = (d[4] + d[6]) / 2, my = (d[5] + d[7]) / 2;
  const dx = d[10] - mx, dy = d[11] - my;
  const dMouth = Math.max(Math.hypot(dx, dy), 1e-6);
  const square = Math.abs(ex * dx + ey * dy) / (dEye * dMouth);
  const nx = d[8] - mx, ny = d[9] - my;
  const offAxis = Math.abs(nx * dy - ny * dx) / dMouth;
  const apart = dEye / side, drop = dMouth / dEye;
  return apart >= D.eyes_apart[0] && apart <= D.eyes_apart[1] && drop >= D.mouth_drop[0] && drop <= D.mouth_drop[1]
    && square <= D.max_skew && offAxis <= D.max_nose_off * dEye;
}

/** blazeface.contained: which merged framed rows to keep (a box holding most of a smaller face of a score at
 * least its own is dropped: a torso or head-and-shoulders box around a face) */
export function contained(rows, scores) {
  const n = rows.length, keep = new Array(n).fill(true);
  const area = rows.map((r) => Math.max(r[2] - r[0], 0) * Math.max(r[3] - r[1], 0));
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      if (i === j || area[j] >= area[i] * 0.5 || scores[j] < scores[i]) continue;
      const iw = Math.min(rows[i][2], rows[j][2]) - Math.max(rows[i][0], rows[j][0]);
      const ih = Math.min(rows[i][3], rows[j][3]) - Math.max(rows[i][1], rows[j][1]);
      if (iw > 0 && ih > 0 && iw * ih >= DETECTION.contain * area[j]) { keep[i] = false; break; }
    }
  }
  return keep;
}

/** blazeface._spec: a search by name (or as given), with the detector's max_side bound where it has one */
function searchSpec(search) {
  let s = search && typeof search === "object" ? search : DETECTION.searches[search];
  if (!s) throw new Error(`search must be one of ${SEARCH_MODES.join(", ")} (got '${search}')`);
  if (DETECTION.max_side && !s.max_side) s = { ...s, max_side: DETECTION.max_side };
  return s;
}

/** blazeface.search_plan: the passes of a photo search on a w x h image, finest first: [{range, scale}]
 * (scale null: the whole image letterboxed into the model's square).  Pure data: the engine is runSearch. */
export function searchPlan(w, h, search = DETECTION.default_search, ranges = ["short", "full"]) {
  const spec = searchSpec(search), D = DETECTION;
  const pyramid = ranges.includes(D.pyramid_range) ? D.pyramid_range : ranges[0];
  let s = Math.min(D.face_in_min / spec.min_face, (spec.max_pixels / Math.max(1, w * h)) ** 0.5);
  if (spec.max_side) s = Math.min(s, spec.max_side / Math.max(w, h));  // SearchSpec.max_side, where Python has it
  const coarsest = D.native[pyramid] / Math.max(w, h);
  const passes = [];
  while (s > 1.2 * coarsest) {
    passes.push({ range: pyramid, scale: s });
    s /= D.level_step;
  }
  for (const r of ["full", "short"]) if (ranges.includes(r)) passes.push({ range: r, scale: null });
  return passes;
}

/** np.rot90(img, k): k quarter turns counter-clockwise */
export function rot90(img, k) {
  k = ((k % 4) + 4) % 4;
  if (!k) return img;
  const { data, width: w, height: h } = img, c = img.channels || 4;
  const W = k === 2 ? w : h, H = k === 2 ? h : w;
  const out = new Uint8Array(W * H * c);
  for (let r = 0; r < H; r++) {
    for (let col = 0; col < W; col++) {
      let sy, sx;
      if (k === 1) { sy = col; sx = w - 1 - r; } else if (k === 2) { sy = h - 1 - r; sx = w - 1 - col; } else { sy = h - 1 - col; sx = r; }
      const p = (sy * w + sx) * c, q = (r * W + col) * c;
      for (let ch = 0; ch < c; ch++) out[q + ch] = data[p + ch];
    }
  }
  return { data: out, width: W, height: H, channels: c };
}

/** blazeface._rotate_back: rows found in rot90(img, k) -> img's pixels (img is w x h) */
function rotateBack(rows, k, w, h) {
  return rows.map((d) => {
    const o = Float64Array.from(d);
    for (let i = 0; i < 16; i += 2) {
      const x = d[i], y = d[i + 1];
      if (k === 1) { o[i] = w - y; o[i + 1] = x; } else if (k === 2) { o[i] = w - x; o[i + 1] = h - y; } else if (k === 3) { o[i] = y; o[i + 1] = h - x; }
    }
    if (o[0] > o[2]) [o[0], o[2]] = [o[2], o[0]];
    if (o[1] > o[3]) [o[1], o[3]] = [o[3], o[1]];
    return o;
  });
}

const now = () => (typeof performance !== "undefined" ? performance.now() : Date.now());

/** BlazeFaceDetector.run_pass: one pass (letterbox when scale is null, else the image resized by scale), decoded
 * without NMS, in `img`'s pixels, implausible rows dropped */
async function runPass(spec, img, scale, run, t) {
  let t0 = now();
  const prep = scale == null ? letterbox(img, spec.size) : enlarged(img, scale, spec.multiple);
  t.prepare += now() - t0;
  t0 = now();
  const out = await run(spec, prep);
  t.detect += now() - t0;
  t0 = now();
  const d = decode(spec, out.boxes, out.logits, prep, spec.minScore, false);
  const rows = [], scores = [];
  d.rows.forEach((r, i) => { if (plausible(r)) { rows.push(r); scores.push(d.scores[i]); } });
  t.decode += now() - t0;
  return { rows, scores };
}

/** blazeface.run_search: the passes of searchPlan over `img`: [{range, rows, scores}] in img's pixels.  Each
 * level is resized from the image, kept at >= twice the pass's scale; rotations are tried in turn until one
 * finds a face of UPRIGHT_SCORE, and the one with the surest face is kept.  `run(spec, prep)` runs a graph. */
export async function runSearch(specs, img, search, run, t = { prepare: 0, detect: 0, decode: 0 }) {
  const spec = searchSpec(search);
  const w = img.width, h = img.height, ranges = ["short", "full"].filter((r) => specs[r]);
  const turns = { 0: 0, 90: 3, 180: 2, 270: 1 };
  const bestScore = (found) => Math.max(0, ...found.flatMap((f) => f.scores));
  let best = [];
  for (const deg of spec.rotations) {
    const k = turns[deg];
    let t0 = now();
    const src = k ? rot90(img, k) : img;
    t.prepare += now() - t0;
    const rw = src.width, rh = src.height;
    const out = [];
    let level = src, levelS = 1.0;
    for (const p of searchPlan(rw, rh, spec, ranges)) {
      const m = specs[p.range];
      const scale = p.scale == null ? m.size / Math.max(rw, rh) : p.scale;
      if (scale < levelS / 2) {
        t0 = now();
        level = shrunk(src, Math.max(1, pyRound(rw * scale * 2)), Math.max(1, pyRound(rh * scale * 2))).img;
        levelS = scale * 2;
        t.prepare += now() - t0;
      }
      let { rows, scores } = await runPass(m, level, p.scale == null ? null : p.scale / levelS, run, t);
      const fx = rw / level.width, fy = rh / level.height;
      for (const d of rows) {
        for (let i = 0; i < 16; i += 2) { d[i] = Math.fround(d[i] * fx); d[i + 1] = Math.fround(d[i + 1] * fy); }
      }
      if (k) rows = rotateBack(rows, k, w, h);
      out.push({ range: p.range, rows, scores });
    }
    // the rotation with the surest face wins; a sure face ends the turns (blazeface.run_search)
    if (bestScore(out) > bestScore(best)) best = out;
    if (bestScore(best) >= DETECTION.upright_score) break;
  }
  return best;
}

/** BlazeFaceAuto.merge: framed rows of several passes [{rows (20), scores}] -> detections: weighted NMS, then
 * the boxes that hold a smaller face of a higher score dropped (contained), and the faces under
 * SEARCH_MIN_SCORE */
export function merge(found, specs, W, H, minSize = 0) {
  const parts = found.filter((f) => f.scores.length);
  if (!parts.length) return [];
  const { rows, scores } = weightedNms(parts.flatMap((f) => f.rows), parts.flatMap((f) => f.scores),
                                       specs.short.nmsIou, MAX_FACES);
  const keep = contained(rows, scores);
  const least = Math.max(specs.short.minScore, DETECTION.search_min_score || 0);
  scores.forEach((sc, i) => { if (!(sc >= least)) keep[i] = false; });
  return detectionsFromFramed(rows.filter((_, i) => keep[i]), scores.filter((_, i) => keep[i]), W, H, minSize);
}

/** The photo search (BlazeFaceAuto.detect): {detections, ms} */
export async function detectPhoto(specs, img, search, run) {
  const t = { prepare: 0, detect: 0, decode: 0 };
  const found = await runSearch(specs, img, search, run, t);
  const t0 = now();
  const detections = merge(found.map((f) => ({ rows: framed(f.rows, specs[f.range].framing), scores: f.scores })),
                           specs, img.width, img.height);
  t.decode += now() - t0;
  return { detections, ms: t };
}

/** cv2.warpAffine(img, M, (n, n), INTER_LINEAR) as OpenCV computes it for uint8: M (2x3, src -> dst) inverted,
 * the inverse map in 10-bit fixed point, 1/32-pixel interpolation cells, 15-bit weights; `border` "constant"
 * (black) or "replicate".  Colour images: the first three channels. */
export function warpAffine(img, M, n, border = "constant") {
  const { data, width: w, height: h } = img, c = img.channels || 4;
  const [a11, a12, b1, a21, a22, b2] = M;
  let D = a11 * a22 - a12 * a21;
  D = D !== 0 ? 1 / D : 0;
  const A11 = a22 * D, A22 = a11 * D, A12 = -a12 * D, A21 = -a21 * D;
  const B1 = -A11 * b1 - A12 * b2, B2 = -A21 * b1 - A22 * b2;
  const out = new Uint8Array(n * n * c);
  const AB = 1024, delta = AB / 32 / 2;
  const wt = weightTable();
  const adelta = new Int32Array(n), bdelta = new Int32Array(n);
  for (let x = 0; x < n; x++) { adelta[x] = pyRound(A11 * x * AB); bdelta[x] = pyRound(A21 * x * AB); }
  const channels = c === 1 ? 1 : 3;
  const replicate = border === "replicate";
  const px = (x, y, ch) => {
    if (replicate) { x = x < 0 ? 0 : x >= w ? w - 1 : x; y = y < 0 ? 0 : y >= h ? h - 1 : y; }
    else if (x < 0 || y < 0 || x >= w || y >= h) return 0;
    return data[(y * w + x) * c + ch];
  };
  for (let y = 0; y < n; y++) {
    const X0 = pyRound((A12 * y + B1) * AB) + delta, Y0 = pyRound((A22 * y + B2) * AB) + delta;
    for (let x = 0; x < n; x++) {
      const X = (X0 + adelta[x]) >> 5, Y = (Y0 + bdelta[x]) >> 5;
      const sx = X >> 5, sy = Y >> 5, q = ((Y & 31) * 32 + (X & 31)) * 4;
      const o = (y * n + x) * c;
      const w0 = wt[q], w1 = wt[q + 1], w2 = wt[q + 2], w3 = wt[q + 3];
      if (sx >= 0 && sy >= 0 && sx + 1 < w && sy + 1 < h) {  // all four samples inside: no border rule
        const p = (sy * w + sx) * c, pd = p + w * c;
        for (let ch = 0; ch < channels; ch++) {
          const v = data[p + ch] * w0 + data[p + c + ch] * w1 + data[pd + ch] * w2 + data[pd + c + ch] * w3;
          out[o + ch] = Math.min(255, Math.max(0, (v + 16384) >> 15));
        }
      } else {
        for (let ch = 0; ch < channels; ch++) {
          const v = px(sx, sy, ch) * w0 + px(sx + 1, sy, ch) * w1 + px(sx, sy + 1, ch) * w2 + px(sx + 1, sy + 1, ch) * w3;
          out[o + ch] = Math.min(255, Math.max(0, (v + 16384) >> 15));
        }
      }
      if (c === 4) out[o + 3] = 255;
    }
  }
  return { data: out, width: n, height: n, channels: c };
}

let WEIGHTS = null;
/** OpenCV's bilinear weights of the 32 x 32 sub-pixel cells, 15-bit fixed point */
function weightTable() {
  if (WEIGHTS) return WEIGHTS;
  WEIGHTS = new Int32Array(32 * 32 * 4);
  for (let ay = 0; ay < 32; ay++) {
    for (let ax = 0; ax < 32; ax++) {
      const fx = ax / 32, fy = ay / 32, q = (ay * 32 + ax) * 4;
      WEIGHTS[q] = pyRound((1 - fx) * (1 - fy) * 32768); WEIGHTS[q + 1] = pyRound(fx * (1 - fy) * 32768);
      WEIGHTS[q + 2] = pyRound((1 - fx) * fy * 32768); WEIGHTS[q + 3] = pyRound(fx * fy * 32768);
    }
  }
  return WEIGHTS;
}

/** The live path's window: cv2.warpAffine(img, [[k, 0, ox], [0, k, oy]], (n, n), black border) */
export function warpScaleShift(img, k, ox, oy, n) {
  return warpAffine(img, [k, 0, ox, 0, k, oy], n, "constant");
}

/** BlazeFaceDetector.run_windows: rows (plausible, no NMS) in square windows of WINDOW x side around face frames
 * [cx, cy, side], each seen at the model's native size, all in one batch */
export async function runWindows(spec, img, frames, run, t) {
  const n = spec.size, W = DETECTION.window, plane = 3 * n * n;
  let t0 = now();
  const tensor = new Float32Array(frames.length * plane), maps = [];
  frames.forEach(([cx, cy, side], i) => {
    const k = n / Math.max(W * side, 1.0);
    const ox = -k * (cx - W * side / 2), oy = -k * (cy - W * side / 2);
    const win = warpScaleShift(img, Math.fround(k), Math.fround(ox), Math.fround(oy), n);  // a float32 matrix
    tensor.set(toInput(win, n, n, 0, 0), i * plane);
    maps.push([k, k, ox, oy]);
  });
  t.prepare += now() - t0;
  t0 = now();
  const out = await run(spec, { tensor, batch: frames.length, height: n, width: n });
  t.detect += now() - t0;
  t0 = now();
  const per = out.logits.length / frames.length;
  const rows = [], scores = [];
  maps.forEach((map, i) => {
    const d = decode(spec, out.boxes.subarray(i * per * 16, (i + 1) * per * 16), out.logits.subarray(i * per, (i + 1) * per),
                     { height: n, width: n, map }, spec.minScore, false);
    d.rows.forEach((r, j) => { if (plausible(r)) { rows.push(r); scores.push(d.scores[j]); } });
  });
  t.decode += now() - t0;
  return { rows, scores };
}

/** inference.live.LiveFaces: the faces of a live stream: every frame a window around each known face, every
 * SEARCH_EVERY frames (and whenever no face is known) the full-frame search (LIVE_SEARCH), merged */
export class LiveFaces {
  constructor() { this.reset(); }

  reset() { this.frameIndex = -1; this.known = []; }

  async step(specs, img, run) {
    this.frameIndex += 1;
    const t = { prepare: 0, detect: 0, decode: 0 };
    const found = [];
    const frames = this.known.filter((d) => d.frame).map((d) => d.frame);
    if (frames.length) {
      const win = await runWindows(specs.short, img, frames, run, t);
      found.push({ rows: framed(win.rows, specs.short.framing), scores: win.scores });
    }
    if (!frames.length || this.frameIndex % DETECTION.search_every === 0) {
      for (const f of await runSearch(specs, img, DETECTION.live_search, run, t)) {
        found.push({ rows: framed(f.rows, specs[f.range].framing), scores: f.scores });
      }
    }
    const t0 = now();
    this.known = merge(found, specs, img.width, img.height);
    t.decode += now() - t0;
    return { detections: this.known, ms: t };
  }
}

// ----------------------------------------------------------------------------------------------- crops
/** crop.face_square: the square (x0, y0, side) of a box grown by `margin` x its longer side on each side */
export function faceSquare(box, margin) {
  const [x, y, w, h] = box;
  const side = Math.max(w, h) * (1 + 2 * margin);
  const s = Math.max(1, pyRound(side));
  return [pyRound(x + w / 2 - s / 2), pyRound(y + h / 2 - s / 2), s];
}

/** crop.crop_face on a grey image (Uint8Array W x H): the square, border pixels repeated outside the image,
 * resized to size (INTER_AREA shrinking, INTER_LINEAR enlarging).  null when the box is unusable. */
export function cropFace(gray, W, H, box, margin, size = 48) {
  const [x0, y0, s] = faceSquare(box, margin);
  if (s > 4 * Math.max(H, W)) return null;
  const ix0 = Math.max(0, x0), iy0 = Math.max(0, y0), ix1 = Math.min(W, x0 + s), iy1 = Math.min(H, y0 + s);
  if (ix1 <= ix0 || iy1 <= iy0) return null;
  const pw = ix1 - ix0, ph = iy1 - iy0;
  let patch = new Uint8Array(pw * ph);
  for (let y = 0; y < ph; y++) patch.set(gray.subarray((iy0 + y) * W + ix0, (iy0 + y) * W + ix1), y * pw);
  let pads = [iy0 - y0, y0 + s - iy1, ix0 - x0, x0 + s - ix1];  // top, bottom, left, right
  let cur = { data: patch, width: pw, height: ph, channels: 1 };
  if (s > CROP_MAX_SIDE) {
    const f = CROP_MAX_SIDE / s;
    const nh = Math.max(1, pyRound(ph * f)), nw = Math.max(1, pyRound(pw * f));
    cur = resizeArea(cur, nw, nh);
    const top = pyRound(pads[0] * f), left = pyRound(pads[2] * f);
    pads = [top, Math.max(0, CROP_MAX_SIDE - nh - top), left, Math.max(0, CROP_MAX_SIDE - nw - left)];
  }
  if (pads.some((p) => p)) cur = padReplicate(cur, pads);
  return resizeSquare(cur, size);
}

function padReplicate(img, [top, bottom, left, right]) {
  const { data, width: w, height: h } = img;
  const W = w + left + right, H = h + top + bottom;
  const out = new Uint8Array(W * H);
  for (let y = 0; y < H; y++) {
    const sy = Math.min(h - 1, Math.max(0, y - top));
    for (let x = 0; x < W; x++) out[y * W + x] = data[sy * w + Math.min(w - 1, Math.max(0, x - left))];
  }
  return { data: out, width: W, height: H, channels: 1 };
}

/** crop._resize: to size x size, INTER_AREA when the patch's shorter side is at least size, else bilinear */
function resizeSquare(img, size) {
  if (img.width === size && img.height === size) return img.data;
  return (Math.min(img.width, img.height) >= size ? resizeArea(img, size, size) : resizeLinear(img, size, size)).data;
}

/** crop.eye_angle: the tilt of the eye line in degrees (keypoints: right eye, left eye, ...) */
export function eyeAngle(kps) {
  const [[rx, ry], [lx, ly]] = kps;
  return Math.atan2(ly - ry, lx - rx) * 180 / Math.PI;
}

/** crop.crop_aligned: the square of `side` px centred on (cx, cy), rotated by `angle` degrees (big faces shrunk
 * with INTER_AREA first, then one bilinear warp; the border pixels repeat outside the image) */
export function cropAligned(gray, W, H, cx, cy, side, angle, size = 48) {
  if (!(side > 0) || side > 4 * Math.max(H, W)) return null;
  const half = side * 0.7072 + 2;
  const x0 = Math.floor(cx - half), y0 = Math.floor(cy - half), n = Math.ceil(2 * half);
  const ix0 = Math.max(0, x0), iy0 = Math.max(0, y0), ix1 = Math.min(W, x0 + n), iy1 = Math.min(H, y0 + n);
  if (ix1 <= ix0 || iy1 <= iy0) return null;
  const pw0 = ix1 - ix0, ph0 = iy1 - iy0;
  let patch = { data: new Uint8Array(pw0 * ph0), width: pw0, height: ph0, channels: 1 };
  for (let y = 0; y < ph0; y++) patch.data.set(gray.subarray((iy0 + y) * W + ix0, (iy0 + y) * W + ix1), y * pw0);
  let k = 1.0, c;
  if (side > size) {
    k = size / side;
    const ph = Math.max(1, pyRound(ph0 * k)), pw = Math.max(1, pyRound(pw0 * k));
    patch = resizeArea(patch, pw, ph);
    const kx = pw / pw0, ky = ph / ph0;
    c = [(cx - ix0) * kx, (cy - iy0) * ky];
    k = (kx + ky) / 2;
  } else {
    c = [cx - ix0, cy - iy0];
  }
  // cv2.getRotationMatrix2D(c, angle, size / (side * k)), then the centre moved to the crop's centre
  const scale = size / (side * k), a = (angle * Math.PI) / 180;
  const alpha = scale * Math.cos(a), beta = scale * Math.sin(a);
  const M = [alpha, beta, (1 - alpha) * c[0] - beta * c[1] + size / 2 - c[0],
             -beta, alpha, beta * c[0] + (1 - alpha) * c[1] + size / 2 - c[1]];
  return warpAffine(patch, M, size, "replicate").data;
}

/** crop.crop_detection: a detection's frame (or its box) grown by `margin`; a face lying on its side or upside
 * down (eye line at SIDEWAYS degrees or more, where Python has that rule) is cropped upright */
export function cropDetection(gray, W, H, det, margin = FACE_MARGIN, size = 48) {
  let cx, cy, side;
  if (det.frame) [cx, cy, side] = det.frame;
  else { const [x, y, w, h] = det.box; cx = x + w / 2; cy = y + h / 2; side = Math.max(w, h); }
  let angle = det.keypoints ? eyeAngle(det.keypoints) : 0;
  if (DETECTION.sideways == null || Math.abs(angle) < DETECTION.sideways) angle = 0;
  if (Math.abs(angle) < 1.0) {
    if (!det.frame) return cropFace(gray, W, H, det.box, margin, size);
    return cropFace(gray, W, H, [cx - side / 2, cy - side / 2, side, side], margin, size);
  }
  return cropAligned(gray, W, H, cx, cy, side * (1 + 2 * margin), angle, size);
}

/** A crop's mirror image (crops[:, :, ::-1]) */
export function mirrored(crop, size) {
  const out = new Uint8Array(crop.length);
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) out[y * size + x] = crop[y * size + size - 1 - x];
  return out;
}

/** crop.whole_image_crop: the whole image as a grey square (the shorter side padded by its border) */
export function wholeImageCrop(gray, W, H, size = 48) {
  let cur = { data: gray, width: W, height: H, channels: 1 };
  if (Math.max(H, W) > CROP_MAX_SIDE) {
    const f = CROP_MAX_SIDE / Math.max(H, W);
    cur = resizeArea(cur, Math.max(1, pyRound(W * f)), Math.max(1, pyRound(H * f)));
  }
  const { width: w, height: h } = cur;
  if (h !== w) {
    const d = Math.abs(h - w), a = Math.floor(d / 2), b = d - a;
    cur = padReplicate(cur, h < w ? [a, b, 0, 0] : [0, 0, a, b]);
  }
  return resizeSquare(cur, size);
}

// ---------------------------------------------------------------------------------------- probabilities
/** calibration.softmax of one row of logits with the card's temperature */
export function softmax(logits, temperature = 1.0) {
  const z = Array.from(logits, (v) => v / temperature);
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

export const argmax = (p) => p.reduce((best, v, i) => (v > p[best] ? i : best), 0);

// ------------------------------------------------------------------------------------------- tracking
/** detect.iou of (x, y, w, h) boxes */
export function iou(a, b) {
  const iw = Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0]);
  const ih = Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]);
  if (iw <= 0 || ih <= 0) return 0;
  const inter = iw * ih;
  return inter / (a[2] * a[3] + b[2] * b[3] - inter);
}

/** video._match_score */
export function matchScore(a, b, thr = 0.3) {
  const v = iou(a, b);
  if (v >= thr) return v;
  const sa = Math.max(a[2], a[3]), sb = Math.max(b[2], b[3]);
  const d = Math.hypot(a[0] + a[2] / 2 - b[0] - b[2] / 2, a[1] + a[3] / 2 - b[1] - b[3] / 2);
  if (d < 0.75 * Math.max(sa, sb) && sa / sb > 0.67 && sa / sb < 1.5) return 0.01 + 0.01 * v;
  return 0;
}

/** video.IoUTracker: greedy matching, confirmed after minHits, dropped after maxMissed (unconfirmed: at once) */
export class Tracker {
  constructor(opts = {}) {
    this.o = { ...TRACKING, ...opts };
    this.tracks = [];
    this.nextId = 1;
    this.frame = -1;
  }

  update(boxes) {
    this.frame += 1;
    const pairs = [];
    this.tracks.forEach((t, ti) => boxes.forEach((b, bi) => pairs.push([matchScore(t.box, b, this.o.iou), ti, bi])));
    // Python sorts (score, ti, bi) tuples in reverse: higher score, then higher ti, then higher bi first
    pairs.sort((p, q) => (q[0] - p[0]) || (q[1] - p[1]) || (q[2] - p[2]));
    const usedT = new Set(), usedB = new Set(), out = [];
    for (const [score, ti, bi] of pairs) {
      if (score <= 0 || usedT.has(ti) || usedB.has(bi)) continue;
      usedT.add(ti); usedB.add(bi);
      const t = this.tracks[ti];
      t.box = boxes[bi]; t.lastFrame = this.frame; t.missed = 0; t.hits += 1;
      t.confirmed = t.confirmed || t.hits >= this.o.minHits;
      out.push([t, bi]);
    }
    this.tracks.forEach((t, ti) => { if (!usedT.has(ti)) t.missed += 1; });
    boxes.forEach((b, bi) => {
      if (usedB.has(bi)) return;
      const t = { id: this.nextId++, box: b, firstFrame: this.frame, lastFrame: this.frame, probs: null, hits: 1,
                  missed: 0, confirmed: this.o.minHits <= 1 };
      this.tracks.push(t);
      out.push([t, bi]);
    });
    this.tracks = this.tracks.filter((t) => t.missed <= (t.confirmed ? this.o.maxMissed : 0));
    return out.sort((p, q) => p[0].id - q[0].id);
  }

  /** the moving average of a track's probabilities (StreamRecognizer.process) */
  smooth(t, probs) {
    const a = this.o.smoothing;
    t.probs = t.probs == null ? probs.slice() : t.probs.map((v, k) => a * v + (1 - a) * probs[k]);
    return t.probs;
  }
}
