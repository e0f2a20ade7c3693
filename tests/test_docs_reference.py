"""The reference pages hold everything the code has (issue 24): every task and flag with its help,
every run key, every profile key, every environment variable the code reads or sets, every exit
code it ends with. Checked on the built site, so a table that stops being made from the code, or
a page that loses a row, fails here."""

import ast
import copy
import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Collection, task

from ops_tasks import settings
from ops_tasks.collection import ns
from ops_tasks.runtime import keys

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ops_tasks"
# A name the code reads from, or sets in, an environment.
ENV_NAME = re.compile(r"\b(?:OPS|LIUM|VLLM|OPENAI|WANDB|HF|XDG|CUDA)_[A-Z0-9_]*[A-Z0-9]\b")


def hook():
    spec = importlib.util.spec_from_file_location("docs_reference_hook", ROOT / "docs" / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT,
                           capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=120)
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def page_text(site: Path, page: str) -> str:
    """A built page as a reader sees it: tags gone, entities decoded, whitespace single."""
    text = re.sub(r"<[^>]+>", " ", (site / page / "index.html").read_text())
    return " ".join(html.unescape(text).split())


def flags_of(task_object) -> dict:
    """{--flag: help} of a task, read from Invoke as `ops TASK --help` reads it."""
    unpopped = copy.copy(task_object)  # get_arguments pops each help text off the task it is asked of
    unpopped.help = dict(task_object.help)
    return {f"--{arg.names[0]}": arg.help or "" for arg in unpopped.get_arguments()}


# ---------------------------------------------------------------- tasks and flags


def test_every_task_and_flag_is_on_the_tasks_page_with_its_help(site):
    shown = page_text(site, "reference/tasks")
    assert len(ns.task_names) >= 20
    for name in ns.task_names:
        assert f"ops {name}" in shown, name
        for flag, help_text in flags_of(ns[name]).items():
            assert flag in shown, (name, flag)
            assert " ".join(help_text.split()) in shown, (name, flag, help_text)


def test_the_tasks_page_is_made_from_the_collection_it_is_given():
    @task(help={"shade": "How dark the made-up colour is."})
    def paint(c, shade=None):
        """Paint a made-up fence."""

    @task
    def rake(c):
        """Rake made-up leaves."""

    made = hook().tasks_markdown(Collection(Collection("garden", paint, rake)))

    assert "`ops garden.paint`" in made and "Paint a made-up fence." in made
    assert "--shade=STRING`" in made and "How dark the made-up colour is." in made
    assert "`ops garden.rake`" in made and "Rake made-up leaves." in made
    assert paint.help == {"shade": "How dark the made-up colour is."}  # Invoke's help left on the task


# ---------------------------------------------------------------- keys


def test_every_run_key_is_on_the_run_keys_page(site):
    shown = page_text(site, "reference/run-keys")
    for key in keys.RUN_KEYS:
        assert f"{key.name} {key.type}" in shown, key.name


def test_every_profile_key_is_on_the_profile_keys_page(site):
    shown = page_text(site, "reference/profile-keys")
    for schema in (settings.PROFILE_SCHEMA, settings.VLLM_PROFILE_SCHEMA, settings.OPS_SCHEMA):
        for key in schema:
            assert re.search(rf"(^| ){re.escape(key)} (a string|a number|true or false|a mapping|a list)", shown), key


def test_a_profile_key_the_code_gains_without_a_description_fails_the_build(monkeypatch):
    monkeypatch.setitem(settings.PROFILE_SCHEMA, "gpu_count", (int,))
    with pytest.raises(ValueError, match=r"without a description \['gpu_count'\]"):
        hook().profile_keys_markdown()
    monkeypatch.delitem(settings.PROFILE_SCHEMA, "gpu_count")
    monkeypatch.delitem(settings.PROFILE_SCHEMA, "known_hosts")
    with pytest.raises(ValueError, match=r"not in the code \['known_hosts'\]"):
        hook().profile_keys_markdown()


# ---------------------------------------------------------------- environment variables


def names_in_code() -> dict:
    """{variable: a file naming it}: the names in the package's string constants and keyword
    arguments (env.update(OPS_RUN_ID=...)), and the OPS_ names of the pod's shell scripts."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            texts = [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str) else []
            texts += [node.arg] if isinstance(node, ast.keyword) and node.arg else []
            for text in texts:
                for name in ENV_NAME.findall(text):
                    found.setdefault(name, str(path.relative_to(ROOT)))
    for path in sorted((ROOT / "remote_scripts").glob("*.sh")):
        for name in re.findall(r"\bOPS_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()):
            found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def test_every_environment_variable_the_code_names_is_on_the_environment_page(site):
    shown = page_text(site, "reference/environment")
    found = names_in_code()
    assert {"OPS_DEFAULT_HOST", "OPS_RUN_ID", "OPS_VLLM_OWNER", "LIUM_API_KEY"} <= set(found)  # the scan works
    missing = {name: where for name, where in found.items() if name not in shown}
    assert not missing, f"named in the code, not on docs/reference/environment.md: {missing}"


def test_the_users_guide_variables_are_all_documented(site):
    shown = page_text(site, "reference/environment")
    guide = ["OPS_DEFAULT_HOST", "OPS_REMOTE_REPO", "OPS_REMOTE_OUTPUTS_DIR", "LIUM_DEFAULT_VOLUME", "DATA_DIR",
             "OPS_PROJECT_ENV", "VLLM_BASE_URL", "OPENAI_API_BASE", "OPENAI_API_KEY"]
    assert [name for name in guide if name not in shown] == []


# ---------------------------------------------------------------- exit codes


def exit_codes_in_code() -> set:
    """Every exit code the package ends with: its error classes', Exit(code=N)'s and *_EXIT's."""
    codes = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        codes |= {int(n) for n in re.findall(r"\bexit_code = (\d+)\b", text)}
        codes |= {int(n) for n in re.findall(r"\bExit\([^)]*\bcode=(\d+)\)", text)}
        codes |= {int(n) for n in re.findall(r"^[A-Z_]+_EXIT = (\d+)\b", text, re.M)}
    return codes


def test_every_exit_code_the_code_uses_is_on_the_exit_codes_page(site):
    shown = page_text(site, "reference/exit-codes")
    codes = exit_codes_in_code()
    assert {1, 2, 124, 130, 141, 143} <= codes  # the scan works
    assert [code for code in sorted(codes | {0}) if not re.search(rf"(^| ){code} ", shown)] == []


def test_each_error_class_is_listed_with_its_exit_code(site):
    shown = page_text(site, "reference/exit-codes")
    for cls in hook().error_classes():
        assert f"{cls.exit_code} {cls.__module__}.{cls.__name__}" in shown, cls
