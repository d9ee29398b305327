// The studio's views rendered in the page: after a depth map is made, the page fetches its depth once
// (the same float32 preview the server renders its previews from, GET /api/v1/depth/<id>/preview.npy)
// and the colormaps' tables (GET /api/v1/colormaps.json), and then draws the heatmap, overlay and gray
// views itself on every control move, with no request.
//
// It repeats app/imaging/pipeline.py's display chain step by step, in the same float32 arithmetic where that
// matters: display() (map_range's min-max or strided percentiles, the clipped affine map of normalise,
// contrast, brightness and invert, OpenCV's convertScaleAbs rounding), colorize() (the server's
// lookup table) and overlay() (OpenCV's addWeighted), and app/imaging/legend.py's colour key. CLAHE is not
// repeated: with it on, the page shows the server's PNGs (static/studio.js).
//
// A control move must repaint within a frame (1600 x 1200 px, three views): the levels come from
// per-bucket tables (see levels()), each pixel is one 32-bit store, and a view whose options did not
// change is not repainted. docs/engines-and-speed.md has the figures and what was tried.
(() => {
  "use strict";
  const f32 = Math.fround;
  const PERCENTILE_SAMPLE = 250000; // app.imaging.pipeline.PERCENTILE_SAMPLE
  const LOG_FLOOR = 1e-3; // app.imaging.pipeline.LOG_FLOOR
  const TINY = 1.1754943508222875e-38; // np.finfo(np.float32).tiny

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

  // pixels are written as one little-endian RGBA word each (every browser in use is little-endian; a
  // big-endian one gets the server's PNGs instead, see load)
  const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
  const OPAQUE = 0xff000000;
  // the depth's range cut into this many equal buckets, once per depth: a control move finds the level
  // of every bucket whose values all share one, and computes it per pixel only in the others
  const BUCKETS = 65536;

  const LEGEND_STOPS = 33; // app.imaging.legend.STOPS
  const levelKey = (o) => [o.log, o.clip, o.contrast, o.brightness, o.invert].join("|");

  class Depth {
    constructor(depth, photo, luts) {
      Object.assign(this, depth); // data, height, width
      this.photo = new Uint32Array(photo.buffer, photo.byteOffset, photo.length >> 2); // RGBA words
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
      this.logEps = f32(Math.max(hi * LOG_FLOOR, TINY)); // numpy casts the floor to float32
      this.sorted = null;
      this.code = null;
      this.levelsKey = "";
      // a Uint8ClampedArray store rounds half to even and saturates: OpenCV's cvRound then saturate_cast
      this.levelsOut = new Uint8ClampedArray(this.n);
      this.one = new Uint8ClampedArray(1);
      this.bucketLevel = new Uint8Array(BUCKETS);
      this.words = {}; // colormap name -> its 256 RGBA words
      this.canvases = []; // what draw() painted from this depth
      this.mixKey = "";
      this.mix = [0, 1, 2].map(() => new Uint8ClampedArray(256 * 256));
    }

    // log_depth(): float32 log of the depth floored at LOG_FLOOR times its largest value
    logOf(v) {
      return f32(Math.log(Math.max(v, this.logEps)));
    }

    // every pixel's bucket; the pixels bucket by bucket (order, bucket k's from start[k] to start[k + 1]);
    // the buckets that hold values, in order, with their smallest and largest value
    buckets() {
      const n = this.n, d = this.data, min = this.min;
      const scale = this.max > min ? BUCKETS / (this.max - min) : 0;
      const code = new Uint16Array(n), start = new Uint32Array(BUCKETS + 1);
      const low = new Float32Array(BUCKETS).fill(Infinity), high = new Float32Array(BUCKETS).fill(-Infinity);
      for (let i = 0; i < n; i++) {
        const x = d[i];
        let k = ((x - min) * scale) | 0;
        if (k >= BUCKETS) k = BUCKETS - 1;
        code[i] = k;
        start[k + 1]++;
        if (x < low[k]) low[k] = x;
        if (x > high[k]) high[k] = x;
      }
      for (let k = 0; k < BUCKETS; k++) start[k + 1] += start[k];
      const next = start.slice(0, BUCKETS), order = new Uint32Array(n);
      for (let i = 0; i < n; i++) order[next[code[i]]++] = i;
      const used = [];
      for (let k = 0; k < BUCKETS; k++) if (low[k] <= high[k]) used.push(k);
      Object.assign(this, { code, start, order, used: Uint16Array.from(used),
                            low: Float32Array.from(used, (k) => low[k]), high: Float32Array.from(used, (k) => high[k]) });
    }

    // map_range(): min and max, or numpy's linear percentiles of every k-th value (strided_sample)
    range(log, clip) {
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
      const key = levelKey(o);
      if (key === this.levelsKey) return this.levelsOut;
      const out = this.levelsOut;
      const [lo, hi] = this.range(o.log, o.clip);
      const c = o.contrast, k = 0.5 - 0.5 * o.contrast + o.brightness;
      const clamp01 = (x) => Math.min(Math.max(x, 0), 1);
      const v0 = clamp01(k), v1 = clamp01(c + k);
      if (!(hi > lo) || v0 === v1) {
        out.fill(255 * (o.invert ? 1 - v0 : v0)); // np.rint, as the store rounds
      } else {
        const alpha = c / (hi - lo), beta = k - alpha * lo;
        const dLo = f32((v0 - beta) / alpha), dHi = f32((v1 - beta) / alpha);
        const a = f32(o.invert ? -255 * alpha : 255 * alpha), b = f32(o.invert ? 255 * (1 - beta) : 255 * beta);
        const one = this.one, log = o.log;
        // convertScaleAbs's SIMD loop: one fused multiply-add in float32 (x * a is exact in a double)
        const level = (depth) => {
          const x = log ? this.logOf(depth) : depth;
          one[0] = Math.abs(f32((x < dLo ? dLo : x > dHi ? dHi : x) * a + b));
          return one[0];
        };
        // the level is monotonic in the depth (so in the log too): when the smallest value of a run of
        // buckets has the level of the largest, so has every value between; runs are halved until they
        // are one level or one bucket (about 2 x 255 x 16 levels computed, not one per pixel)
        if (!this.code) this.buckets();
        const { code, used, low, high, data, start, order } = this, table = this.bucketLevel;
        const mixed = []; // the buckets whose values straddle a level boundary
        const fill = (i, j, li, lj) => {
          if (li === lj) {
            for (let m = i; m <= j; m++) table[used[m]] = li;
          } else if (i === j) {
            mixed.push(used[i]);
          } else {
            const m = (i + j) >> 1;
            fill(i, m, li, level(high[m]));
            fill(m + 1, j, level(low[m + 1]), lj);
          }
        };
        fill(0, used.length - 1, level(low[0]), level(high[used.length - 1]));
        // every pixel through the table (a mixed bucket's entry is stale), then the pixels of the mixed
        // buckets one by one: two loops without a branch per pixel are faster than one with
        const n = this.n;
        for (let i = 0; i < n; i++) out[i] = table[code[i]];
        for (const j of mixed) {
          for (let m = start[j]; m < start[j + 1]; m++) out[order[m]] = level(data[order[m]]);
        }
      }
      this.levelsKey = key;
      return out;
    }

    // the colormap's table as RGBA words, level -> pixel
    lut(name) {
      if (!this.words[name]) {
        const rgb = this.luts[name], w = new Uint32Array(256);
        for (let v = 0; v < 256; v++) w[v] = OPAQUE | (rgb[3 * v + 2] << 16) | (rgb[3 * v + 1] << 8) | rgb[3 * v];
        this.words[name] = w;
      }
      return this.words[name];
    }

    // overlay(): cv2.addWeighted(heat, alpha, photo, 1 - alpha, 0) as its SIMD loop computes it,
    // fma(heat, alpha, fma(photo, 1 - alpha, 0)) in float32 (checked against cv2.addWeighted for all
    // 65536 pairs at nine opacities; separate roundings differ for about 0.2 % of them), tabulated per
    // channel for every (level, photo value) pair: index level * 256 + photo
    blend(colormap, alpha) {
      const key = `${colormap}|${alpha}`;
      if (this.mixKey !== key) {
        const wa = f32(alpha), wb = f32(1 - alpha), rgb = this.luts[colormap];
        const photoPart = new Float32Array(256);
        for (let v = 0; v < 256; v++) photoPart[v] = f32(v * wb);
        this.mix.forEach((out, ch) => {
          for (let l = 0; l < 256; l++) {
            const heat = rgb[3 * l + ch];
            for (let p = 0; p < 256; p++) out[(l << 8) | p] = f32(heat * wa + photoPart[p]);
          }
        });
        this.mixKey = key;
      }
      return this.mix;
    }

    // one view's pixels into px (a Uint32Array of this size, RGBA words)
    paint(px, view, o) {
      const levels = this.levels(o);
      const n = this.n;
      if (view !== "overlay") {
        const lut = this.lut(view === "gray" ? "gray" : o.colormap);
        for (let i = 0; i < n; i++) px[i] = lut[levels[i]];
        return;
      }
      const [r, g, b] = this.blend(o.colormap, o.alpha), photo = this.photo;
      for (let i = 0; i < n; i++) {
        const l = levels[i] << 8, p = photo[i];
        px[i] = OPAQUE | r[l | (p & 0xff)] | (g[l | ((p >> 8) & 0xff)] << 8) | (b[l | ((p >> 16) & 0xff)] << 16);
      }
    }

    // app/imaging/legend.py's legend() for view with options o (the page does not draw CLAHE, so never local):
    // the bar's colours, its near end, ticks at evenly spaced raw values and where they land on the bar
    legend(view, o, count = 5) {
      const name = view === "gray" ? "gray" : o.colormap, rgb = this.luts[name];
      const hex = (l) => "#" + [0, 1, 2].map((ch) => rgb[3 * l + ch].toString(16).padStart(2, "0")).join("");
      const stops = Array.from({ length: LEGEND_STOPS }, (_, s) => hex(Math.round((255 * s) / (LEGEND_STOPS - 1))));
      const [lo, hi] = this.range(o.log, o.clip); // in log units with log
      const [rawLo, rawHi] = o.log ? [Math.exp(lo), Math.exp(hi)] : [lo, hi];
      const step = (rawHi - rawLo) / (count - 1); // np.linspace: i * step + start, the last one the stop
      const raw = rawHi > rawLo ? Array.from({ length: count }, (_, i) => (i === count - 1 ? rawHi : i * step + rawLo))
        : [rawLo];
      const scale = f32(1 / (hi - lo));
      const clamp01 = (x) => Math.min(Math.max(x, 0), 1);
      const ticks = raw.map((r) => {
        const t = o.log ? this.logOf(f32(r)) : f32(r);
        let v = hi > lo ? clamp01(f32(t - lo) * scale) : 0;
        if (o.contrast !== 1 || o.brightness !== 0) v = clamp01((v - 0.5) * o.contrast + (0.5 + o.brightness));
        return { value: r, pos: Math.round((o.invert ? 1 - v : v) * 1e4) / 1e4 };
      });
      const saturated = [];
      if (this.min < rawLo) saturated.push("far");
      if (this.max > rawHi) saturated.push("near");
      return { colormap: name, stops, near: o.invert ? "left" : "right", local: false, ticks, saturated };
    }

    // what a view's pixels depend on
    viewKey(view, o) {
      return levelKey(o) + (view === "gray" ? "" : `|${o.colormap}`) + (view === "overlay" ? `|${o.alpha}` : "");
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
    if (!LITTLE_ENDIAN) throw new Error("big-endian pixels");
    const made = new Depth(depth, ctx.getImageData(0, 0, depth.width, depth.height).data, luts);
    if (!made.finite) throw new Error("depth has non-finite values");
    return made;
  }

  // each canvas's pixels and what they were painted from: a move that leaves a view as it was costs
  // nothing, and the next one writes into the same buffer
  const painted = new WeakMap();

  // draws view into canvas with options o ({colormap, alpha, log, clip, contrast, brightness, invert});
  // returns whether it had to repaint
  function draw(canvas, depth, view, o) {
    let state = painted.get(canvas);
    if (!state || state.depth !== depth) {
      canvas.width = depth.width;
      canvas.height = depth.height;
      const ctx = canvas.getContext("2d");
      const image = ctx.createImageData(depth.width, depth.height);
      state = { depth, ctx, image, words: new Uint32Array(image.data.buffer), key: "" };
      painted.set(canvas, state);
      depth.canvases.push(state);
    }
    const key = `${view}|${depth.viewKey(view, o)}`;
    if (key === state.key) return false;
    // the same view with the same options already on another canvas (the grid's, next to the compare
    // slider's or the measuring tool's): its pixels are copied rather than painted again
    const twin = depth.canvases.find((other) => other !== state && other.key === key);
    if (twin) state.words.set(twin.words);
    else depth.paint(state.words, view, o);
    state.ctx.putImageData(state.image, 0, 0);
    state.key = key;
    return true;
  }

  // the colour key of view with options o, as /api/v1/depth/<id>/legend.json answers it
  const legend = (depth, view, o) => depth.legend(view, o);

  window.depthLive = { load, draw, legend };
})();
