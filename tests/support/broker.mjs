// Starts the real broker binary for Node tests (the JS client's and the browser tests).
// No dependencies: only Node's standard library.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

const here = dirname(fileURLToPath(import.meta.url));
const BROKER = process.env.BROKER_BIN ?? join(here, "..", "..", "target", "debug", "broker");

/**
 * Starts broker on a free port. `db` reuses a database directory (for restarts); otherwise a
 * fresh one is made and removed on `stop()`. Resolves once the server listens.
 */
export async function startBroker(args = [], { db, port = 0 } = {}) {
  const dir = db ? null : mkdtempSync(join(tmpdir(), "broker-node-"));
  const dbPath = db ?? join(dir, "db");
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => k !== "PORT" && !k.startsWith("BROKER_")),
  );
  const proc = spawn(
    BROKER,
    ["--host", "127.0.0.1", "--port", String(port), "--db", dbPath, ...args],
    { env: { ...env, RUST_LOG: "info" }, stdio: ["ignore", "ignore", "pipe"] },
  );
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("broker did not start")), 20_000);
    proc.on("exit", (code) => reject(new Error(`broker exited with ${code}`)));
    createInterface({ input: proc.stderr }).on("line", (line) => {
      if (process.env.BROKER_LOG) console.error(`[broker] ${line}`);
      const m = line.match(/listening on (http\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1].replace("0.0.0.0", "127.0.0.1"));
      }
    });
  });
  const exited = new Promise((r) => (proc.exitCode !== null ? r() : proc.on("exit", r)));
  return {
    url,
    db: dbPath,
    port: Number(new URL(url).port),
    /** SIGTERM, wait for exit, and remove the database unless it was given. */
    async stop() {
      proc.kill("SIGTERM");
      await exited;
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
    /** SIGKILL and wait (the database is kept). */
    async kill() {
      proc.kill("SIGKILL");
      await exited;
    },
  };
}
