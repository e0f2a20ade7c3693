"""A run's latest step for status.json: the last line of its metrics.jsonl, or a match of its
metrics_from_log over the new part of its log (read incrementally).
"""

import json
import os
import re

from .files import open_regular, pieces, write_text


METRICS_CHUNK = 1 << 20  # metrics_from_log reads at most this much new log per look


def last_json_line(path, window=64 * 1024):
    """The last non-empty line of a JSON-lines file (from its last `window` bytes), whole: a step
    with many metrics is longer than last_line's 300 characters."""
    try:
        with open_regular(path) as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - window))
            lines = [line for line in handle.read().split(b"\n") if line.strip()]
    except OSError:
        return None
    return lines[-1].decode("utf-8", "replace") if lines else None


def metric_step(match):
    """A metrics_from_log match as a step: numbers where the text is one."""
    step = {}
    for name, text in match.groupdict().items():
        if text is None:
            continue
        try:
            step[name] = int(text) if re.match(r"^[+-]?\d+$", text) else float(text)
        except ValueError:
            step[name] = text
    return step


class MetricsWatch:
    """A run's latest logged step: the last line of its metrics.jsonl (the script's), else the
    last metrics_from_log match in stdout.log, read incrementally."""

    def __init__(self, run_dir, log_path, pattern):
        self.run_dir, self.log_path = run_dir, log_path
        self.pattern = re.compile(pattern) if pattern else None
        self.offset, self.partial, self.latest = 0, b"", None

    def look(self):
        own = last_json_line(os.path.join(self.run_dir, "metrics.jsonl"))
        if own:
            try:
                step = json.loads(own)
            except ValueError:
                step = None
            if isinstance(step, dict):
                self.latest = step
                return self.latest
        if self.pattern is None:
            return self.latest
        try:
            with open_regular(self.log_path) as handle:
                handle.seek(self.offset)
                chunk = handle.read(METRICS_CHUNK)
        except OSError:
            return self.latest
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()[-METRICS_CHUNK:]  # a line with no end in sight is kept as its last MiB
        for line in reversed(lines):
            match = self.pattern.search(line.decode("utf-8", "replace"))
            if match:
                self.latest = metric_step(match)
                break
        return self.latest

    def write_curve(self):
        """metrics.jsonl from the whole log, when the script wrote none: True when written."""
        path = os.path.join(self.run_dir, "metrics.jsonl")
        if self.pattern is None or os.path.lexists(path):
            return False
        steps = []
        with open_regular(self.log_path) as handle:
            for line in pieces(handle):
                match = self.pattern.search(line.decode("utf-8", "replace"))
                if match:
                    steps.append(json.dumps(metric_step(match), sort_keys=True) + "\n")
        if steps:
            write_text(path, "".join(steps))
            self.latest = json.loads(steps[-1])
        return bool(steps)
