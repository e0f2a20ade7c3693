"""A stand-in for the seed's examples/nanogpt/train.py (stdlib only), for tests/test_workloads.py.

What matters is its behaviour towards the run contract, the same as train.py's: it takes
nanoGPT's `key=value` overrides (Python literals, ast.literal_eval), writes its own command.sh, run_metadata.json,
config_effective.json, dataset_manifest.json and, at the end, summary.json (final losses nested
as `last_eval: {train, val}`) into out_dir; it logs `iter N: loss X` lines; on SIGINT it writes a
partial summary (the iteration it reached) and exits. Losses are a function of the learning
rate, the seed and the iteration only, so a replay gives the same numbers.
"""

import ast
import json
import math
import os
import shlex
import signal
import sys
import time

CONFIG = {"out_dir": "out", "learning_rate": 0.1, "seed": 1, "max_iters": 5, "eval_interval": 2,
          "iter_sleep": 0.0, "wandb_log": False}


def configure(argv):
    config = dict(CONFIG)
    for arg in argv:
        key, _, text = arg.lstrip("-").partition("=")
        if key not in config:
            sys.exit(f"error: unrecognized arguments: {arg}")
        try:  # nanoGPT's configurator: a Python literal, else the text; of the default's type
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        if type(value) is not type(config[key]) and not (type(config[key]) is float and type(value) is int):
            sys.exit(f"error: {key}={text!r} is not a {type(config[key]).__name__}")
        config[key] = value
    return config


def loss_at(config, step, split):
    base = 4.0 * math.exp(-config["learning_rate"] * step) + 0.01 * config["seed"]
    return round(base + (0.05 if split == "val" else 0.0), 6)


def write(out_dir, name, data):
    path = os.path.join(out_dir, name)
    with open(path + ".tmp", "w") as handle:
        handle.write(data if isinstance(data, str) else json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(path + ".tmp", path)


def main():
    config = configure(sys.argv[1:])
    out_dir = config["out_dir"]
    os.makedirs(out_dir, exist_ok=True)
    # What train.py writes at its start: its own idea of the command and the metadata.
    write(out_dir, "command.sh", "python " + " ".join(shlex.quote(a) for a in sys.argv) + "\n")
    write(out_dir, "run_metadata.json", {"written_by": "train_like.py", "python": sys.version.split()[0],
                                         "out_dir": out_dir})
    write(out_dir, "config_effective.json", config)
    write(out_dir, "dataset_manifest.json", {"dataset": "synthetic", "tokens": 1000})
    state = {"iter": 0, "last_eval": None}

    def summary(ok, **extra):
        evals = state["last_eval"] or {}
        return {"ok": ok, "iter": state["iter"], "last_eval": evals, "best_val_loss": evals.get("val"),
                "learning_rate": config["learning_rate"], "seed": config["seed"], **extra}

    def on_interrupt(signum, frame):
        write(out_dir, "summary.json", summary(False, interrupted=True, failure_class="interrupted"))
        print(f"interrupted at iter {state['iter']}: partial summary written", flush=True)
        sys.exit(130)

    signal.signal(signal.SIGINT, on_interrupt)
    for step in range(config["max_iters"]):
        state["iter"] = step
        print(f"iter {step}: loss {loss_at(config, step, 'train'):.4f}", flush=True)
        if step % config["eval_interval"] == 0 or step == config["max_iters"] - 1:
            state["last_eval"] = {"train": loss_at(config, step, "train"), "val": loss_at(config, step, "val")}
        time.sleep(config["iter_sleep"])
    write(out_dir, "summary.json", summary(True))


if __name__ == "__main__":
    main()
