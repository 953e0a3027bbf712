/* MobileNet in the browser: the project's ONNX export run by onnxruntime-web (WASM), fed exactly
 * the tensor PyTorch gets. Shared by the explorer's "classify" panel and by the page that
 * `mobilenet export DIR --format web` writes.
 *
 * The preprocessing is the recipe that travels with the weights (preprocess.json, written by
 * mobilenet.preprocess.Preprocess.to_dict()), computed step by step as mobilenet/preprocess.py
 * computes it (tests/test_web.py holds the two to the same tensor, bit for bit, for every recipe): TF-slim's central crop and TF1's bilinear resize in float32 (Math.fround after every
 * operation, as numpy does), or Pillow's resampling in its own 22-bit fixed point, then
 * (x / 255 - mean) / std in float32. The browser decodes the image itself; colour profiles are not
 * applied, as Pillow does not apply them, and transparency is laid on white as load_image does.
 * One step cannot be followed here: a recipe whose decoder is "tf" decodes JPEGs with TF's fast
 * IDCT, and browsers decode with the accurate one (a level or two apart on many pixels); the pixels
 * of PNGs, and any pixels handed to classifyPixels, are the same as Python's.
 *
 * Usage:
 *   const model = await MobileNetBrowser.load({model: "model.onnx", labels: "labels.json",
 *                                              preprocess: "preprocess.json", wasmPaths: "ort/"});
 *   const result = await MobileNetBrowser.classifyFile(model, file);  // {top, logits, ms, ...}
 */
"use strict";

(function (global) {
  const f32 = Math.fround;
  const PRECISION_BITS = 32 - 8 - 2; // Pillow's fixed point for 8-bit images (Resample.c)

  // Pillow's filters with their support (Resample.c); "nearest" takes another path in Pillow.
  const PILLOW_FILTERS = {
    bilinear: { support: 1.0, at: (x) => { x = Math.abs(x); return x < 1.0 ? 1.0 - x : 0.0; } },
    bicubic: {
      support: 2.0,
      at: (x) => {
        const a = -0.5;
        x = Math.abs(x);
        if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
        return 0.0;
      },
    },
  };

  /** An RGB image as a flat Uint8Array (3 bytes a pixel, row after row). */
  function image(width, height, pixels) {
    return { width, height, pixels: pixels || new Uint8Array(width * height * 3) };
  }

  function crop(img, left, top, right, bottom) {
    const out = image(right - left, bottom - top);
    for (let y = 0; y < out.height; y++) {
      const from = ((top + y) * img.width + left) * 3;
      out.pixels.set(img.pixels.subarray(from, from + out.width * 3), y * out.width * 3);
    }
    return out;
  }

  /** Preprocess.crop_box: tf.image.central_crop's int((size - size * fraction) / 2) off each side. */
  function cropBox(width, height, fraction) {
    const top = Math.trunc((height - height * fraction) / 2);
    const left = Math.trunc((width - width * fraction) / 2);
    return [left, top, width - left, height - top];
  }

  // --- TF1's resize_bilinear (align_corners=False, no half-pixel centres), float32 throughout ---

  function tfAxis(sizeIn, sizeOut) {
    const scale = f32(f32(sizeIn) / f32(sizeOut));
    const low = new Int32Array(sizeOut), high = new Int32Array(sizeOut), frac = new Float32Array(sizeOut);
    for (let i = 0; i < sizeOut; i++) {
      const source = f32(f32(i) * scale);
      low[i] = Math.floor(source);
      high[i] = Math.min(Math.ceil(source), sizeIn - 1);
      frac[i] = f32(source - low[i]);
    }
    return { low, high, frac };
  }

  /** mobilenet.preprocess.tf_resize_bilinear: float32 HWC on the 0-255 scale, not rounded. */
  function tfResize(img, height, width) {
    const ys = tfAxis(img.height, height), xs = tfAxis(img.width, width);
    const out = new Float32Array(height * width * 3);
    const px = img.pixels, w = img.width;
    for (let i = 0; i < height; i++) {
      const r0 = ys.low[i] * w, r1 = ys.high[i] * w, dy = ys.frac[i];
      for (let j = 0; j < width; j++) {
        const c0 = xs.low[j], c1 = xs.high[j], dx = xs.frac[j];
        for (let c = 0; c < 3; c++) {
          const a = px[(r0 + c0) * 3 + c], b = px[(r0 + c1) * 3 + c];
          const d = px[(r1 + c0) * 3 + c], e = px[(r1 + c1) * 3 + c];
          const top = f32(a + f32(f32(b - a) * dx));
          const bottom = f32(d + f32(f32(e - d) * dx));
          out[(i * width + j) * 3 + c] = f32(top + f32(f32(bottom - top) * dy));
        }
      }
    }
    return out;
  }

  // --- Pillow's Image.resize (Resample.c: precompute_coeffs, normalize_coeffs_8bpc, two passes) ---

  function pillowCoefficients(inSize, outSize, filter) {
    const scale = inSize / outSize;
    const filterScale = Math.max(scale, 1.0);
    const support = filter.support * filterScale;
    const ksize = Math.ceil(support) * 2 + 1;
    const bounds = new Int32Array(outSize * 2);
    const kk = new Int32Array(outSize * ksize);
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale;
      const ss = 1.0 / filterScale;
      const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
      const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
      const weights = [];
      let total = 0.0;
      for (let x = 0; x < xmax; x++) {
        const w = filter.at((x + xmin - center + 0.5) * ss);
        weights.push(w);
        total += w;
      }
      for (let x = 0; x < xmax; x++) {
        const k = total !== 0.0 ? weights[x] / total : weights[x];
        kk[xx * ksize + x] = Math.trunc(k < 0 ? -0.5 + k * (1 << PRECISION_BITS) : 0.5 + k * (1 << PRECISION_BITS));
      }
      bounds[xx * 2] = xmin;
      bounds[xx * 2 + 1] = xmax;
    }
    return { ksize, bounds, kk };
  }

  function clip8(value) {
    if (value >= (1 << PRECISION_BITS) * 256) return 255;
    if (value <= 0) return 0;
    return value >> PRECISION_BITS;
  }

  /** One pass along x (horizontal) or y: Pillow rounds to 8 bits after each. */
  function pillowPass(img, outSize, filter, horizontal) {
    const { ksize, bounds, kk } = pillowCoefficients(horizontal ? img.width : img.height, outSize, filter);
    const out = horizontal ? image(outSize, img.height) : image(img.width, outSize);
    const step = horizontal ? 3 : img.width * 3;
    for (let y = 0; y < out.height; y++) {
      for (let x = 0; x < out.width; x++) {
        const o = horizontal ? x : y;
        const min = bounds[o * 2], count = bounds[o * 2 + 1];
        const base = horizontal ? (y * img.width + min) * 3 : (min * img.width + x) * 3;
        for (let c = 0; c < 3; c++) {
          let sum = 1 << (PRECISION_BITS - 1);
          for (let k = 0; k < count; k++) sum += img.pixels[base + k * step + c] * kk[o * ksize + k];
          out.pixels[(y * out.width + x) * 3 + c] = clip8(sum);
        }
      }
    }
    return out;
  }

  function pillowResize(img, width, height, interpolation) {
    const filter = PILLOW_FILTERS[interpolation];
    if (!filter) throw new Error(`interpolation ${interpolation} is not supported in the browser`);
    let out = img;
    if (width !== img.width) out = pillowPass(out, width, filter, true);
    if (height !== img.height) out = pillowPass(out, height, filter, false);
    return out;
  }

  // --- the recipe ---

  /** Preprocess.shorter_side_size, as [height, width]: the shorter side becomes
   *  floor(resolution / crop_fraction), the longer one in proportion, both truncated. */
  function shorterSideSize(width, height, recipe) {
    const [heightOut, widthOut] = recipe.resolution;
    const short = Math.floor(Math.max(heightOut, widthOut) / recipe.crop_fraction + 1e-6);
    const [w, h] = width <= height ? [short, Math.trunc(short * height / width)]
      : [Math.trunc(short * width / height), short];
    return [Math.max(heightOut, h), Math.max(widthOut, w)];
  }

  /** Preprocess.centre_offset: where the central crop starts along a side. "floor" is transformers'
   *  rule; "round" (the default, and a recipe saved before the key existed) torchvision's and timm's,
   *  Python's round: half to even. */
  function centreOffset(size, crop, recipe) {
    const margin = size - crop;
    if (recipe.crop_offset === "floor") return Math.floor(margin / 2);
    const half = Math.floor(margin / 2);
    return margin % 2 === 0 ? half : half + (half % 2); // an odd margin: k + 0.5 goes to the even one
  }

  /** Preprocess.crop_and_resize / tf_crop_and_resize: HWC values on the 0-255 scale. */
  function cropAndResize(img, recipe) {
    const [height, width] = recipe.resolution;
    if (recipe.crop_mode === "central_fraction") {
      const cropped = crop(img, ...cropBox(img.width, img.height, recipe.crop_fraction));
      return recipe.resize === "tf" ? tfResize(cropped, height, width)
        : pillowResize(cropped, width, height, recipe.interpolation).pixels;
    }
    if (recipe.crop_mode !== "resize_shorter") throw new Error(`crop mode ${recipe.crop_mode} is unknown here`);
    const size = shorterSideSize(img.width, img.height, recipe); // [height, width]
    const top = centreOffset(size[0], height, recipe), left = centreOffset(size[1], width, recipe);
    if (recipe.resize === "tf") {
      const resized = tfResize(img, size[0], size[1]);
      const out = new Float32Array(height * width * 3);
      for (let y = 0; y < height; y++) {
        const from = ((top + y) * size[1] + left) * 3;
        out.set(resized.subarray(from, from + width * 3), y * width * 3);
      }
      return out;
    }
    const resized = pillowResize(img, size[1], size[0], recipe.interpolation);
    return crop(resized, left, top, left + width, top + height).pixels;
  }

  /** Preprocess.normalize: HWC 0-255 -> NCHW float32 (x / 255 - mean) / std, one image. */
  function normalize(hwc, recipe) {
    const [height, width] = recipe.resolution;
    const plane = height * width;
    const channels = recipe.mean.length;
    const mean = recipe.mean.map(f32), std = recipe.std.map(f32);
    const out = new Float32Array(channels * plane);
    for (let p = 0; p < plane; p++) {
      if (channels === 1) { // ITU-R 601 luma, as Preprocess.normalize converts RGB for a grayscale recipe
        const [r, g, b] = [0, 1, 2].map((c) => f32(hwc[p * 3 + c] / 255));
        const luma = f32(f32(f32(r * f32(0.299)) + f32(g * f32(0.587))) + f32(b * f32(0.114)));
        out[p] = f32(f32(luma - mean[0]) / std[0]);
        continue;
      }
      for (let c = 0; c < 3; c++) out[c * plane + p] = f32(f32(f32(hwc[p * 3 + c] / 255) - mean[c]) / std[c]);
    }
    return out;
  }

  /** The model's input for an RGBA image (canvas ImageData order), as PyTorch gets it. */
  function preprocess(rgba, width, height, recipe) {
    const rgb = image(width, height);
    for (let p = 0; p < width * height; p++) {
      for (let c = 0; c < 3; c++) rgb.pixels[p * 3 + c] = rgba[p * 4 + c];
    }
    return normalize(cropAndResize(rgb, recipe), recipe);
  }

  /** Decode an image file in the browser: RGBA pixels, transparency laid on white. */
  async function decode(blob) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none",
                                               imageOrientation: "from-image" });
    } catch (err) {
      throw new Error(`the browser cannot decode this file as an image (${err.message || err})`);
    }
    const canvas = document.createElement("canvas");
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.fillStyle = "#ffffff";
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.drawImage(bitmap, 0, 0);
    bitmap.close();
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    return { rgba: data, width: canvas.width, height: canvas.height };
  }

  async function fetchJson(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
    return response.json();
  }

  /** Load the ONNX file, its labels and its preprocessing; the WASM runtime comes from wasmPaths. */
  async function load({ model, labels, preprocess: recipe, wasmPaths, threads }) {
    const ort = global.ort;
    if (!ort) throw new Error("onnxruntime-web is not loaded");
    ort.env.wasm.wasmPaths = new URL(wasmPaths, global.location.href).href; // a bare "ort/" is no module URL
    ort.env.wasm.proxy = false;
    // Threads need SharedArrayBuffer, which browsers give only to cross-origin-isolated pages.
    ort.env.wasm.numThreads = global.crossOriginIsolated ? (threads || Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
    const [names, settings] = await Promise.all([fetchJson(labels), fetchJson(recipe)]);
    const session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"],
                                                                graphOptimizationLevel: "all" });
    const loaded = { ort, session, labels: names, recipe: settings, inputName: session.inputNames[0],
                     outputName: session.outputNames[0], threads: ort.env.wasm.numThreads };
    // One run now, so that the first photo's time is the model's and not the runtime's warm-up.
    const [h, w] = settings.resolution;
    const shape = [1, settings.mean.length, h, w];
    await session.run({ [loaded.inputName]: new ort.Tensor("float32", new Float32Array(shape.reduce((a, b) => a * b)), shape) });
    return loaded;
  }

  /** Softmax over the classes, TF's background logit dropped first as decode_predictions does. */
  function topClasses(logits, labels, k) {
    let first = 0;
    if (logits.length === 1001 && labels[0] === "background") first = 1;
    let max = -Infinity;
    for (let i = first; i < logits.length; i++) max = Math.max(max, logits[i]);
    const exp = [];
    let total = 0;
    for (let i = first; i < logits.length; i++) {
      const e = Math.exp(logits[i] - max);
      exp.push(e);
      total += e;
    }
    const order = exp.map((e, i) => i).sort((a, b) => exp[b] - exp[a]).slice(0, k);
    return order.map((i) => ({ index: i, label: labels[i + first], probability: exp[i] / total }));
  }

  /** Classify RGBA pixels: the logits, the top k and the milliseconds of preprocessing and of the model. */
  async function classifyPixels(model, rgba, width, height, k = 5) {
    const started = performance.now();
    const input = preprocess(rgba, width, height, model.recipe);
    const preprocessed = performance.now();
    const [h, w] = model.recipe.resolution;
    const tensor = new model.ort.Tensor("float32", input, [1, model.recipe.mean.length, h, w]);
    const outputs = await model.session.run({ [model.inputName]: tensor });
    const logits = Array.from(outputs[model.outputName].data);
    const finished = performance.now();
    return { logits, top: topClasses(logits, model.labels, k), preprocessMs: preprocessed - started,
             modelMs: finished - preprocessed, ms: finished - started };
  }

  async function classifyFile(model, blob, k = 5) {
    const { rgba, width, height } = await decode(blob);
    return classifyPixels(model, rgba, width, height, k);
  }

  global.MobileNetBrowser = { load, decode, preprocess, classifyPixels, classifyFile, topClasses };
})(typeof window !== "undefined" ? window : globalThis);
