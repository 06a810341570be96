// embed.checks.mjs: the demo as a guest in a course page on another origin
// (web/examples/course-page.html served from a second server): it takes no focus on load, the
// wheel and PageDown scroll the host, Tab moves in and out of it, postMessage drives it; and
// the page's accessible name and live summary. Run by page.test.mjs.
import path from 'node:path';

import { check, openPage, sleep, startServer, waitReady, withTimeout, STEP_TIMEOUT_MS } from './helpers.mjs';

export async function embedChecks({ test, context, base, outDir, top }) {
  const host = await startServer(path.join(top, 'web', 'examples'), { isolate: false });
  const hostBase = `http://localhost:${host.address().port}`; // another origin than 127.0.0.1:PORT
  try {
    await test('a course page on another origin: no focus taken, the wheel and PageDown scroll it, Tab moves in and out', async () => {
      const errs = [];
      const o = await openPage(context, `${hostBase}/course-page.html?demo=${encodeURIComponent(base + '/index.html')}`, errs);
      const p = o.page;
      await withTimeout(p.evaluate(() => window.ekvaeDemoReady.then(() => true)), STEP_TIMEOUT_MS, 'the demo posts ready');
      const ms = Date.now() - o.t0;
      const focus0 = await p.evaluate(() => document.activeElement.tagName);
      await p.keyboard.press('PageDown');
      await sleep(300);
      const afterPageDown = await p.evaluate(() => window.scrollY);
      await p.evaluate(() => window.scrollTo(0, 0));
      const box = await (await p.$('#demo')).boundingBox();
      await p.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
      await p.mouse.wheel(0, 300);
      await sleep(400);
      const afterWheel = await p.evaluate(() => window.scrollY);
      await p.evaluate(() => window.scrollTo(0, 0));
      await p.focus('#before');
      await p.keyboard.press('Tab');
      const into = await p.evaluate(() => `${document.activeElement.tagName}#${document.activeElement.id}`);
      const frame = p.frames().find((f) => f.url().startsWith(base));
      const inner = await frame.evaluate(() => document.activeElement.id);
      await p.keyboard.press('Tab');
      const out = await p.evaluate(() => document.activeElement.id);
      await p.keyboard.press('Shift+Tab');
      const back = await p.evaluate(() => document.activeElement.id);
      const backInner = await frame.evaluate(() => document.hasFocus() && document.activeElement.id);
      check(focus0 !== 'IFRAME', `the iframe took the focus on load (${focus0})`);
      check(afterPageDown > 100, `PageDown scrolled the host by ${afterPageDown} px`);
      check(afterWheel > 100, `the wheel over the demo scrolled the host by ${afterWheel} px`);
      check(inner === 'canvas', `Tab from the button before: host ${into}, inside ${inner}`);
      check(out === 'arm', `Tab from the demo's canvas went to '${out}', not the button after it`);
      check(backInner === 'canvas', `Shift+Tab from the button after: host '${back}', inside the demo '${backInner}'`);
      await p.screenshot({ path: path.join(outDir, 'course-page.png') });
      check(errs.length === 0, errs.join(' | '));
      await p.close();
      return `ready in ${ms} ms; PageDown ${afterPageDown} px, wheel ${afterWheel} px; Tab: before -> ${into} (canvas inside) -> ${out}; Shift+Tab -> ${back || 'the demo'}`;
    });

    await test('postMessage from another origin drives the demo', async () => {
      const errs = [];
      const o = await openPage(context, `${hostBase}/course-page.html?demo=${encodeURIComponent(base + '/index.html')}`, errs);
      const p = o.page;
      await withTimeout(p.evaluate(() => window.ekvaeDemoReady.then(() => true)), STEP_TIMEOUT_MS, 'the demo posts ready');
      const r = await p.evaluate(async () => {
        const call = window.ekvaeCall;
        await call('pause', true);
        await call('reset', 2.0, 0.0);
        await call('setTorque', 1.25);
        await call('step', 10);
        const s = await call('state');
        await call('setWorld', 'arm');
        const a = await call('state');
        let bad = null, badArgs = null;
        try { await call('loadModel', 'x'); } catch (e) { bad = e.message; }
        try { await call('setTorque', 'much'); } catch (e) { badArgs = e.message; }
        await call('setWorld', 'pendulum');
        await call('pause', false);
        return { s, a, bad, badArgs };
      });
      check(r.s.paused && r.s.steps === 10 && r.s.torque_setting === 1.25 && Math.abs(r.s.t - 0.5) < 1e-9,
            `state after the calls: paused ${r.s.paused}, steps ${r.s.steps}, torque ${r.s.torque_setting}, t ${r.s.t}`);
      check(r.a.world === 'arm' && r.a.state.length === 4, `after setWorld('arm'): ${r.a.world}`);
      check(r.bad && r.bad.includes("unknown method 'loadModel'"), `loadModel by message: ${r.bad}`);
      check(r.badArgs && r.badArgs.includes('finite numbers'), `setTorque('much'): ${r.badArgs}`);
      check(errs.length === 0, errs.join(' | '));
      await p.close();
      return `setTorque, reset, step, state, setWorld by message; refused: ${r.bad}`;
    });
  } finally {
    host.close();
  }

  await test('the canvas has an accessible name and a live summary that changes', async () => {
    const errs = [];
    const o = await openPage(context, `${base}/index.html`, errs);
    await waitReady(o.page, o.t0);
    const p = o.page;
    const a = await p.evaluate(() => {
      const c = document.getElementById('canvas');
      return { role: c.getAttribute('role'), label: c.getAttribute('aria-label'), live: document.getElementById('live').textContent,
               focused: document.activeElement === c, described: c.getAttribute('aria-describedby') };
    });
    await sleep(2200);
    const live2 = await p.evaluate(() => document.getElementById('live').textContent);
    // the accessibility tree's view: an element of role application named "ekvae demo: ..."
    const named = await p.getByRole('application', { name: /ekvae demo/ }).count();
    check(a.role === 'application' && a.label && a.label.includes('ekvae demo'), `role ${a.role}, label ${a.label}`);
    check(a.described === 'live' && a.live.startsWith('Pendulum, time') && a.live.includes('True theta') && a.live.includes('estimated'),
          `live region: '${a.live}'`);
    check(live2 !== a.live, `the live region did not change in 2.2 s: '${live2}'`);
    check(named === 1, `the accessibility tree has ${named} applications named 'ekvae demo'`);
    check(a.focused, 'the page on its own should focus the canvas (arrow keys work at once)');
    check(errs.length === 0, errs.join(' | '));
    await p.close();
    return `live: '${live2}'`;
  });
}
