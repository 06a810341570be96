// arm.checks.mjs: the two-link arm in the page (world=arm): its physics against an independent
// RK4, its shipped model, keys per joint, dragging the hand, switching worlds. Run by
// page.test.mjs, which passes its test() and browser context.
import path from 'node:path';

import { angleDiff, armReferenceSteps, check, openPage, sleep, waitReady } from './helpers.mjs';

export async function armChecks({ test, context, base, outDir }) {
    await test('world=arm: the two-link arm with two torques; its steps match an independent RK4', async () => {
      const errs = [];
      const o = await openPage(context, `${base}/index.html?world=arm`, errs);
      await waitReady(o.page, o.t0);
      const r = await o.page.evaluate(() => {
        const e = window.ekvae;
        e.pause(true);
        const first = e.state();
        const out = {};
        for (const u of [[0, 0], [1.5, -1], [-3, 3]]) {
          e.reset([0.3, -0.5, 1, -1]);
          e.setTorque(u);
          e.step(40);
          out[u.join(',')] = e.state();
        }
        e.setTorque(0.7, 1);
        const one = e.state().torque_settings;
        let badReset = null;
        try { e.reset(1, 2); } catch (err) { badReset = err.message; }
        e.setTorque([0, 0]);
        return { first, out, one, badReset };
      });
      check(r.first.world === 'arm' && r.first.state.length === 4 && r.first.torques.length === 2 &&
            r.first.image_size === 24, `state: world ${r.first.world}, ${r.first.state_names}, image ${r.first.image_size}`);
      check(r.first.world_models.every((n) => n.startsWith('arm-')), `world models ${r.first.world_models}`);
      // the world's title and which components are angles (the live summary names the angles by them)
      check(r.first.world_title === 'two-link arm' && JSON.stringify(r.first.state_angles) === '[true,true,false,false]',
            `world_title ${r.first.world_title}, state_angles ${JSON.stringify(r.first.state_angles)}`);
      let worst = 0;
      for (const u of [[0, 0], [1.5, -1], [-3, 3]]) {
        const ref = armReferenceSteps([0.3, -0.5, 1, -1], u, 40), s = r.out[u.join(',')];
        worst = Math.max(worst, ...ref.map((v, i) => (i < 2 ? angleDiff(v, s.state[i]) : Math.abs(v - s.state[i]))));
        check(s.steps === 40 && Math.abs(s.t - 2) < 1e-9, `u=${u}: steps ${s.steps}, t ${s.t}`);
      }
      check(worst < 1e-6, `page vs reference: max difference ${worst}`);
      check(r.out['-3,3'].torques[0] === -2 && r.out['-3,3'].torques[1] === 2, `torques not clipped: ${r.out['-3,3'].torques}`);
      check(r.one[0] === -2 && r.one[1] === 0.7, `setTorque(0.7, 1) set ${r.one}`);
      check(r.badReset && r.badReset.includes('array'), `reset(theta, omega) on the arm: ${r.badReset}`);
      await o.page.screenshot({ path: path.join(outDir, 'arm.png') });
      check(errs.length === 0, errs.join(' | '));
      await o.page.close();
      return `40 steps under 3 torque pairs: max |page - reference| ${worst.toExponential(1)}`;
    });

    await test('arm: the shipped arm model filters both joints and forecasts every state component', async () => {
      const errs = [];
      const o = await openPage(context, `${base}/index.html?world=arm&horizon=20`, errs);
      await waitReady(o.page, o.t0);
      const r = await o.page.evaluate(() => {
        const e = window.ekvae;
        e.pause(true);
        e.reset([0.5, -1.0, 1.5, -2.0]);
        const errs1 = [], errs2 = [];
        for (let k = 0; k < 100; k++) {
          e.setTorque([Math.sin(0.1 * k), Math.cos(0.13 * k)]);
          e.step(1);
          const s = e.state();
          if (k >= 20) { errs1.push([s.state[0], s.estimate.value[0]]); errs2.push([s.state[1], s.estimate.value[1]]); }
        }
        e.setTorque([0, 0]);
        return { errs1, errs2, s: e.state() };
      });
      const mean = (xs) => xs.map(([a, b]) => angleDiff(a, b)).reduce((x, y) => x + y, 0) / xs.length;
      const m1 = mean(r.errs1), m2 = mean(r.errs2), f = r.s.forecast;
      check(r.s.model === 'arm-constrained.safetensors', `model ${r.s.model}, error ${r.s.error}`);
      check(r.s.estimate.value.length === 4 && r.s.estimate.sigmas.length === 4, `estimate ${JSON.stringify(r.s.estimate)}`);
      for (const n of ['theta1', 'theta2', 'omega1', 'omega2']) {
        const c = f.components[n];
        check(c && c.mean.length === 20 && c.sigma.length === 20 && c.true.length === 20 && c.mean.every(Number.isFinite),
              `forecast of ${n}: ${JSON.stringify(c)}`);
      }
      check(f.torques.length === 2, `forecast torques ${f.torques}`);
      // joint 1's angle is read out linearly (r2 of cos, sin 0.91, 0.87 on ekvae_eval's test set):
      // far better than chance (a mean wrapped error of pi/2); the shipped arm model's latent holds
      // joint 2 mostly non-linearly (k-NN r2 of cos 0.97, linear 0.42, of sin 0.13: docs/results.md),
      // so its read-out is not checked
      check(m1 < 0.4, `mean filtered angle error of joint 1 ${m1.toFixed(3)} rad over 80 steps`);
      check(Number.isFinite(m2), `joint 2: ${m2}`);
      await sleep(300);
      await o.page.screenshot({ path: path.join(outDir, 'arm-model.png') });
      check(errs.length === 0, errs.join(' | '));
      await o.page.close();
      return `mean filtered angle errors ${m1.toFixed(3)} (joint 1), ${m2.toFixed(3)} rad (joint 2, not checked)`;
    });

    await test('arm: keys turn each joint, dragging pulls the hand; setWorld switches back', async () => {
      const errs = [];
      const o = await openPage(context, `${base}/index.html?world=arm`, errs);
      await waitReady(o.page, o.t0);
      const p = o.page;
      await p.evaluate(() => { window.ekvae.reset([0, 0, 0, 0]); });
      const held = {};
      for (const k of ['ArrowRight', 'ArrowLeft', 'ArrowUp', 'ArrowDown']) {
        await p.keyboard.down(k);
        await sleep(300);
        held[k] = (await p.evaluate(() => window.ekvae.state())).torques;
        await p.keyboard.up(k);
      }
      // the arm straight up (hand at the top of the circle); the pointer to the right of the
      // pivot pulls the hand clockwise: both torques positive
      await p.evaluate(() => { window.ekvae.pause(true); window.ekvae.reset([0, 0, 0, 0]); window.ekvae.pause(false); });
      await p.mouse.move(665, 178);
      await p.mouse.down();
      await sleep(300);
      const dragged = await p.evaluate(() => window.ekvae.state());
      await p.mouse.up();
      const back = await p.evaluate(() => { window.ekvae.setWorld('pendulum'); return window.ekvae.state(); });
      let bad = null;
      try { await p.evaluate(() => window.ekvae.setWorld('cartpole')); } catch (err) { bad = err.message; }
      check(held.ArrowRight[0] === 2 && held.ArrowRight[1] === 0 && held.ArrowLeft[0] === -2, `<- / ->: ${JSON.stringify(held)}`);
      check(held.ArrowUp[1] === 2 && held.ArrowUp[0] === 0 && held.ArrowDown[1] === -2, `up / down: ${JSON.stringify(held)}`);
      check(dragged.torques[0] > 0.5 && dragged.torques[1] > 0.2, `drag torques ${dragged.torques}`);
      check(back.world === 'pendulum' && back.state.length === 2 && back.image_size === 16, `after setWorld: ${back.world}`);
      check(bad && bad.includes("no world called 'cartpole'"), `setWorld('cartpole'): ${bad}`);
      check(errs.length === 0, errs.join(' | '));
      await p.close();
      return `drag torques ${dragged.torques.map((v) => v.toFixed(2)).join(', ')}`;
    });
}
