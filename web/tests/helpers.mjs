// helpers.mjs: what the headless Chromium checks share: a tiny static server (with the
// cross-origin isolation headers and the iframe host page), bounded waits, independent
// references of the worlds' physics, page opening and PNG statistics.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

export const STEP_TIMEOUT_MS = 30000;

// ---- a tiny static server ------------------------------------------------------------
const types = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8', '.wasm': 'application/wasm',
  '.json': 'application/json', '.css': 'text/css', '.png': 'image/png',
  '.safetensors': 'application/octet-stream',
};
// A host page for the iframe check (not a file of the site).
const EMBED_PAGE = '<!doctype html><html><head><link rel="icon" href="data:,"></head><body style="margin:0">' +
  '<div style="width:480px;height:320px"><iframe id="demo" src="index.html?ui=minimal" ' +
  'style="width:100%;height:100%;border:0"></iframe></div></body></html>';

const isolation = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };
// Serves root on 127.0.0.1 (a free port); isolate: the cross-origin isolation headers (the
// demo's site); without them for a host page on another origin (web/examples/).
export function startServer(root, { isolate = true } = {}) {
  const iso = isolate ? isolation : {};
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    if (url.pathname === '/__embed.html') {
      res.writeHead(200, { 'Content-Type': types['.html'], ...iso });
      res.end(EMBED_PAGE);
      return;
    }
    let rel = decodeURIComponent(url.pathname);
    if (rel.endsWith('/')) rel += 'index.html';
    const file = path.join(root, path.normalize(rel));
    if (!file.startsWith(root + path.sep)) { res.writeHead(403); res.end(); return; }
    fs.readFile(file, (err, data) => {
      if (err) { res.writeHead(404); res.end('not found'); return; }
      // Cross-origin isolation gives performance.now() 5 us resolution (100 us otherwise),
      // so per-frame model times of a fraction of a millisecond can be measured.
      res.writeHead(200, { 'Content-Type': types[path.extname(file)] || 'application/octet-stream',
                           'Cache-Control': 'no-store', ...iso });
      res.end(data);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

// ---- helpers -------------------------------------------------------------------------
export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timeout after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}
export function check(cond, message) { if (!cond) throw new Error(message); }
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Pendulum-v1, as in shared/pendulum.h: an independent reference for the page's world.
export function wrapAngle(a) {
  let w = a - 2 * Math.PI * Math.floor((a + Math.PI) / (2 * Math.PI));
  if (w <= -Math.PI) w += 2 * Math.PI;
  return w;
}
// The two-link arm, as documented in shared/arm.h (point masses at the elbow and the hand,
// viscous joint damping, RK4 with 4 substeps per step), written out again here.
export function armReferenceSteps(s, u, n) {
  const l1 = 1, l2 = 0.8, m1 = 1, m2 = 1, b = 0.3, g = 5, dt = 0.05, sub = 4, umax = 2, vmax = 8;
  const uc = u.map((v) => Math.min(Math.max(v, -umax), umax));
  const f = ([q1, q2, w1, w2]) => {
    const c = Math.cos(q2), sn = Math.sin(q2);
    const M11 = (m1 + m2) * l1 * l1 + m2 * l2 * l2 + 2 * m2 * l1 * l2 * c, M12 = m2 * l2 * l2 + m2 * l1 * l2 * c;
    const M22 = m2 * l2 * l2, h = m2 * l1 * l2 * sn;
    // gravity down the image (theta = 0 is up): the torques of the weights m g about each joint
    const hand = m2 * g * l2 * Math.sin(q1 + q2), elbow = (m1 + m2) * g * l1 * Math.sin(q1);
    const r1 = uc[0] - b * w1 + h * (2 * w1 * w2 + w2 * w2) + elbow + hand, r2 = uc[1] - b * w2 - h * w1 * w1 + hand;
    const det = M11 * M22 - M12 * M12;
    return [w1, w2, (M22 * r1 - M12 * r2) / det, (M11 * r2 - M12 * r1) / det];
  };
  let x = [...s];
  const add = (a, d, k) => a.map((v, i) => v + k * d[i]);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < sub; j++) {
      const h = dt / sub, k1 = f(x), k2 = f(add(x, k1, h / 2)), k3 = f(add(x, k2, h / 2)), k4 = f(add(x, k3, h));
      x = x.map((v, m) => v + h / 6 * (k1[m] + 2 * k2[m] + 2 * k3[m] + k4[m]));
    }
    x = [wrapAngle(x[0]), wrapAngle(x[1]), Math.min(Math.max(x[2], -vmax), vmax), Math.min(Math.max(x[3], -vmax), vmax)];
  }
  return x;
}

export function referenceSteps(theta, omega, u, n) {
  const g = 10, m = 1, l = 1, dt = 0.05;
  u = Math.min(Math.max(u, -2), 2);
  for (let i = 0; i < n; i++) {
    omega = omega + (3 * g / (2 * l) * Math.sin(theta) + 3 / (m * l * l) * u) * dt;
    omega = Math.min(Math.max(omega, -8), 8);
    theta = wrapAngle(theta + omega * dt);
  }
  return { theta, omega };
}

export const angleDiff = (a, b) => Math.abs(wrapAngle(a - b));
export const median = (xs) => { const v = [...xs].sort((a, b) => a - b); return v[Math.floor(v.length / 2)]; };

// Frames drawn per second over ms of real time.
export async function measureFps(page, ms) {
  const a = await page.evaluate(() => window.ekvae.state());
  await sleep(ms);
  const b = await page.evaluate(() => window.ekvae.state());
  return (b.frames - a.frames) / (ms / 1000);
}

// Opens the page (or the embed host) and waits for ekvae.ready; returns the load time.
export async function openPage(context, url, errors) {
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  const t0 = Date.now();
  await withTimeout(page.goto(url, { waitUntil: 'load' }), STEP_TIMEOUT_MS, `load ${url}`);
  return { page, t0 };
}
export async function waitReady(frameOrPage, t0) {
  await withTimeout(frameOrPage.evaluate(() => window.ekvae.ready.then(() => true)), STEP_TIMEOUT_MS, 'ekvae.ready');
  return Date.now() - t0;
}

// Distinct colours and the share of the most common colour in a PNG, decoded in the page.
export async function pngStats(page, png) {
  return page.evaluate(async (b64) => {
    const blob = await (await fetch('data:image/png;base64,' + b64)).blob();
    const bmp = await createImageBitmap(blob);
    const c = new OffscreenCanvas(bmp.width, bmp.height);
    const g = c.getContext('2d');
    g.drawImage(bmp, 0, 0);
    const d = g.getImageData(0, 0, bmp.width, bmp.height).data;
    const counts = new Map();
    for (let i = 0; i < d.length; i += 4) {
      const k = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
      counts.set(k, (counts.get(k) || 0) + 1);
    }
    let top = 0;
    for (const v of counts.values()) top = Math.max(top, v);
    return { width: bmp.width, height: bmp.height, distinct: counts.size, topShare: top / (d.length / 4) };
  }, png.toString('base64'));
}

// A fresh page with the given screen emulated (CDP: size, devicePixelRatio, touch).
export async function emulatedPage(context, { w, h, dpr, touch }) {
  const p = await context.newPage();
  const errs = [];
  p.on('pageerror', (e) => errs.push(`pageerror: ${e.message}`));
  p.on('console', (m) => { if (m.type() === 'error') errs.push(`console: ${m.text()}`); });
  const cdp = await context.newCDPSession(p);
  await cdp.send('Emulation.setDeviceMetricsOverride', { width: w, height: h, deviceScaleFactor: dpr, mobile: !!touch });
  if (touch) await cdp.send('Emulation.setTouchEmulationEnabled', { enabled: true, maxTouchPoints: 5 });
  return { p, cdp, errs };
}

// A screenshot through CDP (Playwright's own would put its viewport back over the emulated screen).
export async function shot(cdp, file) {
  const { data } = await cdp.send('Page.captureScreenshot', { format: 'png' });
  const png = Buffer.from(data, 'base64');
  if (file) fs.writeFileSync(file, png);
  return png;
}

export async function load(p, url) {
  const t0 = Date.now();
  await withTimeout(p.goto(url, { waitUntil: 'load' }), STEP_TIMEOUT_MS, `load ${url}`);
  await waitReady(p, t0);
}
