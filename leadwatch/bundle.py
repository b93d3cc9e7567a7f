"""The Lambda bundle: `chalice package`, then its deployment.zip without what the Lambda Python
runtime already provides and without the parts of libraries leadwatch never loads.

    .venv/bin/python -m leadwatch.bundle out/package [chalice package options]

writes out/package/sam.yaml (with infra/resources.yaml merged) and out/package/deployment.zip,
and prints the zip's size and its largest packages.

Why a step after Chalice rather than a different requirements file: Chalice installs
requirements.txt with `pip download -r`, and pip follows every dependency. PynamoDB requires
botocore, which alone was 16.4 of the bundle's 24.4 MB; a requirements file cannot say
`--no-deps` and Chalice has no option to leave packages out (aws/chalice#1335). Removing, after
the build, the files each runtime-provided distribution lists in its own RECORD keeps Chalice's
build (manylinux wheels, its cache) untouched, needs no pinned copy of the dependency tree, and
is checked by tests/integration/test_package.py: the unzipped bundle plus only the runtime's
packages imports `app` and serves webhooks, the worker and the read API in a fresh interpreter.

What the runtime provides: the AWS SDK for Python, i.e. boto3 and its dependencies (botocore,
s3transfer, jmespath, python-dateutil, urllib3, six), in the version of that runtime and Region
(https://docs.aws.amazon.com/lambda/latest/dg/lambda-python.html, "Runtime-included SDK
versions"). `requests` is not included since python3.8 (AWS Compute Blog, "Upcoming changes to
the Python SDK in AWS Lambda", update of 2022-04-26), so it stays in the bundle.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import os
import re
import subprocess
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leadwatch.i18n import LANGUAGES

ROOT = Path(__file__).resolve().parents[1]
MERGE_TEMPLATE = "infra/resources.yaml"
MB = 1_000_000  # sizes in MB are 10^6 bytes (Lambda's own limits are in MB)
TARGET_MB = 5.0
MOONSHOT_MB = 3.0

# Distributions (normalized names) the Lambda Python runtime has on its path after /var/task.
RUNTIME_PROVIDED = frozenset(
    {"boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "urllib3", "six"}
)


# The Babel locale files leadwatch loads: one per language it writes in, and their parent `root`.
BABEL_LOCALES = ("root", *LANGUAGES)


@dataclass(frozen=True)
class Cut:
    """Files of a bundled library that leadwatch never loads: `patterns` (fnmatch on the path in the
    zip, where `*` spans directories) minus `keep`."""

    label: str
    patterns: tuple[str, ...]
    why: str
    keep: tuple[str, ...] = ()

    def matches(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns) and not any(
            fnmatch.fnmatchcase(name, k) for k in self.keep
        )


UNUSED: tuple[Cut, ...] = (
    Cut(
        "libyaml C parser",
        ("yaml/_yaml.*.so",),
        "leadwatch parses with yaml.SafeLoader (yaml.safe_load), the pure-Python loader, never the "
        "C one; without the extension PyYAML imports as pure Python (yaml.__with_libyaml__ False)",
    ),
    Cut(
        "holiday name translations",
        ("holidays/locale/*",),
        "leadwatch reads only dates (moved days off are matched through the table's own "
        "translation, leadwatch.calendar._moved_days_off); without the .mo files python-holidays "
        "falls back to names in the country's own language (gettext fallback)",
    ),
    Cut(
        "Powertools event handler and utilities",
        ("aws_lambda_powertools/event_handler/*", "aws_lambda_powertools/utilities/*"),
        "leadwatch uses Powertools' Logger and Metrics only (leadwatch.observability); of the "
        "utilities they load jmespath_utils",
        keep=(
            "aws_lambda_powertools/utilities/__init__.py",
            "aws_lambda_powertools/utilities/jmespath_utils/*",
        ),
    ),
    Cut(
        "charset_normalizer compiled modules",
        ("charset_normalizer/*.so",),
        "mypyc-compiled copies of md.py and cd.py, which ship beside them as source and are imported "
        "instead; requests calls charset_normalizer only to guess the encoding of a body without a "
        "charset (leadwatch reads JSON)",
    ),
    Cut(
        "Babel locale data of other languages",
        ("babel/locale-data/*",),
        "leadwatch writes only in the languages of leadwatch.i18n; Babel loads a locale's file and its "
        "parents' (ru and en: their own and root) besides global.dat",
        keep=tuple(f"babel/locale-data/{name}.dat" for name in BABEL_LOCALES),
    ),
    Cut(
        "Babel message catalog tooling",
        ("babel/messages/*",),
        "gettext .po/.mo extraction and compilation; leadwatch's catalogs are Python "
        "(workflows/<process>/messages.py) and it imports only babel.core, babel.dates and babel.numbers",
    ),
    Cut(
        "leadwatch.testing (fakes)",
        ("leadwatch/testing/*",),
        "the CRM, Telegram and AWS fakes of the tests and the demo",
    ),
    Cut(
        "bytecode caches",
        ("*/__pycache__/*", "*.pyc"),
        "the developer's interpreter writes them next to the sources vendor/ links in",
    ),
    Cut(
        "dist-info RECORD files",
        ("*.dist-info/RECORD",),
        "install bookkeeping: the file list pip uses to uninstall",
    ),
)


@dataclass
class Slimmed:
    """What `slim` did to a deployment zip, in compressed bytes."""

    before: int
    after: int
    runtime_provided: Counter[str] = field(default_factory=Counter)  # distribution -> bytes removed
    unused: Counter[str] = field(default_factory=Counter)  # Cut.label -> bytes removed


def normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_name(archive: zipfile.ZipFile, dist_info: str) -> str:
    for line in archive.read(f"{dist_info}/METADATA").decode("utf-8", "replace").splitlines():
        if line.startswith("Name:"):
            return normalize(line.split(":", 1)[1].strip())
        if not line.strip():
            break
    return normalize(dist_info.rsplit("-", 1)[0])


def _runtime_provided_files(archive: zipfile.ZipFile) -> dict[str, str]:
    """Path in the zip -> runtime-provided distribution it belongs to (its RECORD, its dist-info)."""
    names = set(archive.namelist())
    owned: dict[str, str] = {}
    dist_infos = sorted({n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")})
    for dist_info in dist_infos:
        if f"{dist_info}/METADATA" not in names:
            continue
        dist = _dist_name(archive, dist_info)
        if dist not in RUNTIME_PROVIDED:
            continue
        for name in names:
            if name.startswith(dist_info + "/"):
                owned[name] = dist
        if f"{dist_info}/RECORD" in names:
            record = archive.read(f"{dist_info}/RECORD").decode("utf-8").splitlines()
            for row in csv.reader(record):
                if row and row[0] in names:
                    owned[row[0]] = dist
    return owned


def slim(zip_path: Path) -> Slimmed:
    """Rewrite `zip_path` without the runtime-provided distributions and the UNUSED files."""
    tmp = zip_path.with_name(zip_path.name + ".slim")
    with zipfile.ZipFile(zip_path) as source:
        entries = source.infolist()
        runtime = _runtime_provided_files(source)
        report = Slimmed(before=zip_path.stat().st_size, after=0)
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as target:
            for entry in entries:
                if entry.filename in runtime:
                    report.runtime_provided[runtime[entry.filename]] += entry.compress_size
                    continue
                cut = next((c for c in UNUSED if c.matches(entry.filename)), None)
                if cut is not None:
                    report.unused[cut.label] += entry.compress_size
                    continue
                # The entry keeps its name, time stamp and permissions.
                target.writestr(entry, source.read(entry), compress_type=zipfile.ZIP_DEFLATED)
    os.replace(tmp, zip_path)
    report.after = zip_path.stat().st_size
    return report


def sizes(zip_path: Path) -> list[tuple[str, int]]:
    """Top-level package (or module) -> compressed bytes in the zip, largest first."""
    per_package: Counter[str] = Counter()
    with zipfile.ZipFile(zip_path) as archive:
        for entry in archive.infolist():
            per_package[entry.filename.split("/", 1)[0]] += entry.compress_size
    return per_package.most_common()


def chalice_package(out: Path, extra: list[str] | None = None, project: Path = ROOT) -> Path:
    """`chalice package --merge-template infra/resources.yaml OUT` as the project's venv runs it."""
    chalice = Path(sys.executable).parent / "chalice"
    out = out.resolve()
    command = [str(chalice), "package", "--merge-template", MERGE_TEMPLATE, *(extra or []), str(out)]
    result = subprocess.run(
        command,
        cwd=project,
        env={**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "eu-central-1")},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        raise RuntimeError(f"chalice package failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return out / "deployment.zip"


# The API's Lambda handler behind the HTTP API (app.py's `http_api`, leadwatch/http_api.py).
HTTP_API_HANDLER = "app.http_api"
HTTP_API = "HttpAPI"  # the AWS::Serverless::HttpApi resource of infra/resources.yaml


def use_http_api(template: dict[str, Any], timeout_s: int) -> dict[str, Any]:
    """Chalice's SAM template with its REST API replaced by the HTTP API of infra/resources.yaml
    (why: leadwatch/http_api.py): one route per path and method of Chalice's REST API definition,
    each integrated with the API handler in payload format 1.0, the handler switched to the
    adapter, and the endpoint outputs pointing at the HTTP API. The REST API, its deployment and
    its invoke permission go (SAM makes one permission per route)."""
    resources = template["Resources"]
    if HTTP_API not in resources:
        raise ValueError(f"{MERGE_TEMPLATE} has no {HTTP_API} resource to route the API through")
    rest = resources.pop("RestAPI")
    resources.pop("APIHandlerInvokePermission", None)
    events: dict[str, Any] = {}
    for path, methods in sorted(rest["Properties"]["DefinitionBody"]["paths"].items()):
        for method in sorted(m for m in methods if m != "options"):
            name = re.sub(r"[^A-Za-z0-9]", "", f"{method.title()}{path.title()}")
            events[name] = {
                "Type": "HttpApi",
                "Properties": {
                    "ApiId": {"Ref": HTTP_API},
                    "Method": method.upper(),
                    "Path": path,
                    "PayloadFormatVersion": "1.0",
                    "TimeoutInMillis": timeout_s * 1000,
                },
            }
    handler = resources["APIHandler"]["Properties"]
    handler["Handler"] = HTTP_API_HANDLER
    handler["Events"] = events
    outputs = template.setdefault("Outputs", {})
    outputs.pop("RestAPIId", None)
    outputs["EndpointURL"] = {
        "Description": "The API's base URL: webhooks go to <EndpointURL>hooks/<tenant>.",
        "Value": {"Fn::Sub": f"https://${{{HTTP_API}}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/"},
    }
    outputs["HttpApiId"] = {"Value": {"Ref": HTTP_API}}
    return template


def rewrite_template(out: Path) -> Path:
    """out/sam.yaml through use_http_api (Chalice writes it as plain YAML, no short tags)."""
    import yaml

    from leadwatch.infra import API_GATEWAY_TIMEOUT

    sam = out / "sam.yaml"
    template = yaml.safe_load(sam.read_text())
    sam.write_text(yaml.safe_dump(use_http_api(template, API_GATEWAY_TIMEOUT), sort_keys=False))
    return sam


def package(out: Path, extra: list[str] | None = None, project: Path = ROOT) -> tuple[Path, Slimmed]:
    """The deployable package in `out` (sam.yaml with the HTTP API + deployment.zip, slimmed)."""
    zip_path = chalice_package(out, extra, project)
    rewrite_template(out)
    return zip_path, slim(zip_path)


def _mb(size: int) -> str:
    return f"{size / MB:.2f} MB"


def describe(zip_path: Path, report: Slimmed, top: int = 5) -> str:
    lines = [
        f"{zip_path}: {_mb(report.after)} (target < {TARGET_MB:g} MB; Chalice built {_mb(report.before)})",
        "  left out, provided by the Lambda runtime: "
        + ", ".join(f"{d} {_mb(n)}" for d, n in report.runtime_provided.most_common()),
        "  left out, never loaded: "
        + ", ".join(f"{label} {_mb(n)}" for label, n in report.unused.most_common()),
        "  largest: " + ", ".join(f"{name} {_mb(n)}" for name, n in sizes(zip_path)[:top]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m leadwatch.bundle", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("out", type=Path, help="output directory (sam.yaml, deployment.zip)")
    args, extra = parser.parse_known_args(argv)
    zip_path, report = package(args.out.resolve(), extra)
    print(describe(zip_path, report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
