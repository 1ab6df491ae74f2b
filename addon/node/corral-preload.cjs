// Loaded by `corral run` (NODE_OPTIONS=--require <this file>): makes Node's built-in fetch, which ignores
// HTTPS_PROXY before Node 24, go through the proxy the environment names. The openai and
// @anthropic-ai/sdk packages call fetch, so they are captured with no code change.
//
// No dependency: Node ships undici inside (not importable by user code), and its fetch takes the global
// dispatcher from a well-known global symbol that every undici copy shares. The dispatcher installed
// here is Node's own Agent class, with a connector that opens a CONNECT tunnel through the proxy for
// every origin that NO_PROXY does not exempt (like undici's EnvHttpProxyAgent).
"use strict";

const net = require("node:net");
const tls = require("node:tls");
const http = require("node:http");

const DISPATCHER = Symbol.for("undici.globalDispatcher.1");

function env(name) {
  return process.env[name] || process.env[name.toLowerCase()] || "";
}

function parseProxy(value) {
  if (!value) return null;
  let url;
  try {
    url = new URL(value.includes("://") ? value : `http://${value}`);
  } catch {
    return null;
  }
  if (url.protocol !== "http:") return null; // an https:// proxy is not what `corral env` hands out
  const proxy = { host: url.hostname.replace(/^\[|\]$/g, ""), port: Number(url.port) || 80, auth: null };
  if (url.username) {
    const user = decodeURIComponent(url.username);
    const pass = decodeURIComponent(url.password);
    proxy.auth = "Basic " + Buffer.from(`${user}:${pass}`).toString("base64");
  }
  return proxy;
}

function bypassed(host, port, noProxy) {
  host = host.toLowerCase().replace(/^\[|\]$/g, "");
  for (let entry of noProxy.split(/[\s,]+/)) {
    entry = entry.trim().toLowerCase();
    if (!entry) continue;
    if (entry === "*") return true;
    let entryPort = "";
    const m = /^(.*?)(?::(\d+))?$/.exec(entry.replace(/^\[|\]$/g, ""));
    if (m && m[2] && !net.isIPv6(entry)) {
      entry = m[1];
      entryPort = m[2];
    }
    if (entryPort && String(port) !== entryPort) continue;
    entry = entry.replace(/^\*?\./, ".");
    if (host === entry.replace(/^\./, "") || (entry.startsWith(".") && host.endsWith(entry))) return true;
    if (!entry.startsWith(".") && host.endsWith("." + entry)) return true;
  }
  return false;
}

function direct(opts, port, callback) {
  const host = opts.hostname.replace(/^\[|\]$/g, "");
  const done = (sock) => callback(null, sock);
  const socket = opts.protocol === "https:"
    ? tls.connect({ host, port, servername: opts.servername || (net.isIP(host) ? undefined : host),
      ALPNProtocols: ["http/1.1"] }, () => done(socket))
    : net.connect({ host, port }, () => done(socket));
  socket.once("error", (err) => callback(err, null));
}

const TLS_OPTIONS = ["ca", "cert", "key", "pfx", "passphrase", "rejectUnauthorized", "checkServerIdentity",
  "minVersion", "maxVersion", "ciphers", "servername"];

function tunnel(proxy, opts, port, callback, tlsOptions = {}) {
  const host = opts.hostname.replace(/^\[|\]$/g, "");
  const target = `${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
  const headers = { host: target };
  if (proxy.auth) headers["proxy-authorization"] = proxy.auth;
  const req = http.request({ host: proxy.host, port: proxy.port, method: "CONNECT", path: target, headers,
    agent: false });
  let settled = false;
  const fail = (err) => { if (!settled) { settled = true; callback(err, null); } };
  req.once("error", fail);
  req.once("connect", (res, socket, head) => {
    if (res.statusCode !== 200) {
      socket.destroy();
      fail(new Error(`proxy ${proxy.host}:${proxy.port} refused CONNECT ${target}: ${res.statusCode} ${res.statusMessage}`));
      return;
    }
    if (head && head.length) socket.unshift(head);
    if (opts.protocol !== "https:") {
      settled = true;
      callback(null, socket);
      return;
    }
    const secure = tls.connect({ servername: opts.servername || (net.isIP(host) ? undefined : host),
      ALPNProtocols: ["http/1.1"], ...tlsOptions, socket });
    secure.once("secureConnect", () => { if (!settled) { settled = true; callback(null, secure); } });
    secure.once("error", fail);
  });
  req.end();
}

// Node's https module (https.request/get with the default agent, and clients built on it that keep the
// default, such as node-fetch 2) ignores the proxy variables too: its global agent tunnels the same way.
function patchHttpsAgent(proxy, noProxy) {
  const https = require("node:https");
  class CorralTunnelAgent extends https.Agent {
    createConnection(options, callback) {
      const host = options.host || options.hostname || "localhost";
      const port = Number(options.port) || 443;
      if (bypassed(host, port, noProxy)) return super.createConnection(options, callback);
      const tlsOptions = {};
      for (const key of TLS_OPTIONS) if (options[key] !== undefined) tlsOptions[key] = options[key];
      tunnel(proxy, { hostname: host, protocol: "https:", servername: options.servername }, port, callback,
        tlsOptions);
      return undefined;
    }
  }
  https.globalAgent = new CorralTunnelAgent({ keepAlive: true });
}

function install() {
  const httpsProxy = parseProxy(env("HTTPS_PROXY"));
  const httpProxy = parseProxy(env("HTTP_PROXY"));
  if (!httpsProxy && !httpProxy) return;
  const noProxy = env("NO_PROXY");
  void globalThis.Headers; // loads Node's bundled undici, which creates the default global dispatcher
  const current = globalThis[DISPATCHER];
  const Agent = current && current.constructor;
  if (typeof Agent !== "function" || typeof fetch !== "function") {
    process.emitWarning("corral: this Node has no built-in fetch dispatcher to configure; fetch is not proxied");
    return;
  }
  const connect = (opts, callback) => {
    const port = Number(opts.port) || (opts.protocol === "https:" ? 443 : 80);
    const proxy = opts.protocol === "https:" ? httpsProxy : httpProxy;
    if (!proxy || bypassed(opts.hostname, port, noProxy)) return direct(opts, port, callback);
    return tunnel(proxy, opts, port, callback);
  };
  globalThis[DISPATCHER] = new Agent({ connect });
  if (httpsProxy) patchHttpsAgent(httpsProxy, noProxy);
}

install();
