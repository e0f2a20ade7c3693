"""docs/statistics.md's worked example is what the report prints: every figure it quotes."""

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "statistics.md"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "worked_statistics.py"


def test_the_worked_example_quotes_the_report(tmp_path, ops):
    subprocess.run([sys.executable, str(EXAMPLE), str(tmp_path)], check=True, capture_output=True)
    root = str(tmp_path / "pod_logs")
    report = ops("report", "--root", root, "--group-by", "model_id", "--compare-by", "model_id",
                 "--compare", "small,large", "--margin", "0.02")
    plain = ops("report", "--root", root, "--cluster-by", "no_such_field")
    assert report.returncode == 0 and plain.returncode == 0, report.stderr + plain.stderr
    printed = re.sub(r"\s+", " ", (report.stdout + plain.stdout).replace("\\", ""))
    section = DOC.read_text().split("## A worked example")[1].split("## Coverage")[0]

    quoted = re.findall(r'"([^"]{12,})"', section) + re.findall(r"In the header, `([^`]+)`", section)
    figures = re.findall(r"-?\d\.\d{2,4}\b", section)  # every figure of two or more decimals
    assert len(quoted) >= 3 and len(figures) >= 10
    for text in quoted:
        if text.startswith(("ops report", "python ")):  # the commands, not their output
            continue
        assert re.sub(r"\s+", " ", text) in printed, text
    for figure in figures:
        assert figure in printed, figure
