// The softphone's WebSocket mode: the AudioWorklet that turns the input's float channels into
// interleaved little-endian 16-bit PCM, posted to the page every 20 ms (an ArrayBuffer, moved,
// not copied). processorOptions.channels says how many channels to send; a channel the input
// lacks (a source that went away) is sent as silence, so the call's timeline keeps its pace.
class Pcm16Sender extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.channels = (options.processorOptions && options.processorOptions.channels) || 1;
    this.frames = Math.round(sampleRate / 50); // 20 ms at the context's rate
    this.buffer = new Int16Array(this.frames * this.channels);
    this.filled = 0;
  }

  process(inputs) {
    const input = inputs[0] || [];
    const n = input.length ? input[0].length : 128;
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < this.channels; c++) {
        const x = input[c] ? input[c][i] : 0;
        const s = Math.max(-1, Math.min(1, x));
        this.buffer[this.filled * this.channels + c] = s < 0 ? s * 0x8000 : s * 0x7fff;
      }
      this.filled += 1;
      if (this.filled === this.frames) {
        const out = this.buffer.buffer;
        this.port.postMessage(out, [out]);
        this.buffer = new Int16Array(this.frames * this.channels);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm16-sender", Pcm16Sender);
