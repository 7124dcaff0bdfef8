// Drives the browser avatar in Debian's chromium through playwright-core (no browser download) for
// tests/test_web_avatar.py. Usage: node drive_avatar.mjs SCENARIO URL OUT_DIR [JSON options]
// Prints one JSON object (what the test asserts on) on stdout; screenshots go to OUT_DIR.
//   static     the page loads: morph targets, console errors, screenshots of the mouth and the forehead with the
//              mouth closed (all weights 0) and open (jawOpen 1)
//   synthetic  a made-up avatar stream fed into the page (?connect=0): two turns, the second cut by a TurnEnd whose
//              stop_s is earlier than what was sent; samples the face against the clock while it plays; then
//              records from the (fake) microphone for a moment
//   turn       the real thing: types a question, waits for the avatar's and the text's turn ends and the playback
//   interrupt  the same, pressing Stop once the avatar has spoken `afterS` seconds
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [scenario, url, outDir, optionsJson] = process.argv.slice(2);
const options = JSON.parse(optionsJson || '{}');
if (!scenario || !url || !outDir) {
  console.error('usage: node drive_avatar.mjs static|synthetic|turn URL OUT_DIR [JSON options]');
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARGS = [
  '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--autoplay-policy=no-user-gesture-required', '--no-sandbox',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', // a microphone that plays a tone
];
// software GL is slow: no MSAA and at most 15 draws a second (the stream's clock does not depend on it)
const PAGE_QUERY = 'antialias=0&maxfps=15';

async function shootRegions(page, name) {
  const shots = {};
  for (const [region, size] of [['mouth', [0.32, 0.22]], ['forehead', [0.3, 0.12]]]) {
    const clip = await page.evaluate(([r, w, h]) => window.avatarTest.region(r, w, h), [region, ...size]);
    const path = join(outDir, `${name}_${region}.png`);
    await page.screenshot({ path, clip });
    shots[region] = { path, clip };
  }
  return shots;
}

async function staticChecks(page) {
  if (options.waitConnected) await page.waitForFunction(() => window.avatarState.connected, null, { timeout: 30_000 });
  await page.evaluate(() => window.avatarTest.setShot('SHOT_CLOSE_UP'));
  const zeros = await page.evaluate(() => window.avatarTest.weightsOf({}));
  await page.evaluate((w) => window.avatarTest.applyWeights(w), zeros);
  const closed = await shootRegions(page, 'closed');
  const open = await page.evaluate(() => window.avatarTest.weightsOf({ jawOpen: 1 }));
  await page.evaluate((w) => window.avatarTest.applyWeights(w), open);
  const opened = await shootRegions(page, 'open');
  const jawOpenShown = await page.evaluate(() => window.avatarState.jawOpen);
  await page.evaluate(() => window.avatarTest.release());
  await page.screenshot({ path: join(outDir, 'page.png') });
  return { screenshots: { closed, open: opened }, jawOpenShown };
}

// ---- a synthetic stream: what the server sends, made up with known values ----
const FPS = 60, RATE = 22050;
const jawAt = (t) => 0.5 + 0.4 * Math.sin(2 * Math.PI * t); // the face's jawOpen along the clock

function syntheticEvents(names) {
  const header = { blendshape_names: names, fps: FPS, audio_sample_rate_hz: RATE, audio_channels: 1, audio_encoding: 'PCM16LE', protocol_version: 1, lead_s: 0.1 };
  const jaw = names.indexOf('jawOpen');
  const events = [{ sequence: '1', avatar: { time_s: 0, header } }];
  const pcm = (seconds, startS) => {
    const n = Math.round(seconds * RATE);
    const bytes = new Uint8Array(2 * n);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < n; i++) view.setInt16(2 * i, Math.round(8000 * Math.sin(2 * Math.PI * 220 * (startS + i / RATE))), true);
    return Buffer.from(bytes).toString('base64');
  };
  let audioSequence = 0;
  // one turn: commands at its start, then 0.1 s audio chunks and 3-frame FaceFrames events in time order
  const turn = (turnId, from, to, commands) => {
    for (const [kind, body] of commands) events.push({ turn_id: turnId, avatar: { time_s: from, [kind]: body } });
    const k0 = Math.round(from * FPS), k1 = Math.round(to * FPS);
    let k = k0;
    for (let c = 0; from + c * 0.1 < to - 1e-9; c++) {
      const start = from + c * 0.1;
      events.push({ turn_id: turnId, avatar: { time_s: start, audio: { pcm16: pcm(0.1, start), sample_rate_hz: RATE, channels: 1, start_s: start, sequence: String(audioSequence++) } } });
      const until = Math.round((start + 0.1) * FPS);
      while (k < until && k < k1) {
        const frames = [];
        for (let j = 0; j < 3 && k < Math.min(until, k1); j++, k++) {
          const weights = new Array(names.length).fill(0);
          weights[jaw] = jawAt(k / FPS);
          frames.push({ time_s: k / FPS, weights, head_pitch_deg: 2, head_yaw_deg: -3, head_roll_deg: 1 });
        }
        events.push({ turn_id: turnId, avatar: { time_s: frames[0].time_s, face: { frames } } });
      }
    }
  };
  turn('t1', 1.0, 2.0, [['environment', { scene: 'SCENE_MOVIE_THEATER', reason: 'topic: movies' }], ['camera', { shot: 'SHOT_CLOSE_UP', reason: 'new topic', transition_s: 0.5 }], ['emotion', { kind: 'EMOTION_KIND_JOY', intensity: 0.6, blend_s: 0.3 }], ['gesture', { name: 'nod', intensity: 0.7, duration_s: 0.8 }]]);
  events.push({ turn_id: 't1', avatar: { time_s: 2.0, turn_end: { turn_id: 't1', reason: 'TURN_END_REASON_COMPLETED' }, stop_s: 2.0 } });
  turn('t2', 3.0, 4.0, [['environment', { scene: 'SCENE_SPORTS_ARENA', reason: 'topic: sports' }], ['camera', { shot: 'SHOT_WIDE', reason: 'new topic', transition_s: 0 }]]);
  // interrupted: the end comes with everything up to 4.0 already sent, and stops at 3.5
  events.push({ turn_id: 't2', avatar: { time_s: 3.5, turn_end: { turn_id: 't2', reason: 'TURN_END_REASON_INTERRUPTED', detail: 'user pressed stop' }, stop_s: 3.5 } });
  return events;
}

async function synthetic(page) {
  const names = await page.evaluate(() => window.avatarState.morphTargetNames);
  const events = syntheticEvents(names);
  const fedAt = await page.evaluate((evs) => {
    for (const e of evs) window.avatarTest.feed(e);
    return window.avatarTest.audioTime();
  }, events);
  const timeline = await page.evaluate(() => window.avatarTest.timeline());
  // sample what the face shows against the stream time it was computed for, while both turns play
  const samples = [];
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    const s = await page.evaluate(() => ({ t: window.avatarState.poseTime, jaw: window.avatarState.jawOpen, scene: window.avatarState.environment, now: window.avatarTest.streamTime() }));
    if (s.t !== null) samples.push({ ...s, expected: jawAt(s.t) });
    if (s.now !== null && s.now > 4.3) break;
    await page.waitForTimeout(40);
  }
  await page.waitForTimeout(300);
  // the microphone (offline: its chunks are made and counted, sending them fails softly)
  await page.click('#mic');
  await page.waitForFunction(() => window.avatarState.micChunks >= 3, null, { timeout: 10_000 });
  await page.click('#mic');
  const micLabel = await page.textContent('#mic');
  return { fedAt, timeline, samples, eventsFed: events.length, micLabel };
}

async function turn(page) {
  await page.waitForFunction(() => window.avatarState.connected && window.avatarState.sessionId, null, { timeout: 60_000 });
  if (options.expectHeader !== false) await page.waitForFunction(() => window.avatarState.header, null, { timeout: 30_000 });
  await page.fill('#text', options.text || 'Tell me about movies.');
  const sentAt = Date.now();
  await page.click('#send');
  const timeoutMs = (options.timeoutS || 240) * 1000;
  // the server sends the text TurnEnd once the avatar finished speaking; the page then plays out its buffer
  await page.waitForFunction(() => window.avatarState.textTurnsEnded >= 1 || window.avatarState.streamEnd, null, { timeout: timeoutMs, polling: 250 });
  await page.waitForFunction(
    () => {
      const s = window.avatarState;
      return s.streamEnd || (s.turnsEnded >= 1 && !s.speaking && s.framesApplied + s.framesDropped >= s.framesReceived && window.avatarTest.timeline().scheduled.length === 0);
    },
    null,
    { timeout: 60_000, polling: 250 },
  );
  const turnS = (Date.now() - sentAt) / 1000;
  await page.screenshot({ path: join(outDir, 'after_turn.png') });
  return { turnS };
}

async function interrupt(page) {
  await page.waitForFunction(() => window.avatarState.connected && window.avatarState.header, null, { timeout: 60_000 });
  await page.fill('#text', options.text || 'Tell me about movies.');
  await page.click('#send');
  const afterS = options.afterS ?? 1.5;
  await page.waitForFunction((s) => window.avatarState.audioSecondsPlayed >= s || window.avatarState.textTurnsEnded, afterS, { timeout: (options.timeoutS || 240) * 1000, polling: 50 });
  const pressed = await page.evaluate(() => ({ stream: window.avatarTest.streamTime(), played: window.avatarState.audioSecondsPlayed }));
  await page.click('#interrupt');
  await page.waitForFunction(() => window.avatarState.textTurnsEnded >= 1 || window.avatarState.streamEnd, null, { timeout: 60_000, polling: 100 });
  await page.waitForFunction(() => {
    const s = window.avatarState;
    return s.streamEnd || (s.turnsEnded >= 1 && !s.speaking && window.avatarTest.timeline().scheduled.length === 0);
  }, null, { timeout: 30_000, polling: 100 });
  return { pressed };
}

async function main() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  const consoleErrors = [];
  try {
    const page = await browser.newPage({ viewport: { width: 960, height: 540 } });
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));
    let query = scenario === 'synthetic' ? `${PAGE_QUERY}&connect=0` : PAGE_QUERY;
    if (options.maxTokens) query += `&max_tokens=${options.maxTokens}`;
    if (options.login) await page.goto(options.login); // the one-time link: sets the page's cookie
    const started = Date.now();
    await page.goto(`${url}?${query}`);
    await page.waitForFunction(() => window.avatarState && (window.avatarState.ready || window.avatarState.errors.length), null, { timeout: 60_000 });
    const loadS = (Date.now() - started) / 1000;
    const run = { static: staticChecks, synthetic, turn, interrupt }[scenario];
    if (!run) throw new Error(`unknown scenario ${scenario}`);
    const result = await run(page);
    const state = await page.evaluate(() => window.avatarState);
    process.stdout.write(JSON.stringify({ scenario, loadS, consoleErrors, state, ...result }));
  } finally {
    await browser.close();
  }
}

await main();
