"""The README is what a visitor reads first (issue 24): under 12 KB, every link into the site
leads to a page of it, and its commands are real: `make demo` and `make test` are Makefile
targets, and every `ops TASK --flag` it shows is a task and a flag of that task."""

import inspect
import re
import shlex
from pathlib import Path

import yaml

from ops_tasks.collection import ns
from test_docs_site import nav_pages

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BASH_BLOCK = re.compile(r"```bash\n(.*?)\n```", re.S)


def test_the_readme_is_under_12_kb():
    assert len(README.read_bytes()) < 12 * 1024


def test_every_link_of_the_readme_into_docs_is_a_page_of_the_site():
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", README.read_text())
    assert len(links) >= 20
    pages = set(nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]))
    for link in links:
        assert (ROOT / link).is_file(), link
        assert link.removeprefix("docs/") in pages, f"{link} is not in mkdocs.yml's nav"


def test_the_readmes_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"^make (\w+)", "\n".join(BASH_BLOCK.findall(README.read_text())), re.M):
        assert re.search(rf"^{target}:", makefile, re.M), target
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_every_ops_command_of_the_readme_names_real_tasks_and_flags():
    commands = [line for block in BASH_BLOCK.findall(README.read_text()) for line in block.splitlines()
                if line.startswith("ops ")]
    assert len(commands) >= 9
    for line in commands:
        words = shlex.split(line, comments=True)[1:]
        task_name = None
        for word in words:
            if word in ns.task_names:
                task_name = word
            elif word.startswith("--") and task_name:
                flag = word[2:].split("=")[0].replace("-", "_")
                assert flag in inspect.signature(ns[task_name].body).parameters, (line, word)
