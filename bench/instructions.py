"""Instructions per admission, counted by valgrind's callgrind: deterministic where timings are not.

    make bench-instructions      # or: .venv/bin/python bench/instructions.py [--stages] [--record]

Runs the project's interpreter (.venv/bin/python) under callgrind with `PYTHONHASHSEED=0` on the
benchmark's realistic pod (bench/scenarios.py: a 7.7 KB review, 3 containers with probes and env,
2 policies applied). The imports, the policy compilation, building the inputs and a warm-up run
uninstrumented (`--instr-atstart=no`; bench/callgrind_marks.c starts instrumenting after them);
what is counted is only the inside of `operator.call` (`--toggle-collect=_operator_call`: a C
function of CPython that nothing on these paths calls), and the counts are dumped after each call
(`--dump-after`), so that one process measures every figure. Each figure is the mean over distinct
pods (no two share a name, labels or uid), with the decision cache bypassed (`decide`) or missed
(the request path, as a Deployment's distinct pods miss it). The garbage collector runs as in the
server (the heap so far frozen, collector on); the collections each figure saw are printed.

- `decide`: `app.admission.decide.decide` on a parsed Pod CREATE (select, render, plan, mutate,
  patch, the response);
- `decide, already injected`: the same on the pod as Podgraft's patch left it (a reinvocation);
- `request`: the whole in-process request path of `/mutate`, body bytes in, response bytes out
  (no TLS, no sockets): header checks, body read, parse, the decision cache (a miss), `decide`, the
  JSON encoding, the metrics and the info-level JSON log line (written to /dev/null).

Counts differ between CPUs (glibc and orjson pick code paths per CPU model) and between the
compiled engine and the interpreted one, so bench/instructions.json records figures per CPU (model
name, family/model/stepping and the flags that steer glibc's and orjson's dispatch) and form. Exit
status 1 when a count is more than 5% above the recorded figure; on a CPU (or form) without figures
it prints them and says so (`--record` writes them).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import operator
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
RECORDED = HERE / "instructions.json"
TOLERANCE = 0.05  # a count more than 5% above the recorded figure fails
PODS = 20  # distinct pods per figure
TOGGLE = "_operator_call"  # CPython's operator.call (3.11+): nothing on the measured paths calls it
FIGURES = {
    "decide": "decide, realistic pod, 2 policies applied",
    "decide_injected": "decide, the same pod already injected",
    "request": "whole request path, body bytes in -> response bytes out",
}


# The CPU features glibc's string functions and orjson choose their code paths by: a masked model
# name ("AMD EPYC" under a hypervisor) says too little on its own.
_DISPATCH_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512vl", "erms", "fsrm", "bmi2")


def cpu_model(cpuinfo: str | None = None) -> str:
    """The model name, family/model/stepping and the dispatch-relevant flags of the first processor
    in /proc/cpuinfo, e.g. `AMD EPYC (25/17/1; avx2 avx512bw avx512f avx512vl bmi2 erms fsrm)`."""
    if cpuinfo is None:
        cpuinfo = ""
        with contextlib.suppress(OSError):
            cpuinfo = Path("/proc/cpuinfo").read_text()
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if not key.strip():
            break  # the first processor's block is enough
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or "unknown"
    numbers = "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping"))
    flags = " ".join(sorted(set(fields.get("flags", "").split()) & set(_DISPATCH_FLAGS)))
    return f"{name} ({numbers}; {flags})"


def engine_form() -> str:
    """`compiled` when the engine's modules are mypyc extensions, else `interpreted`."""
    import app.admission.review
    import app.engine.mutate

    compiled = [not str(m.__file__).endswith(".py") for m in (app.engine.mutate, app.admission.review)]
    return "compiled" if all(compiled) else "interpreted"


def installed_forms() -> list[str]:
    """The forms this checkout can run: the compiled one when `make venv` built it, and the sources."""
    built = subprocess.run(
        [str(PYTHON), "-c", "import app.engine.mutate as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PODGRAFT_ENGINE": "compiled"},
    ).stdout.strip()
    return ["interpreted"] if built.endswith(".py") else ["compiled", "interpreted"]


# --- the counted process (runs under callgrind) ----------------------------------------------------


def _inner(out: Path, marks: Path, stages: bool) -> None:
    from measured import measurements, settle  # bench/measured.py: the inputs and the counted functions

    import app

    stale = app.stale_compiled_modules()
    if stale and engine_form() == "compiled":
        raise SystemExit(f"compiled modules older than their sources ({', '.join(stale)}): run `make venv`")

    found = measurements(PODS, stages=stages)  # uninstrumented: imports, policies, inputs, warm-up
    ctypes.CDLL(str(marks)).podgraft_start_instrumentation()
    collections: dict[str, list[int]] = {}
    for name, counted in found:
        settle()
        before = [generation["collections"] for generation in gc.get_stats()]
        operator.call(counted)  # the counted region
        after = [generation["collections"] for generation in gc.get_stats()]
        collections[name] = [b - a for a, b in zip(before, after, strict=True)]
    meta = {
        "names": [name for name, _ in found],
        "python": platform.python_version(),
        "form": engine_form(),
        "gc": collections,
    }
    out.write_text(json.dumps(meta))


# --- the driver ----------------------------------------------------------------------------------


def _totals(path: Path) -> int:
    """Instructions (Ir) of one callgrind dump."""
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def _marks(work: Path) -> Path:
    """The client-request helper (bench/callgrind_marks.c), built with the valgrind package's header."""
    if shutil.which("gcc") is None:
        raise SystemExit("gcc is not installed: `make bench-instructions` installs it from Debian")
    library = work / "libmarks.so"
    source = HERE / "callgrind_marks.c"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library


def measure(form: str, stages: bool = False, keep: Path | None = None) -> dict[str, Any]:
    """Run the counted process under callgrind with the engine in `form` (PODGRAFT_ENGINE):
    instructions per pod of each measurement. `keep`: a directory to copy the callgrind dumps to, one
    per measurement (for `callgrind_annotate`)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed: `make bench-instructions` installs it from Debian")
    with tempfile.TemporaryDirectory(prefix="podgraft-instructions-") as tmp:
        work = Path(tmp)
        command = [
            valgrind,
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--toggle-collect={TOGGLE}",
            f"--dump-after={TOGGLE}",
            f"--callgrind-out-file={work}/cg.out",
            str(PYTHON),
            str(Path(__file__).resolve()),
            "--inner",
            str(work / "meta.json"),
            "--marks",
            str(_marks(work)),
        ]
        command += ["--stages"] if stages else []
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PODGRAFT_ENGINE": form}
        run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
        if run.returncode != 0:
            raise SystemExit(f"the counted process failed:\n{run.stderr[-4000:]}")
        meta = json.loads((work / "meta.json").read_text())
        dumps = sorted(work.glob("cg.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        counts = [_totals(p) for p in dumps[: len(meta["names"])]]
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for name, dump in zip(meta["names"], dumps, strict=False):
                shutil.copy(dump, keep / f"callgrind.{form}.{name.split()[0]}.out")
    return {
        "python": meta["python"],
        "form": meta["form"],
        "cpu": cpu_model(),
        "pods": PODS,
        "counts": {name: round(count / PODS) for name, count in zip(meta["names"], counts, strict=True)},
        "gc": meta["gc"],
    }


def report(result: dict[str, Any], recorded: dict[str, Any]) -> tuple[list[str], bool]:
    """Lines to print, and whether every figure is within the tolerance of the recorded one."""
    figures = recorded.get(result["cpu"], {}).get(result["form"])
    lines = [
        f"Python {result['python']}, {result['form']} engine, CPU {result['cpu']!r}; instructions per pod, "
        f"mean over {result['pods']} distinct pods; gc on (heap frozen before each), collections "
        "gen0/1/2 in the run"
    ]
    ok = True
    for name, count in result["counts"].items():
        label = FIGURES.get(name, f"stage: {name}")
        collections = "/".join(map(str, result["gc"][name]))
        line = f"  {count / 1000:8.1f}k  {label}  (gc {collections})"
        if figures is not None and name in figures["counts"]:
            base = figures["counts"][name]
            change = count / base - 1
            line += f"; recorded {base / 1000:.1f}k, {change:+.1%}"
            if count > base * (1 + TOLERANCE):
                line += f"  FAIL: more than {TOLERANCE:.0%} above the recorded figure"
                ok = False
        lines.append(line)
    if figures is None:
        lines.append(
            f"no figures recorded for CPU {result['cpu']!r}, {result['form']} engine, in "
            f"bench/{RECORDED.name}: nothing to compare with (`--record` records these)"
        )
    return lines, ok


def record(result: dict[str, Any], recorded: dict[str, Any]) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False
    ).stdout.strip()
    recorded.setdefault(result["cpu"], {})[result["form"]] = {
        "python": result["python"],
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit,
        "counts": {name: result["counts"][name] for name in FIGURES},
    }
    RECORDED.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", action="store_true", help="also count each stage of one admission")
    parser.add_argument("--record", action="store_true", help=f"record the figures in bench/{RECORDED.name}")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps to this directory")
    parser.add_argument(
        "--form", choices=["compiled", "interpreted"], help="one form (default: each installed)"
    )
    parser.add_argument("--inner", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--marks", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner is not None:
        _inner(args.inner, args.marks, args.stages)
        return
    recorded = json.loads(RECORDED.read_text()) if RECORDED.exists() else {}
    failed = False
    for form in [args.form] if args.form else installed_forms():
        result = measure(form, stages=args.stages, keep=args.keep)
        if args.json:
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
        lines, ok = report(result, recorded)
        sys.stdout.write("\n".join(lines) + "\n")
        failed = failed or not ok
        if args.record:
            record(result, recorded)
            sys.stdout.write(f"recorded in bench/{RECORDED.name}\n")
    if failed and not args.record:
        sys.exit(1)


if __name__ == "__main__":
    main()
