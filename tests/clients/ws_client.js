// A client on Node's `ws` package, run by tests/test_edge.py in a subprocess.
//
//   node ws_client.js URL TAG SIZE ATTEMPTS DEFLATE(0|1) FRAGMENT(0|1)
//
// For each attempt i: connect URL?tag=TAG-i, send one message of SIZE bytes (text on even
// attempts, binary on odd ones; in four fragments if FRAGMENT is 1) and wait for the close.
// Prints one JSON object per attempt: the close code and reason, wasClean (a Close frame was
// received and one sent), the extensions negotiated, and `elapsed`: seconds from the send to
// the 'close' event, which `ws` emits once the TCP socket is closed. The client's own close
// timeout is 10 s, so a server that does not close TCP shows as a long `elapsed`.
"use strict";

const { performance } = require("node:perf_hooks");
const WebSocket = require("ws");

const STEP = 15000; // milliseconds any one attempt may take

const [url, tag, size, attempts, deflate, fragment] = process.argv.slice(2);

function message(attempt) {
  const n = Number(size);
  return attempt % 2 === 0 ? "x".repeat(n) : Buffer.alloc(n);
}

function attemptOnce(attempt) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`attempt ${attempt}: no close`)), STEP);
    const ws = new WebSocket(`${url}?tag=${tag}-${attempt}`, {
      perMessageDeflate: deflate === "1",
      closeTimeout: 10000,
    });
    let start = null;
    let error = null;
    ws.on("error", (err) => {
      error = String(err);
    });
    ws.on("message", (data) => {
      error = `the server answered a message of ${data.length} bytes instead of closing`;
    });
    ws.on("open", () => {
      const data = message(attempt);
      start = performance.now();
      if (fragment === "1") {
        const piece = Math.ceil(data.length / 4);
        for (let at = 0; at < data.length; at += piece) {
          ws.send(data.slice(at, at + piece), { fin: at + piece >= data.length });
        }
      } else {
        ws.send(data);
      }
    });
    ws.addEventListener("close", (event) => {
      clearTimeout(timer);
      resolve({
        code: event.code,
        reason: event.reason,
        wasClean: event.wasClean,
        extensions: ws.extensions ? ws.extensions.split(",") : [],
        elapsed: start === null ? null : (performance.now() - start) / 1000,
        error,
      });
    });
  });
}

async function main() {
  for (let attempt = 0; attempt < Number(attempts); attempt++) {
    console.log(JSON.stringify(await attemptOnce(attempt)));
  }
}

main().catch((err) => {
  console.error(String(err));
  process.exit(1);
});
