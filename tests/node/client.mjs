// A Node `ws` client for the test suite: runs one scenario, prints one JSON result.
// Usage: node client.mjs '{"url": "...", "source": "query", "token": "...", ...}'
import WebSocket from "ws";

const options = JSON.parse(process.argv[2]);
const result = { events: [] };
const started = Date.now();
const done = () => { console.log(JSON.stringify(result)); process.exit(0); };
setTimeout(() => { result.timeout = true; done(); }, options.timeoutMs ?? 5000);

let url = options.url;
const wsOptions = { headers: {} };
let protocols = [];
if (options.source === "query") url += "?token=" + encodeURIComponent(options.token);
if (options.source === "bearer") wsOptions.headers.Authorization = "Bearer " + options.token;
if (options.source === "cookie") {
  wsOptions.headers.Cookie = "token=" + options.token;
  wsOptions.headers.Origin = options.origin;
}
if (options.source === "subprotocol") protocols = ["bearer", options.token];
// As a browser would: an Origin header whatever the source (readable refusals).
if (options.browserOrigin) wsOptions.headers.Origin = options.browserOrigin;
const reauthTokens = [...(options.reauth ?? [])];

const ws = new WebSocket(url, protocols, wsOptions);
const steps = [...(options.send ?? [])];

function next() {
  const step = steps.shift();
  if (step === undefined) {
    if (!options.stay) ws.close(options.closeCode ?? 1000, "done");
  } else if (step.binary) {
    ws.send(Buffer.from(step.binary, "base64"));
  } else {
    ws.send(step.text);
  }
}

ws.on("unexpected-response", (request, response) => {
  result.status = response.statusCode;
  result.challenge = response.headers["www-authenticate"] ?? null;
  let body = "";
  response.on("data", (chunk) => { body += chunk; });
  response.on("end", () => { result.body = body; done(); });
});
ws.on("open", () => {
  result.protocol = ws.protocol;
  result.events.push("open");
  if (options.sendOnOpen !== undefined) ws.send(options.sendOnOpen);
});
ws.on("message", (data, isBinary) => {
  result.events.push(isBinary ? { binary: Buffer.from(data).toString("base64") }
                              : { text: data.toString() });
  // The echo example's convention: answer a request for a fresh token with the next one.
  if (!isBinary && data.toString().startsWith('{"type": "reauth_required"')) {
    if (reauthTokens.length) ws.send(JSON.stringify({ type: "reauth", token: reauthTokens.shift() }));
    return;
  }
  if (!isBinary && data.toString().startsWith('{"type": "reauthenticated"')) return;
  next();
});
ws.on("close", (code, reason) => {
  result.close = { code, reason: reason.toString() };
  result.elapsedMs = Date.now() - started;
  done();
});
ws.on("error", (error) => { result.error = error.message; });
