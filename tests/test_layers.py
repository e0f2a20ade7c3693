"""Imports point down only (docs/ARCHITECTURE.md, "Layers"): every module of ops_tasks and the
pod-side code is parsed (ast, nothing imported), and an import that points up fails here, naming
the file, the line and the rule. Imports inside functions count: the task modules import their
operations there (start-up), so an upward import hidden in a function is as real as one at the top.

    front doors    cli, collection, __main__ (and tasks.py)      may import anything
    task modules   the namespaces collection.py composes, output  may import the layers below
    operations     ops_tasks/operations/*                          not a task module, not a front door
    shared         everything else (fleet, records, settings, targets, names, errors, ...):
                   not an operation, not a task module, not a front door
    pod side       remote_scripts/ and ops_tasks/runtime/ (if present): no ops_tasks module outside
                   itself (it travels to the pod alone)

ops_tasks/testing/ (the tests' stand-ins and fork server) is left out: it serves the tests, and
no layer imports it.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ops_tasks"
RUNTIME = "ops_tasks.runtime"  # the pod-side package, once the run tool moves into ops_tasks
FRONT_DOORS = frozenset({"ops_tasks.cli", "ops_tasks.collection", "ops_tasks.__main__", "tasks"})
TASK_HELPERS = frozenset({"ops_tasks.output"})  # the output contract every task goes through


def module_name(path: Path, root: Path, top: str) -> str:
    """The dotted name of a file under root, root itself being the package `top`."""
    parts = [top, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    """True when `name` (ops_tasks.x.y) is a module or package of this checkout."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(source: str, module: str, is_package: bool = False) -> list:
    """(line, dotted name) of every import in the source, wherever it is (top, function, class,
    branch): relative ones resolved against `module`; `from X import a` is X.a when that is a
    module, else X; importlib.import_module("...") and __import__("...") with a constant too.
    A relative import that climbs above the top package is named `<above the top>`."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 >= len(package):
                    found.append((node.lineno, "<above the top>"))
                    continue
                base = ".".join(package[:len(package) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                found.append((node.lineno, f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (isinstance(node.func, ast.Name) and node.func.id == "__import__"
                   or isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")):
            found.append((node.lineno, node.args[0].value))
    return found


def task_modules() -> frozenset:
    """The namespace modules, as collection.py composes them (a new namespace is covered at once)."""
    path = PACKAGE / "collection.py"
    names = {name for _, name in imports_of(path.read_text(), "ops_tasks.collection")
             if name.startswith("ops_tasks.") and name != "ops_tasks.collection"}
    assert names, "collection.py composes no namespace module: the layer rules would check nothing"
    return frozenset(names)


def within(name: str, modules) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def layer_of(module: str, tasks: frozenset) -> str:
    if within(module, FRONT_DOORS):
        return "front door"
    if within(module, tasks | TASK_HELPERS):
        return "task"
    if within(module, {"ops_tasks.operations"}):
        return "operation"
    if within(module, {RUNTIME}):
        return "pod side"
    if within(module, {"ops_tasks.testing"}):
        return "testing"
    return "shared"


def pod_side_files() -> list:
    """remote_scripts/ (the run tool, however it is split) and ops_tasks/runtime/ when present."""
    files = [(p, module_name(p, ROOT / "remote_scripts", "remote_scripts"))
             for p in sorted((ROOT / "remote_scripts").rglob("*.py"))]
    if (PACKAGE / "runtime").is_dir():
        files += [(p, module_name(p, PACKAGE / "runtime", RUNTIME)) for p in sorted((PACKAGE / "runtime").rglob("*.py"))]
    return files


def upward(module: str, name: str, tasks: frozenset) -> str:
    """Why importing `name` from `module` points up (or out of the pod side); "" when it does not."""
    layer = layer_of(module, tasks) if not module.startswith("remote_scripts") else "pod side"
    if layer == "pod side":
        if name == "<above the top>" or (within(name, {"ops_tasks"}) and not within(name, {RUNTIME})):
            return "pod-side code imports no ops_tasks module outside itself (it runs on the pod alone)"
        return ""
    above = {"operation": tasks | TASK_HELPERS | FRONT_DOORS,
             "shared": {"ops_tasks.operations"} | tasks | TASK_HELPERS | FRONT_DOORS}.get(layer)
    if above and within(name, above):
        what = layer_of(name, tasks)
        return f"{'an' if layer == 'operation' else 'a'} {layer} module imports no {what} module"
    return ""


def violations(files, tasks: frozenset) -> list:
    found = []
    for path, module in files:
        for line, name in imports_of(path.read_text(), module, path.name == "__init__.py"):
            why = upward(module, name, tasks)
            if why:
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {name}: {why}")
    return found


def package_files() -> list:
    return [(p, module_name(p, PACKAGE, "ops_tasks")) for p in sorted(PACKAGE.rglob("*.py"))]


# ---------------------------------------------------------------- the checkout keeps the rules


def test_no_module_of_ops_tasks_imports_a_layer_above_it():
    problems = violations(package_files(), task_modules())
    assert not problems, "imports that point up (docs/ARCHITECTURE.md, \"Layers\"):\n" + "\n".join(problems)


def test_the_pod_side_code_imports_nothing_of_the_laptop():
    files = pod_side_files()
    assert files, "no pod-side Python found (remote_scripts/, ops_tasks/runtime/): the rule would check nothing"
    problems = violations(files, task_modules())
    assert not problems, "pod-side imports of laptop code:\n" + "\n".join(problems)


def test_the_layers_are_sorted_as_the_architecture_says():
    tasks = task_modules()
    assert {"ops_tasks.pod", "ops_tasks.runs", "ops_tasks.vllm", "ops_tasks.campaign"} <= tasks
    layers = {module: layer_of(module, tasks) for _, module in package_files()}
    assert layers["ops_tasks.fleet"] == "shared"  # a low layer: operations import it, never the reverse
    assert layers["ops_tasks.operations.fleet_runs"] == "operation"
    assert layers["ops_tasks.output"] == "task"
    assert {layers[m] for m in ("ops_tasks.records", "ops_tasks.targets", "ops_tasks.settings")} == {"shared"}


# ---------------------------------------------------------------- the check itself sees a planted import

PLANTS = [
    # (the importing module, its source, what the check must name)
    ("ops_tasks.operations.placement", "def place():\n    from ..runs import submit\n", "ops_tasks.runs"),
    ("ops_tasks.operations.placement", "from .. import output\n", "ops_tasks.output"),
    ("ops_tasks.operations.placement", "import ops_tasks.collection\n", "ops_tasks.collection"),
    ("ops_tasks.fleet", "def fan_out():\n    from .operations.runs import submit_runs\n", "ops_tasks.operations.runs"),
    ("ops_tasks.fleet", "from . import pod\n", "ops_tasks.pod"),
    ("ops_tasks.fleet", "class A:\n    def f(self):\n        import importlib\n"
                        "        importlib.import_module('ops_tasks.operations.placement')\n",
     "ops_tasks.operations.placement"),
    ("ops_tasks.records", "if False:\n    from .cli import main\n", "ops_tasks.cli"),
    ("remote_scripts.ops_runs", "def main():\n    from ops_tasks import records\n", "ops_tasks.records"),
    ("ops_tasks.runtime.queue", "from ..names import RUN_ID\n", "ops_tasks.names"),
]


@pytest.mark.parametrize("module, source, named", PLANTS, ids=[f"{m}-{n}" for m, _, n in PLANTS])
def test_an_upward_import_is_caught_wherever_it_is(module, source, named):
    tasks = task_modules()
    found = [(name, upward(module, name, tasks)) for _, name in imports_of(source, module)]
    assert any(name == named and why for name, why in found), found


@pytest.mark.parametrize("module, source", [
    ("ops_tasks.operations.campaign", "from ..fleet import fan_out_targets\nfrom .runs import wait_runs\n"),
    ("ops_tasks.operations.fleet_runs", "from .. import records\nfrom ..fleet import FleetResult\n"),
    ("ops_tasks.fleet", "from . import records\nfrom .targets import target_for\nimport threading\n"),
    ("ops_tasks.runs", "def submit():\n    from .operations.fleet_runs import submit_to_fleet\n"),
    ("ops_tasks.runtime.queue", "from . import states\nfrom ops_tasks.runtime import supervisor\nimport json\n"),
])
def test_an_import_that_points_down_passes(module, source):
    tasks = task_modules()
    assert not [why for _, name in imports_of(source, module) if (why := upward(module, name, tasks))]
