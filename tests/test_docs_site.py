"""The documentation site builds with `mkdocs build --strict`: no page left out of the nav, no
broken link or anchor (mkdocs.yml's validation), as part of `make test`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "-d", str(site)], capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=120)


def test_the_site_builds_strictly(tmp_path):
    built = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "site" / "statistics" / "index.html").is_file()
    assert (tmp_path / "site" / "reference" / "run-keys" / "index.html").is_file()


def test_a_broken_link_or_a_page_left_out_fails_the_build(tmp_path):
    for breakage in ("[gone](no-such-page.md)", None):
        copy = tmp_path / ("link" if breakage else "omitted")
        shutil.copytree(ROOT / "docs", copy / "docs")
        shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
        if breakage:
            with (copy / "docs" / "index.md").open("a") as handle:
                handle.write(f"\n{breakage}\n")
        else:
            (copy / "docs" / "stray.md").write_text("# a page no nav names\n")
        built = build(copy / "mkdocs.yml", copy / "site")
        assert built.returncode != 0, breakage
        assert ("no-such-page.md" if breakage else "stray.md") in built.stdout + built.stderr
