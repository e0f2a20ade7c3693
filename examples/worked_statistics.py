"""The worked example of docs/statistics.md: two models, 200 questions of 50 passages (4 a passage,
each line naming its passage as `cluster`), three seeds each, written as fetched run directories.

    python examples/worked_statistics.py DIR     # then: ops report --root DIR/pod_logs ...

Deterministic (seeded): tests/test_docs_statistics.py runs it and checks that the figures the
page quotes are the report's.
"""

import json
import math
import random
import sys
from pathlib import Path

MODELS = {"small": -0.1, "large": 0.25}  # ability on the logit scale


def write_runs(root: Path) -> None:
    rng = random.Random(2024)
    passages = [rng.gauss(0, 1.0) for _ in range(50)]  # a passage's shared difficulty
    questions = [[rng.gauss(0, 0.5) for _ in range(4)] for _ in passages]
    for model, ability in MODELS.items():
        for seed in range(3):
            run_id = f"{model}-s{seed}"
            run = root / run_id
            run.mkdir(parents=True)
            lines, total = [], 0.0
            for p, shift in enumerate(passages):
                for q, own in enumerate(questions[p]):
                    chance = 1 / (1 + math.exp(-(ability + shift + own + rng.gauss(0, 0.3))))
                    reward = float(rng.random() < chance)
                    total += reward
                    lines.append({"id": f"p{p}-q{q}", "cluster": f"p{p}", "reward": reward})
            (run / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
            (run / "summary.json").write_text(json.dumps({"ok": True, "avg_reward": total / len(lines),
                                                          "num_examples": len(lines)}))
            (run / "run_metadata.json").write_text(json.dumps({"run_id": run_id, "model_id": model,
                                                               "env_id": "passages", "seed": seed}))
            (run / "status.json").write_text(json.dumps({"run_id": run_id, "state": "succeeded", "exit_code": 0}))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/worked_statistics.py DIR")
    write_runs(Path(sys.argv[1]) / "pod_logs")
    print(f"wrote 6 runs under {Path(sys.argv[1]) / 'pod_logs'}")
