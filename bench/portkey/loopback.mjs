// Preloaded into the Portkey gateway (node --import): its start script listens on every interface
// (@hono/node-server's serve() with no hostname); the bench binds it to loopback only.
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args[0] !== null && typeof args[0] === "object") {
    args[0] = { ...args[0], host: "127.0.0.1" };
  } else if (typeof args[0] === "number" || (typeof args[0] === "string" && /^\d+$/.test(args[0]))) {
    if (typeof args[1] === "function") args.splice(1, 0, "127.0.0.1");
    else args[1] = "127.0.0.1";
  }
  return listen.apply(this, args);
};
