"""The root namespace, served by both front doors: `inv` (tasks.py) and `ops` (cli.py)."""

from invoke import Collection

from . import artifacts, campaign, pod, report, runs, ui, vllm
from .exec import exec_ as exec_task

ns = Collection()
ns.add_collection(pod.ns)
ns.add_collection(vllm.ns)
ns.add_collection(runs.ns)
ns.add_collection(artifacts.ns)
# Top-level tasks: `ops validate`, `ops report`.
ns.add_task(report.validate)
ns.add_task(report.report)
ns.add_task(campaign.campaign)  # `ops campaign`: every phase, config to released pods
ns.add_task(exec_task)  # `ops exec`: one command on a host or every pod of a fleet
ns.add_task(ui.ui)  # `ops ui`: a live local page of the pods, runs, GPUs and costs
