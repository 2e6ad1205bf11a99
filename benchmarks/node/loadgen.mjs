// The load generator: one workload against one server, one JSON line of results.
// Usage: node loadgen.mjs '{"workload": "W1", "port": 9000, "token": "...", "seconds": 3}'
// Node's ws client is event-driven and uses little CPU per message, so the server, not
// the generator, is what saturates; the report includes the generator's own CPU time.
import net from "node:net";
import WebSocket from "ws";

const o = JSON.parse(process.argv[2]);
const url = (token) => `ws://127.0.0.1:${o.port}/ws?token=${token}`;
const now = () => Number(process.hrtime.bigint()) / 1e6; // ms
const cpuStart = process.cpuUsage();
const wallStart = now();

function percentile(values, p) {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

// Several tokens (distinct subjects) spread connections under per-identity caps.
const tokens = o.tokens ?? [o.token];
let nextToken = 0;
const pickToken = () => tokens[nextToken++ % tokens.length];

function open(token = pickToken()) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url(token), { perMessageDeflate: false });
    ws.once("message", () => resolve(ws)); // the welcome
    ws.once("error", reject);
    ws.once("unexpected-response", (req, res) => reject(new Error(`status ${res.statusCode}`)));
  });
}

async function roundTrips(count, payload, binary, seconds, fragments = 1) {
  const sockets = await Promise.all(Array.from({ length: count }, () => open()));
  const latencies = [];
  let bytes = 0;
  const end = now() + seconds * 1000;
  await Promise.all(sockets.map((ws) => new Promise((resolve) => {
    let sentAt = 0;
    const send = () => {
      if (now() >= end) { resolve(); return; }
      sentAt = now();
      if (fragments === 1) { ws.send(payload, { binary }); return; }
      for (let i = 1; i <= fragments; i++) ws.send(payload, { binary, fin: i === fragments });
    };
    ws.on("message", (data) => {
      latencies.push(now() - sentAt);
      bytes += data.length;
      send();
    });
    send();
  })));
  for (const ws of sockets) ws.terminate();
  return { latencies, bytes };
}

function tcpRoundTrips(count, size, seconds) {
  const latencies = [];
  const end = now() + seconds * 1000;
  const payload = Buffer.alloc(size, 120);
  return Promise.all(Array.from({ length: count }, () => new Promise((resolve) => {
    const socket = net.connect(o.port, "127.0.0.1");
    socket.setNoDelay(true);
    let got = 0;
    let sentAt = 0;
    const send = () => {
      if (now() >= end) { socket.destroy(); resolve(); return; }
      sentAt = now();
      socket.write(payload);
    };
    socket.on("connect", send);
    socket.on("data", (data) => {
      got += data.length;
      while (got >= size) { got -= size; latencies.push(now() - sentAt); send(); }
    });
  }))).then(() => ({ latencies, bytes: latencies.length * size }));
}

async function loops(count, seconds, once) {
  const latencies = [];
  let failures = 0;
  const end = now() + seconds * 1000;
  await Promise.all(Array.from({ length: count }, async () => {
    while (now() < end) {
      const started = now();
      try { await once(); latencies.push(now() - started); } catch { failures += 1; }
    }
  }));
  return { latencies, failures };
}

function handshakeCycle() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url(pickToken()), { perMessageDeflate: false });
    ws.once("message", () => ws.close(1000));
    ws.once("close", (code) => (code === 1000 ? resolve() : reject(new Error(`close ${code}`))));
    ws.once("error", reject);
  });
}

function invalidTokenCycle() {
  // A raw handshake with a bad token: the answer must be a 401, then the server closes.
  return new Promise((resolve, reject) => {
    const socket = net.connect(o.port, "127.0.0.1");
    let response = "";
    socket.on("connect", () => socket.write(
      `GET /ws?token=not-a-valid-token HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
      `Sec-WebSocket-Version: 13\r\n\r\n`));
    socket.on("data", (data) => { response += data.toString("latin1"); });
    socket.on("error", () => {}); // a reset after the full response still counts below
    socket.on("close", () => (response.startsWith("HTTP/1.1 401") ? resolve()
                                                                  : reject(new Error(response))));
  });
}

async function holdIdle(count) {
  const sockets = [];
  let failures = 0;
  for (let i = 0; i < count; i += 50) {
    const batch = await Promise.allSettled(
      Array.from({ length: Math.min(50, count - i) }, () => open()));
    for (const r of batch) (r.status === "fulfilled" ? sockets.push(r.value) : failures++);
  }
  console.log(JSON.stringify({ held: sockets.length, failures }));
  await new Promise((resolve) => process.stdin.once("data", resolve)); // parent measured RSS
  for (const ws of sockets) ws.terminate();
  return { held: sockets.length, failures };
}

const seconds = o.seconds ?? 3;
let result;
if (o.workload === "W1" && o.raw) {
  const r = await tcpRoundTrips(50, 32, seconds);
  result = { messages: r.latencies.length, latencies: r.latencies };
} else if (o.workload === "W1") {
  const r = await roundTrips(50, "x".repeat(32), false, seconds);
  result = { messages: r.latencies.length, latencies: r.latencies };
} else if (o.workload === "W2" && o.raw) {
  const r = await tcpRoundTrips(4, 65536, seconds);
  result = { messages: r.latencies.length, bytes: r.bytes, latencies: r.latencies };
} else if (o.workload === "W2") {
  const r = await roundTrips(4, Buffer.alloc(65536, 7), true, seconds);
  result = { messages: r.latencies.length, bytes: r.bytes, latencies: r.latencies };
} else if (o.workload === "W6") {
  // Autobahn 9.3.x's shape within the default limits: 1,000 text fragments of 64 bytes.
  const r = await roundTrips(4, "y".repeat(64), false, seconds, 1000);
  result = { messages: r.latencies.length, bytes: r.bytes, latencies: r.latencies };
} else if (o.workload === "W3") {
  const r = await loops(8, seconds, handshakeCycle);
  result = { handshakes: r.latencies.length, failures: r.failures, latencies: r.latencies };
} else if (o.workload === "W4") {
  const r = await loops(8, seconds, invalidTokenCycle);
  result = { rejections: r.latencies.length, failures: r.failures, latencies: r.latencies };
} else if (o.workload === "W5") {
  result = await holdIdle(o.connections ?? 1000);
}
const wall = (now() - wallStart) / 1000;
const cpu = process.cpuUsage(cpuStart);
const lat = result.latencies ?? [];
delete result.latencies;
console.log(JSON.stringify({
  ...result, seconds: wall, p50_ms: percentile(lat, 50), p99_ms: percentile(lat, 99),
  loadgen_cpu: (cpu.user + cpu.system) / 1e6 / wall,
}));
process.exit(0);
