// A BTC-Alpha-shaped venue on the REAL npm servers (socket.io 2.x / 4.x, or raw engine.io 6), for the
// recorder's conformance tests (tests/test_conformance_npm.py). One small deterministic L3 book per pair,
// advanced only by the test (GET /ctl/step), so every sent frame is known: each is appended, exactly as
// it goes on the wire, to --log (one JSON string per line). The state survives a kill -9 (--state).
//
//   node btcalpha_server.js --mode sio|eio --port P --pairs BTC_USD,ETH_BTC --state S --log L
//        [--ping-interval ms] [--ping-timeout ms] [--allow-eio3] [--transports websocket,polling] [--path /x/]
//
// sio: socket.io; every connected socket gets every pair's `book_<PAIR>` events, without any subscription
//      (what third-party clients of the live venue observed; exchanges.md §1.2).
// eio: raw engine.io (the seed's "engine.io protocol"): a socket receives a pair's messages, bare JSON, only
//      after sending the engine.io message `book_<PAIR>` (or {"subscribe":"book_<PAIR>"} or ["subscribe","book_<PAIR>"]).
// REST: GET /api/v1/orderbook/<PAIR>/?group=0 -> {"sell":[{id,price,amount,timestamp}],"buy":[...]} best first;
//       GET /api/v1/pairs/ -> the seed's list of pairs (read by the recorder's start-up check).
"use strict";
const http = require("http");
const fs = require("fs");

const args = {};
for (let i = 2; i < process.argv.length; i++) {
  const k = process.argv[i].replace(/^--/, "");
  const v = process.argv[i + 1] && !process.argv[i + 1].startsWith("--") ? process.argv[++i] : "1";
  args[k] = v;
}
const MODE = args.mode, PORT = +args.port, PAIRS = args.pairs.split(",");
const PING_INTERVAL = +(args["ping-interval"] || 1000), PING_TIMEOUT = +(args["ping-timeout"] || 2000);

// ---------------------------------------------------------------- deterministic market
function rng(seed) {  // mulberry32
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const PRICE_DP = 2, AMOUNT_DP = 4;
const price = (ticks) => ticks / 10 ** PRICE_DP;  // a JS number: JSON writes its shortest form (935.23)
const lotsText = (lots) => (lots / 10 ** AMOUNT_DP).toFixed(AMOUNT_DP);

let state;
if (args.state && fs.existsSync(args.state)) {
  state = JSON.parse(fs.readFileSync(args.state, "utf8"));
} else {
  state = { nextOid: 1000, nextTid: 5000, nextCancel: 90000, clock: 1767225600.0, pairs: {} };
  PAIRS.forEach((p, i) => { state.pairs[p] = { orders: [], draws: 0, seed: 7 + i }; });
  for (const p of PAIRS) for (let k = 0; k < 12; k++) step(p, true);
}
function save() {
  if (!args.state) return;
  const tmp = args.state + ".tmp";
  fs.writeFileSync(tmp, JSON.stringify(state));
  fs.renameSync(tmp, args.state);
}
function draw(p) {  // the pair's PRNG, resumed after a restart from the number of draws taken
  const st = state.pairs[p];
  if (!st._r) { st._r = rng(st.seed); for (let i = 0; i < st.draws; i++) st._r(); }
  st.draws++;
  return st._r();
}
function best(orders, side) {  // resting orders of a side, best first then time
  return orders.filter((o) => o.side === side)
    .sort((a, b) => (side === "sell" ? a.ticks - b.ticks : b.ticks - a.ticks) || a.seq - b.seq);
}
function step(p, quiet) {
  const st = state.pairs[p];
  state.clock = Math.round((state.clock + 0.25 + draw(p)) * 1e6) / 1e6;
  const date = state.clock;
  const live = st.orders;
  if (!quiet && live.length > 6 && draw(p) < 0.3) {  // cancel a random resting order
    const o = live.splice(Math.floor(draw(p) * live.length), 1)[0];
    return { success: true, date, oid: o.oid, cancel_order_id: state.nextCancel++, price: price(o.ticks),
      type: o.side, amount: o.lots / 10 ** AMOUNT_DP, pair: p, cancelled: true };
  }
  const side = draw(p) < 0.5 ? "buy" : "sell";
  const mid = 100000;
  const cross = quiet ? 0 : (draw(p) < 0.35 ? 30 : 0);
  const off = 1 + Math.floor(draw(p) * 40);
  const ticks = side === "buy" ? mid - off + cross : mid + off - cross;
  let lots = 1 + Math.floor(draw(p) * 20000);
  const oid = state.nextOid++;
  const trades = [];
  const opp = side === "buy" ? "sell" : "buy";
  for (const m of best(live, opp)) {
    if (lots === 0 || (side === "buy" ? m.ticks > ticks : m.ticks < ticks)) break;
    const q = Math.min(lots, m.lots);
    trades.push({ tid: state.nextTid++, type: opp, price: (m.ticks / 10 ** PRICE_DP).toFixed(PRICE_DP),
      amount: lotsText(q), o_id: m.oid });
    m.lots -= q;
    lots -= q;
  }
  st.orders = live.filter((o) => o.lots > 0);
  if (lots > 0) st.orders.push({ oid, side, ticks, lots, seq: oid, ts: date });
  return { success: true, date, oid, type: side, price: price(ticks), amount: lots / 10 ** AMOUNT_DP, trades };
}
function bookJSON(p) {
  const o = state.pairs[p].orders;
  const row = (x) => ({ id: x.oid, price: (x.ticks / 10 ** PRICE_DP).toFixed(PRICE_DP),
    amount: lotsText(x.lots), timestamp: x.ts });
  return { sell: best(o, "sell").map(row), buy: best(o, "buy").map(row) };
}

// ---------------------------------------------------------------- servers
const logFd = args.log ? fs.openSync(args.log, "a") : null;
function logSent(wire, pair) {
  if (logFd !== null) fs.writeSync(logFd, JSON.stringify({ pair, wire }) + "\n");
}
const subs = new Map();  // raw engine.io socket -> Set of channels
let clients = 0;

function handleRest(req, res) {
  const url = new URL(req.url, "http://x");
  const send = (code, obj) => { res.writeHead(code, { "content-type": "application/json" }); res.end(JSON.stringify(obj)); return true; };
  let m = url.pathname.match(/^\/api\/v1\/orderbook\/([A-Z0-9_]+)\/?$/);
  if (m) return state.pairs[m[1]] ? send(200, bookJSON(m[1])) : send(404, { detail: "Not found." });
  if (url.pathname === "/api/v1/pairs/") {
    return send(200, PAIRS.map((name) => {
      const [currency1, currency2] = name.split("_");
      return { currency1, currency2, name, price_precision: PRICE_DP, amount_precision: AMOUNT_DP, minimum_order_size: lotsText(1),
               maximum_order_size: "100000000.00000000", minimum_order_value: "0.00000000", liquidity_type: 10 };
    }));
  }
  if (url.pathname === "/ctl/step") {  // n messages per pair, round robin, each broadcast as it is made
    const n = +(url.searchParams.get("n") || 1);
    let sent = 0;
    for (let i = 0; i < n; i++) for (const p of PAIRS) { broadcast(p, step(p, false)); sent++; }
    save();
    return send(200, { sent });
  }
  if (url.pathname === "/ctl/clients") {
    const subscribed = {};
    for (const s of subs.values()) for (const c of s) subscribed[c] = (subscribed[c] || 0) + 1;
    return send(200, { clients, subscribed });
  }
  if (url.pathname === "/ctl/book") return send(200, bookJSON(url.searchParams.get("pair")));
  if (url.pathname.startsWith("/api/") || url.pathname.startsWith("/ctl/")) return send(404, { detail: "Not found." });
  return undefined;  // left to the engine.io / socket.io request handler
}

const httpServer = http.createServer();
let broadcast;
const transports = (args.transports || "websocket").split(",");
if (MODE === "sio") {
  const sio = require("socket.io");
  const v2 = typeof sio.Server !== "function";
  const opts = { pingInterval: PING_INTERVAL, pingTimeout: PING_TIMEOUT, transports, serveClient: false };
  if (args.path) opts.path = args.path;
  if (args["allow-eio3"]) opts.allowEIO3 = true;
  const io = v2 ? sio(httpServer, opts) : new sio.Server(httpServer, opts);
  io.on("connection", (socket) => {
    clients++;
    socket.on("disconnect", () => { clients--; });
  });
  broadcast = (p, msg) => {
    const data = ["book_" + p, msg];
    if (clients > 0) logSent("42" + JSON.stringify(data), p);  // socket.io's encoder: type 2, root nsp, no id
    io.emit(...data);
  };
} else {
  const engine = require("engine.io");
  const opts = { pingInterval: PING_INTERVAL, pingTimeout: PING_TIMEOUT, transports };
  if (args.path) opts.path = args.path;
  if (args["allow-eio3"]) opts.allowEIO3 = true;
  const srv = engine.attach(httpServer, opts);
  srv.on("connection", (socket) => {
    clients++;
    subs.set(socket, new Set());
    socket.on("message", (data) => {
      let ch = String(data);
      try {
        const j = JSON.parse(ch);
        ch = Array.isArray(j) ? j[1] : (j && j.subscribe) || ch;
      } catch (e) { /* plain text channel name */ }
      if (typeof ch === "string" && ch.startsWith("book_") && PAIRS.includes(ch.slice(5))) subs.get(socket).add(ch);
    });
    socket.on("close", () => { clients--; subs.delete(socket); });
  });
  broadcast = (p, msg) => {
    const text = JSON.stringify(msg);
    for (const [socket, chans] of subs) {
      if (chans.has("book_" + p)) { socket.send(text); logSent(text, p); }
    }
  };
}
// REST and control first; anything else is the socket server's (it registered its own listener)
const others = httpServer.listeners("request").slice();
httpServer.removeAllListeners("request");
httpServer.on("request", (req, res) => {
  if (handleRest(req, res) === undefined) for (const l of others) l.call(httpServer, req, res);
});
save();
httpServer.listen(PORT, "127.0.0.1", () => { process.stdout.write(`listening ${PORT}\n`); });
