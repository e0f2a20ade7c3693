"""The documentation site builds with `mkdocs build --strict`: no page left out of the nav, no
broken link or anchor (mkdocs.yml's validation), as part of `make test`; and it builds, and
reads, without the network."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def build(config: Path, site: Path, prefix=()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "-d", str(site)], capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=120)


def nav_pages(entries) -> list:
    """Every page mkdocs.yml's nav names."""
    pages = []
    for entry in entries:
        for value in (entry.values() if isinstance(entry, dict) else [entry]):
            pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def without_network() -> list:
    """A command prefix that runs a program in a network namespace of its own: no network at all."""
    if not shutil.which("unshare"):
        pytest.skip("unshare is missing: cannot take the network away")
    prefix = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--net"]
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip(f"{' '.join(prefix)} is not allowed here")
    return prefix


def test_the_site_builds_strictly_with_every_page_of_its_nav(tmp_path):
    built = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stdout + built.stderr
    pages = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    assert len(pages) >= 30 and "getting-started/first-sweep.md" in pages and "reference/tasks.md" in pages
    for page in pages:
        folder = "" if page == "index.md" else page.removesuffix(".md") + "/"
        assert (tmp_path / "site" / folder / "index.html").is_file(), page


def test_the_site_builds_and_reads_without_the_network(tmp_path):
    """No plugin fetches anything at build time (material's `privacy` and `social` would), and no
    page asks a reader's browser for a web font or a CDN."""
    built = build(ROOT / "mkdocs.yml", tmp_path / "site", prefix=without_network())
    assert built.returncode == 0, built.stdout + built.stderr
    for page in (tmp_path / "site").rglob("*.html"):
        text = page.read_text()
        assert "fonts.googleapis.com" not in text and "fonts.gstatic.com" not in text, page
        assert not re.search(r"<(script|link)[^>]+(src|href)=\"https?://", text), page


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
