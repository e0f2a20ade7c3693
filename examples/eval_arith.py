#!/usr/bin/env python3
"""A small arithmetic evaluation against an OpenAI-compatible server (the demo's eval).

Stdlib only. Writes the run artifact contract's eval files into --run-dir: results.jsonl (one
line per example: id, question, answer, response, reward) and summary.json (ok, avg_reward,
num_examples, ...). The supervisor writes the rest (command.sh, run_metadata.json, stdout.log).

    python3 examples/eval_arith.py --model-id Qwen/Qwen3-4B --num-examples 50 --seed 0 --run-dir DIR
"""

import argparse
import json
import os
import random
import re
import sys
import time
import urllib.error
import urllib.request


def questions(count: int, seed: int) -> list:
    """Deterministic questions for a seed: the same examples for every model (paired comparisons)."""
    rng = random.Random(seed)
    items = []
    for index in range(count):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        op = rng.choice("+-*")
        answer = a + b if op == "+" else a - b if op == "-" else a * b
        items.append({"id": f"arith-{seed}-{index}", "question": f"What is {a} {op} {b}?", "answer": answer})
    return items


def ask(base_url: str, model: str, question: str, api_key: str, timeout: float, sampling: dict) -> str:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": question}], **sampling}).encode()
    request = urllib.request.Request(base_url.rstrip("/") + "/chat/completions", data=body,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {api_key}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)["choices"][0]["message"]["content"]


def extracted(response: str):
    """The final answer: after '####', else the last number in the response."""
    tail = response.split("####")[-1]
    numbers = re.findall(r"-?\d+(?:\.\d+)?", tail)
    return float(numbers[-1]) if numbers else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--env-id", default="arith")
    parser.add_argument("--num-examples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_API_BASE", "http://127.0.0.1:8000/v1"))
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--raw-dir", help="also write the raw responses here as eval_<run id>.jsonl (as evals "
                                          "on pods write /mnt/eval_*; artifacts.archive moves them)")
    args, unknown = parser.parse_known_args()
    if unknown:
        print(f"ignoring flags this eval does not use: {' '.join(unknown)}")

    os.makedirs(args.run_dir, exist_ok=True)
    api_key = os.environ.get("OPENAI_API_KEY") or os.environ.get("VLLM_API_KEY") or "EMPTY"
    started = time.time()
    sampling = {"temperature": args.temperature, "max_tokens": args.max_tokens}
    rewards = []
    with open(os.path.join(args.run_dir, "results.jsonl"), "w") as results:
        for item in questions(args.num_examples, args.seed):
            try:
                response = ask(args.base_url, args.model_id, item["question"], api_key, args.timeout, sampling)
            except (urllib.error.URLError, OSError) as exc:
                print(f"error: {args.base_url} did not answer: {exc}", file=sys.stderr)
                return 1
            reward = 1.0 if extracted(response) == item["answer"] else 0.0
            rewards.append(reward)
            results.write(json.dumps({**item, "response": response, "reward": reward}) + "\n")
            print(f"{item['id']}: {item['question']} -> {extracted(response)} (reward {reward:.0f})")
    if args.raw_dir:
        run_id = os.path.basename(os.path.normpath(args.run_dir))
        raw = os.path.join(args.raw_dir, f"eval_{run_id}.jsonl")
        with open(os.path.join(args.run_dir, "results.jsonl")) as src, open(raw, "w") as dst:
            dst.write(src.read())
    summary = {"ok": True, "env_id": args.env_id, "model_id": args.model_id, "num_examples": len(rewards),
               "seed": args.seed, "avg_reward": sum(rewards) / len(rewards) if rewards else 0.0,
               "duration_s": round(time.time() - started, 2)}
    with open(os.path.join(args.run_dir, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
