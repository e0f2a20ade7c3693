"""The pod runtime: the run queue and its supervisor, the pod side of the `runs` tasks.

A package of the standard library only (Python 3.8+), with relative imports only, so that it
runs wherever it is unpacked: the laptop ships it as an archive (operations/runtime.py) that the
pod keeps under its content hash in ~/.ops/runtime/<id>/ops_runtime/ (boot.py unpacks it, once
per version, and runs one command). The laptop imports its `contract` and `keys` modules: the
rules both sides apply are written once (docs/ARCHITECTURE.md, "The pod runtime").

One module per role, imports pointing down:

  contract    what both sides share: states, names, secrets, summary leaves, the version
  keys        the table of run keys: checks, entry fields, the documentation's reference
  files, procs    writing files atomically; processes, groups and signals
  store       the outputs root, its locks and the queue
  entry       a queue entry read back
  rundir      a run directory: status.json, attempts, the contract files, failure classes
  gates       expect, the commit pin, a run's identity
  local_sync  out_mode local_sync
  interpreter, converters, metrics   the run's python, summary_from, metrics from a log
  supervisor  the long-lived loop that starts, watches and ends runs
  handover    which supervisor runs, and handing the queue to a newer one
  reading, submit, commands   the commands a request names; commands.main is the entry point
"""

import os


PACKAGE = __name__
# The folder holding the top-level package: the runtime's own folder on the pod, the checkout
# (or site-packages) on the laptop.
ROOT = os.path.abspath(__file__)
for _ in range(PACKAGE.count(".") + 2):
    ROOT = os.path.dirname(ROOT)

_ENTRY = ("import importlib, sys; sys.path.insert(0, sys.argv[1]); "
          "sys.exit(getattr(importlib.import_module(sys.argv[2]), sys.argv[3])(sys.argv[4:]))")


def python_argv(python, module, function, *args):
    """argv that runs function(args) of one of this package's modules in a new interpreter (the
    supervisor's tmux window, a conversion's child): the package imported from where it lies."""
    return [python, "-c", _ENTRY, ROOT, "%s.%s" % (PACKAGE, module), function] + [str(a) for a in args]
