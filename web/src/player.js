// Plays the avatar stream in sync: audio chunks scheduled on the AudioContext clock, face frames sampled at the
// audio's playback time, commands (scene, camera, emotion, gesture, viseme) applied when the clock reaches them.
//
// Clock mapping: every AvatarEvent's time_s is on the server's audio clock. The first timed event of a turn fixes
// `offset` so that context time = time_s + offset, leaving `jitterS` of buffer (at least the header's lead_s); a
// later turn keeps the previous offset when it is still in the future (the server's silence between turns is kept).
// A chunk that would start in the past moves the offset forward, for audio and face alike, so they stay together.
// An avatar TurnEnd's stop_s cuts what was buffered past it: audio stops at stop_s, later frames are dropped.

export function decodePcm16(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const samples = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
  const out = new Float32Array(samples.length);
  for (let i = 0; i < samples.length; i++) out[i] = samples[i] / 32768;
  return out;
}

export class AvatarPlayer {
  constructor(audioContext, { jitterS = 0.15, onCommand = () => {}, historyLimit = 4000 } = {}) {
    this.ctx = audioContext;
    this.jitterS = jitterS;
    this.onCommand = onCommand;
    this.historyLimit = historyLimit;
    this.header = null;
    this.fps = 60;
    this.offset = null; // context time - stream time
    this.turnId = null; // the turn the mapping was made for
    this.frames = []; // buffered, in time order: { t, weights (header order), pitch, yaw, roll }
    this.history = []; // every frame received (bounded), for the test hook
    this.commands = []; // { t, kind, body }
    this.sources = []; // scheduled audio: { node, start, end, started }
    this.stops = new Map(); // turn id -> stop_s
    this.stats = {
      framesReceived: 0, framesApplied: 0, framesDropped: 0, audioChunksReceived: 0, audioChunksPlayed: 0,
      audioSecondsReceived: 0, audioSecondsPlayed: 0, audioChunksCut: 0, lateShifts: 0, visemesReceived: 0,
      turnAudioStart: null,
    };
  }

  setHeader(header) {
    if (!header.blendshape_names || header.blendshape_names.length === 0) throw new Error('AvatarHeader without blendshape names');
    this.header = header;
    this.fps = header.fps || 60;
    this.jitterS = Math.max(this.jitterS, (header.lead_s || 0) + 0.05);
  }

  streamTime(now = this.ctx.currentTime) {
    return this.offset === null ? null : now - this.offset;
  }

  // The mapping for a turn's events: made by its first one.
  _map(turnId, timeS) {
    if (turnId === this.turnId && this.offset !== null) return;
    const candidate = this.ctx.currentTime + this.jitterS - timeS;
    this.offset = this.offset === null ? candidate : Math.max(candidate, this.offset);
    this.turnId = turnId;
  }

  _cut(turnId, timeS) {
    const stop = this.stops.get(turnId);
    return stop !== undefined && timeS >= stop - 1e-9;
  }

  // One ServerEvent.avatar of turn `turnId`.
  handle(turnId, event) {
    const kind = ['header', 'audio', 'face', 'viseme', 'emotion', 'gesture', 'camera', 'environment', 'turn_end'].find((k) => event[k]);
    if (!kind) return null;
    if (kind === 'header') {
      this.setHeader(event.header);
      return kind;
    }
    if (kind === 'turn_end') {
      this.endTurn(turnId, event.stop_s ?? 0);
      return kind;
    }
    const time = event.time_s ?? 0;
    this._map(turnId, time);
    if (kind === 'audio') this._audio(turnId, event.audio);
    else if (kind === 'face') this._frames(turnId, event.face.frames || []);
    else {
      if (kind === 'viseme') this.stats.visemesReceived++;
      if (!this._cut(turnId, time)) this._insertCommand({ t: time, kind, body: event[kind] });
    }
    return kind;
  }

  _insertCommand(command) {
    let i = this.commands.length;
    while (i > 0 && this.commands[i - 1].t > command.t) i--;
    this.commands.splice(i, 0, command);
  }

  _audio(turnId, chunk) {
    this.stats.audioChunksReceived++;
    const samples = decodePcm16(chunk.pcm16 || '');
    const rate = chunk.sample_rate_hz || this.header?.audio_sample_rate_hz || 22050;
    const duration = samples.length / rate;
    this.stats.audioSecondsReceived += duration;
    const start = chunk.start_s ?? 0;
    if (samples.length === 0 || this._cut(turnId, start)) return;
    if (this.audioTurn !== turnId) { // where this turn's voice starts on the stream clock
      this.audioTurn = turnId;
      this.stats.turnAudioStart = start;
    }
    let when = start + this.offset;
    const earliest = this.ctx.currentTime + 0.02;
    if (when < earliest) { // late: move the whole mapping (face too) rather than play it early or skip it
      this.offset += earliest - when;
      when = earliest;
      this.stats.lateShifts++;
    }
    const buffer = this.ctx.createBuffer(1, samples.length, rate);
    buffer.copyToChannel(samples, 0);
    const node = this.ctx.createBufferSource();
    node.buffer = buffer;
    node.connect(this.ctx.destination);
    node.start(when);
    this.sources.push({ node, turnId, streamStart: start, start: when, end: when + duration, started: false });
  }

  _frames(turnId, frames) {
    for (const f of frames) {
      const frame = {
        t: f.time_s ?? 0,
        weights: Float32Array.from(f.weights || []),
        pitch: f.head_pitch_deg ?? 0, yaw: f.head_yaw_deg ?? 0, roll: f.head_roll_deg ?? 0,
      };
      this.stats.framesReceived++;
      this.history.push(frame);
      if (this.history.length > this.historyLimit) this.history.shift();
      if (this._cut(turnId, frame.t)) { this.stats.framesDropped++; continue; }
      const last = this.frames[this.frames.length - 1];
      if (last && frame.t <= last.t) { this.stats.framesDropped++; continue; } // time codes strictly increase
      this.frames.push(frame);
    }
  }

  // The avatar's end of a turn: nothing of it plays past stop_s.
  endTurn(turnId, stopS) {
    this.stops.set(turnId, stopS);
    const before = this.frames.length;
    this.frames = this.frames.filter((f) => f.t <= stopS + 1e-9);
    this.stats.framesDropped += before - this.frames.length;
    this.commands = this.commands.filter((c) => c.t < stopS);
    if (this.offset === null) return;
    const stopAt = stopS + this.offset;
    const now = this.ctx.currentTime;
    for (const s of this.sources) {
      if (s.turnId !== turnId || s.end <= stopAt) continue;
      if (s.start >= stopAt) {
        s.node.stop(); // never starts
        s.end = s.start;
        s.cancelled = true;
      } else {
        s.node.stop(Math.max(stopAt, now));
        s.end = Math.max(stopAt, s.start);
      }
      this.stats.audioChunksCut++;
    }
  }

  // Advances to context time `now`: due commands fire, audio is accounted, and the face pose is sampled.
  // Returns { weights (header order) | null when nothing is playing, head }.
  tick(now = this.ctx.currentTime) {
    for (const s of this.sources) {
      if (!s.started && !s.cancelled && now >= s.start) {
        s.started = true;
        this.stats.audioChunksPlayed++;
      }
      if (now >= s.end) {
        if (s.started) this.stats.audioSecondsPlayed += s.end - s.start;
        s.done = true;
      }
    }
    this.sources = this.sources.filter((s) => !s.done);
    const t = this.streamTime(now);
    if (t === null) return { weights: null, head: null, time: null };
    while (this.commands.length && this.commands[0].t <= t) {
      const command = this.commands.shift();
      this.onCommand(command.kind, command.body, command.t);
    }
    return { ...this._sample(t), time: t };
  }

  _sample(t) {
    const period = 1 / this.fps;
    // consume frames the playhead has passed: frames[0] stays the last one at or before t
    while (this.frames.length > 1 && this.frames[1].t <= t) {
      this.frames.shift();
      this.stats.framesApplied++;
    }
    const f0 = this.frames[0];
    if (!f0 || f0.t > t) return { weights: null, head: null };
    const f1 = this.frames[1];
    if (f1 && f1.t - f0.t <= 2.5 * period) {
      const a = (t - f0.t) / (f1.t - f0.t);
      const weights = new Float32Array(f0.weights.length);
      for (let i = 0; i < weights.length; i++) weights[i] = f0.weights[i] + a * ((f1.weights[i] ?? 0) - f0.weights[i]);
      return {
        weights,
        head: { pitch: f0.pitch + a * (f1.pitch - f0.pitch), yaw: f0.yaw + a * (f1.yaw - f0.yaw), roll: f0.roll + a * (f1.roll - f0.roll) },
      };
    }
    if (t - f0.t <= period) return { weights: f0.weights, head: { pitch: f0.pitch, yaw: f0.yaw, roll: f0.roll } };
    if (!f1) { // the last frame of the buffer is over
      this.frames.shift();
      this.stats.framesApplied++;
    }
    return { weights: null, head: null };
  }
}
