// The studio's views rendered in the page: after a depth map is made, the page fetches its depth once
// (the same float32 preview the server renders its previews from, GET /api/v1/depth/<id>/preview.npy)
// and the colormaps' tables (GET /api/v1/colormaps.json), and then draws the heatmap, overlay and gray
// views itself on every control move, with no request.
//
// It repeats app/pipeline.py's display chain step by step, in the same float32 arithmetic where that
// matters: display() (map_range's min-max or strided percentiles, the clipped affine map of normalise,
// contrast, brightness and invert, OpenCV's convertScaleAbs rounding), colorize() (the server's
// lookup table) and overlay() (OpenCV's addWeighted). CLAHE is not repeated: with it on, the page
// shows the server's PNGs (static/studio.js).
(() => {
  "use strict";
  const f32 = Math.fround;
  const PERCENTILE_SAMPLE = 250000; // app.pipeline.PERCENTILE_SAMPLE
  const LOG_FLOOR = 1e-3; // app.pipeline.LOG_FLOOR
  const TINY = 1.1754943508222875e-38; // np.finfo(np.float32).tiny

  // OpenCV's rounding to uchar (cvRound, v_round): half to even, then clamp
  function cvRound8(x) {
    let r = Math.round(x);
    if (r - x === 0.5 && r % 2 !== 0) r -= 1; // Math.round rounds halves up; OpenCV to even
    return r < 0 ? 0 : r > 255 ? 255 : r;
  }

  // a little-endian float32 .npy (what app/web/measure.py writes) -> {data, height, width}
  function parseNpy(buf) {
    const bytes = new Uint8Array(buf);
    if (bytes[0] !== 0x93 || String.fromCharCode(...bytes.subarray(1, 6)) !== "NUMPY") throw new Error("not .npy");
    const major = bytes[6];
    const view = new DataView(buf);
    const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
    const start = (major === 1 ? 10 : 12) + headerLen;
    const header = new TextDecoder().decode(bytes.subarray(major === 1 ? 10 : 12, start));
    if (!/'descr':\s*'<f4'/.test(header) || /'fortran_order':\s*True/.test(header)) throw new Error("not float32 C-order");
    const shape = header.match(/'shape':\s*\((\d+),\s*(\d+)\)/);
    const height = Number(shape[1]), width = Number(shape[2]);
    return { data: new Float32Array(buf.slice(start, start + 4 * height * width)), height, width };
  }

  function loadImage(src) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error(`could not load ${src}`));
      img.src = src;
    });
  }

  let tables = null; // colormap name -> Uint8Array(768), fetched once per page
  function colormaps(api) {
    if (!tables) {
      tables = fetch(`${api}/colormaps.json`).then((r) => {
        if (!r.ok) throw new Error(`colormaps: ${r.status}`);
        return r.json();
      }).then((json) => {
        const out = {};
        for (const [name, rows] of Object.entries(json.colormaps)) out[name] = Uint8Array.from(rows.flat());
        return out;
      });
      tables.catch(() => { tables = null; }); // a later result may try again
    }
    return tables;
  }

  class Depth {
    constructor(depth, photo, luts) {
      Object.assign(this, depth); // data, height, width
      this.photo = photo; // Uint8ClampedArray RGBA, same size
      this.luts = luts;
      this.n = this.width * this.height;
      let lo = Infinity, hi = -Infinity, finite = true;
      for (const v of this.data) {
        if (!Number.isFinite(v)) { finite = false; break; }
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      // with NaN or inf the server takes its float path (normalize's replacement values): not repeated
      this.finite = finite && this.n > 0;
      this.min = lo;
      this.max = hi;
      this.logData = null;
      this.sorted = null;
      this.levelsKey = "";
      this.levelsOut = new Uint8Array(this.n);
    }

    // log_depth(): float32 log of the depth floored at LOG_FLOOR times its largest value
    logOf(v) {
      return f32(Math.log(Math.max(v, this.logEps)));
    }
    values(log) {
      if (!log) return this.data;
      if (!this.logData) {
        this.logEps = f32(Math.max(this.max * LOG_FLOOR, TINY)); // numpy casts the floor to float32
        this.logData = new Float32Array(this.n);
        for (let i = 0; i < this.n; i++) this.logData[i] = this.logOf(this.data[i]);
      }
      return this.logData;
    }

    // map_range(): min and max, or numpy's linear percentiles of every k-th value (strided_sample)
    range(log, clip) {
      this.values(log); // sets logEps
      if (!(clip > 0)) {
        return log ? [this.logOf(this.min), this.logOf(this.max)] : [this.min, this.max];
      }
      if (!this.sorted) {
        const step = Math.max(1, Math.floor(this.n / PERCENTILE_SAMPLE));
        const sample = new Float32Array(Math.ceil(this.n / step));
        for (let i = 0, j = 0; i < this.n; i += step, j++) sample[j] = this.data[i];
        this.sorted = sample.sort(); // typed arrays sort numerically
      }
      // log is monotonic: the sorted logs are the logs of the sorted values
      const at = (i) => (log ? this.logOf(this.sorted[i]) : this.sorted[i]);
      const pct = (p) => {
        const h = (this.sorted.length - 1) * (p / 100);
        const i = Math.floor(h), g = h - i;
        const a = at(i), b = at(Math.min(i + 1, this.sorted.length - 1));
        return g >= 0.5 ? b - (b - a) * (1 - g) : a + (b - a) * g; // numpy's _lerp
      };
      return [pct(clip), pct(100 - clip)];
    }

    // display(): the 8-bit levels of the options' log, clip, contrast, brightness and invert
    levels(o) {
      const key = [o.log, o.clip, o.contrast, o.brightness, o.invert].join("|");
      if (key === this.levelsKey) return this.levelsOut;
      const out = this.levelsOut;
      const d = this.values(o.log);
      const [lo, hi] = this.range(o.log, o.clip);
      const c = o.contrast, k = 0.5 - 0.5 * o.contrast + o.brightness;
      const clamp01 = (x) => Math.min(Math.max(x, 0), 1);
      const v0 = clamp01(k), v1 = clamp01(c + k);
      if (!(hi > lo) || v0 === v1) {
        const x = 255 * (o.invert ? 1 - v0 : v0);
        let level = Math.round(x);
        if (level - x === 0.5 && level % 2 !== 0) level -= 1; // np.rint
        out.fill(level);
      } else {
        const alpha = c / (hi - lo), beta = k - alpha * lo;
        const dLo = f32((v0 - beta) / alpha), dHi = f32((v1 - beta) / alpha);
        const a = f32(o.invert ? -255 * alpha : 255 * alpha), b = f32(o.invert ? 255 * (1 - beta) : 255 * beta);
        for (let i = 0; i < this.n; i++) {
          let x = d[i];
          x = x < dLo ? dLo : x > dHi ? dHi : x;
          // convertScaleAbs's SIMD loop: one fused multiply-add in float32 (x * a is exact in a double)
          out[i] = cvRound8(Math.abs(f32(x * a + b)));
        }
      }
      this.levelsKey = key;
      return out;
    }

    // one view's RGBA pixels into image (an ImageData of this size)
    paint(image, view, o) {
      const levels = this.levels(o);
      const px = image.data;
      const n = this.n;
      if (view === "gray") {
        for (let i = 0, j = 0; i < n; i++, j += 4) {
          const v = levels[i];
          px[j] = v; px[j + 1] = v; px[j + 2] = v; px[j + 3] = 255;
        }
        return;
      }
      const lut = this.luts[o.colormap];
      if (view === "heatmap") {
        for (let i = 0, j = 0; i < n; i++, j += 4) {
          const e = 3 * levels[i];
          px[j] = lut[e]; px[j + 1] = lut[e + 1]; px[j + 2] = lut[e + 2]; px[j + 3] = 255;
        }
        return;
      }
      // overlay(): cv2.addWeighted(heat, alpha, photo, 1 - alpha, 0) as its SIMD loop computes it,
      // fma(heat, alpha, fma(photo, 1 - alpha, 0)) in float32 (checked against cv2.addWeighted for all
      // 65536 pairs at nine opacities; separate roundings differ for about 0.2 % of them)
      const wa = f32(o.alpha), wb = f32(1 - o.alpha);
      const photoPart = new Float32Array(256);
      for (let v = 0; v < 256; v++) photoPart[v] = f32(v * wb);
      const photo = this.photo;
      for (let i = 0, j = 0; i < n; i++, j += 4) {
        const e = 3 * levels[i];
        px[j] = cvRound8(f32(lut[e] * wa + photoPart[photo[j]]));
        px[j + 1] = cvRound8(f32(lut[e + 1] * wa + photoPart[photo[j + 1]]));
        px[j + 2] = cvRound8(f32(lut[e + 2] * wa + photoPart[photo[j + 2]]));
        px[j + 3] = 255;
      }
    }
  }

  // the depth and photo previews of depthId at most side pixels long, and the colormaps; rejects
  // when any of them cannot be had (the page then shows the server's PNGs)
  async function load(api, depthId, side) {
    const base = `${api}/depth/${depthId}`;
    const [npy, img, luts] = await Promise.all([
      fetch(`${base}/preview.npy?max_side=${side}`).then((r) => {
        if (!r.ok) throw new Error(`preview.npy: ${r.status}`);
        return r.arrayBuffer();
      }),
      loadImage(`${base}/photo.png?max_side=${side}`),
      colormaps(api),
    ]);
    const depth = parseNpy(npy);
    if (img.naturalWidth !== depth.width || img.naturalHeight !== depth.height) throw new Error("preview sizes differ");
    const c = document.createElement("canvas");
    c.width = depth.width;
    c.height = depth.height;
    const ctx = c.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(img, 0, 0);
    const made = new Depth(depth, ctx.getImageData(0, 0, depth.width, depth.height).data, luts);
    if (!made.finite) throw new Error("depth has non-finite values");
    return made;
  }

  // draws view into canvas with options o ({colormap, alpha, log, clip, contrast, brightness, invert})
  function draw(canvas, depth, view, o) {
    if (canvas.width !== depth.width || canvas.height !== depth.height) {
      canvas.width = depth.width;
      canvas.height = depth.height;
    }
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(depth.width, depth.height);
    depth.paint(image, view, o);
    ctx.putImageData(image, 0, 0);
  }

  window.depthLive = { load, draw };
})();
