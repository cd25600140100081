"""The program that runs *inside* a sandbox: one completion with its problem's tests.

Standard library only (it runs on the bare sandbox image's python3). It reads one JSON object from
stdin — ``{"program": str, "nonce": str, "limits": {...}}`` — sets its resource limits, sends the
program's own output to /dev/null, runs the program in a fresh namespace and writes exactly one JSON
line ``{"nonce", "outcome", "detail"}`` to the stdout it was given (after a ``{"nonce", "started"}``
line, from which the caller times the program, not the sandbox's start). The outcome is one of
``passed``, ``assertion``, ``syntax_error``, ``crash``; a timeout is decided outside (wall-clock
kill), because code that runs here can catch any in-process alarm.

The nonce makes "passed" hard to fake by accident: a completion that calls ``sys.exit(0)`` or
``os._exit(0)`` before the tests ran exits without the nonce line, which the caller counts as a
crash. It is no defence against code written to defeat it: the sandbox around this process is.
"""

import json
import os
import resource
import sys

MIB = 1024 * 1024


def set_limits(limits):
    """Resource limits on this process and everything it starts (inherited over fork/exec)."""
    pairs = [
        (resource.RLIMIT_AS, int(limits.get("memory_mib", 512)) * MIB),
        (resource.RLIMIT_CPU, int(limits.get("cpu_s", 5))),
        (resource.RLIMIT_FSIZE, int(limits.get("file_mib", 8)) * MIB),
        (resource.RLIMIT_NOFILE, int(limits.get("open_files", 64))),
        (resource.RLIMIT_CORE, 0),
    ]
    if limits.get("processes"):
        pairs.append((resource.RLIMIT_NPROC, int(limits["processes"])))
    for which, value in pairs:
        _soft, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))


def classify(program):
    """Run ``program``; (outcome, detail)."""
    try:
        code = compile(program, "<completion>", "exec")
    except (SyntaxError, ValueError) as exc:        # ValueError: a NUL byte in the source
        return "syntax_error", f"{type(exc).__name__}: {exc}"[:300]
    try:
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    except AssertionError as exc:
        return "assertion", f"AssertionError: {exc}"[:300]
    except BaseException as exc:   # noqa: BLE001 - every other way out of the program is a crash
        return "crash", f"{type(exc).__name__}: {exc}"[:300]
    return "passed", ""


def main():
    job = json.loads(sys.stdin.read())
    report = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    workdir = job.get("workdir")
    if workdir:
        os.chdir(workdir)
        os.environ["TMPDIR"] = workdir
    set_limits(job.get("limits", {}))
    nonce = job.pop("nonce")
    program = job.pop("program")
    report.write(json.dumps({"nonce": nonce, "started": True}) + "\n")   # the program's clock starts
    report.flush()
    outcome, detail = classify(program)
    report.write(json.dumps({"nonce": nonce, "outcome": outcome, "detail": detail}) + "\n")
    report.flush()
    os._exit(0)     # not sys.exit: threads or atexit hooks the program left must not run on


if __name__ == "__main__":
    main()
