// page.test.mjs: headless Chromium test of the built ekvae page.
//   node web/tests/page.test.mjs [SITE_DIR] [OUT_DIR]
// SITE_DIR defaults to build-wasm/site, OUT_DIR (screenshots) to build-wasm/test-output.
// Serves SITE_DIR on 127.0.0.1 (a free port) with node's http module, drives Debian's
// /usr/bin/chromium through playwright-core, and prints one line per check and finally
// "N passed, M failed" (exit status 1 on any failure). Every wait is bounded; the server,
// the browser and its temporary profile are always cleaned up.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const here = path.dirname(fileURLToPath(import.meta.url));
const top = path.resolve(here, '..', '..');
const siteDir = path.resolve(process.argv[2] || path.join(top, 'build-wasm', 'site'));
const outDir = path.resolve(process.argv[3] || path.join(top, 'build-wasm', 'test-output'));
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const TOTAL_TIMEOUT_MS = 180000;
const STEP_TIMEOUT_MS = 30000;

const require = createRequire(path.join(top, 'web', 'package.json'));
const { chromium } = require('playwright-core');

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

function startServer(root) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    if (url.pathname === '/__embed.html') {
      res.writeHead(200, { 'Content-Type': types['.html'] });
      res.end(EMBED_PAGE);
      return;
    }
    let rel = decodeURIComponent(url.pathname);
    if (rel.endsWith('/')) rel += 'index.html';
    const file = path.join(root, path.normalize(rel));
    if (!file.startsWith(root + path.sep)) { res.writeHead(403); res.end(); return; }
    fs.readFile(file, (err, data) => {
      if (err) { res.writeHead(404); res.end('not found'); return; }
      res.writeHead(200, { 'Content-Type': types[path.extname(file)] || 'application/octet-stream',
                           'Cache-Control': 'no-store' });
      res.end(data);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

// ---- helpers -------------------------------------------------------------------------
function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timeout after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}
function check(cond, message) { if (!cond) throw new Error(message); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Pendulum-v1, as in shared/pendulum.h: an independent reference for the page's world.
function wrapAngle(a) {
  let w = a - 2 * Math.PI * Math.floor((a + Math.PI) / (2 * Math.PI));
  if (w <= -Math.PI) w += 2 * Math.PI;
  return w;
}
function referenceSteps(theta, omega, u, n) {
  const g = 10, m = 1, l = 1, dt = 0.05;
  u = Math.min(Math.max(u, -2), 2);
  for (let i = 0; i < n; i++) {
    omega = omega + (3 * g / (2 * l) * Math.sin(theta) + 3 / (m * l * l) * u) * dt;
    omega = Math.min(Math.max(omega, -8), 8);
    theta = wrapAngle(theta + omega * dt);
  }
  return { theta, omega };
}

// Opens the page (or the embed host) and waits for ekvae.ready; returns the load time.
async function openPage(context, url, errors) {
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  const t0 = Date.now();
  await withTimeout(page.goto(url, { waitUntil: 'load' }), STEP_TIMEOUT_MS, `load ${url}`);
  return { page, t0 };
}
async function waitReady(frameOrPage, t0) {
  await withTimeout(frameOrPage.evaluate(() => window.ekvae.ready.then(() => true)), STEP_TIMEOUT_MS, 'ekvae.ready');
  return Date.now() - t0;
}

// Distinct colours and the share of the most common colour in a PNG, decoded in the page.
async function pngStats(page, png) {
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

// ---- the checks ------------------------------------------------------------------------
async function main() {
  check(fs.existsSync(path.join(siteDir, 'index.html')), `no site at ${siteDir} (build it: cmake --build build-wasm)`);
  check(fs.existsSync(chromiumPath), `no chromium at ${chromiumPath} (scripts/setup.sh installs it)`);
  fs.mkdirSync(outDir, { recursive: true });

  let passed = 0, failed = 0;
  const server = await startServer(siteDir);
  const base = `http://127.0.0.1:${server.address().port}`;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ekvae-chromium-'));
  let context = null;
  const watchdog = setTimeout(() => {
    console.error(`FAIL: the whole test took over ${TOTAL_TIMEOUT_MS / 1000} s`);
    try { context && context.browser && context.close().catch(() => {}); } catch (e) { /* ignore */ }
    server.close();
    fs.rmSync(profile, { recursive: true, force: true });
    console.log(`${passed} passed, ${failed + 1} failed`);
    process.exit(1);
  }, TOTAL_TIMEOUT_MS);

  async function test(name, fn) {
    const t0 = Date.now();
    try {
      const note = await fn();
      passed++;
      console.log(`ok   ${name} (${Date.now() - t0} ms)${note ? ': ' + note : ''}`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${name}: ${e && e.message ? e.message : e}`);
    }
  }

  try {
    context = await withTimeout(chromium.launchPersistentContext(profile, {
      executablePath: chromiumPath,
      headless: true,
      viewport: { width: 1280, height: 800 },
      args: ['--no-sandbox', '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
             '--disable-background-networking', '--disable-component-update', '--disable-sync',
             '--no-first-run'],
    }), STEP_TIMEOUT_MS, 'launch chromium');

    const errors = [];
    let page = null;

    await test('page loads and ekvae.ready resolves', async () => {
      const o = await openPage(context, `${base}/index.html`, errors);
      page = o.page;
      const ms = await waitReady(page, o.t0);
      const overlayHidden = await page.evaluate(() => document.getElementById('overlay').classList.contains('hidden'));
      check(overlayHidden, 'the loading overlay is still shown');
      return `first frame ${ms} ms after navigation`;
    });
    if (!page) throw new Error('the page did not start; skipping the remaining checks');

    await test('state() has the documented keys', async () => {
      const s = await page.evaluate(() => window.ekvae.state());
      for (const k of ['t', 'theta', 'omega', 'torque', 'covered']) check(k in s, `state() lacks ${k}`);
      check(typeof s.t === 'number' && typeof s.theta === 'number' && typeof s.omega === 'number', 'non-numeric state');
      check(s.estimate === null && s.forecast === null && s.model_ms === null, 'model outputs should be null without a model');
      check(s.horizon === 30 && s.torque_mode === 'hold', `default options wrong: ${JSON.stringify(s)}`);
      return `theta=${s.theta.toFixed(3)} omega=${s.omega.toFixed(3)}`;
    });

    await test('the simulation runs in real time', async () => {
      const a = await page.evaluate(() => window.ekvae.state());
      await sleep(1000);
      const b = await page.evaluate(() => window.ekvae.state());
      check(b.t - a.t > 0.3, `t advanced only ${b.t - a.t} s in 1 s`);
      check(b.t - a.t < 2.0, `t advanced ${b.t - a.t} s in 1 s (speed 1x)`);
      check(Math.abs(b.theta - a.theta) > 1e-3, 'theta did not change');
      check(b.frames > a.frames, 'no frames drawn');
      return `dt=${(b.t - a.t).toFixed(2)} s, ${b.frames - a.frames} frames, ${b.fps.toFixed(0)} FPS`;
    });

    await test('setTorque changes the motion; steps match Pendulum-v1', async () => {
      const res = await page.evaluate(() => {
        const e = window.ekvae;
        e.pause(true);
        const out = {};
        for (const u of [0, 1.5, -1.5, 5]) {
          e.reset(2.0, 0.3);
          e.setTorque(u);
          e.step(40);
          out[u] = e.state();
        }
        e.setTorque(0);
        e.reset();
        e.pause(false);
        return out;
      });
      for (const u of [0, 1.5, -1.5, 5]) {
        const ref = referenceSteps(2.0, 0.3, u, 40);
        const s = res[u];
        check(Math.abs(s.theta - ref.theta) < 1e-9 && Math.abs(s.omega - ref.omega) < 1e-9,
              `u=${u}: page (${s.theta}, ${s.omega}) vs reference (${ref.theta}, ${ref.omega})`);
        check(Math.abs(s.t - 2.0) < 1e-9 && s.steps === 40, `u=${u}: t=${s.t}, steps=${s.steps}`);
      }
      check(Math.abs(res[1.5].theta - res[0].theta) > 0.1, 'torque +1.5 did not change theta');
      check(Math.abs(res[-1.5].theta - res[1.5].theta) > 0.1, 'torques +-1.5 give the same theta');
      check(res[5].torque === 2 && res[5].theta === res[5].theta, 'torque 5 not clipped to 2');
      return `theta after 2 s: u=0 ${res[0].theta.toFixed(3)}, u=+1.5 ${res[1.5].theta.toFixed(3)}, u=-1.5 ${res[-1.5].theta.toFixed(3)}`;
    });

    await test('cover() toggles covered', async () => {
      const r = await page.evaluate(() => {
        const e = window.ekvae;
        e.cover(true); const a = e.state().covered;
        e.cover(false); const b = e.state().covered;
        return [a, b];
      });
      check(r[0] === true && r[1] === false, `covered: ${r}`);
    });

    await test('arrow keys apply full torque while held', async () => {
      await page.evaluate(() => { window.ekvae.setTorque(0); window.ekvae.reset(Math.PI, 0); });
      await page.keyboard.down('ArrowRight');
      await sleep(400);
      const held = await page.evaluate(() => window.ekvae.state());
      await page.keyboard.up('ArrowRight');
      await page.keyboard.down('ArrowLeft');
      await sleep(400);
      const left = await page.evaluate(() => window.ekvae.state());
      await page.keyboard.up('ArrowLeft');
      await sleep(400);
      const released = await page.evaluate(() => window.ekvae.state());
      check(held.torque === 2, `-> held: torque ${held.torque}`);
      check(left.torque === -2, `<- held: torque ${left.torque}`);
      check(released.torque === 0, `released: torque ${released.torque}`);
    });

    await test('dragging pulls the pendulum toward the pointer', async () => {
      // Layout of app.cpp at 1280x800: controls 300 px, the pendulum panel x in [312, 850],
      // its pivot near (581, 260). A point at the panel's right edge, level with the pivot,
      // is at angle +pi/2; from hanging down (pi) the pull is counter-clockwise: u < 0.
      await page.evaluate(() => { window.ekvae.setTorque(0); window.ekvae.reset(Math.PI, 0); });
      await page.mouse.move(830, 260);
      await page.mouse.down();
      await sleep(400);
      const dragged = await page.evaluate(() => window.ekvae.state());
      await page.mouse.up();
      await sleep(400);
      const released = await page.evaluate(() => window.ekvae.state());
      check(dragged.torque < -1, `while dragging: torque ${dragged.torque}, theta ${dragged.theta}`);
      check(dragged.theta > 0 && dragged.theta < Math.PI - 0.01, `theta ${dragged.theta} did not move toward the pointer`);
      check(released.torque === 0, `released: torque ${released.torque}`);
      return `torque ${dragged.torque.toFixed(2)}, theta ${dragged.theta.toFixed(3)}`;
    });

    await test('screenshot is not blank', async () => {
      await page.evaluate(() => { window.ekvae.reset(2.5, 0); window.ekvae.setTorque(1); });
      await sleep(300);
      const png = await withTimeout(page.screenshot({ path: path.join(outDir, 'default.png') }), STEP_TIMEOUT_MS, 'screenshot');
      const st = await pngStats(page, png);
      check(st.width === 1280 && st.height === 800, `screenshot is ${st.width}x${st.height}`);
      check(st.distinct >= 50, `only ${st.distinct} distinct colours`);
      check(st.topShare < 0.9, `one colour covers ${(100 * st.topShare).toFixed(0)}% of the image`);
      await page.evaluate(() => { window.ekvae.cover(true); });
      await sleep(200);
      await page.screenshot({ path: path.join(outDir, 'covered.png') });
      await page.evaluate(() => { window.ekvae.cover(false); window.ekvae.setTorque(0); });
      return `${st.distinct} colours, top colour ${(100 * st.topShare).toFixed(0)}%, saved in ${outDir}`;
    });

    await test('no page errors', async () => {
      check(errors.length === 0, errors.join(' | '));
    });
    await page.close();

    await test('URL parameters reach the app', async () => {
      const errs = [];
      const o = await openPage(context, `${base}/index.html?horizon=12&torque=zero&compare=1&model=elbo.safetensors&ui=minimal`, errs);
      await waitReady(o.page, o.t0);
      const s = await o.page.evaluate(() => window.ekvae.state());
      check(s.horizon === 12 && s.torque_mode === 'zero' && s.compare === true && s.model === 'elbo.safetensors',
            `state: ${JSON.stringify(s)}`);
      await o.page.screenshot({ path: path.join(outDir, 'minimal.png') });
      check(errs.length === 0, errs.join(' | '));
      await o.page.close();
    });

    await test('works in an iframe, sized to its container', async () => {
      const errs = [];
      const o = await openPage(context, `${base}/__embed.html`, errs);
      const frame = o.page.frames().find((f) => f !== o.page.mainFrame());
      check(frame, 'no iframe');
      await waitReady(frame, o.t0);
      await sleep(200);
      const size = await frame.evaluate(() => {
        const c = document.getElementById('canvas');
        return [c.width, c.height, window.ekvae.state().t];
      });
      check(size[0] === 480 && size[1] === 320, `canvas is ${size[0]}x${size[1]}, expected 480x320`);
      check(errs.length === 0, errs.join(' | '));
      await o.page.close();
      return `canvas ${size[0]}x${size[1]}`;
    });

    await test('a clear message without WebGL2', async () => {
      const p = await context.newPage();
      await p.addInitScript(() => {
        const orig = HTMLCanvasElement.prototype.getContext;
        HTMLCanvasElement.prototype.getContext = function (type, ...rest) {
          return type === 'webgl2' ? null : orig.call(this, type, ...rest);
        };
      });
      await withTimeout(p.goto(`${base}/index.html`), STEP_TIMEOUT_MS, 'load without WebGL2');
      const r = await withTimeout(p.evaluate(() => window.ekvae.ready.then(() => 'resolved', (e) => 'rejected: ' + e.message)),
                                  STEP_TIMEOUT_MS, 'ready without WebGL2');
      const text = await p.evaluate(() => document.getElementById('status').textContent);
      check(r.startsWith('rejected') && /WebGL2/.test(text), `ready ${r}; message "${text}"`);
      await p.close();
    });
  } catch (e) {
    failed++;
    console.log(`FAIL ${e && e.message ? e.message : e}`);
  } finally {
    clearTimeout(watchdog);
    if (context) await withTimeout(context.close(), 10000, 'close chromium').catch((e) => console.error(String(e)));
    server.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

main().catch((e) => {
  console.log(`FAIL ${e && e.message ? e.message : e}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
});
