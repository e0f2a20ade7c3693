"""The demo's evaluation (examples/eval_arith.py) against the vLLM stand-in: the contract files it
writes, and scores that differ by model as the stand-in promises."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import CHECKOUT
from ops_tasks.testing.pods import free_port

STUB = CHECKOUT / "ops_tasks" / "testing" / "vllm_stub.py"
EVAL = CHECKOUT / "examples" / "eval_arith.py"


@pytest.fixture
def server():
    """The stand-in serving a small "model" on a free port (stopped afterwards)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(STUB), "serve", "Qwen/Qwen3-0.5B", "--port", str(port),
                             "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={"PATH": "/usr/bin:/bin", "OPS_VLLM_STUB_STARTUP_S": "0.1"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1).read()
            break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=20)


def run_eval(base_url, run_dir, raw_dir=None, model="Qwen/Qwen3-0.5B", seed=0):
    argv = [sys.executable, str(EVAL), "--model-id", model, "--num-examples", "30", "--seed", str(seed),
            "--run-dir", str(run_dir), "--base-url", base_url, "--env-id", "arith", "--best-of", "1"]
    if raw_dir:
        argv += ["--raw-dir", str(raw_dir)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_the_eval_writes_results_and_a_summary_that_agree(server, tmp_path):
    result = run_eval(server, tmp_path / "run1", raw_dir=tmp_path)

    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "run1" / "results.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "run1" / "summary.json").read_text())
    assert len(rows) == 30 and summary["num_examples"] == 30 and summary["ok"] is True
    assert summary["avg_reward"] == pytest.approx(sum(r["reward"] for r in rows) / 30)
    assert 0 < summary["avg_reward"] < 1  # a 0.5B "model" is right only some of the time
    assert (tmp_path / "eval_run1.jsonl").read_text() == (tmp_path / "run1" / "results.jsonl").read_text()
    assert "ignoring flags this eval does not use: --best-of 1" in result.stdout


def test_the_same_seed_asks_the_same_questions(server, tmp_path):
    run_eval(server, tmp_path / "a", seed=3)
    run_eval(server, tmp_path / "b", seed=3)
    questions = [[json.loads(line)["question"] for line in (tmp_path / name / "results.jsonl").read_text().splitlines()]
                 for name in ("a", "b")]
    assert questions[0] == questions[1]  # so that runs of different models pair up by example id


def test_an_unreachable_server_fails_the_run(tmp_path):
    result = run_eval(f"http://127.0.0.1:{free_port()}/v1", tmp_path / "run")

    assert result.returncode == 1
    assert "did not answer" in result.stderr
    assert not (tmp_path / "run" / "summary.json").exists()  # the supervisor writes ok: false


@pytest.mark.parametrize("record, shown", [
    # the page's own column names: prompt, answer (the model's), reference
    ({"prompt": "2+2?", "answer": "4", "reference": "4", "reward": 1}, ["2+2?", "4", "4"]),
    # a response field: answer is the reference
    ({"question": "2+2?", "response": "5", "answer": "4", "reward": 0}, ["2+2?", "5", "4"]),
    # only a target: it is the reference, no answer shown
    ({"input": "2+2?", "target": "4", "reward": 0}, ["2+2?", "", "4"]),
    ({"problem": "2+2?", "completion": "4", "ground_truth": "4", "reward": 1}, ["2+2?", "4", "4"]),
])
def test_the_drill_down_reads_prompt_answer_and_reference_by_their_documented_names(record, shown):
    from ops_tasks.operations.examples import example_item

    assert example_item("r", 1, record, "reward")[2:5] == shown
