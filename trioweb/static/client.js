// trioweb's browser client: a WebSocket that reconnects, resumes and says why it stopped.
//
// One ES module, no dependencies, no build step; served by `app.serve_client("/trioweb.js")`.
//
//     import { connect } from "/trioweb.js";
//     const socket = connect("/feed?room=trio");
//     socket.on("message", (message) => show(message));
//     socket.send({ type: "say", text: "hello" });
//
// The reference is docs/browser-client.md. In short:
//
// - Text messages that parse as JSON arrive as "message" events (their value), other text as
//   "text" events, binary ones as "binary" events (an ArrayBuffer). send(value) sends JSON,
//   sendText(text) text as it is; both return false, and send nothing, unless the socket is open.
// - Closed with 1001, 1006, 1011, 1012, 1013 or 1014 (or a network failure), the client
//   reconnects after a delay drawn at random between 0 and min(retryCap, retryBase * 2^n), n
//   counting the failed attempts in a row (n goes back to 0 once a socket stayed open for
//   stableAfter ms). Closed with 1008 or 4400-4499 (a denial: trioweb's browser_denials="close"
//   sends 4000 + the HTTP status), it stops and emits "denied". Any other code: it stops
//   (1000 included, which is also trioweb's idle timeout: "idle for more than N s").
// - Resume: it remembers the last "offset" (a string field of a JSON object message) and
//   reconnects with ?since=OFFSET. The first message after each open decides between
//   "recovered" (it has "recovered": true: nothing was lost) and "reset" (anything else: reload
//   your state). Messages whose offset is not after the last one seen are dropped.
// - Heartbeat: with silenceTimeout, a socket on which nothing arrived for that long is given up
//   and replaced; with pingInterval, {"type": "ping"} goes out that often so that a server that
//   answers it keeps a quiet socket alive.
// - close() ends it all for good.

/** The close codes after which the client reconnects, unless `shouldRetry` says otherwise. */
export const RETRY_CODES = Object.freeze([1001, 1006, 1011, 1012, 1013, 1014]);

/** Whether a close code is a denial: 1008 (policy violation) or 4400-4499 (4000 + a 4xx). */
export function isDenial(code) {
  return code === 1008 || (code >= 4400 && code <= 4499);
}

const DEFAULTS = Object.freeze({
  protocols: undefined,
  retryBase: 500,
  retryCap: 30000,
  stableAfter: 10000,
  shouldRetry: (code) => RETRY_CODES.includes(code),
  silenceTimeout: 0,
  pingInterval: 0,
  pingMessage: { type: "ping" },
  since: null,
  sinceParam: "since",
  offsetField: "offset",
  recovered: (first) => first?.recovered === true,
  json: true,
});

/** Open a connection to `url` (see Connection) and return it. */
export function connect(url, options = {}) {
  return new Connection(url, options);
}

const DECIMAL = /^[0-9]+$/;

/** A WebSocket that reconnects with backoff, resumes from the last offset and reports why. */
export class Connection {
  #url;
  #options;
  #listeners = new Map();
  #ws = null;
  #state = "connecting";
  #lastOffset;
  #failures = 0; // failed attempts in a row: n in the backoff
  #openedAt = null; // performance.now() at the current socket's open
  #firstPending = false; // the next message is the first since open
  #lastHeard = 0; // performance.now() of the last sign of life
  #silenceTimer = null;
  #pingTimer = null;
  #retryTimer = null;

  /**
   * `url`: absolute (ws:, wss:, http:, https:) or relative to the page, or a function that
   * returns one before each attempt (to put a fresh token in it, say). `options`: see DEFAULTS
   * and docs/browser-client.md.
   */
  constructor(url, options = {}) {
    const unknown = Object.keys(options).filter((name) => !(name in DEFAULTS));
    if (unknown.length) throw new TypeError(`unknown option(s): ${unknown.join(", ")}`);
    this.#url = url;
    const given = Object.entries(options).filter(([, value]) => value !== undefined);
    this.#options = { ...DEFAULTS, ...Object.fromEntries(given) };
    this.#lastOffset = this.#options.since ?? null;
    this.#open(); // a URL that is no URL throws here, to the caller
  }

  /** "connecting", "open", "waiting" (to reconnect) or "closed" (for good). */
  get state() {
    return this.#state;
  }

  /** The offset of the last message seen, or null; the next attempt resumes from it. */
  get lastOffset() {
    return this.#lastOffset;
  }

  /**
   * Call `listener(detail)` on each event `name`: "open", "message", "text", "binary",
   * "recovered", "reset", "close", "denied" or "error". Returns a function that removes it.
   */
  on(name, listener) {
    if (!this.#listeners.has(name)) this.#listeners.set(name, new Set());
    this.#listeners.get(name).add(listener);
    return () => this.#listeners.get(name).delete(listener);
  }

  /** Send `value` as JSON; false (and nothing sent) unless the socket is open. */
  send(value) {
    return this.sendText(JSON.stringify(value));
  }

  /** Send text (or binary data) as it is; false (and nothing sent) unless the socket is open. */
  sendText(data) {
    if (this.#state !== "open") return false;
    this.#ws.send(data);
    return true;
  }

  /** Close for good: no more reconnects, timers or events after a last "close" (1000). */
  close() {
    if (this.#state === "closed") return;
    const ws = this.#ws;
    this.#stop();
    if (ws !== null) ws.close(1000);
    this.#emit("close", { code: 1000, reason: "", willRetry: false, delay: null });
  }

  // -- one attempt ---------------------------------------------------------------------------

  #target() {
    const raw = typeof this.#url === "function" ? this.#url() : this.#url;
    const url = new URL(raw, globalThis.location?.href);
    if (url.protocol === "http:") url.protocol = "ws:";
    else if (url.protocol === "https:") url.protocol = "wss:";
    url.hash = "";
    // The client owns this parameter: the last offset, or none (the `since` option gives the
    // first one).
    const name = this.#options.sinceParam;
    if (this.#lastOffset !== null) url.searchParams.set(name, this.#lastOffset);
    else if (url.searchParams.has(name)) url.searchParams.delete(name);
    return url.href;
  }

  #open() {
    this.#state = "connecting";
    this.#openedAt = null;
    const url = this.#target();
    const ws = new WebSocket(url, this.#options.protocols);
    ws.binaryType = "arraybuffer";
    this.#ws = ws;
    // Each handler first checks that its socket is still the current one: one given up by the
    // heartbeat may still report, and must change nothing.
    ws.onopen = () => ws === this.#ws && this.#opened(url);
    ws.onmessage = (event) => ws === this.#ws && this.#received(event.data);
    ws.onerror = () => ws === this.#ws && this.#emit("error", { url });
    ws.onclose = (event) => ws === this.#ws && this.#closed(event.code, event.reason);
    this.#heard();
    this.#watchSilence();
  }

  #opened(url) {
    this.#state = "open";
    this.#openedAt = performance.now();
    this.#firstPending = true;
    this.#heard();
    const every = this.#options.pingInterval;
    if (every > 0) {
      const ping = JSON.stringify(this.#options.pingMessage);
      this.#pingTimer = setInterval(() => this.sendText(ping), every);
    }
    this.#emit("open", { url });
  }

  #received(data) {
    this.#heard();
    let value;
    let parsed = false;
    if (typeof data === "string" && this.#options.json) {
      try {
        value = JSON.parse(data);
        parsed = true;
      } catch {
        // Not JSON: a "text" event.
      }
    }
    const offset = parsed ? this.#offsetOf(value) : undefined;
    if (this.#firstPending) {
      // The first message since open says whether the resume was exact; it is never dropped.
      this.#firstPending = false;
      const exact = this.#options.recovered(parsed ? value : data) === true;
      if (!exact) this.#lastOffset = null; // what comes now is a new stream: no old baseline
      if (offset !== undefined && this.#isNew(offset)) this.#lastOffset = offset;
      this.#emit(exact ? "recovered" : "reset", parsed ? value : data);
      if (this.#state !== "open") return; // a listener closed the connection
    } else if (offset !== undefined) {
      if (!this.#isNew(offset)) return; // seen already: a duplicate of a replay, dropped
      this.#lastOffset = offset;
    }
    if (parsed) this.#emit("message", value);
    else if (typeof data === "string") this.#emit("text", data);
    else this.#emit("binary", data);
  }

  #offsetOf(value) {
    if (value === null || typeof value !== "object" || Array.isArray(value)) return undefined;
    const offset = value[this.#options.offsetField];
    return typeof offset === "string" ? offset : undefined;
  }

  /** Whether `offset` comes after the last one seen: compared as integers when both are
   * decimal integers, else taken as new (offsets are opaque; this is only a safety net). */
  #isNew(offset) {
    const last = this.#lastOffset;
    if (last === null || !DECIMAL.test(offset) || !DECIMAL.test(last)) return true;
    return BigInt(offset) > BigInt(last);
  }

  #closed(code, reason) {
    const openedAt = this.#openedAt;
    this.#release();
    if (openedAt !== null && performance.now() - openedAt >= this.#options.stableAfter) {
      this.#failures = 0; // it was a good connection: start the backoff over
    }
    if (!isDenial(code) && this.#options.shouldRetry(code, reason)) {
      const ceiling = Math.min(this.#options.retryCap, this.#options.retryBase * 2 ** this.#failures);
      const delay = Math.random() * ceiling; // full jitter
      this.#failures += 1;
      this.#state = "waiting";
      this.#retryTimer = setTimeout(() => this.#retry(), delay);
      this.#emit("close", { code, reason, willRetry: true, delay });
      return;
    }
    this.#stop();
    this.#emit("close", { code, reason, willRetry: false, delay: null });
    if (isDenial(code)) {
      this.#emit("denied", { code, reason, status: code >= 4400 ? code - 4000 : null });
    }
  }

  #retry() {
    this.#retryTimer = null;
    try {
      this.#open();
    } catch (error) {
      // A URL function that gave no URL: nothing to retry with.
      this.#stop();
      this.#emit("error", { error });
      this.#emit("close", { code: 1006, reason: String(error), willRetry: false, delay: null });
    }
  }

  // -- the heartbeat ---------------------------------------------------------------------------

  #heard() {
    this.#lastHeard = performance.now();
  }

  #watchSilence() {
    const limit = this.#options.silenceTimeout;
    if (!(limit > 0)) return;
    const check = () => {
      const quiet = performance.now() - this.#lastHeard;
      if (quiet < limit) {
        this.#silenceTimer = setTimeout(check, limit - quiet);
        return;
      }
      // Nothing for too long, not even the handshake's answer: the connection is dead or the
      // server stuck. Give the socket up (its late events are ignored) and try again.
      this.#silenceTimer = null;
      const reason = `no message for ${limit / 1000} s`;
      const ws = this.#ws;
      this.#ws = null;
      ws.close(4000, reason);
      this.#closed(1006, reason);
    };
    this.#silenceTimer = setTimeout(check, limit);
  }

  // -- ending ----------------------------------------------------------------------------------

  /** Forget the current socket and its timers. */
  #release() {
    clearTimeout(this.#silenceTimer);
    clearInterval(this.#pingTimer);
    this.#silenceTimer = this.#pingTimer = null;
    this.#ws = null;
    this.#openedAt = null;
    this.#firstPending = false;
  }

  #stop() {
    this.#release();
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#state = "closed";
  }

  #emit(name, detail) {
    for (const listener of [...(this.#listeners.get(name) ?? [])]) {
      try {
        listener(detail);
      } catch (error) {
        // A listener's bug is reported as an uncaught error, and the connection goes on.
        reportError(error);
      }
    }
  }
}
