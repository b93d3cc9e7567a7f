"""Cold start: import time of the deployed `app` module over that of its four libraries.

The bundle is built as a deploy builds it (`python -m leadwatch.bundle` into a temporary
directory, `deployment.zip` unzipped). Each measurement is a fresh interpreter,
`<venv python> -I -c ...` with cwd = the unzipped bundle and '.' inserted as sys.path[0],
like Lambda's /var/task first on the path. `-I` ignores PYTHONPATH, so the other side of
Lambda's path (the runtime's boto3 and botocore) is the venv's site-packages, which `-I` keeps
on sys.path after the bundle: both sides import pynamodb, requests and Chalice's slim runtime
`chalice/app.py` from the bundle and boto3 and botocore (not bundled) from the venv, the same
files. Only the import statement is timed (time.perf_counter inside the child), not
interpreter start-up. One untimed run of each side first writes the bytecode caches
(the zip has no .pyc), then the sides alternate for the timed runs; the figure is
median(app) / median(libs).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from bench.common import Figure, note

RUNS = 9
# Listing the processes (app.py builds the app from the registry) must stay nearly free: the
# app's own import may cost at most a quarter of the four libraries every function needs anyway.
TARGET = 0.25
LIBS = "import boto3, pynamodb.models, chalice.app, requests"
APP = "import app"
# Everything the handlers import lazily on their first invocation (context only).
HANDLERS = (
    "import app, leadwatch.context, leadwatch.ingress, leadwatch.dispatch, workflows.timeliness.sweep, leadwatch.reconcile, "
    "workflows.timeliness.queries, leadwatch.store.dynamodb, crm_adapters.bitrix24, crm_adapters.amocrm, leadwatch.telegram, "
    "leadwatch.config, leadwatch.secrets, leadwatch.calendar, workflows.timeliness.rules"
)
SIDES = {"app_ms": APP, "libs_ms": LIBS, "all_handlers_ms": HANDLERS}
PROBE = "import sys, time; sys.path.insert(0, '.'); t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"


def build_bundle(workdir: Path) -> Path:
    """The deployable bundle (no credentials needed), unzipped; returns its directory."""
    from leadwatch.bundle import package

    zip_path, _ = package(workdir / "package")
    bundle = workdir / "bundle"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(bundle)
    return bundle


def _env() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "eu-central-1", "LANG": "C.UTF-8"}


def time_import(bundle: Path, statement: str) -> float:
    result = subprocess.run(
        [sys.executable, "-I", "-c", PROBE.format(stmt=statement)],
        cwd=bundle,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"`{statement}` failed in the bundle: {result.stderr[-2000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def import_profile(bundle: Path, statement: str) -> dict[str, int]:
    """`-X importtime`: module -> cumulative microseconds."""
    result = subprocess.run(
        [sys.executable, "-I", "-X", "importtime", "-c", f"import sys; sys.path.insert(0, '.'); {statement}"],
        cwd=bundle,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    cumulative: dict[str, int] = {}
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match:
            cumulative[match.group(4)] = int(match.group(2))
    return cumulative


OWN = {"app", "functions", "leadwatch", "crm_adapters", "workflows"}


def heaviest_extra(bundle: Path, statement: str = APP, limit: int = 5) -> list[tuple[str, float]]:
    """Third-party top-level packages `statement` loads beyond the four libraries, by cumulative ms."""
    libs = import_profile(bundle, LIBS)
    loaded = import_profile(bundle, statement)
    extra = {
        name: us
        for name, us in loaded.items()
        # Top-level names only (a package's cumulative time includes its modules); leadwatch's
        # own packages are left out: the question is which libraries they pull in.
        if name not in libs and "." not in name and name not in OWN
    }
    return [(name, us / 1000) for name, us in sorted(extra.items(), key=lambda kv: -kv[1])[:limit]]


def measure(runs: int = RUNS) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="leadwatch-bench-") as tmp:
        note("cold start: python -m leadwatch.bundle ...")
        bundle = build_bundle(Path(tmp))
        for statement in (APP, LIBS, HANDLERS):  # untimed: writes the bytecode caches
            time_import(bundle, statement)
        samples: dict[str, list[float]] = {APP: [], LIBS: [], HANDLERS: []}
        for _ in range(runs):
            for statement in samples:
                samples[statement].append(time_import(bundle, statement))
        app_ms = statistics.median(samples[APP]) * 1000
        libs_ms = statistics.median(samples[LIBS]) * 1000
        handlers_ms = statistics.median(samples[HANDLERS]) * 1000
        note(
            "cold start medians of "
            f"{runs}: app {app_ms:.1f} ms, libs {libs_ms:.1f} ms, app + every handler's modules {handlers_ms:.1f} ms"
        )
        ratio = app_ms / libs_ms
        definition = (
            f"median of {runs} fresh `python -I` imports of `app` from the unzipped `python -m leadwatch.bundle` bundle "
            f"({app_ms:.1f} ms) / median of `{LIBS}` ({libs_ms:.1f} ms), same sys.path"
        )
        figures = [
            Figure(
                "cold_start_ratio",
                ratio,
                f"<={TARGET}",
                ratio <= TARGET,
                definition,
                {name: [round(t * 1000, 2) for t in samples[statement]] for name, statement in SIDES.items()},
            ),
            Figure("cold_start_app_ms", app_ms, definition="median import time of `app` (ms)"),
            Figure("cold_start_libs_ms", libs_ms, definition=f"median import time of `{LIBS}` (ms)"),
            Figure(
                "cold_start_all_handlers_ratio",
                handlers_ms / libs_ms,
                definition="context only: `app` plus every module its handlers import lazily, over the libs",
            ),
        ]
        if ratio > TARGET:
            figures.append(
                Figure(
                    "cold_start_heaviest_app_imports",
                    _listing(heaviest_extra(bundle, APP)),
                    definition="third-party packages `import app` loads beyond the four libraries, "
                    "by -X importtime cumulative ms",
                )
            )
        figures.append(
            Figure(
                "cold_start_heaviest_handler_imports",
                _listing(heaviest_extra(bundle, HANDLERS)),
                definition="context only: third-party packages the handlers' lazy imports load beyond the four libraries "
                "(-X importtime cumulative ms, one run), paid on a cold Lambda's first invocation",
            )
        )
        return figures


def _listing(top: list[tuple[str, float]]) -> str:
    return ",".join(f"{name}:{ms:.0f}ms" for name, ms in top) or "none"
