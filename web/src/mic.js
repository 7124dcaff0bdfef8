// The microphone: getUserMedia -> an AudioWorklet -> PCM16 AudioChunks at the AudioContext's rate, about 100 ms
// each, sent as `audio` ClientEvents; stopping sends EndOfTurn.

function pcm16Base64(samples) {
  const bytes = new Uint8Array(samples.length * 2);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(2 * i, s < 0 ? s * 32768 : s * 32767, true);
  }
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

export class Microphone {
  constructor(audioContext, send) {
    this.ctx = audioContext;
    this.send = send;
    this.active = false;
  }

  async start() {
    if (this.active) return;
    await this.ctx.audioWorklet.addModule(new URL('./mic-worklet.js', import.meta.url));
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true } });
    this.source = this.ctx.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.ctx, 'mic-capture');
    this.pending = [];
    this.pendingSamples = 0;
    this.sent = 0;
    this.sequence = 0;
    const chunkSamples = Math.round(this.ctx.sampleRate * 0.1);
    this.node.port.onmessage = ({ data }) => {
      this.pending.push(data);
      this.pendingSamples += data.length;
      if (this.pendingSamples >= chunkSamples) this._flush();
    };
    this.source.connect(this.node);
    // pulled by the destination so it keeps running, silenced so the user does not hear themselves
    this.mute = new GainNode(this.ctx, { gain: 0 });
    this.node.connect(this.mute).connect(this.ctx.destination);
    this.active = true;
  }

  _flush() {
    if (!this.pendingSamples) return;
    const samples = new Float32Array(this.pendingSamples);
    let at = 0;
    for (const block of this.pending) {
      samples.set(block, at);
      at += block.length;
    }
    this.send({
      audio: {
        pcm16: pcm16Base64(samples), sample_rate_hz: this.ctx.sampleRate, channels: 1,
        start_s: this.sent / this.ctx.sampleRate, sequence: this.sequence++,
      },
    });
    this.sent += samples.length;
    this.pending = [];
    this.pendingSamples = 0;
  }

  stop() {
    if (!this.active) return;
    this._flush();
    this.source.disconnect();
    this.node.disconnect();
    this.mute.disconnect();
    this.node.port.onmessage = null;
    for (const track of this.stream.getTracks()) track.stop();
    this.active = false;
    this.send({ end_of_turn: {} });
  }
}
