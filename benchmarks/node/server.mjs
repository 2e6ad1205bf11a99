// The Express + ws pattern as a peer: an HTTP server, ws in noServer mode, and the token
// checked in the 'upgrade' event before handleUpgrade. Usage: node server.mjs PORT
import http from "node:http";
import jwt from "jsonwebtoken";
import { WebSocketServer } from "ws";

const secret = process.env.WSAUTH_BENCH_SECRET ?? "benchmark-secret-of-32-bytes-min!";
const server = http.createServer((req, res) => { res.writeHead(404); res.end(); });
const wss = new WebSocketServer({ noServer: true, maxPayload: 1 << 20 });

server.on("upgrade", (request, socket, head) => {
  const token = new URL(request.url, "http://x").searchParams.get("token");
  try {
    jwt.verify(token ?? "", secret, { algorithms: ["HS256"] });
  } catch {
    socket.write("HTTP/1.1 401 Unauthorized\r\nContent-Length: 17\r\nConnection: close\r\n\r\n401 Unauthorized\n");
    socket.destroy();
    return;
  }
  wss.handleUpgrade(request, socket, head, (ws) => {
    ws.send("Welcome! You are authenticated.");
    ws.on("message", (data, isBinary) => {
      ws.send(isBinary ? data : "You said: " + data.toString(), { binary: isBinary });
    });
  });
});
server.listen(Number(process.argv[2]), "127.0.0.1", () => console.log("ready"));
