"""The root namespace, served by both front doors: `inv` (tasks.py) and `ops` (cli.py)."""

from invoke import Collection

from . import pod, runs, vllm

ns = Collection()
ns.add_collection(pod.ns)
ns.add_collection(vllm.ns)
ns.add_collection(runs.ns)
