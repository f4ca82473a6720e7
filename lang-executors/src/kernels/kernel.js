// vana-sandbox JavaScript kernel: started by the session kernel on the first JavaScript cell.
// Cells run as scripts in this one context, so top-level declarations, globals and loaded
// modules persist between them; a cell's completion value (awaited when it is a promise) is
// its result. Requests arrive on stdin (one JSON object per line); replies go to the descriptor
// named by VANA_REPLY_FD. The cell's own output goes to stdout and stderr, which the session
// kernel captures.
"use strict";
const fs = require("fs");
const readline = require("readline");
const util = require("util");
const vm = require("vm");

const replyFd = Number(process.env.VANA_REPLY_FD);
delete process.env.VANA_REPLY_FD;
globalThis.require = require;
globalThis.module = module;

function reply(msg) {
  fs.writeSync(replyFd, JSON.stringify(msg) + "\n");
}

function describe(err) {
  if (err instanceof Error) {
    return { name: err.name, value: err.message, traceback: err.stack || String(err) };
  }
  return { name: "Error", value: util.inspect(err), traceback: "" };
}

const queue = [];
let busy = false;

async function runCell(req) {
  let value;
  try {
    value = vm.runInThisContext(req.code, { filename: "<cell>" });
    if (value && typeof value.then === "function") {
      value = await value;
    }
    reply({
      ev: "done",
      id: req.id,
      value: value === undefined ? null : util.inspect(value, { depth: 4 }),
    });
  } catch (err) {
    reply({ ev: "done", id: req.id, error: describe(err) });
  }
}

async function drain() {
  if (busy) return;
  busy = true;
  while (queue.length > 0) {
    await runCell(queue.shift());
  }
  busy = false;
}

process.on("uncaughtException", (err) => {
  process.stderr.write(`Uncaught ${err && err.stack ? err.stack : err}\n`);
});
process.on("unhandledRejection", (err) => {
  process.stderr.write(`Unhandled rejection: ${err && err.stack ? err.stack : err}\n`);
});

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  let req;
  try {
    req = JSON.parse(line);
  } catch (_) {
    return;
  }
  queue.push(req);
  drain();
});
