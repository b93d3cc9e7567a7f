"""Bundle size: the deployment zip the packaging path produces, against the 5 MB target.

Built exactly as a deploy builds it (`leadwatch.bundle.package`: `chalice package` with
infra/resources.yaml merged, then the zip without the runtime-provided SDK and the library parts
leadwatch never loads) into a temporary directory. Sizes are bytes of the zip file in MB of
10^6 bytes; per package they are the compressed bytes of its entries (a top-level directory or
module of the zip; a distribution's .dist-info is its own entry).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import Figure, note
from leadwatch import bundle

TOP = 5


def measure() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="leadwatch-bench-") as tmp:
        note("bundle: chalice package + slimming ...")
        zip_path, report = bundle.package(Path(tmp) / "package")
        note(bundle.describe(zip_path, report, top=TOP))
        size_mb = report.after / bundle.MB
        top = bundle.sizes(zip_path)[:TOP]
    definition = (
        "size of deployment.zip from `python -m leadwatch.bundle` (chalice package, then without the "
        "Lambda runtime's SDK and unused library parts), MB of 10^6 bytes"
    )
    return [
        Figure(
            "bundle_zip_mb",
            size_mb,
            f"<{bundle.TARGET_MB:g}",
            size_mb < bundle.TARGET_MB,
            definition,
            {
                "bytes": report.after,
                "chalice_bytes": report.before,
                "runtime_provided_removed": dict(report.runtime_provided),
                "unused_removed": dict(report.unused),
            },
        ),
        Figure(
            "bundle_zip_mb_moonshot",
            size_mb,
            f"<{bundle.MOONSHOT_MB:g}",
            size_mb < bundle.MOONSHOT_MB,
            definition,
        ),
        Figure(
            "bundle_chalice_zip_mb",
            report.before / bundle.MB,
            definition="context: the zip as `chalice package` builds it, before leaving anything out",
        ),
        Figure(
            "bundle_top_packages",
            ",".join(f"{name}:{size / bundle.MB:.2f}MB" for name, size in top),
            definition=f"the {TOP} largest top-level entries of the zip, compressed MB",
        ),
    ]
