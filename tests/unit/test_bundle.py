"""leadwatch.bundle's slimming on a small zip of its own: a runtime-provided distribution goes with
every file its RECORD lists (wherever they are), other distributions and leadwatch's own files
stay, and the unused parts go except what a cut keeps. The real bundle is checked end to end in
tests/integration/test_package.py."""

from __future__ import annotations

import zipfile
from pathlib import Path

from leadwatch import bundle


def dist(name: str, version: str, files: dict[str, str]) -> dict[str, str]:
    """A wheel's installed files plus its dist-info (METADATA, RECORD)."""
    info = f"{name.replace('-', '_')}-{version}.dist-info"
    listed = [*files, f"{info}/METADATA", f"{info}/RECORD"]
    return {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nLong text.\n",
        f"{info}/RECORD": "".join(f"{path},sha256=x,1\n" for path in listed[:-1]) + f"{info}/RECORD,,\n",
    }


def build(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text * 50)
    return path


def test_slim_drops_runtime_distributions_by_their_record_and_the_unused_parts(tmp_path):
    files = {
        "app.py": "import leadwatch\n",
        "leadwatch/__init__.py": "",
        "leadwatch/testing/fake.py": "FAKE = 1\n",
        "leadwatch/__pycache__/config.cpython-311.pyc": "bytecode",
        **dist("six", "1.17.0", {"six.py": "six = 1\n"}),
        **dist("python-dateutil", "2.9.0.post0", {"dateutil/__init__.py": "", "dateutil/tz/tz.py": "x\n"}),
        **dist("requests", "2.34.2", {"requests/__init__.py": "import urllib3\n"}),
        "yaml/__init__.py": "",
        "yaml/_yaml.cpython-311-x86_64-linux-gnu.so": "ELF",
        "aws_lambda_powertools/utilities/__init__.py": "",
        "aws_lambda_powertools/utilities/jmespath_utils/__init__.py": "import jmespath\n",
        "aws_lambda_powertools/utilities/parser/models.py": "big\n",
        "aws_lambda_powertools/event_handler/api_gateway.py": "big\n",
        "holidays/locale/ru/LC_MESSAGES/RU.mo": "names",
    }
    path = build(tmp_path / "deployment.zip", files)

    report = bundle.slim(path)

    with zipfile.ZipFile(path) as archive:
        left = set(archive.namelist())
        assert archive.read("app.py") == b"import leadwatch\n" * 50
    assert left == {
        "app.py",
        "leadwatch/__init__.py",
        "requests/__init__.py",
        "requests-2.34.2.dist-info/METADATA",
        "yaml/__init__.py",
        "aws_lambda_powertools/utilities/__init__.py",
        "aws_lambda_powertools/utilities/jmespath_utils/__init__.py",
    }
    assert set(report.runtime_provided) == {"six", "python-dateutil"}
    assert set(report.unused) == {
        "leadwatch.testing (fakes)",
        "bytecode caches",
        "libyaml C parser",
        "Powertools event handler and utilities",
        "holiday name translations",
        "dist-info RECORD files",
    }
    assert report.after == path.stat().st_size < report.before


def test_sizes_are_per_top_level_entry_largest_first(tmp_path):
    path = build(tmp_path / "deployment.zip", {"big/a.py": "x" * 999, "big/b.py": "y" * 999, "small.py": "z"})
    names = [name for name, _ in bundle.sizes(path)]
    assert names == ["big", "small.py"]
