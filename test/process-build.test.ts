/**
 * Issue 2, point 1 (build and start): the built client (hashed, precompressed),
 * the built server on a production-only install, and `npm run dev` with Vite's
 * middleware and HMR on the same port. These read the build made by
 * `npm run build` (npm test builds first); they never rebuild, since other test
 * files run the same dist/ at the same time.
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from "vitest";
import { spawn, execFile } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { cp, copyFile } from "node:fs/promises";
import { request } from "node:http";
import { createHash, randomBytes } from "node:crypto";
import { brotliDecompressSync, gunzipSync } from "node:zlib";
import path from "node:path";
import { promisify } from "node:util";
import { spawnServer, type ServerProcess } from "./helpers/spawnServer.js";
import { createTestDatabase, type TestDatabase } from "./helpers/db.js";
import { ROOT } from "./helpers/paths.js";
import { freePort, getJson, makeTempDir, sleep, waitForStatus } from "./fixtures/process.js";

const run = promisify(execFile);
const PUBLIC = path.join(ROOT, "dist", "public");

const servers: ServerProcess[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

describe("npm run build", () => {
  it("writes hashed client assets into dist/public with .br and .gz copies of the same bytes", () => {
    const assets = readdirSync(path.join(PUBLIC, "assets"));
    const originals = assets.filter((f) => !f.endsWith(".br") && !f.endsWith(".gz"));
    const hashed = originals.filter((f) => /-[\w-]{8}\.(js|css)$/.test(f));
    expect(hashed.some((f) => f.endsWith(".js"))).toBe(true);
    expect(hashed.some((f) => f.endsWith(".css"))).toBe(true);
    for (const f of hashed) {
      const raw = readFileSync(path.join(PUBLIC, "assets", f));
      expect(brotliDecompressSync(readFileSync(path.join(PUBLIC, "assets", `${f}.br`))).equals(raw), `${f}.br`).toBe(true);
      expect(gunzipSync(readFileSync(path.join(PUBLIC, "assets", `${f}.gz`))).equals(raw), `${f}.gz`).toBe(true);
    }
    // index.html loads hashed entry JS and CSS that exist; other chunks load lazily.
    const html = readFileSync(path.join(PUBLIC, "index.html"), "utf8");
    const referenced = [...html.matchAll(/\/assets\/([\w.-]+\.(?:js|css))/g)].map((m) => m[1] as string);
    expect(referenced.some((f) => f.endsWith(".js"))).toBe(true);
    expect(referenced.some((f) => f.endsWith(".css"))).toBe(true);
    for (const f of referenced) expect(hashed, f).toContain(f);
    // and the server bundle sits beside it.
    expect(existsSync(path.join(ROOT, "dist", "index.js"))).toBe(true);
    expect(existsSync(path.join(ROOT, "dist", "migrate.js"))).toBe(true);
  });
});

describe("npm ci --omit=dev", () => {
  it(
    "the built server starts and becomes ready with production dependencies only",
    async () => {
      const tmp = await makeTempDir("esa-prod-install-");
      try {
        for (const f of ["package.json", "package-lock.json"]) await copyFile(path.join(ROOT, f), path.join(tmp.dir, f));
        for (const d of ["dist", "migrations"]) await cp(path.join(ROOT, d), path.join(tmp.dir, d), { recursive: true });
        await run("npm", ["ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund"], {
          cwd: tmp.dir,
          env: { ...process.env, NODE_ENV: "production" },
          timeout: 150_000,
          maxBuffer: 16 * 1024 * 1024,
        });
        // The proof means something only if the dev tools are really absent.
        for (const dev of ["vite", "tsx", "esbuild", "vitest", "@vitejs/plugin-react", "pino-pretty", "drizzle-kit"]) {
          expect(existsSync(path.join(tmp.dir, "node_modules", dev)), `${dev} installed`).toBe(false);
        }
        expect(existsSync(path.join(tmp.dir, "node_modules", "express"))).toBe(true);

        const srv = await spawnServer({ cwd: tmp.dir, entry: path.join(tmp.dir, "dist", "index.js"), env: { DATABASE_URL: db.url } });
        servers.push(srv);
        await waitForStatus(`${srv.baseUrl}/ready`, 200, 30_000);
        const home = await fetch(`${srv.baseUrl}/`, { headers: { accept: "text/html" } });
        expect(home.status).toBe(200);
        expect(await home.text()).toContain('<div id="root">');
        srv.kill("SIGTERM");
        expect(await srv.exited).toEqual({ code: 0, signal: null });
        expect(srv.stderr()).not.toMatch(/ERR_MODULE_NOT_FOUND|Cannot find (module|package)/);
      } finally {
        await tmp.remove();
      }
    },
    240_000,
  );
});

/**
 * A WebSocket handshake by hand (no `ws` client in the dev dependencies):
 * resolves with the status line's code and the response headers.
 */
function upgrade(port: number, pathAndQuery: string, headers: Record<string, string>) {
  const key = randomBytes(16).toString("base64");
  return new Promise<{ status: number; headers: Record<string, unknown>; key: string }>((resolve, reject) => {
    const req = request({
      host: "127.0.0.1",
      port,
      path: pathAndQuery,
      headers: {
        connection: "Upgrade",
        upgrade: "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": key,
        ...headers,
      },
      timeout: 10_000,
    });
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 0, headers: res.headers, key });
    });
    req.on("response", (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, headers: res.headers, key });
    });
    req.on("timeout", () => req.destroy(new Error("upgrade timed out")));
    req.on("error", reject);
    req.end();
  });
}

describe("npm run dev", () => {
  it(
    "serves the client through Vite's middleware with HMR on the same port",
    async () => {
      const port = await freePort();
      // npx and tsx start child processes of their own; spawning detached makes
      // a process group of ours, so the whole tree can be signalled by its PID.
      const child = spawn("npx", ["tsx", "server/index.ts"], {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", NODE_ENV: "development", PORT: String(port), DATABASE_URL: db.url },
        stdio: ["ignore", "pipe", "pipe"],
        detached: true,
      });
      let output = "";
      child.stdout.on("data", (c: Buffer) => (output += c.toString()));
      child.stderr.on("data", (c: Buffer) => (output += c.toString()));
      const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
      const signalGroup = (sig: NodeJS.Signals) => {
        try {
          if (child.pid) process.kill(-child.pid, sig);
        } catch {
          /* the group has gone */
        }
      };
      // If this worker dies mid-test, take the dev server down with it.
      const onExit = () => signalGroup("SIGKILL");
      process.once("exit", onExit);
      try {
        const base = `http://127.0.0.1:${port}`;
        await waitForStatus(`${base}/live`, 200, 60_000, 200).catch((err: Error) => {
          throw new Error(`${err.message}\n${output.slice(-3000)}`);
        });
        const html = await (await fetch(`${base}/`, { headers: { accept: "text/html" } })).text();
        expect(html).toContain("/@vite/client");

        // The client connects with the page's token and the `vite-hmr` subprotocol.
        const client = await (await fetch(`${base}/@vite/client`)).text();
        const token = /const wsToken = "([^"]+)"/.exec(client)?.[1];
        expect(token).toBeTruthy();
        const hmr = await upgrade(port, `/?token=${token}`, { "sec-websocket-protocol": "vite-hmr", origin: base });
        expect(hmr.status).toBe(101);
        expect(hmr.headers["sec-websocket-protocol"]).toBe("vite-hmr");
        expect(hmr.headers["sec-websocket-accept"]).toBe(
          createHash("sha1").update(hmr.key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64"),
        );
        // Probes still answer ahead of Vite.
        expect((await getJson(`${base}/live`)).status).toBe(200);
      } finally {
        signalGroup("SIGTERM");
        const code = await Promise.race([exited, sleep(10_000).then(() => "timeout" as const)]);
        if (code === "timeout") {
          signalGroup("SIGKILL");
          await exited;
        }
        process.off("exit", onExit);
      }
    },
    120_000,
  );
});
