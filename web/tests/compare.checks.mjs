// compare.checks.mjs: compare mode, both shipped pendulum models on one pendulum: their streams,
// their running forecast scores against the 10-seed study, 10 minutes of simulated time without
// wasm memory growth, and a long covered stretch in which a diverged filter restarts. Run by
// page.test.mjs, which passes its test() and browser context.
import path from 'node:path';

import { angleDiff, check, measureFps, openPage, sleep, waitReady } from './helpers.mjs';

export async function compareChecks({ test, context, base, outDir, perf }) {
  // a new page in compare mode, both models running (each check has its own)
  const openCompare = async (errs) => {
    const o = await openPage(context, `${base}/index.html?compare=1`, errs);
    await waitReady(o.page, o.t0);
    return o;
  };

    await test('compare mode runs both shipped models on the same pendulum', async () => {
      const errs = [];
      const o = await openCompare(errs);
      const r = await o.page.evaluate(() => {
        const e = window.ekvae;
        e.pause(true);
        e.reset(Math.PI - 0.2, 0);
        for (let k = 0; k < 80; k++) { e.setTorque(k < 60 ? 2 * Math.sign(Math.sin(0.22 * k)) : 0.5); e.step(1); }
        return e.state();
      });
      const names = r.models.map((m) => m.name);
      check(r.compare === true && names.length === 2 && names.includes('pendulum-constrained.safetensors') &&
            names.includes('pendulum-elbo.safetensors'), `models: ${names}`);
      for (const m of r.models) {
        check(m.forecast && m.forecast.theta.length === 30, `${m.name}: no forecast`);
        check(angleDiff(m.estimate.theta, r.theta) < 0.5, `${m.name}: estimate ${m.estimate.theta} vs ${r.theta}`);
      }
      check(r.models[0].estimate.theta !== r.models[1].estimate.theta, 'both streams give the same estimate');
      await o.page.evaluate(() => window.ekvae.pause(false));
      await sleep(300);
      await o.page.evaluate(() => window.ekvae.pause(true));
      await sleep(300);
      await o.page.screenshot({ path: path.join(outDir, 'compare.png') });
      await o.page.evaluate(() => window.ekvae.pause(false));
      perf.fps_compare = await measureFps(o.page, 3000);
      check(errs.length === 0, errs.join(' | '));
      await o.page.close();
      return `${names.join(' + ')}; ${perf.fps_compare.toFixed(1)} FPS with both (SwiftShader, software rendering)`;
    });

    await test('compare mode: the running forecast scores order the two models as their 10-seed study does', async () => {
      const errs = [];
      const o = await openCompare(errs);
      const r = await o.page.evaluate(async () => {
        const e = window.ekvae;
        const study = await (await fetch('models/study.json')).json();
        e.pause(true);
        // 12 scripted starts around the circle, each 13 s under one constant torque (the forecasts
        // assume the torque is held, so their errors are the models' own)
        const acc = {};
        const records = {};
        for (let i = 0; i < 12; i++) {
          e.reset(-Math.PI + (2 * Math.PI * i) / 12 + 0.1, ((i % 5) - 2) * 1.5);
          e.setTorque([0, 1, -1, 0.5, -0.5, 2, -2][i % 7]);
          e.step(260);
          for (const m of e.state().models) {
            const a = (acc[m.name] = acc[m.name] || { a10: 0, a30: 0, w: 0, n: 0 });
            a.a10 += m.score.angle_err_10; a.a30 += m.score.angle_err_30; a.w += m.score.omega_err; a.n++;
            records[m.name] = m.record;
          }
        }
        for (const k in acc) { acc[k].a10 /= acc[k].n; acc[k].a30 /= acc[k].n; acc[k].w /= acc[k].n; }
        return { study, acc, records };
      });
      const c = r.acc['pendulum-constrained.safetensors'], el = r.acc['pendulum-elbo.safetensors'];
      check(c && el && c.n === 12 && el.n === 12, `scores: ${JSON.stringify(r.acc)}`);
      for (const k of ['a10', 'a30', 'w']) check(Number.isFinite(c[k]) && Number.isFinite(el[k]), `non-finite score ${k}`);
      check(r.records['pendulum-constrained.safetensors'] && r.records['pendulum-elbo.safetensors'], `records: ${JSON.stringify(r.records)}`);
      // the study's medians of the angle error at 32 steps decide which model should forecast better
      const mc = r.study.constrained.median_angle_err_32, me = r.study.elbo.median_angle_err_32;
      const separated = Math.abs(mc - me) > 0.25 * Math.max(mc, me);
      if (separated) check((mc < me) === (c.a30 < el.a30),
        `the study's medians (${mc.toFixed(3)} vs ${me.toFixed(3)} rad at 32) and the page's 30-step scores (${c.a30.toFixed(3)} vs ${el.a30.toFixed(3)}) disagree`);
      check(errs.length === 0, errs.join(' | '));
      await o.page.close();
      return `page, mean over 12 starts: constrained ${c.a10.toFixed(3)} / ${c.a30.toFixed(3)} rad at 10 / 30, velocity ${c.w.toFixed(3)}; ` +
             `ELBO ${el.a10.toFixed(3)} / ${el.a30.toFixed(3)}, velocity ${el.w.toFixed(3)}; study medians at 32: ${mc.toFixed(3)} vs ${me.toFixed(3)}` +
             (separated ? ' (ordering asserted)' : ' (the medians do not separate the objectives: ordering not asserted)');
    });

    await test('10 minutes of simulated time in compare mode: no growth of wasm memory after warm-up', async () => {
      const errs = [];
      const o = await openCompare(errs);
      const nextFrame = () => o.page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r())));
      // warm-up: a few hundred steps, forecasts drawn, the benchmark path once
      await o.page.evaluate(() => { const e = window.ekvae; e.pause(true); e.step(200); e.benchmark(20); });
      for (let i = 0; i < 3; i++) await nextFrame();
      const w = await o.page.evaluate(() => ({ m: window.ekvae.memoryBytes(), t: window.ekvae.state().t }));
      const m0 = w.m;
      // 12000 steps of dt = 0.05 s (10 minutes), both models filtering every step, torque
      // changing, the camera covered now and then; frames drawn (forecasts) between chunks
      for (let chunk = 0; chunk < 60; chunk++) {
        await o.page.evaluate((c) => {
          const e = window.ekvae;
          e.cover(c % 7 === 3);
          e.setTorque(2 * Math.sin(0.37 * c));
          e.step(200);
          e.benchmark(5);
        }, chunk);
        await nextFrame();
      }
      const r = await o.page.evaluate(() => ({ m: window.ekvae.memoryBytes(), s: window.ekvae.state() }));
      check(Math.abs(r.s.t - w.t - 600) < 1e-6, `simulated ${r.s.t - w.t} s, expected 600`);
      check(r.s.models.every((m) => m.estimate && Number.isFinite(m.estimate.theta)), 'an estimate is not finite');
      check(r.m === m0, `wasm memory grew from ${m0} to ${r.m} bytes`);
      check(errs.length === 0, errs.join(' | '));
      await o.page.close();
      perf.soak_memory_bytes = r.m;
      return `wasm memory ${(m0 / 1048576).toFixed(1)} MiB after warm-up, ${(r.m / 1048576).toFixed(1)} MiB after 600 s simulated` +
        `; filter restarts ${r.s.models.map((m) => m.filter_restarts).join(', ')}`;
    });

    await test('a long covered stretch: estimates stay finite (a diverged filter restarts from its prior)', async () => {
      // 20 minutes of open-loop prediction under a changing torque: the learned dynamics may
      // expand without bound until float overflows; the stream must then restart, not show NaN
      const errs = [];
      const o = await openCompare(errs);
      const r = await o.page.evaluate(() => {
        const e = window.ekvae;
        e.pause(true);
        e.step(50);
        e.cover(true);
        for (let c = 0; c < 24; c++) { e.setTorque(2 * Math.sin(0.9 * c)); e.step(1000); }
        const covered = e.state();
        e.cover(false);
        e.step(100);
        return { covered, after: e.state() };
      });
      for (const s of [r.covered, r.after])
        check(s.models.every((m) => m.estimate && Number.isFinite(m.estimate.theta) && Number.isFinite(m.estimate.omega)),
          `an estimate is not finite: ${JSON.stringify(s.models.map((m) => m.estimate))}`);
      const err = r.after.models.map((m) => Math.abs(Math.atan2(Math.sin(m.estimate.theta - r.after.theta), Math.cos(m.estimate.theta - r.after.theta))));
      check(err.every((x) => x < 0.3), `100 steps after uncovering the estimates are off by ${err.map((x) => x.toFixed(3)).join(', ')} rad`);
      check(errs.length === 0, errs.join(' | '));
      await o.page.close();
      return `after 24000 covered steps: filter restarts ${r.covered.models.map((m) => m.filter_restarts).join(', ')}; ` +
        `100 steps after uncovering, angle errors ${err.map((x) => x.toFixed(3)).join(', ')} rad`;
    });
}
