// ekvae-page.js: starts the ekvae WebAssembly app on the page's #canvas and publishes the JS
// API window.ekvae (documented in web/README.md). Plain script, no build step.
(function () {
  'use strict';

  const overlay = document.getElementById('overlay');
  const statusEl = document.getElementById('status');
  const canvas = document.getElementById('canvas');

  function showStatus(text, isError) {
    statusEl.textContent = text;
    overlay.classList.toggle('error', !!isError);
    overlay.classList.remove('hidden');
  }

  // URL parameters -> app options. Invalid values are ignored with a console warning, so a
  // typo in an embed never stops the demo. Options that need the model are kept for it.
  function parseOptions(search) {
    const q = new URLSearchParams(search);
    const opt = { horizon: 30, torque: 'hold', compare: false, model: null, ui: 'full' };
    const warn = (name, v) => console.warn(`ekvae: ignoring ${name}=${v}`);
    if (q.has('horizon')) {
      const h = Number(q.get('horizon'));
      if (Number.isInteger(h) && h >= 1 && h <= 200) opt.horizon = h; else warn('horizon', q.get('horizon'));
    }
    if (q.has('torque')) {
      const t = q.get('torque');
      if (t === 'hold' || t === 'zero') opt.torque = t; else warn('torque', t);
    }
    if (q.has('compare')) {
      const c = q.get('compare');
      opt.compare = c === '' || c === '1' || c === 'true' || c === 'on';
    }
    if (q.has('model')) {
      const m = q.get('model');
      if (/^[\w.-]+$/.test(m)) opt.model = m; else warn('model', m);
    }
    if (q.has('ui')) {
      const u = q.get('ui');
      if (u === 'minimal' || u === 'full') opt.ui = u; else warn('ui', u);
    }
    return opt;
  }

  function appArguments(opt) {
    const args = ['--horizon', String(opt.horizon), '--torque', opt.torque, '--ui', opt.ui];
    if (opt.compare) args.push('--compare', '1');
    if (opt.model) args.push('--model', opt.model);
    return args;
  }

  function hasWebGL2() {
    try { return !!document.createElement('canvas').getContext('webgl2'); } catch (e) { return false; }
  }

  const options = parseOptions(window.location.search);
  let resolveReady, rejectReady;
  const ready = new Promise((res, rej) => { resolveReady = res; rejectReady = rej; });
  ready.catch(() => {}); // failures are shown on the page; callers still see the rejection

  let mod = null; // the Emscripten module once the app has drawn its first frame
  function need() {
    if (!mod) throw new Error('ekvae is not ready yet: await ekvae.ready first');
    return mod;
  }

  const api = {
    ready,                 // resolves with this object after the first frame; rejects on failure
    options,               // the URL parameters as understood
    models: [],            // shipped model files (models/index.json); used once the model exists
    setTorque(u) {         // slider torque, clipped to [-2, 2]
      u = Number(u);
      if (!Number.isFinite(u)) throw new TypeError('setTorque: u must be a finite number');
      need()._ekvae_set_torque(u);
    },
    reset(theta = Math.PI, omega = 0) { // true state; time back to 0
      theta = Number(theta); omega = Number(omega);
      if (!Number.isFinite(theta) || !Number.isFinite(omega)) throw new TypeError('reset: finite numbers expected');
      need()._ekvae_reset(theta, omega);
    },
    cover(on = true) { need()._ekvae_cover(on ? 1 : 0); },   // withhold frames from the filter
    pause(on = true) { need()._ekvae_pause(on ? 1 : 0); },   // stop real-time stepping
    step(n = 1) {                                            // advance n world steps now
      n = Math.floor(Number(n));
      if (!(n >= 0)) throw new TypeError('step: n must be a non-negative number');
      need()._ekvae_step(n);
    },
    state() {              // {t, theta, omega, torque, covered, ..., estimate, forecast, model_ms}
      const m = need();
      return JSON.parse(m.UTF8ToString(m._ekvae_state_json()));
    },
  };
  window.ekvae = api;

  function fail(message) {
    showStatus(message, true);
    rejectReady(new Error(message));
  }

  if (!hasWebGL2()) {
    fail('This demo needs WebGL2, which this browser (or its settings) does not provide. ' +
         'Try a current Firefox, Chrome, Edge or Safari with hardware acceleration on.');
    return;
  }

  // The shipped models, for later (a missing or empty list is fine).
  fetch('models/index.json').then(r => (r.ok ? r.json() : { models: [] }))
    .then(j => { api.models = Array.isArray(j.models) ? j.models : []; })
    .catch(() => {});

  const script = document.createElement('script');
  script.src = 'ekvae.js';
  script.onerror = () => fail('Could not load ekvae.js (is the site complete?).');
  script.onload = () => {
    if (typeof createEkvae !== 'function') { fail('ekvae.js did not define createEkvae.'); return; }
    let started = null;
    const moduleArgs = {
      canvas,
      arguments: appArguments(options),
      print: (t) => console.log(t),
      printErr: (t) => console.warn(t),
      onAppReady() {
        mod = started;
        overlay.classList.add('hidden');
        canvas.focus();
        resolveReady(api);
      },
      onAppError(message) { fail('ekvae: ' + message); },
      onAbort(what) { fail('ekvae stopped: ' + what); },
    };
    started = moduleArgs; // the module object is moduleArgs itself, extended by the runtime
    createEkvae(moduleArgs).catch((e) => fail('Could not start ekvae: ' + (e && e.message ? e.message : e)));
  };
  document.head.appendChild(script);
})();
