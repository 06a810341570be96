// ekvae-train-worker.js: a Web Worker that trains an ekvae model with the core's Trainer
// (ekvae_train.js / .wasm, built from wasm/train_worker.cpp), so the page stays responsive.
//
// Messages in:  {type: 'start', config: {preset, objective, seed, steps, ...config keys}, evalSequences}
//               (evalSequences: the final quality check's test set, 200 sequences by default)
//               {type: 'stop'}              stop after the current chunk; the run stays in memory
//               {type: 'resume', steps: N}  continue a stopped (or finished) run for N more steps
// Threads: a cross-origin isolated page (SharedArrayBuffer; scripts/serve.sh sends the headers)
// gets the multi-threaded build (ekvae_train_mt.js, the Trainer's threads as pthreads) and
// min(MAX_THREADS, navigator.hardwareConcurrency) threads unless config.threads says otherwise;
// any other page the single-threaded ekvae_train.js and one thread.
// Messages out: {type: 'ready', threads} once (the default thread count), then per run:
//               {type: 'progress', step, steps, seconds, steps_per_s, eta_s, choosing, start, starts,
//                series: {step, D, R, lambda, elbo}, heap_bytes}       every chunk (~100 ms)
//               {type: 'latent', x, y, state, state_names}            about once a second
//               {type: 'model', bytes: ArrayBuffer, step}             a snapshot every ~4 s
//               {type: 'finished', stopped, step, seconds, bytes: ArrayBuffer, metrics}  at the end or a stop
//               {type: 'error', message}
'use strict';

const CHUNK_MS = 100;        // one tw_run call; a Stop is read between chunks
const LATENT_EVERY_MS = 1000;
const SNAPSHOT_EVERY_MS = 4000;
const SNAPSHOT_READOUT = 50; // sequences the live snapshots' read-out is fitted on (the final file: 200)
const FINAL_READOUT = 200;
const EVAL_SEQUENCES = 200;  // the final quality check's test set unless the start message says (2 to 1000)
const LATENT_SEQUENCES = 12; // held-out sequences in the latent plot (12 x 64 points)

const MAX_THREADS = 4;        // the pthread pool of ekvae_train_mt (wasm/CMakeLists.txt) + this thread
const MULTI = self.crossOriginIsolated === true && typeof SharedArrayBuffer === 'function';
const SCRIPT = MULTI ? 'ekvae_train_mt.js' : 'ekvae_train.js';
const DEFAULT_THREADS = MULTI ? Math.max(1, Math.min(MAX_THREADS, navigator.hardwareConcurrency || 1)) : 1;

importScripts(SCRIPT);

let M = null;
let running = false, stopRequested = false, hasRun = false, threads = 1, evalSequences = EVAL_SEQUENCES;

function str(p) { return M.UTF8ToString(p); }
function call(name, ret, types, args) { return M.ccall(name, ret, types, args); }

function modelBytes(readout) {
  const n = call('tw_model', 'number', ['number'], [readout]);
  const p = call('tw_buffer', 'number', [], []);
  return M.HEAPU8.slice(p, p + n).buffer; // a copy the page owns
}

function post(msg, transfer) { self.postMessage(msg, transfer || []); }

async function loop() {
  running = true;
  let lastLatent = 0, lastSnapshot = performance.now();
  let rate = 0, lastStep = null, lastT = performance.now();
  for (;;) {
    if (stopRequested) break;
    const p = JSON.parse(str(call('tw_run', 'number', ['number'], [CHUNK_MS])));
    const now = performance.now();
    if (lastStep !== null && p.step > lastStep) {
      const r = (p.step - lastStep) / ((now - lastT) / 1000);
      rate = rate ? 0.8 * rate + 0.2 * r : r;
    }
    lastStep = p.step; lastT = now;
    post({type: 'progress', step: p.step, steps: p.steps, seconds: p.seconds, steps_per_s: rate,
          eta_s: rate > 0 ? (p.steps - p.step) / rate : null, choosing: p.choosing, start: p.start,
          starts: p.starts, rejected: p.rejected, series: p.series, threads,
          heap_bytes: call('tw_heap_bytes', 'number', [], [])});
    if (p.done) break;
    if (now - lastLatent > LATENT_EVERY_MS) {
      post(Object.assign({type: 'latent', step: p.step}, JSON.parse(str(call('tw_latent', 'number', ['number'], [LATENT_SEQUENCES])))));
      lastLatent = performance.now();
    }
    if (now - lastSnapshot > SNAPSHOT_EVERY_MS) {
      const b = modelBytes(SNAPSHOT_READOUT);
      post({type: 'model', bytes: b, step: p.step}, [b]);
      lastSnapshot = performance.now();
    }
    await new Promise(r => setTimeout(r, 0)); // let messages (a Stop) in
  }
  // the model file (read-out on 200 sequences), its latent space and the quality bar's numbers
  // (on evalSequences fresh sequences of seed 3, ekvae_eval's default test set when 200)
  const bytes = modelBytes(FINAL_READOUT);
  const latent = JSON.parse(str(call('tw_latent', 'number', ['number'], [LATENT_SEQUENCES])));
  const m = JSON.parse(str(call('tw_metrics', 'number', ['number', 'number'], [evalSequences, 3])));
  const last = JSON.parse(str(call('tw_run', 'number', ['number'], [0]))); // steps, seconds (no step run)
  post(Object.assign({type: 'latent', step: last.step}, latent));
  post({type: 'finished', stopped: stopRequested, step: last.step, steps: last.steps, seconds: last.seconds,
        diverged: last.diverged, threads, bytes, metrics: m}, [bytes]);
  running = false;
  stopRequested = false;
}

self.onmessage = async (e) => {
  const msg = e.data || {};
  try {
    if (!M) throw new Error('the trainer is still loading');
    if (msg.type === 'start') {
      if (running) throw new Error('a run is in progress: stop it first');
      const config = Object.assign({}, msg.config || {});
      if (config.threads === undefined) config.threads = DEFAULT_THREADS;
      const n = Number(config.threads);
      if (!Number.isInteger(n) || n < 1 || n > (MULTI ? MAX_THREADS : 1))
        throw new Error(`threads ${config.threads}: this page trains on 1` + (MULTI ? ` to ${MAX_THREADS} threads` :
          ' thread (it is not cross-origin isolated: serve it with the COOP/COEP headers, as scripts/serve.sh does, for more)'));
      if (call('tw_start', 'number', ['string'], [JSON.stringify(config)]) !== 0)
        throw new Error(str(call('tw_error', 'number', [], [])));
      hasRun = true;
      threads = n;
      const n_eval = msg.evalSequences; // (the page checks it)
      evalSequences = Number.isInteger(n_eval) && n_eval >= 2 && n_eval <= 1000 ? n_eval : EVAL_SEQUENCES;
      loop();
    } else if (msg.type === 'stop') {
      if (running) stopRequested = true;
    } else if (msg.type === 'resume') {
      if (running) throw new Error('the run is still going');
      if (!hasRun) throw new Error('nothing to resume: start a run first');
      call('tw_extend', null, ['number'], [msg.steps > 0 ? msg.steps : 1000]);
      loop();
    }
  } catch (err) {
    post({type: 'error', message: String(err && err.message || err)});
  }
};

// the multi-threaded build's pthreads load this script by its URL (not this worker's)
createEkvaeTrainer(MULTI ? {mainScriptUrlOrBlob: SCRIPT} : {})
  .then(m => { M = m; post({type: 'ready', threads: DEFAULT_THREADS, script: SCRIPT}); },
        err => post({type: 'error', message: 'the trainer (' + SCRIPT + ') did not load: ' + err}));
