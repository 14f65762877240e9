// Shared helpers of the browser tests: start the real broker binary, serve a page, launch
// Debian's chromium (never a downloaded browser).
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const BROKER = process.env.BROKER_BIN ?? join(here, "..", "..", "target", "debug", "broker");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** Starts broker on a free port with a fresh database; resolves once it listens. */
export async function startBroker(args = []) {
  const dir = mkdtempSync(join(tmpdir(), "broker-browser-"));
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => k !== "PORT" && !k.startsWith("BROKER_")),
  );
  const proc = spawn(BROKER, ["--host", "127.0.0.1", "--port", "0", "--db", join(dir, "db"), ...args], {
    env: { ...env, RUST_LOG: "info" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("broker did not start")), 20_000);
    proc.on("exit", (code) => reject(new Error(`broker exited with ${code}`)));
    createInterface({ input: proc.stderr }).on("line", (line) => {
      const m = line.match(/listening on (http\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
  return {
    url,
    async stop() {
      proc.kill("SIGTERM");
      await new Promise((r) => (proc.exitCode !== null ? r() : proc.on("exit", r)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Serves `html` at `/` on a free port of its own (another origin than broker's). */
export async function servePage(html) {
  const server = createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(html);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}/`, close: () => server.close() };
}

/** Headless Debian chromium, with the flags this closed network needs. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}
