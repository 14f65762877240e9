#!/usr/bin/env python3
"""Fuzz Broker's HTTP API from its own OpenAPI document with schemathesis.

Starts the debug binary (built beforehand, never here) on a free loopback port with a fresh
database, creates an admin and a plain user, and runs `schemathesis run` against
`/openapi.json` three times: as the admin, as the plain user, and without credentials. Every
response must be no 5xx and match the document (status code, content type, headers, body
schema), an operation that needs credentials must refuse a request without them, and an
undocumented method must get 405. The server is stopped whatever happens; the exit code is
non-zero on any failure, if the server logged a panic, or if it did not shut down cleanly.

Uses only the standard library, so any Python 3 runs it; schemathesis itself comes from the
virtualenv scripts/install-schemathesis.sh makes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# Long random names: the fuzzer revokes users by name (`DELETE /users/{username}`) and must not
# hit the accounts it runs as.
ADMIN = "fuzz-admin-" + secrets.token_hex(8)
USER = "fuzz-user-" + secrets.token_hex(8)
PASSWORD = secrets.token_urlsafe(24)

# Server flags besides address and database. Failed-login throttling is off, or the fuzzer's
# own wrong passwords would turn every later password check into a 429 and hide the real
# answers; the throttling has black-box tests of its own (tests/credentials.rs).
SERVER_FLAGS = [
    "--login-failures-per-ip",
    "0",
    "--login-failures-per-user",
    "0",
]

# Checks every response goes through (see `schemathesis run --help`): no 5xx; the status code,
# content type, headers and body are documented; an operation that needs credentials refuses a
# request without them; an undocumented method gets 405 with an `Allow` header.
# `negative_data_rejection` and `positive_data_acceptance` (does Broker accept exactly what the
# document allows) are left out: JSON Schema cannot say everything Broker checks (event names
# are limited in bytes, not characters). Run them with API_TEST_CHECKS=all when changing the
# document.
CHECKS = os.environ.get("API_TEST_CHECKS") or ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "ignored_auth",
        "unsupported_method",
        "allow_header_conformance",
    ]
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default=str(ROOT / "target/debug/broker"))
    parser.add_argument(
        "--schemathesis", default=str(ROOT / "target/schemathesis-venv/bin/schemathesis")
    )
    parser.add_argument(
        "--max-examples", type=int, default=int(os.environ.get("API_TEST_EXAMPLES", "25")),
        help="examples per operation and pass (API_TEST_EXAMPLES)",
    )
    parser.add_argument(
        "--seed", type=int, default=int(os.environ.get("API_TEST_SEED", "1")),
        help="hypothesis seed, so a run can be repeated (API_TEST_SEED)",
    )
    # One worker: the machine has few cores, the order of requests stays the same from run to
    # run, and CPython 3.11's `ast.parse` (which hypothesis calls to describe its filters) can
    # fail with "AST constructor recursion depth mismatch" when threads call it at once.
    parser.add_argument("--workers", default=os.environ.get("API_TEST_WORKERS", "1"))
    parser.add_argument(
        "--har-dir", default=os.environ.get("API_TEST_HAR_DIR"),
        help="write every request and response of each pass to DIR/<pass>.har (API_TEST_HAR_DIR)",
    )
    parser.add_argument(
        "--pass", dest="passes", action="append", choices=["admin", "user", "anonymous"],
        help="run only these passes (default: all)",
    )
    args = parser.parse_args()

    for path in (args.broker, args.schemathesis):
        if not os.access(path, os.X_OK):
            print(f"error: {path} is missing (run `cargo build` and scripts/install-deps.sh)",
                  file=sys.stderr)
            return 2

    # `kill` (SIGTERM) ends the run like Ctrl-C: through `finally`, which stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="broker-api-test-"))
    server = None
    failed = []
    started = time.monotonic()
    cases = 0
    try:
        server = Server(args.broker, workdir)
        base = server.base
        post_json(base, "/users", {"username": USER, "password": PASSWORD})
        # Users to revoke: `ada`, whom tests/schemathesis/hooks.py revokes in place of the
        # run's own accounts, and `me`, whom `DELETE /users/me` names.
        for name in ("ada", "me"):
            post_json(base, "/users", {"username": name, "password": PASSWORD})
        admin_token = post_json(base, "/login", {"username": ADMIN, "password": PASSWORD})["jwt"]
        user_token = post_json(base, "/login", {"username": USER, "password": PASSWORD})["jwt"]
        passes = {
            "admin": [f"Authorization: Bearer {admin_token}"],
            "user": [f"Authorization: Bearer {user_token}"],
            "anonymous": [],
        }
        for name in args.passes or list(passes):
            print(f"\n=== schemathesis pass: {name} ===", flush=True)
            extra = []
            if args.har_dir:
                har = Path(args.har_dir).resolve() / f"{name}.har"
                extra = ["--report", "har", "--report-har-path", str(har)]
            ok, generated = run_schemathesis(args, base, passes[name], extra, workdir)
            cases += generated
            if not ok:
                failed.append(name)
            if not server.alive():
                failed.append("the server exited during the run")
                break
    except Exception as exc:  # noqa: BLE001 - reported, and the server is stopped below
        failed.append(f"error: {exc}")
    finally:
        if server is not None:
            code = server.stop()
            if code != 0 and not failed:
                failed.append(f"the server did not shut down cleanly (exit code {code})")
            if server.panicked:
                failed.append("the server panicked (see its log above)")
        shutil.rmtree(workdir, ignore_errors=True)
    took = time.monotonic() - started
    if failed:
        print(f"\nAPI test failed: {'; '.join(failed)}", file=sys.stderr)
        return 1
    print(f"\nAPI test passed: {cases} test cases in {took:.0f} s, no 5xx, every response "
          "matches the OpenAPI document")
    return 0


def run_schemathesis(
    args: argparse.Namespace, base: str, headers: list[str], extra: list[str], workdir: Path
) -> tuple[bool, int]:
    """One `schemathesis run`; whether it passed, and how many test cases it generated."""
    cmd = [
        args.schemathesis,
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "--no-color",
        "run",
        f"{base}/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        # The stateful phase (chains of calls linked by their responses) is left out: it takes
        # minutes. Add it with API_TEST_PHASES=examples,coverage,fuzzing,stateful.
        os.environ.get("API_TEST_PHASES", "examples,coverage,fuzzing"),
        "--max-examples",
        str(args.max_examples),
        "--seed",
        str(args.seed),
        "--workers",
        str(args.workers),
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--suppress-health-check",
        "too_slow",
    ]
    for header in headers:
        cmd += ["--header", header]
    cmd += extra
    started = time.monotonic()
    env = dict(os.environ)
    env["SCHEMATHESIS_HOOKS"] = "hooks"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["API_TEST_PROTECTED_USERS"] = f"{ADMIN},{USER}"
    # The working directory is the temporary one: schemathesis leaves nothing in the tree.
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, text=True,
                            errors="replace")
    assert proc.stdout is not None
    generated = 0
    for line in proc.stdout:
        print(line, end="", flush=True)
        found = re.match(r"\s*(\d+) generated", line)
        if found:
            generated = int(found.group(1))
    code = proc.wait()
    print(f"(pass took {time.monotonic() - started:.1f} s, exit code {code})", flush=True)
    return code == 0, generated


class Server:
    """The broker binary on a free loopback port, its log echoed with a prefix."""

    def __init__(self, binary: str, workdir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PORT" and not k.startswith("BROKER_")}
        env["RUST_LOG"] = "info"
        cmd = [
            binary,
            "--host", "127.0.0.1",
            "--port", "0",
            "--db", str(workdir / "db"),
            "--admin", f"{ADMIN}:{PASSWORD}",
            *SERVER_FLAGS,
        ]
        self.panicked = False
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, errors="replace",
        )
        listening = threading.Event()
        self.base = ""

        def pump() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                line = line.rstrip("\n")
                if "panicked" in line:
                    self.panicked = True
                    print(f"[broker] {line}", flush=True)
                elif not listening.is_set() or " ERROR " in line or " WARN " in line:
                    print(f"[broker] {line}", flush=True)
                found = re.search(r"listening on (\S+)", line)
                if found and not listening.is_set():
                    port = found.group(1).rsplit(":", 1)[1]
                    self.base = f"http://127.0.0.1:{port}"
                    listening.set()

        threading.Thread(target=pump, daemon=True).start()
        if not listening.wait(20):
            self.stop()
            raise RuntimeError("broker did not start listening within 20 s")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        """Stops the server (SIGTERM, then SIGKILL after 15 s); its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def post_json(base: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


if __name__ == "__main__":
    sys.exit(main())
