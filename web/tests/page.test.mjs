// page.test.mjs: headless Chromium test of the built ekvae page.
//   node web/tests/page.test.mjs [SITE_DIR] [OUT_DIR]
// SITE_DIR defaults to build-wasm/site, OUT_DIR (screenshots, perf.json) to build-wasm/test-output.
// EKVAE_SCREENSHOT_DIR=docs/screenshots also copies the screenshots there (the list at the end of main). The site must hold the shipped models (models/*.safetensors).
// Serves SITE_DIR on 127.0.0.1 (a free port) with node's http module, drives Debian's
// /usr/bin/chromium through playwright-core, and prints one line per check and finally
// "N passed, M failed" (exit status 1 on any failure). Every wait is bounded; the server,
// the browser and its temporary profile are always cleaned up.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

import { angleDiff, check, measureFps, median, openPage, pngStats, referenceSteps, sleep, startServer, waitReady, wrapAngle,
         withTimeout, STEP_TIMEOUT_MS } from './helpers.mjs';
import { armChecks } from './arm.checks.mjs';
import { compareChecks } from './compare.checks.mjs';
import { embedChecks } from './embed.checks.mjs';
import { layoutChecks } from './layout.checks.mjs';
import { trainChecks } from './train.checks.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const top = path.resolve(here, '..', '..');
const siteDir = path.resolve(process.argv[2] || path.join(top, 'build-wasm', 'site'));
const outDir = path.resolve(process.argv[3] || path.join(top, 'build-wasm', 'test-output'));
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const TOTAL_TIMEOUT_MS = 600000; // ~2 min of checks + training the browser preset (train.checks.mjs)

const require = createRequire(path.join(top, 'web', 'package.json'));
const { chromium } = require('playwright-core');


// ---- the checks ------------------------------------------------------------------------
async function main() {
  check(fs.existsSync(path.join(siteDir, 'index.html')), `no site at ${siteDir} (build it: cmake --build build-wasm)`);
  check(fs.existsSync(chromiumPath), `no chromium at ${chromiumPath} (scripts/setup.sh installs it)`);
  fs.mkdirSync(outDir, { recursive: true });

  let passed = 0, failed = 0;
  const perf = {}; // measurements, written to OUT_DIR/perf.json (not checked against limits)
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

  // EKVAE_TEST_ONLY=TEXT runs only the checks whose name contains TEXT (and the first, which
  // opens the page the others share), for working on one of them.
  const only = process.env.EKVAE_TEST_ONLY;
  async function test(name, fn) {
    if (only && passed + failed > 0 && !name.includes(only)) return;
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

    // The help opens on a first visit; on the test's main origin it has been seen (the
    // first-visit check uses another origin, with its own storage).
    await context.addInitScript(() => {
      if (location.hostname === '127.0.0.1') try { localStorage.setItem('ekvae.helpSeen', '1'); } catch (e) { /* none */ }
    });
    const errors = [];
    let page = null;

    await test('page loads and ekvae.ready resolves', async () => {
      const o = await openPage(context, `${base}/index.html`, errors);
      page = o.page;
      const ms = await waitReady(page, o.t0);
      const overlayHidden = await page.evaluate(() => document.getElementById('overlay').classList.contains('hidden'));
      check(overlayHidden, 'the loading overlay is still shown');
      const s = await page.evaluate(() => window.ekvae.state());
      check(s.model_loaded && s.model === 'pendulum-constrained.safetensors', `model: ${s.model}, error: ${s.error}`);
      check(s.error === null, `error: ${s.error}`);
      perf.timing = await page.evaluate(() => window.ekvae.timing);
      perf.transfer_bytes = await page.evaluate(() => {
        const nav = performance.getEntriesByType('navigation')[0];
        const res = performance.getEntriesByType('resource');
        const files = {};
        for (const r of res) files[new URL(r.name).pathname] = r.transferSize;
        return { total: nav.transferSize + res.reduce((n, r) => n + r.transferSize, 0), files };
      });
      return `first frame ${perf.timing.first_frame_ms.toFixed(0)} ms, model running ${perf.timing.ready_ms.toFixed(0)} ms ` +
             `after navigation (${ms} ms by the test's clock); ${(perf.transfer_bytes.total / 1e6).toFixed(2)} MB transferred`;
    });
    if (!page) throw new Error('the page did not start; skipping the remaining checks');

    await test('state() has the documented keys', async () => {
      const s = await page.evaluate(() => window.ekvae.state());
      for (const k of ['t', 'theta', 'omega', 'torque', 'covered']) check(k in s, `state() lacks ${k}`);
      check(typeof s.t === 'number' && typeof s.theta === 'number' && typeof s.omega === 'number', 'non-numeric state');
      check(s.estimate && typeof s.estimate.theta === 'number' && typeof s.estimate.omega === 'number', 'no estimate');
      check(s.forecast && s.forecast.theta.length === 30 && s.forecast.sigma.length === 30, 'forecast is not 30 steps');
      check(s.forecast.sigma.every((x) => x >= 0 && Number.isFinite(x)), 'bad sigma');
      check(typeof s.model_ms === 'number' && s.model_ms >= 0, `model_ms: ${s.model_ms}`);
      check(s.horizon === 30 && s.torque_mode === 'hold', `default options wrong: ${JSON.stringify(s)}`);
      return `theta=${s.theta.toFixed(3)} estimate=${s.estimate.theta.toFixed(3)} model_ms=${s.model_ms.toFixed(3)}`;
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

    await test('the filtered angle tracks the true angle', async () => {
      const r = await page.evaluate(() => {
        const e = window.ekvae;
        e.pause(true);
        e.reset(2.0, 0.5);
        const errs = [];
        for (let k = 0; k < 120; k++) {
          e.setTorque(2 * Math.sin(0.15 * k));  // a swinging input, so the angle covers a wide range
          e.step(1);
          if (k >= 20) { const s = e.state(); errs.push([s.theta, s.estimate.theta]); }
        }
        e.setTorque(0);
        return errs;
      });
      const err = r.map(([a, b]) => angleDiff(a, b));
      const mean = err.reduce((x, y) => x + y, 0) / err.length;
      const span = Math.max(...r.map(([a]) => a)) - Math.min(...r.map(([a]) => a));
      check(r.length === 100, `${r.length} steps`);
      check(mean < 0.3, `mean wrapped error ${mean.toFixed(3)} rad over 100 steps`);
      return `mean error ${mean.toFixed(3)} rad, max ${Math.max(...err).toFixed(3)} rad; true angle spans ${span.toFixed(2)} rad`;
    });

    await test('changing the torque changes the forecast', async () => {
      const r = await page.evaluate(() => {
        const e = window.ekvae;
        e.pause(true);
        e.reset(Math.PI - 0.3, 0);
        e.step(20);
        e.setTorque(2); const a = e.state();
        e.setTorque(-2); const b = e.state();
        e.setTorqueMode('zero'); const z = e.state();
        e.setTorqueMode('hold'); e.setTorque(0);
        return { a: a.forecast, b: b.forecast, z: z.forecast, fa: a.forecast.torque, fb: b.forecast.torque };
      });
      const H = r.a.theta.length;
      const dm = r.a.theta.map((x, k) => angleDiff(x, r.b.theta[k]));
      const dt = r.a.true_theta.map((x, k) => angleDiff(x, r.b.true_theta[k]));
      const kMax = dt.indexOf(Math.max(...dt));
      check(r.fa === 2 && r.fb === -2 && r.z.torque === 0, `assumed torques ${r.fa}, ${r.fb}, ${r.z.torque}`);
      check(Math.max(...dm) > 0.3, `the forecasts for u=+2 and u=-2 differ by at most ${Math.max(...dm).toFixed(3)} rad`);
      // where the truth differs most, the model's forecasts differ the same way round
      const sgn = (x) => Math.sign(wrapAngle(x));
      check(sgn(r.a.theta[kMax] - r.b.theta[kMax]) === sgn(r.a.true_theta[kMax] - r.b.true_theta[kMax]),
            'the forecast turns the other way than the truth');
      return `u=+2 vs u=-2 over ${H} steps: forecasts differ by up to ${Math.max(...dm).toFixed(2)} rad, ` +
             `the true futures by up to ${dt[kMax].toFixed(2)} rad (at step ${kMax + 1}: ${dm[kMax].toFixed(2)} rad)`;
    });

    await test('covering the camera widens sigma, uncovering narrows it', async () => {
      const r = await page.evaluate(() => {
        const e = window.ekvae;
        e.pause(true);
        e.reset(Math.PI - 0.5, 0);
        e.step(30);
        const s0 = e.state().estimate.sigma;
        e.cover(true);
        e.step(30);
        const covered = e.state();
        e.cover(false);
        e.step(5);
        const s2 = e.state().estimate.sigma;
        return { s0, s1: covered.estimate.sigma, s2, flag: covered.covered, f0: covered.forecast.sigma[0] };
      });
      check(r.flag === true, 'covered flag not set');
      check(r.s1 > 1.5 * r.s0, `sigma ${r.s0.toFixed(4)} -> ${r.s1.toFixed(4)} after 30 covered steps (not > 1.5x)`);
      check(r.s2 < 0.75 * r.s1, `sigma ${r.s1.toFixed(4)} -> ${r.s2.toFixed(4)} after uncovering (not < 3/4)`);
      return `sigma ${r.s0.toFixed(3)} -> covered 1.5 s ${r.s1.toFixed(3)} -> uncovered 0.25 s ${r.s2.toFixed(3)} rad`;
    });

    await test('a corrupt model file is refused; the previous model keeps running', async () => {
      const r = await page.evaluate(async () => {
        const e = window.ekvae;
        e.pause(true);
        const good = new Uint8Array(await (await fetch('models/pendulum-constrained.safetensors')).arrayBuffer());
        const out = {};
        const attempt = async (bytes, name) => {
          try { await e.loadModel(bytes, { name }); return { ok: true, state: e.state() }; }
          catch (err) { return { ok: false, message: err.message, state: e.state() }; }
        };
        // 1. truncated
        out.truncated = await attempt(good.slice(0, 5000), 'truncated.safetensors');
        // edits of the shipped file: header (JSON) and body changed, the file rebuilt
        const n = Number(new DataView(good.buffer).getBigUint64(0, true));
        const parse = () => JSON.parse(new TextDecoder().decode(good.slice(8, 8 + n)));
        const rebuild = (header, body) => {
          let text = JSON.stringify(header);
          while ((8 + text.length) % 8) text += ' ';
          const hb = new TextEncoder().encode(text);
          const f = new Uint8Array(8 + hb.length + body.length);
          new DataView(f.buffer).setBigUint64(0, BigInt(hb.length), true);
          f.set(hb, 8);
          f.set(body, 8 + hb.length);
          return f;
        };
        // an edit that keeps the checksum must fail on it; without one (a version-1 file) the
        // loader's own checks must catch it
        const unsummed = (h) => { delete h.__metadata__.checksum; h.__metadata__.version = '1'; return h; };
        // 2. wrong shape: the decoder's first weight [128, 2] relabelled [2, 128] (same bytes)
        const header = unsummed(parse());
        const key = Object.keys(header).find((k) => /^dec\.0\.W$/.test(k)) || Object.keys(header).find((k) => k !== '__metadata__');
        header[key].shape = [...header[key].shape].reverse();
        out.key = key;
        out.wrong = await attempt(rebuild(header, good.slice(8 + n)), 'wrong-shape.safetensors');
        // 2b. n_u = 2 in the config, tensors resized to match (B [n_z*2, K], alpha.0.W [64, n_z+2])
        {
          const h = unsummed(parse());
          const cfg = JSON.parse(h.__metadata__.config);
          cfg.n_u = 2;
          h.__metadata__.config = JSON.stringify(cfg);
          out.nu = await attempt(rebuild(h, good.slice(8 + n)), 'two-torques.safetensors');
        }
        // 2c. one finite huge weight (3e38 in A): loads as finite, produces NaN
        {
          const h = unsummed(parse());
          const body = good.slice(8 + n);
          new DataView(body.buffer).setFloat32(h.A.data_offsets[0], 3e38, true);
          out.huge = await attempt(rebuild(h, body), 'huge-weight.safetensors');
        }
        // 2d. one flipped digit in the header (q_min 0.0001 -> 0.0401), checksum kept
        {
          const text = new TextDecoder().decode(good.slice(8, 8 + n));
          const i = text.indexOf('q_min');
          const j = text.indexOf('0001', i);
          const flipped = good.slice();
          flipped[8 + j - 1] = '4'.charCodeAt(0) === flipped[8 + j - 1] ? '5'.charCodeAt(0) : '4'.charCodeAt(0);
          out.flip = await attempt(flipped, 'flipped-digit.safetensors');
        }
        // 3. not a model at all
        out.garbage = await attempt(new TextEncoder().encode('hello, I am not a model'), 'hello.txt');
        // still running: steps advance the filter, which still tracks
        e.reset(2.5, 0);
        e.step(40);
        out.after = e.state();
        // a valid file of one's own loads (and the shipped one comes back)
        out.own = await attempt(good, 'my-model.safetensors');
        out.back = await attempt('models/pendulum-constrained.safetensors', 'pendulum-constrained.safetensors');
        return out;
      });
      for (const k of ['truncated', 'wrong', 'nu', 'huge', 'flip', 'garbage']) {
        const a = r[k];
        check(!a.ok, `${k}: accepted`);
        check(a.message && a.state.error && a.state.error.includes(a.message.split(':')[0]), `${k}: error not in state(): ${a.state.error}`);
        check(a.state.model === 'pendulum-constrained.safetensors' && a.state.model_loaded, `${k}: model is now ${a.state.model}`);
      }
      check(/shape|expected/i.test(r.wrong.message), `wrong shape: message "${r.wrong.message}"`);
      check(/n_u/.test(r.nu.message), `n_u = 2: message "${r.nu.message}"`);
      check(/not finite/.test(r.huge.message), `huge weight: message "${r.huge.message}"`);
      check(/checksum/.test(r.flip.message), `flipped digit: message "${r.flip.message}"`);
      // plain words first (what is wrong, what is expected), the detail on a second line
      check(r.garbage.message.startsWith('hello.txt is not an ekvae model file: a .safetensors model written by ekvae_train is expected.') &&
            r.garbage.message.includes('pendulum-constrained.safetensors keeps running.\n(not a valid safetensors file'),
            `garbage: message "${r.garbage.message}"`);
      check(r.wrong.message.startsWith('wrong-shape.safetensors cannot run in this demo: '), `wrong shape: message "${r.wrong.message}"`);
      check(angleDiff(r.after.theta, r.after.estimate.theta) < 0.3, `after the refusals the estimate ${r.after.estimate.theta} is off the truth ${r.after.theta}`);
      check(r.own.ok && r.own.state.model === 'my-model.safetensors' && r.own.state.error === null, `own file: ${JSON.stringify(r.own.message || r.own.state.error)}`);
      check(r.back.ok && r.back.state.model === 'pendulum-constrained.safetensors', 'could not load the shipped model back');
      return `truncated: "${r.truncated.message}"; wrong shape (${r.key}): "${r.wrong.message}"; n_u 2: "${r.nu.message}"; ` +
             `huge weight: "${r.huge.message}"; flipped digit: "${r.flip.message}"; garbage: "${r.garbage.message}"`;
    });

    await test('benchmark: filter step + H=30 forecast with decoding (median of 1000 frames)', async () => {
      const b = await page.evaluate(() => { window.ekvae.benchmark(100); return window.ekvae.benchmark(1000); });
      check(b && b.median_ms > 0 && Number.isFinite(b.median_ms), `benchmark: ${JSON.stringify(b)}`);
      perf.benchmark = b;
      perf.cross_origin_isolated = await page.evaluate(() => self.crossOriginIsolated);
      return `median ${b.median_ms.toFixed(3)} ms, mean ${b.mean_ms.toFixed(3)} ms per frame (not a timed test)`;
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
      await page.evaluate(() => { window.ekvae.pause(false); window.ekvae.setTorque(0); window.ekvae.reset(Math.PI, 0); });
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
      // Layout of app_panels.cpp at 1280x800: controls 270 px, the pendulum panel x in [282, 678],
      // its pivot near (480, 178). A point at the panel's right edge, level with the pivot,
      // is at angle +pi/2; from hanging down (pi) the pull is counter-clockwise: u < 0.
      await page.evaluate(() => { window.ekvae.pause(false); window.ekvae.setTorque(0); window.ekvae.reset(Math.PI, 0); });
      await page.mouse.move(665, 178);
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
      // A scripted swing, so the plots show something: pumped up for 4 s, then the picture.
      await page.evaluate(() => {
        const e = window.ekvae;
        e.pause(true);
        e.reset(Math.PI - 0.2, 0);
        for (let k = 0; k < 80; k++) { e.setTorque(k < 60 ? 2 * Math.sign(Math.sin(0.22 * k)) : 0.5); e.step(1); }
        e.pause(false);
      });
      await sleep(400);
      await page.evaluate(() => window.ekvae.pause(true));
      await sleep(300);
      const png = await withTimeout(page.screenshot({ path: path.join(outDir, 'default.png') }), STEP_TIMEOUT_MS, 'screenshot');
      const st = await pngStats(page, png);
      check(st.width === 1280 && st.height === 800, `screenshot is ${st.width}x${st.height}`);
      check(st.distinct >= 50, `only ${st.distinct} distinct colours`);
      check(st.topShare < 0.9, `one colour covers ${(100 * st.topShare).toFixed(0)}% of the image`);
      await page.evaluate(() => { window.ekvae.cover(true); window.ekvae.step(25); });
      await sleep(300);
      await page.screenshot({ path: path.join(outDir, 'covered.png') });
      await page.evaluate(() => { window.ekvae.cover(false); window.ekvae.setTorque(0); window.ekvae.pause(false); });
      perf.fps_default = await measureFps(page, 2000);
      return `${st.distinct} colours, top colour ${(100 * st.topShare).toFixed(0)}%, saved in ${outDir}`;
    });

    await test('no page errors', async () => {
      check(errors.length === 0, errors.join(' | '));
    });
    await page.close();

    await test('URL parameters reach the app', async () => {
      const errs = [];
      const o = await openPage(context, `${base}/index.html?horizon=12&torque=zero&model=pendulum-elbo.safetensors&ui=minimal`, errs);
      await waitReady(o.page, o.t0);
      const s = await o.page.evaluate(() => window.ekvae.state());
      check(s.horizon === 12 && s.torque_mode === 'zero' && s.model === 'pendulum-elbo.safetensors' &&
            s.forecast.theta.length === 12 && s.forecast.torque === 0, `state: ${JSON.stringify(s)}`);
      await o.page.screenshot({ path: path.join(outDir, 'minimal.png') });
      check(errs.length === 0, errs.join(' | '));
      await o.page.close();
    });

    await test('the share link round-trips: world, model, horizon, torque mode, compare, start state', async () => {
      const errs = [];
      const o = await openPage(context, `${base}/index.html?world=arm`, errs);
      await waitReady(o.page, o.t0);
      const a = await o.page.evaluate(async () => {
        const e = window.ekvae;
        e.pause(true);
        e.setHorizon(17);
        e.setTorqueMode('zero');
        e.setCompare(true);
        e.reset([0.3, -0.5, 1, -1]);
        e.step(7);
        await new Promise((r) => setTimeout(r, 1500)); // the second model loads
        return { link: e.shareLink(), s: e.state() };
      });
      await o.page.close();
      const o2 = await openPage(context, a.link, errs);
      await waitReady(o2.page, o2.t0);
      const b = await o2.page.evaluate(() => window.ekvae.state());
      await o2.page.close();
      check(b.world === 'arm' && b.model === a.s.model && b.horizon === 17 && b.torque_mode === 'zero' && b.compare === true,
            `restored: ${b.world}, ${b.model}, H ${b.horizon}, ${b.torque_mode}, compare ${b.compare} from ${a.link}`);
      const worst = Math.max(...a.s.state.map((v, i) => Math.abs(v - b.state[i])));
      check(worst < 1e-4 && b.paused && b.t === 0 && b.models.length === 2,
            `start state off by ${worst}, paused ${b.paused}, t ${b.t}; ${b.models.length} models running`);
      check(errs.length === 0, errs.join(' | '));
      return a.link.slice(a.link.indexOf('?'));
    });

    await armChecks({ test, context, base, outDir });
    await embedChecks({ test, context, base, outDir, top });
    await compareChecks({ test, context, base, outDir, perf });

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
      await frame.evaluate(() => window.ekvae.step(40));
      await sleep(300);
      await o.page.locator('iframe').screenshot({ path: path.join(outDir, 'embed.png') });
      check(errs.length === 0, errs.join(' | '));
      await o.page.close();
      return `canvas ${size[0]}x${size[1]}`;
    });

    await test('crisp on high-DPI screens: at devicePixelRatio 2 the backing store is the CSS size x 2', async () => {
      const errs = [];
      const p = await context.newPage();
      p.on('pageerror', (e) => errs.push(`pageerror: ${e.message}`));
      const cdp = await context.newCDPSession(p);
      const sizes = {};
      for (const dpr of [2, 3]) {
        await cdp.send('Emulation.setDeviceMetricsOverride', { width: 900, height: 600, deviceScaleFactor: dpr, mobile: false });
        const t0 = Date.now();
        await withTimeout(p.goto(`${base}/index.html`, { waitUntil: 'load' }), STEP_TIMEOUT_MS, 'load');
        await waitReady(p, t0);
        await sleep(300);
        sizes[dpr] = await p.evaluate(() => {
          const c = document.getElementById('canvas'), r = c.getBoundingClientRect();
          return { w: c.width, h: c.height, cw: r.width, ch: r.height, dpr: window.devicePixelRatio };
        });
      }
      await cdp.send('Emulation.clearDeviceMetricsOverride');
      for (const dpr of [2, 3]) {
        const z = sizes[dpr];
        check(z.dpr === dpr && z.w === Math.floor(z.cw * dpr) && z.h === Math.floor(z.ch * dpr),
              `DPR ${dpr}: backing ${z.w}x${z.h} for CSS ${z.cw}x${z.ch} (devicePixelRatio ${z.dpr})`);
      }
      check(errs.length === 0, errs.join(' | '));
      await p.close();
      return `CSS 900x600: DPR 2 backing ${sizes[2].w}x${sizes[2].h}, DPR 3 ${sizes[3].w}x${sizes[3].h}`;
    });

    await layoutChecks({ test, context, base, outDir, perf });
    await trainChecks({ test, context, base, siteDir, outDir, perf, top });

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
    fs.writeFileSync(path.join(outDir, 'perf.json'), JSON.stringify(perf, null, 2) + '\n');
    console.log(`perf: ${JSON.stringify(perf)}`);
    const shots = process.env.EKVAE_SCREENSHOT_DIR;
    if (shots) {
      fs.mkdirSync(shots, { recursive: true });
      for (const f of ['default.png', 'compare.png', 'covered.png', 'embed.png', 'arm-model.png', 'course-page.png', 'phone.png',
                       'tablet.png', 'desktop.png', 'minimal-640x400.png', 'help.png', 'vision-deuteranopia.png',
                       'vision-protanopia.png', 'vision-tritanopia.png', 'train-during.png', 'train-after.png', 'train-phone.png'])
        if (fs.existsSync(path.join(outDir, f))) fs.copyFileSync(path.join(outDir, f), path.join(shots, f));
      console.log(`screenshots copied to ${shots}`);
    }
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
