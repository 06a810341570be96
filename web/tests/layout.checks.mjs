// layout.checks.mjs: the page on a phone, a tablet and a desktop screen (the torque control in
// reach at each, screenshots), ui=minimal at small sizes, the first-visit help, keyboard
// navigation of the controls, placing the pendulum while paused, and the palette under
// Chromium's emulation of colour-vision deficiencies. Run by page.test.mjs.
import fs from 'node:fs';
import path from 'node:path';

import { check, emulatedPage, load, median, shot, sleep, waitReady, withTimeout, STEP_TIMEOUT_MS } from './helpers.mjs';

const state = (p) => p.evaluate(() => window.ekvae.state());
const centre = (r) => ({ x: r[0] + r[2] / 2, y: r[1] + r[3] / 2 });

// CIE76 colour difference of two sRGB colours [r, g, b] (0..255).
function deltaE(a, b) {
  const lab = ([r, g, bl]) => {
    const lin = (c) => { c /= 255; return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    const [R, G, B] = [lin(r), lin(g), lin(bl)];
    const X = (0.4124 * R + 0.3576 * G + 0.1805 * B) / 0.95047, Y = 0.2126 * R + 0.7152 * G + 0.0722 * B,
      Z = (0.0193 * R + 0.1192 * G + 0.9505 * B) / 1.08883;
    const f = (t) => (t > 216 / 24389 ? Math.cbrt(t) : (24389 / 27 * t + 16) / 116);
    return [116 * f(Y) - 16, 500 * (f(X) - f(Y)), 200 * (f(Y) - f(Z))];
  };
  const [p, q] = [lab(a), lab(b)];
  return Math.hypot(p[0] - q[0], p[1] - q[1], p[2] - q[2]);
}

// The colour at CSS point (x, y) of a screenshot (decoded in the page).
async function pixelAt(page, png, pts) {
  return page.evaluate(async ({ b64, pts }) => {
    const bmp = await createImageBitmap(await (await fetch('data:image/png;base64,' + b64)).blob());
    const c = new OffscreenCanvas(bmp.width, bmp.height), g = c.getContext('2d');
    g.drawImage(bmp, 0, 0);
    return pts.map(([x, y]) => Array.from(g.getImageData(Math.round(x), Math.round(y), 1, 1).data.slice(0, 3)));
  }, { b64: png.toString('base64'), pts });
}

export async function layoutChecks({ test, context, base, outDir, perf }) {
  const screens = [
    { name: 'phone', w: 390, h: 844, dpr: 3, touch: true },
    { name: 'tablet', w: 768, h: 1024, dpr: 2, touch: true },
    { name: 'desktop', w: 1920, h: 1080, dpr: 1, touch: false },
  ];
  for (const sc of screens) {
    await test(`${sc.name} ${sc.w}x${sc.h} at DPR ${sc.dpr}${sc.touch ? ', touch' : ''}: the torque control is in reach`, async () => {
      const { p, cdp, errs } = await emulatedPage(context, sc);
      await load(p, `${base}/index.html`);
      await sleep(500);
      const s = await state(p);
      const r = s.ui.rects.torque1;
      check(r, `no torque slider drawn (rects: ${Object.keys(s.ui.rects).join(', ')})`);
      check(r[0] >= 0 && r[1] >= 0 && r[0] + r[2] <= sc.w && r[1] + r[3] <= sc.h, `torque slider at ${r} outside ${sc.w}x${sc.h}`);
      check(r[3] >= (sc.touch ? 28 : 16), `torque slider ${r[3].toFixed(0)} px high`);
      check(s.ui.touch === sc.touch, `ui.touch ${s.ui.touch}`);
      const backing = await p.evaluate(() => { const c = document.getElementById('canvas'); return [c.width, c.height]; });
      check(backing[0] === sc.w * sc.dpr && backing[1] === sc.h * sc.dpr, `backing store ${backing} for ${sc.w}x${sc.h} at DPR ${sc.dpr}`);
      // press at 90 % of the slider's item (its frame and the label after it): near the frame's right end
      const x = r[0] + 0.9 * r[2], y = r[1] + r[3] / 2;
      if (sc.touch) { // a finger: touch events, as a phone sends them
        await cdp.send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: [{ x, y }] });
        await sleep(120);
        await cdp.send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [] });
      } else {
        await p.mouse.click(x, y);
      }
      await sleep(300);
      const after = await state(p);
      check(after.torque_setting > 1.2 && after.torque_setting < 2.0, `after pressing the slider at 90 %: torque ${after.torque_setting}`);
      // the other panels are reached: tabs on small screens, all shown on the desktop
      const names = Object.keys(s.ui.rects);
      const reach = ['Forecast', 'Camera', 'Latent', 'Setup', 'Help'].every((t) => names.includes(`tab:${t}`)) ||
        ['panel:Controls', 'panel:What the model sees', 'panel:Latent space', 'panel:Forecast'].every((n) => names.includes(n));
      check(reach, `not every panel is reachable: ${names.join(', ')}`);
      await p.evaluate(() => { window.ekvae.setTorque(0); window.ekvae.pause(true); });
      if (!sc.touch) await p.mouse.move(sc.w - 5, sc.h - 5); // no tooltip in the picture
      await sleep(200);
      await shot(cdp, path.join(outDir, `${sc.name}.png`));
      const timing = await p.evaluate(() => window.ekvae.timing);
      const ms = [], seen = [];
      await p.evaluate(() => window.ekvae.pause(false));
      for (let k = 0; k < 10; k++) { await sleep(100); const st = await state(p); seen.push(st); ms.push(st.model_ms); }
      perf[`${sc.name}_first_frame_ms`] = timing.first_frame_ms;
      perf[`${sc.name}_model_ms`] = median(ms);
      // Times are recorded in perf.json, not checked: a timed check here failed on a loaded CI
      // machine (1.40 ms against 0.43 ms idle); the per-frame target (<= 1 ms in wasm) is
      // bench/run_bench.py's. What is checked: while sampled, the world stepped, every sample had
      // the filter's estimate, and a model time (the last forecast's: kept between forecasts).
      check(seen[seen.length - 1].steps > seen[0].steps, `the world did not step: steps ${seen[0].steps} -> ${seen[seen.length - 1].steps}`);
      check(seen.every((st) => st.estimate) && ms.every((v) => Number.isFinite(v) && v > 0),
            `estimate or model time missing on this screen: model_ms ${ms.join(', ')}`);
      check(errs.length === 0, errs.join(' | '));
      await p.close();
      return `UI scale ${s.ui.scale}, slider ${r.map((v) => v.toFixed(0)).join(',')} -> torque ${after.torque_setting.toFixed(2)}; ` +
             `backing ${backing.join('x')}; first frame ${timing.first_frame_ms.toFixed(0)} ms, model ${median(ms).toFixed(3)} ms/frame`;
    });
  }

  await test('ui=minimal is its own clean embed at 640x400 and 800x480 (no tabs, no title bars, the torque slider kept)', async () => {
    const out = [];
    for (const [w, h] of [[640, 400], [800, 480]]) {
      const { p, cdp, errs } = await emulatedPage(context, { w, h, dpr: 1, touch: false });
      await load(p, `${base}/index.html`);
      const full = Object.keys((await state(p)).ui.rects);
      await load(p, `${base}/index.html?ui=minimal`);
      await sleep(300);
      const min = Object.keys((await state(p)).ui.rects);
      check(full.includes('tab:Setup') && full.includes('panel:Pendulum'), `default at ${w}x${h}: ${full.join(', ')}`);
      check(!min.some((n) => n.startsWith('tab:')) && min.includes('torque1') && min.includes('panel:Forecast'),
            `minimal at ${w}x${h}: ${min.join(', ')}`);
      if (w === 640) await shot(cdp, path.join(outDir, 'minimal-640x400.png'));
      check(errs.length === 0, errs.join(' | '));
      await p.close();
      out.push(`${w}x${h}: default ${full.filter((n) => n.startsWith('tab:')).length} tabs, minimal ${min.filter((n) => n.startsWith('panel:')).length} panels`);
    }
    return out.join('; ');
  });

  await test('first visit: the help opens, "Got it" closes it for good, help=1 opens it again', async () => {
    // another origin (localhost, not 127.0.0.1): its own storage, so a first visit
    const fresh = base.replace('127.0.0.1', 'localhost');
    const { p, cdp, errs } = await emulatedPage(context, { w: 1280, h: 800, dpr: 1, touch: false });
    await load(p, `${fresh}/index.html`);
    await sleep(300);
    const first = await state(p);
    await shot(cdp, path.join(outDir, 'help.png'));
    check(first.ui.help_open && first.ui.rects.help, `first visit: help_open ${first.ui.help_open}`);
    const c = centre(first.ui.rects.help);
    await p.mouse.click(c.x, c.y);
    await sleep(300);
    const closed = await state(p);
    await load(p, `${fresh}/index.html`);
    const again = await state(p);
    await load(p, `${fresh}/index.html?help=1`);
    const forced = await state(p);
    check(!closed.ui.help_open, 'Got it did not close the help');
    check(!again.ui.help_open, 'the help opened again on the second visit');
    check(forced.ui.help_open, 'help=1 did not open the help');
    check(errs.length === 0, errs.join(' | '));
    await p.close();
    return 'open on the first visit, closed by Got it, not on the second visit, open with help=1';
  });

  await test('keyboard: Tab moves into the controls (arrows navigate, Space presses), Esc back to the torque, Tab leaves', async () => {
    const { p, errs } = await emulatedPage(context, { w: 1280, h: 800, dpr: 1, touch: false });
    await load(p, `${base}/index.html`);
    await p.evaluate(() => { window.ekvae.setTorque(0); window.ekvae.reset(Math.PI, 0); });
    await p.focus('#canvas');
    await p.keyboard.press('Tab');
    await sleep(200);
    const inControls = await state(p);
    const focused = await p.evaluate(() => document.activeElement.id);
    // from the first control (the system selector): down to Reset, right to Pause, Space presses it
    // ImGui 1.86 polls the keys once a frame: each key is held for a few frames (15 FPS here),
    // less than its repeat delay (0.275 s)
    const tap = async (key) => { await p.keyboard.down(key); await sleep(150); await p.keyboard.up(key); await sleep(100); };
    await tap('ArrowDown');
    await p.keyboard.down('ArrowRight');
    await sleep(150);
    const arrowTorque = (await state(p)).torque;
    await p.keyboard.up('ArrowRight');
    await sleep(100);
    await tap('Space');
    const pressed = await state(p);
    await tap('Escape');
    await p.evaluate(() => window.ekvae.pause(false));
    await p.keyboard.down('ArrowRight');
    await sleep(300);
    const back = await state(p);
    await p.keyboard.up('ArrowRight');
    await p.keyboard.press('Tab');
    await p.keyboard.press('Tab');
    const left = await p.evaluate(() => document.activeElement.id || document.activeElement.tagName);
    check(inControls.ui.keys === 'controls' && focused === 'canvas', `after Tab: keys ${inControls.ui.keys}, focus ${focused}`);
    check(arrowTorque === 0, `the arrow turned the pendulum while navigating (torque ${arrowTorque})`);
    check(pressed.paused, 'Down, Right, Space did not press Pause');
    check(back.ui.keys === 'torque' && back.torque === 2, `after Esc: keys ${back.ui.keys}, torque ${back.torque}`);
    check(left !== 'canvas', `Tab, Tab from the torque keys stayed in the canvas (${left})`);
    check(errs.length === 0, errs.join(' | '));
    await p.close();
    return `Tab -> controls; Down, Right, Space -> paused; Esc -> torque ${back.torque}; Tab, Tab -> ${left}`;
  });

  await test('paused, a drag places the pendulum (at rest, where the pointer is)', async () => {
    const { p, errs } = await emulatedPage(context, { w: 1280, h: 800, dpr: 1, touch: false });
    await load(p, `${base}/index.html`);
    await p.evaluate(() => { window.ekvae.pause(true); window.ekvae.reset(Math.PI, 1.0); });
    const s = await state(p);
    const r = s.ui.rects['panel:Pendulum'];
    // the pivot is at the panel's horizontal centre; the right edge, level with it: theta = pi/2
    const pivot = { x: r[0] + r[2] / 2, y: r[1] + 0.52 * r[3] };
    await p.mouse.move(pivot.x, pivot.y + 60);
    await p.mouse.down();
    await p.mouse.move(pivot.x + 150, pivot.y, { steps: 8 });
    await sleep(200);
    const placed = await state(p);
    await p.mouse.up();
    await sleep(200);
    const after = await state(p);
    check(Math.abs(after.theta - Math.PI / 2) < 0.35, `placed at theta ${after.theta.toFixed(3)}, not near pi/2`);
    check(after.omega === 0 && after.paused && after.t === 0, `omega ${after.omega}, paused ${after.paused}, t ${after.t}`);
    check(placed.torque === 0, `a torque was applied while placing: ${placed.torque}`);
    check(errs.length === 0, errs.join(' | '));
    await p.close();
    return `theta ${after.theta.toFixed(3)} (pi/2 = 1.571), omega ${after.omega}`;
  });

  await test('the two models and the torque stay apart under protanopia, deuteranopia and tritanopia (CIE76 dE >= 20)', async () => {
    const { p, cdp, errs } = await emulatedPage(context, { w: 1280, h: 800, dpr: 1, touch: false });
    await load(p, `${base}/index.html?compare=1`);
    await withTimeout(p.waitForFunction(() => window.ekvae.state().models.length === 2), STEP_TIMEOUT_MS, 'second model');
    await p.evaluate(() => window.ekvae.pause(true));
    await sleep(300);
    const rects = (await state(p)).ui.rects;
    const keys = ['swatch:A', 'swatch:B', 'swatch:torque'];
    for (const k of keys) check(rects[k], `no ${k} in the legend`);
    const pts = keys.map((k) => { const c = centre(rects[k]); return [c.x, c.y]; });
    const rows = [];
    let worst = Infinity;
    for (const type of ['none', 'protanopia', 'deuteranopia', 'tritanopia']) {
      await cdp.send('Emulation.setEmulatedVisionDeficiency', { type });
      await sleep(200);
      const png = await shot(cdp, type === 'none' ? null : path.join(outDir, `vision-${type}.png`));
      const [a, b, t] = await pixelAt(p, png, pts);
      const d = [deltaE(a, b), deltaE(a, t), deltaE(b, t)];
      worst = Math.min(worst, ...d);
      rows.push(`${type}: A-B ${d[0].toFixed(0)}, A-torque ${d[1].toFixed(0)}, B-torque ${d[2].toFixed(0)}`);
      check(Math.min(...d) >= 20, `${type}: colours too close (A ${a}, B ${b}, torque ${t}; dE ${d.map((v) => v.toFixed(1))})`);
    }
    await cdp.send('Emulation.setEmulatedVisionDeficiency', { type: 'none' });
    check(errs.length === 0, errs.join(' | '));
    await p.close();
    return rows.join('; ');
  });
}
