// sandboxd's warm start for Node.js: node starts before its job, then runs it.
//
// How it runs: `node [the profile's options] -e <this file's text>`, started by the job
// process of a warm container (native/jobproc.c) with every restriction of a job in
// place and the job's stdio, rlimits, environment and working directory (those of the
// pool's shape; the supervisor hands a job over only if they are the job's).
// Descriptor 3 is the job process's socket to the container's init.
//
// What it does: say it is up (one byte, WARM_READY), wait on descriptor 3 for the job's
// exec request (container.encode_exec: argv, env, cwd, rlimits; no descriptors), close
// the socket, undo what `-e` set up (the globals it defines, process._eval, execArgv,
// argv), and run the entry as `node [options] main.js [args]` does: Module.runMain, the
// entry point node's own start uses (CommonJS or ESM alike). Uncaught errors, exit
// codes, signals and 'exit' handlers are node's own. Before it says it is up, it loads
// the built-in modules a program's first write to stdout needs, and has console's code
// compiled by logging once to a throw-away console.
//
// A failure before the job's code runs is the sandbox's: reported on the socket as the
// job process reports its own (step, errno name, message) and exit 126. Nothing of the
// job runs before the socket is closed. docs/profiles.md lists what still differs.
(function _sandboxd_warm() {
  "use strict";
  const fs = require("fs");
  const path = require("path");
  const Module = require("module");
  const SOCK = 3;
  const NAMES = { 2: "ENOENT", 13: "EACCES", 20: "ENOTDIR", 22: "EINVAL", 71: "EPROTO" };

  function fault(step, errno, detail) {
    const name = NAMES[errno] || "?";
    const message = `${step} ${detail} (${name})`;
    try {
      fs.writeSync(SOCK, Buffer.from(`${step}\0${name}\0${message}\0`).subarray(0, 1023));
    } finally {
      process.reallyExit(126);
    }
  }

  function readExact(n, what) {
    const buf = Buffer.alloc(n);
    let got = 0;
    while (got < n) {
      let r;
      try {
        r = fs.readSync(SOCK, buf, got, n - got, null);
      } catch (e) {
        if (e.code === "EAGAIN" || e.code === "EINTR") continue;
        fault("exec request", 71, what);
      }
      if (r === 0) {
        if (got === 0 && what === "header") process.reallyExit(0); // destroyed unused
        fault("exec request", 71, what);
      }
      got += r;
    }
    return buf;
  }

  // What writing to a pipe or a terminal loads, loaded now (about half of a hello world's
  // run here); process.stdout and process.stderr themselves are made by the job, if at all.
  require("net");
  require("tty");
  const { Writable } = require("stream");
  // A program's first console.log compiles console's formatting and stream-writing code
  // (~2 ms of a hello world here): compiled now, by a throw-away console that writes
  // nowhere. Without colours: deciding them would make process.stderr (and open a
  // descriptor), which is the job's to make, as are the global console's streams.
  new globalThis.console.Console({
    stdout: new Writable({ write(chunk, encoding, done) { done(); } }), colorMode: false,
  }).log("%s %d", "warm-up", 1, { up: [true] });
  // The request's parts (argv, env, cwd; the rlimits follow, which the job process applied
  // before node started). A function so that it is compiled before the job arrives.
  function parse(body) {
    let at = 0;
    const u32 = () => {
      if (at + 4 > body.length) fault("exec request", 71, "cut short");
      at += 4;
      return body.readUInt32LE(at - 4);
    };
    const str = () => {
      const end = body.indexOf(0, at);
      if (end < 0) fault("exec request", 71, "with an unterminated string");
      const s = body.toString("utf8", at, end);
      at = end + 1;
      return s;
    };
    const strs = () => { const n = u32(); const out = []; for (let i = 0; i < n; i++) out.push(str()); return out; };
    return { argv: strs(), env: strs(), cwd: str() };
  }
  // V8 compiles a function when it is first called: what runs between the hand-over and the
  // job's first line (this file's parsing, the CommonJS loader's resolving, reading,
  // wrapping and compiling of a file) was ~1 ms of every job's CPU here. Run once now, on a
  // made-up request and on /dev/null (an empty file to the loader, in every container),
  // leaving nothing behind: the loader's caches are emptied of it.
  {
    const one = (xs) => {
      const n = Buffer.alloc(4);
      n.writeUInt32LE(xs.length);
      return [n, ...xs.map((x) => Buffer.from(`${x}\0`))];
    };
    parse(Buffer.concat([...one(["node", "main.js"]), ...one(["A=b"]), Buffer.from("/\0")]));
    readExact(0, "warm-up");
    path.resolve("main.js");
    Module._load("/dev/null", null, false);
    delete Module._cache["/dev/null"];
    for (const key of Object.keys(Module._pathCache)) delete Module._pathCache[key];
  }
  fs.writeSync(SOCK, Buffer.from([6])); // WARM_READY: up, waiting for the job
  const size = readExact(4, "header").readUInt32LE(0);
  if (size & 0x80000000 || size > 64 << 20) fault("exec request", 71, `of ${size} bytes`);
  const { argv, env, cwd } = parse(readExact(size, `body of ${size} bytes`));
  const wanted = new Map(env.map((kv) => { const i = kv.indexOf("="); return [kv.slice(0, i), kv.slice(i + 1)]; }));
  for (const key of Object.keys(process.env)) if (!wanted.has(key)) delete process.env[key];
  for (const [key, value] of wanted) if (process.env[key] !== value) process.env[key] = value;
  try {
    process.chdir(cwd);
  } catch (e) {
    fault("chdir", -e.errno || 2, cwd);
  }
  const options = process.execArgv.slice(0, -2); // started as [node, options..., -e, this]
  const atScript = 1 + options.length;
  if (argv.length <= atScript || argv.slice(1, atScript).join("\0") !== options.join("\0")) {
    fault("exec request", 22, "for another interpreter or options");
  }
  fs.closeSync(SOCK); // from here on, nothing can report a fault: the job's code may run

  // What `-e` set up and a plain start does not have.
  for (const name of ["module", "exports", "require", "__filename", "__dirname"]) {
    delete globalThis[name];
  }
  delete process._eval;
  process.execArgv = options;
  process.argv = [process.execPath, path.resolve(argv[atScript]), ...argv.slice(atScript + 1)];
  Module.runMain();
})();
