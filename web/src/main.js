// The browser avatar: connects to the bridge (./ws), starts an avatar session, and plays what comes back.
// State for people and tests is on window.avatarState; window.avatarTest holds deterministic hooks.
import { buildHead, FACE_LANDMARKS } from './head.js';
import { Microphone } from './mic.js';
import { AvatarPlayer } from './player.js';
import { Stage } from './stage.js';

const $ = (id) => document.getElementById(id);
const state = {
  ready: false, connected: false, sessionId: null, header: null, morphTargetNames: [], morphTargetCount: 0,
  framesReceived: 0, framesApplied: 0, framesDropped: 0, audioChunksReceived: 0, audioChunksPlayed: 0,
  audioChunksCut: 0, audioSecondsReceived: 0, audioSecondsPlayed: 0, lateShifts: 0, visemesReceived: 0,
  environment: null, camera: null, emotion: null, gesture: null, viseme: null, topic: null,
  lastTurnEnd: null, turnsEnded: 0, lastTextTurnEnd: null, textTurnsEnded: 0, turnsStarted: 0,
  textAnswer: '', currentWeights: [], jawOpen: 0, poseTime: null, speaking: false, frozen: false,
  serverErrors: [], bridgeErrors: [], streamEnd: null, errors: [], audioState: null, renders: 0, micChunks: 0, micTurns: 0,
};
window.avatarState = state;
window.addEventListener('error', (e) => state.errors.push(String(e.message || e)));
window.addEventListener('unhandledrejection', (e) => state.errors.push(String(e.reason?.stack || e.reason)));

const NEUTRAL_RELAX = 10; // 1/s: how fast the face returns to rest when nothing plays
// ?maxfps=N caps the render rate and ?antialias=0 turns MSAA off: for software GL (tests, old laptops); the
// stream's clock does not depend on either, only how often the face is drawn.
const params = new URLSearchParams(window.location.search);
const MAX_FPS = Number(params.get('maxfps')) || 60;
const ANTIALIAS = params.get('antialias') !== '0';
const CONNECT = params.get('connect') !== '0'; // ?connect=0: no bridge (tests feed events through avatarTest.feed)
// ?max_tokens=N and ?personality=NAME go into the SessionStart
const SESSION_START = {
  avatar: true,
  ...(params.get('max_tokens') ? { max_tokens: Number(params.get('max_tokens')) } : {}),
  ...(params.get('personality') ? { personality: params.get('personality') } : {}),
};

async function main() {
  const { blendshape_names: names } = await (await fetch('arkit.json')).json();
  const stage = new Stage($('view'), { antialias: ANTIALIAS });
  const face = buildHead(names);
  stage.addHead(face);
  state.morphTargetNames = Object.keys(face.morphTargetDictionary);
  state.morphTargetCount = face.morphTargetInfluences.length;
  const influences = face.morphTargetInfluences;
  const jawIndex = face.morphTargetDictionary.jawOpen;

  const audio = new AudioContext();
  let headerToMesh = names.map((_, i) => i); // header index -> morph index (the same order unless told otherwise)
  const player = new AvatarPlayer(audio, {
    onCommand: (kind, body) => command(kind, body),
  });

  function command(kind, body) {
    needsRender = true;
    if (kind === 'environment') {
      stage.setScene(body.scene);
      state.environment = body.scene;
      $('scene').textContent = `${body.scene.replace('SCENE_', '').replace('_', ' ').toLowerCase()}${body.reason ? ` (${body.reason})` : ''}`;
    } else if (kind === 'camera') {
      stage.setShot(body.shot, body.transition_s || 0);
      state.camera = body.shot;
    } else if (kind === 'emotion') {
      state.emotion = { kind: body.kind, intensity: body.intensity };
      $('emotion').textContent = `${body.kind.replace('EMOTION_KIND_', '').toLowerCase()} ${(body.intensity ?? 0).toFixed(2)}`;
    } else if (kind === 'gesture') {
      stage.playGesture(body.name, body.intensity, body.duration_s);
      state.gesture = body.name;
      $('gesture').textContent = body.name;
    } else if (kind === 'viseme') {
      state.viseme = body.id;
    }
  }

  function onHeader(header) {
    const missing = header.blendshape_names.filter((n) => !(n in face.morphTargetDictionary));
    if (missing.length) state.errors.push(`header names unknown blendshapes: ${missing.join(', ')}`);
    headerToMesh = header.blendshape_names.map((n) => face.morphTargetDictionary[n] ?? -1);
    state.header = header;
  }

  // ---- the socket ----
  let socket = null;
  const send = (message) => {
    if (!socket || socket.readyState !== WebSocket.OPEN) throw new Error('not connected to the avatar bridge');
    socket.send(JSON.stringify(message));
  };

  function onServerEvent(event) {
    if (event.bridge_error) return void state.bridgeErrors.push(event.bridge_error.message);
    if (event.stream_end) {
      state.streamEnd = event.stream_end;
      setStatus(`stream ended: ${event.stream_end.code} ${event.stream_end.details}`);
      return;
    }
    if (event.session_started) {
      state.sessionId = event.session_started.session_id;
      setStatus(`session ${state.sessionId.slice(0, 8)}…`);
    } else if (event.avatar) {
      const kind = player.handle(event.turn_id || '', event.avatar);
      if (kind === 'header') onHeader(event.avatar.header);
      if (kind === 'turn_end') {
        state.lastTurnEnd = { ...event.avatar.turn_end, stop_s: event.avatar.stop_s ?? 0 };
        state.turnsEnded++;
      }
    } else if (event.turn_started) {
      state.turnsStarted++;
      state.textAnswer = '';
      state.topic = event.turn_started.topic || null;
      $('answer').textContent = '';
    } else if (event.token) {
      state.textAnswer += event.token.text;
      $('answer').textContent = state.textAnswer;
    } else if (event.turn_end) {
      state.lastTextTurnEnd = event.turn_end;
      state.textTurnsEnded++;
    } else if (event.error) {
      state.serverErrors.push(event.error);
      setStatus(`error ${event.error.code}: ${event.error.message}`);
    } else if (event.transcript) {
      $('answer').textContent = `(heard) ${event.transcript.text ?? ''}`;
    }
  }

  function connect() {
    const url = new URL('ws', window.location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    socket = new WebSocket(url);
    socket.onopen = () => {
      state.connected = true;
      setStatus('connected');
      send({ start: SESSION_START });
    };
    socket.onmessage = (message) => {
      try {
        onServerEvent(JSON.parse(message.data));
      } catch (error) {
        state.errors.push(String(error.stack || error));
      }
    };
    socket.onclose = () => {
      state.connected = false;
      setStatus(state.streamEnd ? `disconnected (${state.streamEnd.code})` : 'disconnected: reload to reconnect');
    };
  }

  const setStatus = (text) => { $('status').textContent = text; };

  // ---- controls ----
  const resumeAudio = () => audio.state === 'suspended' ? audio.resume() : undefined;
  const trySend = (message) => {
    try {
      send(message);
      return true;
    } catch (error) {
      setStatus(error.message);
      return false;
    }
  };
  $('ask').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('text').value.trim();
    if (!text) return;
    resumeAudio();
    if (trySend({ text: { text } })) $('text').value = '';
  });
  $('interrupt').addEventListener('click', () => trySend({ interrupt: { reason: 'user pressed stop' } }));
  const mic = new Microphone(audio, (message) => {
    if (message.audio) state.micChunks++;
    if (message.end_of_turn) state.micTurns++;
    return trySend(message);
  });
  $('mic').addEventListener('click', async () => {
    resumeAudio();
    try {
      if (mic.active) mic.stop();
      else await mic.start();
    } catch (error) {
      setStatus(`microphone: ${error.message}`);
    }
    $('mic').classList.toggle('on', mic.active);
    $('mic').textContent = mic.active ? 'Stop talking' : 'Talk';
  });
  document.addEventListener('pointerdown', resumeAudio);

  // ---- the render loop ----
  const current = new Float32Array(influences.length);
  let head = { pitch: 0, yaw: 0, roll: 0 };
  let lastNow = performance.now() / 1000;
  let lastRender = -Infinity;
  let needsRender = true; // drawn only when something changed: an idle avatar costs nothing
  let frozen = null; // { weights (mesh order), head } set by the test hook
  let poseTime = null; // the stream time the face shows (null at rest)

  function applyPose() {
    for (let i = 0; i < current.length; i++) influences[i] = current[i];
    state.currentWeights = Array.from(current);
    state.jawOpen = jawIndex === undefined ? 0 : current[jawIndex];
    state.poseTime = poseTime;
    stage.update(performance.now() / 1000, head);
  }

  function frame() {
    const now = performance.now() / 1000;
    const dt = Math.min(0.25, now - lastNow);
    lastNow = now;
    const pose = player.tick();
    Object.assign(state, player.stats);
    state.audioState = audio.state;
    if (frozen) {
      current.set(frozen.weights);
      head = frozen.head;
      poseTime = null;
    } else if (pose.weights) {
      current.fill(0);
      pose.weights.forEach((w, i) => { if (headerToMesh[i] >= 0) current[headerToMesh[i]] = w; });
      head = pose.head;
      state.speaking = true;
      poseTime = pose.time;
    } else { // between turns: relax to the rest pose
      const k = Math.exp(-NEUTRAL_RELAX * dt);
      let moving = Math.abs(head.pitch) + Math.abs(head.yaw) + Math.abs(head.roll) > 0.01;
      for (let i = 0; i < current.length; i++) {
        current[i] *= k;
        moving ||= current[i] > 1e-3;
      }
      head = { pitch: head.pitch * k, yaw: head.yaw * k, roll: head.roll * k };
      state.speaking = false;
      poseTime = null;
      needsRender ||= moving;
    }
    needsRender ||= state.speaking || stage.animating();
    if (needsRender && now - lastRender >= 1 / MAX_FPS - 0.002) {
      applyPose();
      stage.render();
      state.renders++;
      lastRender = now;
      needsRender = false;
    }
  }

  const resize = () => {
    const canvas = $('view');
    stage.resize(canvas.clientWidth, canvas.clientHeight);
    needsRender = true;
  };
  window.addEventListener('resize', resize);
  resize();
  stage.renderer.setAnimationLoop(frame);

  // ---- hooks for tests: freeze the face on given weights, render now, read where things are on screen ----
  window.avatarTest = {
    applyWeights(weights, headPose = { pitch: 0, yaw: 0, roll: 0 }) {
      if (weights.length !== influences.length) throw new Error(`expected ${influences.length} weights, got ${weights.length}`);
      frozen = { weights: Float32Array.from(weights), head: headPose };
      state.frozen = true;
      current.set(frozen.weights);
      head = headPose;
      applyPose();
      stage.render();
    },
    // the index-th frame received (header order), frozen on the face
    applyFrame(index) {
      const f = player.history.at(index);
      if (!f) throw new Error(`no frame ${index}: ${player.history.length} received`);
      const weights = new Float32Array(influences.length);
      f.weights.forEach((w, i) => { if (headerToMesh[i] >= 0) weights[headerToMesh[i]] = w; });
      this.applyWeights(weights, { pitch: f.pitch, yaw: f.yaw, roll: f.roll });
    },
    weightsOf(values) { // { jawOpen: 1, ... } -> the 52 weights in mesh order
      const weights = new Array(influences.length).fill(0);
      for (const [name, value] of Object.entries(values)) {
        if (!(name in face.morphTargetDictionary)) throw new Error(`no blendshape ${name}`);
        weights[face.morphTargetDictionary[name]] = value;
      }
      return weights;
    },
    release() {
      frozen = null;
      state.frozen = false;
    },
    render() {
      applyPose();
      stage.render();
    },
    setScene(name) { command('environment', { scene: name }); },
    setShot(shot) { command('camera', { shot, transition_s: 0 }); },
    // A ServerEvent as the bridge sends it, handled as if it came from the socket.
    feed(event) { onServerEvent(event); },
    send,
    audioTime: () => audio.currentTime,
    streamTime: () => player.streamTime(),
    // the clock mapping and the audio still scheduled (context times), to check chunks play back to back
    timeline: () => ({
      offset: player.offset,
      now: audio.currentTime,
      scheduled: player.sources.map((s) => ({ streamStart: s.streamStart, start: s.start, end: s.end })),
    }),
    // Screen rectangles (CSS pixels, page coordinates) around a landmark of the face, for screenshots.
    region(name, halfWidth = 0.25, halfHeight = 0.2) {
      const center = FACE_LANDMARKS[name];
      if (!center) throw new Error(`no landmark ${name}`);
      stage.neck.updateMatrixWorld(true);
      const canvas = $('view').getBoundingClientRect();
      const corners = [[-halfWidth, -halfHeight], [halfWidth, halfHeight]].map(([dx, dy]) => {
        const p = center.clone().add({ x: dx, y: dy, z: 0 });
        face.localToWorld(p);
        p.project(stage.camera);
        return [canvas.left + ((p.x + 1) / 2) * canvas.width, canvas.top + ((1 - p.y) / 2) * canvas.height];
      });
      const [[x0, y1], [x1, y0]] = corners;
      return { x: Math.round(Math.min(x0, x1)), y: Math.round(Math.min(y0, y1)), width: Math.round(Math.abs(x1 - x0)), height: Math.round(Math.abs(y1 - y0)) };
    },
  };

  if (CONNECT) connect();
  else setStatus('offline (connect=0)');
  state.ready = true;
}

main().catch((error) => {
  state.errors.push(String(error.stack || error));
  document.getElementById('status').textContent = `failed to start: ${error.message}`;
});
