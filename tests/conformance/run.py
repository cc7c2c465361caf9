"""The live conformance suite: each instrumentation library's current release, the same scenario,
a real `user-metrics serve`, every stored request compared with ground truth.

    python tests/conformance/run.py [--only NAME ...] [--record] [--no-upgrade] [--list]

Run it with the project's Python (it imports user_metrics from src/ and needs its dependencies).
Each library gets its own virtual environment (or npm folder) under .conformance-cache/. Not part
of the CI suite: no file here is named test_*.py, so pytest collects nothing.
"""

from __future__ import annotations

import argparse
import ast
import email
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT / "src")]

import capture  # noqa: E402
from compare import FIELDS, Verdict, judge  # noqa: E402
from fakes import FakeProviders  # noqa: E402
from libraries import BY_NAME, LIBRARIES, NODE_MAJOR, Library, calls  # noqa: E402
from service import RecordingProxy, Service  # noqa: E402
from spans import flatten  # noqa: E402

CACHE = ROOT / ".conformance-cache"
CAPTURES = ROOT / "tests" / "captures"
SCRIPT_TIMEOUT_S = 300


class Unavailable(Exception):
    """The library cannot be installed or run here; the message says why."""


def prepare(lib: Library, upgrade: bool) -> tuple[list[str], dict[str, str], str]:
    """Install the library in its own environment: the command that runs its scenario, its
    versions, and its pip freeze (or npm ls)."""
    home = CACHE / lib.name
    home.mkdir(parents=True, exist_ok=True)
    if lib.kind == "node":
        return prepare_node(lib, home, upgrade)
    venv = home / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(venv)], home)
    if upgrade or not (home / "installed").exists():
        packages, constraints = list(lib.packages), list(lib.constraints)
        if lib.release_line:
            version, pins = release_line(python, lib.release_line, constraints, home)
            packages = [f"{p}=={version}" if p == lib.release_line else p for p in packages]
            constraints += pins
        (home / "constraints.txt").write_text("".join(c + "\n" for c in constraints))
        pip = [str(python), "-m", "pip", "install", "-q", "--upgrade", "-c", str(home / "constraints.txt")]
        _run([*pip, *packages], home)
        (home / "installed").write_text(time.ctime())
    freeze = _run([str(python), "-m", "pip", "freeze"], home)
    pins = dict(line.split("==", 1) for line in freeze.splitlines() if "==" in line)
    versions = {p: pins.get(p, pins.get(p.replace("-", "_"), "?")) for p in lib.version_of}
    env = {"PYTHONPATH": str(HERE / "scenarios")}
    return [str(python), str(HERE / "scenarios" / lib.script)], versions | {"_env": json.dumps(env)}, freeze


def prepare_node(lib: Library, home: Path, upgrade: bool) -> tuple[list[str], dict[str, str], str]:
    """npm packages in the library's own folder; its `.mjs` scenario run by Node >= NODE_MAJOR."""
    node = node_binary(upgrade)
    if upgrade or not (home / "node_modules").exists():
        (home / "package.json").write_text(json.dumps({"name": f"conformance-{lib.name}", "private": True}))
        _run(["npm", "install", "--no-audit", "--no-fund", *map(npm_spec, lib.packages)], home)
    versions = {}
    for package in lib.version_of:
        manifest = home / "node_modules" / package / "package.json"
        versions[package] = json.loads(manifest.read_text())["version"] if manifest.exists() else "?"
    listing = _run(["npm", "ls", "--all"], home, check=False)
    env = {"CONFORMANCE_NPM_HOME": str(home)}
    return [node, str(HERE / "scenarios" / lib.script)], versions | {"_env": json.dumps(env)}, listing


def npm_spec(package: str) -> str:
    """``name`` -> ``name@latest``; ``name@range`` (a pinned major) as it is."""
    return package if "@" in package.lstrip("@") else f"{package}@latest"


def node_binary(upgrade: bool) -> str:
    """The system `node` when its major is at least NODE_MAJOR, else the `node@<NODE_MAJOR>` npm
    package (a Node binary for this platform) installed once under .conformance-cache/node<major>/."""
    system = shutil.which("node")
    if system:
        version = _run([system, "--version"], ROOT).strip().lstrip("v")
        if int(version.split(".")[0]) >= NODE_MAJOR:
            return system
    home = CACHE / f"node{NODE_MAJOR}"
    binary = home / "node_modules" / ".bin" / "node"
    if upgrade or not binary.exists():
        home.mkdir(parents=True, exist_ok=True)
        (home / "package.json").write_text(json.dumps({"name": f"node{NODE_MAJOR}", "private": True}))
        _run(["npm", "install", "--no-audit", "--no-fund", f"node@{NODE_MAJOR}"], home)
    if not binary.exists():
        raise Unavailable(f"`npm install node@{NODE_MAJOR}` installed no {binary}")
    return str(binary)


def release_line(python: Path, package: str, constraints: list[str], home: Path) -> tuple[str, list[str]]:
    """The latest release of ``package`` and a pin to that version for each package it requires
    by bare name (released with it), except those ``constraints`` already name."""
    wheels = home / "release-line"
    shutil.rmtree(wheels, ignore_errors=True)
    _run([str(python), "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), package], home)
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(zf.read(name))
    version = str(metadata["Version"])
    named = {re.split(r"[<>=!~ ;\[]", c, maxsplit=1)[0] for c in constraints}
    bare = [r.strip() for r in metadata.get_all("Requires-Dist") or [] if re.fullmatch(r"\s*[\w.-]+\s*", r)]
    return version, [f"{r}=={version}" for r in bare if r not in named]


def _run(cmd: list[str], cwd: Path, check: bool = True) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    if done.returncode and check:
        lines = (done.stderr or done.stdout).strip().splitlines()
        tail = [line for line in lines if not line.startswith("WARNING: Location")][-8:]
        raise Unavailable(f"`{' '.join(cmd[:4])} ...` failed: " + " | ".join(tail))
    return done.stdout


def scenario_doc(lib: Library) -> str:
    source = (HERE / "scenarios" / lib.script).read_text()
    if lib.kind == "python":
        return ast.get_docstring(ast.parse(source)) or ""
    return source.split("*/", 1)[0].lstrip("/* \n")


def run_library(lib: Library, record: Path | None, upgrade: bool) -> dict[str, Any]:
    """One library end to end; the result holds verdicts, or why it could not run."""
    result: dict[str, Any] = {
        "library": lib.name,
        "versions": {},
        "verdicts": [],
        "unmatched": [],
        "why": None,
    }
    try:
        cmd, versions, freeze = prepare(lib, upgrade)
    except (Unavailable, subprocess.TimeoutExpired, OSError) as exc:
        result["why"] = f"cannot install: {exc}"
        return result
    script_env = json.loads(versions.pop("_env", "{}"))
    result["versions"] = versions
    work = Path(tempfile.mkdtemp(prefix=f"conformance-{lib.name}-"))
    the_calls = calls(lib.provider)
    (work / "calls.json").write_text(json.dumps(the_calls))
    fakes = FakeProviders().start()
    service = Service(
        work / "um.duckdb", ["--attribution-window-seconds", "3", *lib.service_args], work / "service.log"
    )
    proxy = RecordingProxy(service.otlp_http)
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTHONPATH"))},
            **script_env,
            **lib.env,
            "CONFORMANCE_CALLS": str(work / "calls.json"),
            "CONFORMANCE_OUT": str(work / "intended.jsonl"),
            "CONFORMANCE_OPENAI_BASE_URL": fakes.openai_base_url,
            "CONFORMANCE_ANTHROPIC_BASE_URL": fakes.anthropic_base_url,
            "CONFORMANCE_OTLP_ENDPOINT": proxy.url,
            "CONFORMANCE_SERVICE_NAME": f"conformance-{lib.name}",
            "OPENAI_API_KEY": "test",
            "ANTHROPIC_API_KEY": "test",
        }
        done = subprocess.run(
            cmd, cwd=work, env=env, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S
        )
        (work / "scenario.log").write_text(done.stdout + done.stderr)
        if done.returncode or not (work / "intended.jsonl").exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-6:]
            result["why"] = f"scenario failed (exit {done.returncode}): " + " | ".join(tail)
            return result
        time.sleep(4)  # spans waiting for ancestors (attribution window 3 s) are stored
    except subprocess.TimeoutExpired:
        result["why"] = f"scenario did not finish within {SCRIPT_TIMEOUT_S} s"
        return result
    finally:
        proxy.stop()
        service.stop()
        fakes.stop()
    intended = [
        json.loads(line) for line in (work / "intended.jsonl").read_text().splitlines() if line.strip()
    ]
    rows = service.requests()
    spans = flatten(proxy.bodies)
    verdicts, unmatched, picks = judge(the_calls, intended, fakes.truth, rows, spans, lib)
    result.update(
        verdicts=verdicts,
        unmatched=unmatched,
        work=str(work),
        exports=len(proxy.bodies),
        rejected=[a for a in proxy.answers if a != 200],
    )
    if record is not None:
        expected = capture.expected_rows(the_calls, intended, picks, spans, verdicts)
        capture.write(
            record / lib.name,
            lib,
            versions,
            freeze,
            scenario_doc(lib),
            proxy.bodies,
            spans,
            fakes.truth,
            intended,
            expected,
        )
        result["recorded"] = str(record / lib.name)
    return result


MARK = {"ok": "", "fail": "✗", "lib": "L"}


def cell(verdicts: list[Verdict], field: str) -> str:
    mine = [v for v in verdicts if v.field == field]
    ok = sum(v.state == "ok" for v in mine)
    lib = sum(v.state == "lib" for v in mine)
    text = f"{ok}/{len(mine)}"
    return text + (f" {lib}L" if lib else "")


def table(results: list[dict[str, Any]]) -> str:
    head = ["library", "version", *FIELDS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        version = ", ".join(f"{k} {v}" for k, v in r["versions"].items()) or "-"
        if r["why"]:
            lines.append(f"| {r['library']} | {version} | " + " | ".join(["-"] * len(FIELDS)) + " |")
            continue
        lines.append(
            f"| {r['library']} | {version} | " + " | ".join(cell(r["verdicts"], f) for f in FIELDS) + " |"
        )
    return "\n".join(lines)


def details(results: list[dict[str, Any]]) -> str:
    out = []
    for r in results:
        if r["why"]:
            out.append(f"{r['library']}: NOT RUN: {r['why']}")
            continue
        bad = [v for v in r["verdicts"] if v.state != "ok"]
        for v in bad:
            who = "service"
            if v.state == "lib":
                who = "the library's own value" if v.want is None else "library does not send it"
            out.append(f"{r['library']}: call {v.n} {v.field}: want {v.want!r}, stored {v.got!r} ({who})")
        for row in r["unmatched"]:
            out.append(
                f"{r['library']}: stored row matched to no call: span {row['span_id']} model "
                f"{row['request_model']} user {row['user_id']}"
            )
        if r.get("rejected"):
            out.append(f"{r['library']}: the service answered {r['rejected']} to some exports")
        out.append(
            f"{r['library']}: {r['exports']} exports; work files in {r['work']}"
            + (f"; capture {r['recorded']}" if r.get("recorded") else "")
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(BY_NAME), help="libraries to run")
    parser.add_argument("--record", action="store_true", help="write each run as tests/captures/<library>/")
    parser.add_argument(
        "--record-to",
        type=Path,
        metavar="DIR",
        help="write each run as DIR/<library>/ instead (implies --record)",
    )
    parser.add_argument("--no-upgrade", action="store_true", help="reuse installed environments as they are")
    parser.add_argument("--list", action="store_true", help="list the libraries and exit")
    args = parser.parse_args(argv)
    if args.list:
        for lib in LIBRARIES:
            print(f"{lib.name:26} {lib.kind:7} {' '.join(lib.packages)}")
        return 0
    record = args.record_to.resolve() if args.record_to else CAPTURES if args.record else None
    chosen = [BY_NAME[n] for n in args.only] if args.only else LIBRARIES
    results = []
    for lib in chosen:
        print(f"== {lib.name}", file=sys.stderr, flush=True)
        try:
            results.append(run_library(lib, record, not args.no_upgrade))
        except Exception as exc:  # one library's breakage never hides the others' results
            traceback.print_exc()
            results.append(
                {
                    "library": lib.name,
                    "versions": {},
                    "verdicts": [],
                    "unmatched": [],
                    "why": f"harness error: {exc!r}",
                }
            )
    print(table(results))
    print()
    print(
        "✗ = the service stored it wrong; L = the library does not send it (counted in the score as not ok)"
    )
    print(details(results))
    return 0 if all(not r["why"] and all(v.state != "fail" for v in r["verdicts"]) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
