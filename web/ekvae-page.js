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

  // The app's worlds (ekvae::world_names()): the page checks world= before the module loads, so
  // this is the one list of them outside the core; each world's browser preset is its name +
  // '-browser' ('browser' for the pendulum; config_preset).
  const WORLDS = ['pendulum', 'arm'];
  const trainPreset = (world) => (world === 'pendulum' ? 'browser' : `${world}-browser`);
  const presetWorld = (preset) => (preset === 'browser' ? 'pendulum' : String(preset).replace(/-browser$/, ''));
  const MAX_HORIZON = 200;            // kMaxHorizon in wasm/app.h

  // URL parameters -> app options. Invalid values are ignored with a console warning, so a
  // typo in an embed never stops the demo.
  function parseOptions(search) {
    const q = new URLSearchParams(search);
    const opt = { world: 'pendulum', horizon: 30, torque: 'hold', compare: false, model: null, ui: 'full' };
    const warn = (name, v) => console.warn(`ekvae: ignoring ${name}=${v}`);
    if (q.has('world')) {
      const w = q.get('world');
      if (WORLDS.includes(w)) opt.world = w; else warn('world', w);
    }
    if (q.has('horizon')) {
      const h = Number(q.get('horizon'));
      if (Number.isInteger(h) && h >= 1 && h <= MAX_HORIZON) opt.horizon = h; else warn('horizon', q.get('horizon'));
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
    if (q.has('help')) opt.help = ['', '1', 'true', 'on'].includes(q.get('help'));
    if (q.has('paused')) opt.paused = ['', '1', 'true', 'on'].includes(q.get('paused'));
    if (q.has('state')) {  // the start state, e.g. state=2.5,0 (pendulum) or state=0.3,-0.5,1,-1 (arm)
      const v = q.get('state').split(',').map(Number);
      if (v.length >= 1 && v.length <= 8 && v.every(Number.isFinite)) opt.state = v; else warn('state', q.get('state'));
    }
    return opt;
  }

  // The help opens on the first visit (help=1 / help=0 in the URL decide), never with ui=minimal.
  const HELP_SEEN = 'ekvae.helpSeen';
  function firstVisit() {
    try { return !window.localStorage.getItem(HELP_SEEN); } catch (e) { return false; }
  }
  function appArguments(opt) {
    const args = ['--world', opt.world, '--horizon', String(opt.horizon), '--torque', opt.torque, '--ui', opt.ui];
    // touch first where the main pointer is a finger
    const touch = window.matchMedia && window.matchMedia('(pointer: coarse)').matches;
    args.push('--touch', touch ? '1' : '0');
    const help = opt.ui !== 'minimal' && (opt.help === undefined ? firstVisit() : opt.help);
    args.push('--show-help', help ? '1' : '0');
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

  // The shipped models, fetched while the wasm loads (a missing or empty list is fine).
  const shippedModels = fetch('models/index.json')
    .then((r) => (r.ok ? r.json() : { models: [] }))
    .then((j) => (Array.isArray(j.models) ? j.models.filter((n) => typeof n === 'string') : []))
    .catch(() => []);

  // Model loads in flight (the app asks for shipped models; users load their own files).
  const pending = new Set();
  function track(p) {
    pending.add(p);
    p.finally(() => pending.delete(p)).catch(() => {});
    return p;
  }

  // Source -> bytes: ArrayBuffer, a typed array, a Blob/File, or a URL string.
  async function toBytes(source) {
    if (source instanceof ArrayBuffer) return new Uint8Array(source);
    if (ArrayBuffer.isView(source)) return new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
    if (typeof Blob !== 'undefined' && source instanceof Blob) return new Uint8Array(await source.arrayBuffer());
    if (typeof source === 'string') {
      const r = await fetch(source);
      if (!r.ok) throw new Error(`could not fetch ${source}: HTTP ${r.status}`);
      return new Uint8Array(await r.arrayBuffer());
    }
    throw new TypeError('loadModel: expected an ArrayBuffer, a typed array, a Blob/File or a URL');
  }

  // Hands the bytes to the app (copied into wasm memory). Resolves with the name when the
  // model runs; rejects with the app's reason otherwise (the previous model keeps running).
  function loadIntoApp(bytes, slot, name) {
    const m = need();
    const ptr = m._malloc(Math.max(bytes.length, 1));
    try {
      m.HEAPU8.set(bytes, ptr);
      const ok = m.ccall('ekvae_load_model_bytes', 'number', ['number', 'number', 'number', 'string'],
                         [ptr, bytes.length, slot, name]);
      if (!ok) throw new Error(m.UTF8ToString(m._ekvae_last_error()) || `${name}: refused`);
      return name;
    } finally {
      m._free(ptr);
    }
  }

  function loadModel(source, opts = {}) {
    const slot = opts.slot === 1 ? 1 : 0;
    const name = String(opts.name || (source && source.name) ||
                        (typeof source === 'string' ? source.split('/').pop() : 'your-model.safetensors'));
    return track((async () => {
      need();
      let bytes;
      try {
        bytes = await toBytes(source);
      } catch (e) {
        const msg = `${name}: ${e && e.message ? e.message : e}`;
        mod.ccall('ekvae_set_loading', null, ['string', 'string'], ['', msg]);
        throw new Error(msg);
      }
      return loadIntoApp(bytes, slot, name);
    })());
  }

  // ---- Training in the page: the core's Trainer in a Web Worker (ekvae-train-worker.js) ------
  // The worker posts progress, latent plots, model snapshots and the final model; the app's Train
  // panel draws them (ekvae_train_report) and the live filter runs the snapshots while the
  // panel's "live filter uses this model" is on. One run at a time; it survives model switches.
  const training = { worker: null, ready: null, run: null, state: null, last: null };
  function report(type, msg) {
    if (!mod) return;
    const { bytes, ...rest } = msg; // eslint-disable-line no-unused-vars
    mod.ccall('ekvae_train_report', null, ['string', 'string'], [type, JSON.stringify(rest)]);
  }
  function trainer() {
    if (training.ready) return training.ready;
    training.ready = new Promise((resolve, reject) => {
      let w;
      try { w = new Worker('ekvae-train-worker.js'); } catch (e) {
        reject(new Error('this page cannot start a Web Worker here (' + (e && e.message ? e.message : e) + '); serve it over http'));
        return;
      }
      training.worker = w;
      w.onerror = (e) => {
        const err = new Error('the training worker failed: ' + (e.message || 'could not load ekvae-train-worker.js / ekvae_train.js'));
        reject(err);
        finishRun(null, err);
      };
      w.onmessage = (e) => onWorker(e.data || {}, resolve);
    });
    training.ready.catch(() => { training.ready = null; });
    return training.ready;
  }
  function finishRun(result, err) {
    const run = training.run;
    training.run = null;
    training.state = null;
    if (!run) return;
    if (err) { report('error', { message: err.message }); run.reject(err); } else run.resolve(result);
  }
  function onWorker(m, resolveReady) {
    if (m.type === 'ready') { resolveReady(training.worker); return; }
    if (m.type === 'progress') {
      const sr = m.series || {}, last = (k) => (sr[k] && sr[k].length ? sr[k][sr[k].length - 1] : (training.state ? training.state[k] : null));
      training.state = { running: true, step: m.step, steps: m.steps, D: last('D'), R: last('R'), lambda: last('lambda'),
                         elbo: last('elbo'), steps_per_s: m.steps_per_s, eta_s: m.eta_s, seconds: m.seconds,
                         choosing: m.choosing, heap_bytes: m.heap_bytes, threads: m.threads, snapshot_step: training.state ? training.state.snapshot_step : null };
      report('progress', m);
    } else if (m.type === 'latent') {
      report('latent', m);
    } else if (m.type === 'model') {
      // the live filter switches to the model in training, through the same load path as a user's file
      if (mod && mod._ekvae_train_follow()) {
        try {
          loadIntoApp(new Uint8Array(m.bytes), 0, 'training.safetensors');
          mod._ekvae_train_snapshot(m.step);
          if (training.state) training.state.snapshot_step = m.step;
        } catch (e) { console.warn('ekvae: snapshot at step ' + m.step + ' not loaded: ' + e.message); }
      }
    } else if (m.type === 'finished') {
      training.last = { bytes: m.bytes, config: training.run ? training.run.config : null };
      if (mod && mod._ekvae_train_follow()) {
        try { loadIntoApp(new Uint8Array(m.bytes), 0, 'training.safetensors'); mod._ekvae_train_snapshot(m.step); } catch (e) {
          console.warn('ekvae: the trained model did not load: ' + e.message);
        }
      }
      report('finished', m);
      finishRun({ steps: m.step, seconds: m.seconds, stopped: m.stopped, threads: m.threads, metrics: m.metrics, model: m.bytes.slice(0) });
    } else if (m.type === 'error') {
      finishRun(null, new Error(m.message));
    }
  }
  // Starts a run (config: the worker's {preset, objective, seed, steps}); the Train panel shows it.
  function startRun(config, resume, evalSequences) {
    if (training.run) return Promise.reject(new Error('a training run is in progress: ekvae.stopTraining() first'));
    let run;
    const p = new Promise((resolve, reject) => { run = { resolve, reject, config }; });
    training.run = run;
    training.state = { running: true, step: 0, steps: config.steps || null, D: null, R: null, lambda: null, steps_per_s: 0, eta_s: null };
    report(resume ? 'resumed' : 'started', config);
    trainer().then((w) => w.postMessage(resume ? { type: 'resume', steps: config.steps } : { type: 'start', config, evalSequences }),
                   (e) => finishRun(null, e));
    return p;
  }
  function train(opts = {}) {
    need();
    const world = opts.world === undefined ? 'pendulum' : String(opts.world);
    if (!WORLDS.includes(world)) return Promise.reject(new RangeError(`train: world '${world}' (there are: ${WORLDS.join(', ')})`));
    const objective = opts.objective === undefined ? 'constrained' : String(opts.objective);
    if (objective !== 'constrained' && objective !== 'elbo') return Promise.reject(new RangeError("train: objective 'constrained' or 'elbo'"));
    const seed = opts.seed === undefined ? 0 : Number(opts.seed);
    if (!Number.isInteger(seed) || seed < 0) return Promise.reject(new RangeError('train: seed must be a non-negative integer'));
    const config = { preset: trainPreset(world), objective, seed };
    if (opts.steps !== undefined) {
      const n = Number(opts.steps);
      if (!Number.isInteger(n) || n < 1) return Promise.reject(new RangeError('train: steps must be a positive integer'));
      config.steps = n;
    }
    if (opts.threads !== undefined) { // default: the worker's (several on cross-origin isolated pages, else 1)
      const n = Number(opts.threads);
      if (!Number.isInteger(n) || n < 1) return Promise.reject(new RangeError('train: threads must be a positive integer'));
      config.threads = n;
    }
    let evalSequences; // the final quality check's test set (the worker's default: 200, ekvae_eval's)
    if (opts.evalSequences !== undefined) {
      const n = Number(opts.evalSequences);
      if (!Number.isInteger(n) || n < 2 || n > 1000) return Promise.reject(new RangeError('train: evalSequences must be an integer from 2 to 1000'));
      evalSequences = n;
    }
    for (const [k, v] of Object.entries(opts.config || {})) config[k] = v; // any other config key (advanced)
    mod._ekvae_train_panel(1);
    return startRun(config, false, evalSequences);
  }
  function downloadTrained() {
    if (!training.last) return;
    const c = training.last.config || {};
    const world = presetWorld(c.preset || 'browser');
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([training.last.bytes], { type: 'application/octet-stream' }));
    a.download = `${world}-${c.objective || 'model'}-seed${c.seed === undefined ? 0 : c.seed}-browser.safetensors`;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  const api = {
    ready,                 // resolves with this object once the first frame is drawn and the default model(s) loaded
    options,               // the URL parameters as understood
    models: [],            // shipped model files (models/index.json)
    timing: {},            // {first_frame_ms, ready_ms} after navigation start
    // Slider torques, clipped to the world's range: setTorque(u) sets joint 1, setTorque([u1, u2])
    // every joint, setTorque(u, j) joint j (0-based).
    setTorque(u, j) {
      const m = need();
      const list = Array.isArray(u) ? u.map(Number) : [Number(u)];
      if (!list.length || !list.every(Number.isFinite)) throw new TypeError('setTorque: finite numbers expected');
      const first = Array.isArray(u) ? 0 : Math.floor(Number(j) || 0);
      list.forEach((v, k) => m._ekvae_set_torque(first + k, v));
    },
    // The true state; time back to 0; the filters restart. reset(theta, omega) for the pendulum,
    // reset([theta1, theta2, omega1, omega2]) for the arm (state order: state().state_names);
    // reset() puts the world back at its start.
    reset(theta, omega = 0) {
      let s = null;
      if (Array.isArray(theta)) s = theta.map(Number);
      else if (theta !== undefined) s = [Number(theta), Number(omega)];
      if (s && !s.every(Number.isFinite)) throw new TypeError('reset: finite numbers expected');
      if (s && !Array.isArray(theta) && api.state().world !== 'pendulum') {
        throw new TypeError('reset(theta, omega) is the pendulum\'s; pass the whole state as an array');
      }
      need().ccall('ekvae_reset', null, ['string'], [JSON.stringify(s)]);
    },
    // Switches the system ('pendulum' or 'arm') and loads its shipped model(s).
    setWorld(name) {
      const m = need();
      if (!m.ccall('ekvae_set_world', 'number', ['string'], [String(name)])) {
        throw new RangeError(m.UTF8ToString(m._ekvae_last_error()));
      }
    },
    cover(on = true) { need()._ekvae_cover(on ? 1 : 0); },   // withhold frames from the filter
    pause(on = true) { need()._ekvae_pause(on ? 1 : 0); },   // stop real-time stepping
    step(n = 1) {                                            // advance n world steps now (filter included)
      n = Math.floor(Number(n));
      if (!(n >= 0)) throw new TypeError('step: n must be a non-negative number');
      need()._ekvae_step(n);
    },
    setCompare(on = true) { need()._ekvae_set_compare(on ? 1 : 0); },
    setHorizon(h) {
      h = Math.floor(Number(h));
      if (!(h >= 1 && h <= 200)) throw new RangeError('setHorizon: 1..200 frames');
      need()._ekvae_set_horizon(h);
    },
    setTorqueMode(mode) {
      if (mode !== 'hold' && mode !== 'zero') throw new RangeError("setTorqueMode: 'hold' or 'zero'");
      need()._ekvae_set_torque_mode(mode === 'zero' ? 1 : 0);
    },
    // Loads a model file (ArrayBuffer, typed array, Blob/File or URL) into slot 0 (or 1, the
    // compared model). Resolves with its name; rejects with the reason when the file is refused.
    loadModel,
    // Times n frames of model work (filter step + H-step forecast with decoding) on the
    // current state: {median_ms, mean_ms, n, horizon, slot}; null without a model.
    benchmark(n = 1000, opts = {}) {
      const m = need();
      const H = opts.horizon || 30, slot = opts.slot === 1 ? 1 : 0;
      return JSON.parse(m.UTF8ToString(m._ekvae_benchmark(Math.max(1, Math.floor(n)), H, slot)));
    },
    memoryBytes() { return need().HEAPU8.length; },          // the size of the wasm memory (it only grows)
    // A link to this page that restores the set-up: world, model, horizon, torque assumption,
    // compare mode, ui, and the current state as the start state (the app's "Copy link").
    shareLink() {
      const s = api.state(), q = new URLSearchParams();
      q.set('world', s.world);
      if (s.model) q.set('model', s.model);
      q.set('horizon', String(s.horizon));
      q.set('torque', s.torque_mode);
      if (s.compare) q.set('compare', '1');
      if (options.ui === 'minimal') q.set('ui', 'minimal');
      q.set('state', s.state.map((v) => +v.toFixed(4)).join(','));
      if (s.paused) q.set('paused', '1');
      return `${location.origin}${location.pathname}?${q.toString()}`;
    },
    state() {              // {t, theta, omega, torque, covered, estimate, forecast, model_ms, model, error, training, ...}
      const m = need();
      const s = JSON.parse(m.UTF8ToString(m._ekvae_state_json()));
      s.training = training.state ? { ...training.state } : null;
      return s;
    },
    // Trains a model in a Web Worker: {objective: 'constrained'|'elbo', seed, steps, world, threads}
    // (defaults: constrained, 0, the browser preset's 6000, pendulum, and min(4, cores) threads on
    // a cross-origin isolated page, else 1). Resolves with {steps, seconds, stopped, threads,
    // metrics: {bar, bar_met, metrics}, model: ArrayBuffer (a .safetensors file)}.
    train,
    // Stops the run after its current chunk of steps; train()'s promise resolves with the model so far.
    stopTraining() { if (training.run && training.worker) training.worker.postMessage({ type: 'stop' }); },
    // Continues the last stopped run to its step count (or `steps` more after a finished one).
    resumeTraining(steps) { need(); return startRun({ ...(training.last && training.last.config), steps: steps || 1000 }, true); },
  };
  window.ekvae = api;

  // A good guest in a course page: embedded, the mouse wheel over the demo scrolls the page around
  // it (on its own page the wheel scrolls the app's long tabs). Tab / Shift+Tab first move the
  // keys between the torque and the app's controls (ImGui's keyboard navigation), then move the
  // focus on to the page. Both are handled here, in the capture phase, before SDL's handlers on
  // the canvas (which would call preventDefault).
  const embedded = window.top !== window.self;
  window.addEventListener('wheel', (e) => { if (embedded && e.target === canvas) e.stopImmediatePropagation(); },
                          { capture: true, passive: true });
  for (const type of ['keydown', 'keyup', 'keypress']) {
    window.addEventListener(type, (e) => {
      if (e.key !== 'Tab') return;
      e.stopImmediatePropagation();
      if (type === 'keydown' && mod && document.activeElement === canvas && mod._ekvae_tab(e.shiftKey ? 1 : 0)) e.preventDefault();
    }, { capture: true });
  }

  // The live summary for screen readers (#live, aria-live polite), renewed once a second.
  function summary(s) {
    const f = (x) => (x >= 0 ? '' : 'minus ') + Math.abs(x).toFixed(2);
    const names = s.state_names, isAngle = s.state_angles || names.map((n) => n.startsWith('theta'));
    const angles = names.filter((n, i) => isAngle[i]);
    const title = s.world_title || s.world;
    const parts = [`${title.charAt(0).toUpperCase()}${title.slice(1)}, time ${s.t.toFixed(1)} seconds.`];
    for (const n of angles) {
      const i = names.indexOf(n);
      let t = `True ${n} ${f(s.state[i])} radians`;
      if (s.estimate) t += `, estimated ${f(s.estimate.value[i])}`;
      if (s.forecast && s.forecast.components[n]) {
        const c = s.forecast.components[n], H = c.mean.length;
        t += `, forecast ${(H * s.dt).toFixed(1)} seconds ahead ${f(c.mean[H - 1])}, truly ${f(c.true[H - 1])}`;
      }
      parts.push(t + '.');
    }
    if (!s.model_loaded) parts.push('No model loaded.');
    if (s.covered) parts.push('The camera is covered: the model only predicts.');
    return parts.join(' ');
  }
  function startLiveSummary() {
    const live = document.getElementById('live');
    if (!live) return;
    const tick = () => { try { live.textContent = summary(api.state()); } catch (e) { /* not ready */ } };
    tick();
    setInterval(tick, 1000);
  }

  // The same API for course pages on another origin, by postMessage to the iframe's window:
  //   iframe.contentWindow.postMessage({ekvae: 'call', id, method, args: [...]}, '*')
  // answers {ekvae: 'result', id, result} or {ekvae: 'result', id, error} to the sender; the
  // demo posts {ekvae: 'ready', world} to its parent once ready. Methods: those of window.ekvae
  // that take plain values (no loadModel, whose sources are files).
  const REMOTE = ['state', 'setTorque', 'reset', 'setWorld', 'cover', 'pause', 'step', 'setCompare', 'setHorizon',
                  'setTorqueMode', 'benchmark', 'memoryBytes'];
  window.addEventListener('message', async (e) => {
    const m = e.data;
    if (!m || typeof m !== 'object' || m.ekvae !== 'call' || !e.source) return;
    const reply = (r) => e.source.postMessage({ ekvae: 'result', id: m.id, ...r }, e.origin === 'null' ? '*' : e.origin);
    try {
      if (!REMOTE.includes(m.method)) throw new Error(`unknown method '${m.method}' (there are: ${REMOTE.join(', ')})`);
      await ready;
      reply({ result: await api[m.method](...(Array.isArray(m.args) ? m.args : [])) });
    } catch (err) {
      reply({ error: err && err.message ? err.message : String(err) });
    }
  });

  function fail(message) {
    showStatus(message, true);
    rejectReady(new Error(message));
  }

  if (!hasWebGL2()) {
    fail('This demo needs WebGL2, which this browser (or its settings) does not provide. ' +
         'Try a current Firefox, Chrome, Edge or Safari with hardware acceleration on.');
    return;
  }

  // Your own model: the file picker (opened from the app's button) and drag-and-drop.
  const picker = document.getElementById('model-file');
  if (picker) {
    picker.addEventListener('change', () => {
      const f = picker.files && picker.files[0];
      picker.value = '';
      if (f && mod) loadModel(f).catch((e) => console.warn('ekvae: ' + e.message));
    });
  }
  const app = document.getElementById('app');
  let dragDepth = 0;
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes('Files');
  window.addEventListener('dragenter', (e) => { if (hasFiles(e)) { dragDepth++; app.classList.add('dropping'); } });
  window.addEventListener('dragleave', () => { if (--dragDepth <= 0) { dragDepth = 0; app.classList.remove('dropping'); } });
  window.addEventListener('dragover', (e) => { if (hasFiles(e)) e.preventDefault(); });
  window.addEventListener('drop', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth = 0;
    app.classList.remove('dropping');
    const f = e.dataTransfer.files[0];
    if (f && mod) loadModel(f).catch((err) => console.warn('ekvae: ' + err.message));
  });

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
      async onAppReady() {
        mod = started;
        api.timing.first_frame_ms = performance.now();
        overlay.classList.add('hidden');
        // The page on its own takes the focus (the arrow keys work at once); embedded in a course
        // page it does not: the reader clicks into it (or tabs to it) first.
        if (!embedded) canvas.focus({ preventScroll: true });
        const names = await shippedModels;
        api.models = names;
        mod.ccall('ekvae_set_models', null, ['string'], [JSON.stringify(names)]);
        await Promise.allSettled([...pending]);
        if (options.paused) api.pause(true);
        if (options.state) api.reset(options.state);
        api.timing.ready_ms = performance.now();
        resolveReady(api);
        startLiveSummary();
        if (window.parent !== window) window.parent.postMessage({ ekvae: 'ready', world: api.state().world }, '*');
      },
      // The app asks for a shipped model (the default one, the model selector, compare mode).
      onRequestModel(name, slot) {
        loadModel('models/' + encodeURIComponent(name), { slot, name })
          .catch((e) => console.warn('ekvae: ' + e.message));
      },
      onOpenFilePicker() { if (picker) picker.click(); },
      onTrainStart(config) { startRun(JSON.parse(config), false).catch((e) => console.warn('ekvae: training: ' + e.message)); },
      onTrainStop() { api.stopTraining(); },
      onTrainResume() { api.resumeTraining().catch((e) => console.warn('ekvae: training: ' + e.message)); },
      onTrainDownload() { downloadTrained(); },
      onHelpSeen() { try { window.localStorage.setItem(HELP_SEEN, '1'); } catch (e) { /* private mode */ } },
      // "Copy link": the share link to the clipboard (where the browser allows it), else shown
      onCopyLink() {
        const link = api.shareLink();
        api.lastShareLink = link;
        const shown = () => window.prompt('A link to this set-up:', link);
        if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(link).catch(shown);
        else shown();
      },
      onAppError(message) { fail('ekvae: ' + message); },
      onAbort(what) { fail('ekvae stopped: ' + what); },
    };
    started = moduleArgs; // the module object is moduleArgs itself, extended by the runtime
    createEkvae(moduleArgs).catch((e) => fail('Could not start ekvae: ' + (e && e.message ? e.message : e)));
  };
  document.head.appendChild(script);
})();
