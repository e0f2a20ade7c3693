"""The how-to guides' commands, run as a user runs them, against real sshd pods (issue 24).

Every ```bash block of docs/how-to/ and of "your first sweep" carries a marker just above it:

    <!-- howto: run -->                a block of commands: each must exit 0, in order
    <!-- howto: not run: REASON -->    a block that cannot run here; REASON says why, and must be
                                       one the block really has (renting on Lium, installing from PyPI)
    <!-- howto: file NAME -->          (above any block) a file the reader saves: NAME in the working
                                       folder, or repo/NAME in the git repo the guide syncs to the pod

Each page runs in its own working folder on the laptop (the client's HOME, its ~/.ssh/config
naming the pods the page names), against fresh pods. What the test changes, and why:

- `git@github.com:me/NAME.git` is a local bare repo holding examples/eval_arith.py as eval_arith.py,
  a stand-in for nanoGPT's train.py (tests/workloads/train_like.py) as examples/nanogpt/train.py,
  and the page's repo/ files: no GitHub here;
- `vllm.start` and `campaign` get `--vllm-bin ops-vllm-stub` (the vLLM stand-in, put on each pod's
  PATH): vLLM needs a GPU;
- port 8000 (the pages' `127.0.0.1:8000`, a server's `"port": 8000`, vllm.start's default) is a
  free port: these pods share the machine's network;
- `lm_eval` and `vf-eval` on the pods write what the real tools wrote in
  tests/fixtures/real_tools (the tools themselves are not installed here; their output is).
"""

import re
import shlex
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import needs_isolation, run_ops
from ops_tasks.testing.fake_gpu import gpu
from ops_tasks.testing.pods import free_port

CHECKOUT = Path(__file__).resolve().parent.parent
DOCS = CHECKOUT / "docs"
FIXTURES = CHECKOUT / "tests" / "fixtures" / "real_tools"
TWO_GPUS = [gpu(0), gpu(1)]
# The pods each page names (their aliases) and their fake GPUs (None: no GPU).
SCENARIOS = {
    "getting-started/first-sweep.md": {"mypod": None},
    "how-to/own-script.md": {"mypod": None},
    "how-to/vllm-lm-eval.md": {"mypod": None},
    "how-to/verifiers.md": {"mypod": None},
    "how-to/training-sweep.md": {"mypod": TWO_GPUS},
    "how-to/fleet.md": {"a100-1": TWO_GPUS, "a100-2": TWO_GPUS},
    "how-to/campaign.md": {"mypod": None},
    "how-to/upgrading.md": {"mypod": None},
    "how-to/safety.md": {"mypod": None},
    "how-to/stand-in-on-a-pod.md": {"mypod": None},
    "how-to/workdir.md": {"mypod": None},
}
# Why a block may be left out, and what its commands must then show.
NOT_RUN_BECAUSE = {
    "needs Lium": re.compile(r"\bpod\.(up|down|ls|ps)\b|\bcampaign\b.*--pods\b"),
    "installs": re.compile(r"\bpip install\b"),
    "upgrades the tool itself": re.compile(r"\bpip install\b|\bgit pull\b"),
}
MARKED = re.compile(r"<!-- howto: (?P<what>.*?) -->\n```(?P<lang>\w*)\n(?P<body>.*?)\n```", re.S)
BASH_BLOCK = re.compile(r"^```bash\n", re.M)
REPO_URL = re.compile(r"git@github\.com:me/[\w.-]+\.git")
STUB_TASKS = ("vllm.start", "campaign")


@dataclass
class Block:
    page: str
    what: str  # "run", "not run: REASON" or "file NAME"
    body: str

    @property
    def commands(self) -> list:
        return [line.strip() for line in self.body.splitlines() if line.strip() and not line.strip().startswith("#")]


def guide_pages() -> list:
    return ["getting-started/first-sweep.md"] + sorted(f"how-to/{p.name}" for p in (DOCS / "how-to").glob("*.md"))


def blocks(page: str) -> list:
    return [Block(page, m["what"].strip(), m["body"]) for m in MARKED.finditer((DOCS / page).read_text())]


def all_blocks() -> list:
    return [block for page in guide_pages() for block in blocks(page)]


# ---------------------------------------------------------------- the markers themselves


def test_every_guide_has_a_scenario_and_every_command_block_a_marker():
    assert set(guide_pages()) == set(SCENARIOS), "a how-to page needs its pods in SCENARIOS"
    for page in guide_pages():
        text = (DOCS / page).read_text()
        marked_bash = sum(1 for b in blocks(page) if not b.what.startswith("file"))
        assert len(BASH_BLOCK.findall(text)) == marked_bash, f"{page}: a ```bash block without a howto marker"
        assert any(b.what == "run" for b in blocks(page)), f"{page}: no command of it is run"
        for block in blocks(page):
            assert re.fullmatch(r"run|not run: .+|file (repo/)?[\w./-]+", block.what), (page, block.what)


def test_commands_not_run_here_are_counted_and_each_says_why():
    """A block may be left out only for a reason it really has: a runnable one marked `not run`
    fails here. The list is shown as a warning, never skipped in silence."""
    left_out = [b for b in all_blocks() if b.what.startswith("not run")]
    for block in left_out:
        reason = block.what.removeprefix("not run: ")
        because = next((key for key in NOT_RUN_BECAUSE if reason.startswith(key)), None)
        assert because, f"{block.page}: {reason!r} is no reason a block may be left out ({', '.join(NOT_RUN_BECAUSE)})"
        assert all(NOT_RUN_BECAUSE[because].search(c) for c in block.commands), (
            f"{block.page}: a command of a block not run does not {because}: {block.commands}")
    assert left_out, "no block is left out: then this test and its warning go"
    warnings.warn(f"{len(left_out)} how-to command blocks are not run here: " + "; ".join(
        f"{b.page}: {' && '.join(b.commands)} ({b.what.removeprefix('not run: ')})" for b in left_out))


# ---------------------------------------------------------------- running a page


LM_EVAL = """#!/usr/bin/env python3
# lm_eval on a test pod: what lm-eval 0.4.13 wrote, copied into --output_path.
import shutil, sys
shutil.copytree({source!r}, sys.argv[sys.argv.index("--output_path") + 1], dirs_exist_ok=True)
"""
VF_EVAL = """#!/usr/bin/env python3
# vf-eval on a test pod: what vf-eval 0.4.0 wrote, copied into -o DIR / --run.dir NAME.
import os, shutil, sys
out = os.path.join(sys.argv[sys.argv.index("-o") + 1], sys.argv[sys.argv.index("--run.dir") + 1])
shutil.copytree({source!r}, out, dirs_exist_ok=True)
"""


def put_tools_on(pod) -> None:
    pod.install_vllm_stub()
    for name, text in (("lm_eval", LM_EVAL.format(source=str(FIXTURES / "lm_eval"))),
                       ("vf-eval", VF_EVAL.format(source=str(FIXTURES / "verifiers" / "arith-10x2")))):
        (pod.bin / name).write_text(text)
        (pod.bin / name).chmod(0o755)


def git(*args, cwd) -> None:
    subprocess.run(["git", "-c", "user.name=docs", "-c", "user.email=docs@example.org", *args], cwd=cwd,
                   check=True, capture_output=True)


def make_repo(bare: Path, files: dict) -> None:
    """The reader's repo as a bare repository: the examples and the page's repo/ files."""
    work = bare.parent / "work"
    (work / "examples" / "nanogpt").mkdir(parents=True)
    shutil.copy(CHECKOUT / "examples" / "eval_arith.py", work / "eval_arith.py")
    shutil.copy(CHECKOUT / "tests" / "workloads" / "train_like.py", work / "examples" / "nanogpt" / "train.py")
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text + "\n")
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "the reader's repo", cwd=work)
    git("clone", "-q", "--bare", str(work), str(bare), cwd=bare.parent)


def file_here(text: str, repo: Path, port: int) -> str:
    """A file the reader saves, with this test's substitutions (the module docstring says which)."""
    return REPO_URL.sub(str(repo), re.sub(r'(127\.0\.0\.1:|"port": )8000\b', rf"\g<1>{port}", text))


def as_run_here(argv: list, repo: Path, port: int) -> list:
    """The reader's command with this test's substitutions (the module docstring says which)."""
    argv = [REPO_URL.sub(str(repo), word) for word in argv]
    for task in STUB_TASKS:
        if task in argv:
            at = argv.index(task) + 1
            # A page that names the stand-in itself (trying the tool without a GPU) keeps its own flag.
            added = [] if "--vllm-bin" in argv else ["--vllm-bin", "ops-vllm-stub"]
            if task == "vllm.start" and not any(w.startswith("--port") for w in argv):
                added += ["--port", str(port)]
            argv[at:at] = added
    return argv


def run_line(line: str, project: Path, client, repo: Path, port: int):
    argv = as_run_here(shlex.split(line, comments=True), repo, port)
    if argv[0] == "ops":
        return run_ops(argv[1:], cwd=project, env=client.env(), timeout=240)
    # Another program (cat, ls): the line as the reader's shell runs it, globs and all.
    return subprocess.run(["bash", "-c", REPO_URL.sub(str(repo), line)], cwd=project, env=client.env(),
                          capture_output=True, text=True, timeout=60)


@needs_isolation
@pytest.mark.timeout(600)
@pytest.mark.parametrize("page", sorted(SCENARIOS))
def test_the_guides_commands_pass_on_real_pods(page, pod_factory, client, tmp_path):
    page_blocks = blocks(page)
    files = {b.what.removeprefix("file "): b.body for b in page_blocks if b.what.startswith("file ")}
    port = free_port()
    repo = tmp_path / "remote" / "repo.git"
    make_repo(repo, {name.removeprefix("repo/"): file_here(text, repo, port)
                     for name, text in files.items() if name.startswith("repo/")})
    for alias, gpus in SCENARIOS[page].items():
        put_tools_on(pod_factory(alias=alias, gpus=gpus))
    project = tmp_path / "laptop"
    project.mkdir()
    for name, text in files.items():
        if not name.startswith("repo/"):
            (project / name).write_text(file_here(text, repo, port) + "\n")

    ran = 0
    for block in (b for b in page_blocks if b.what == "run"):
        for line in block.commands:
            result = run_line(line, project, client, repo, port)
            print(f"$ {line}\n{result.stdout}{result.stderr}")  # shown under -s, and with a failure
            assert result.returncode == 0, (
                f"{page}: `{line}` exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
            ran += 1
    assert ran >= 3
