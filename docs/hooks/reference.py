"""mkdocs hook: the reference pages' tables made from the code at every build.

A page holds `<!-- generated: NAME -->` where a table belongs; `on_page_markdown` puts NAME's
table there, read from the code itself: every task and flag from the collection's own help (what
`ops TASK --help` prints), the profile keys from `settings`' schemas and `Profile`'s defaults, the
exit codes from the `OpsError` classes. So the site cannot fall behind the code; an unknown NAME,
a profile key without a description, or a description of a key the code no longer has fails the
build (tests/test_docs_reference.py checks the built pages).
"""

import copy
import dataclasses
import html
import importlib
import inspect
import re

GENERATED = re.compile(r"<!-- generated: ([a-z-]+) -->")
# Markdown that would act inside a table cell: escaped so a help string stays plain text.
_ACTIVE = re.compile(r"([\\`*_\[\]|#])")


def plain(text: str) -> str:
    """Text as one inert Markdown table cell: no HTML, no emphasis, no cell break."""
    return _ACTIVE.sub(r"\\\1", html.escape(" ".join(str(text).split()), quote=False))


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- tasks and flags


def task_groups(collection):
    """(title, [(full task name, task)]) in the collection's order: each namespace, then the
    top-level tasks."""
    groups = []
    for name, sub in collection.collections.items():
        groups.append((f"`{name}`", [(f"{name}.{task}", sub.tasks[task]) for task in sub.tasks]))
    groups.append(("Top-level tasks", [(task, collection.tasks[task]) for task in collection.tasks]))
    return groups


def flag_rows(name, task) -> list:
    """(flags as `ops TASK --help` shows them, help) of every flag of the task."""
    from invoke.parser import ParserContext

    # Invoke's get_arguments pops each help text off the task: asked of a copy, the task keeps them.
    clone = copy.copy(task)
    clone.help = dict(task.help)
    return ParserContext(name=name, aliases=task.aliases, args=clone.get_arguments()).help_tuples()


def common_flags(collection) -> dict:
    """Flags with one help text wherever they occur, taken by most tasks: shown once."""
    texts, counts = {}, {}
    tasks = [task for _, group in task_groups(collection) for task in group]
    for name, task in tasks:
        for flags, text in flag_rows(name, task):
            texts.setdefault(flags, set()).add(text)
            counts[flags] = counts.get(flags, 0) + 1
    return {flags: next(iter(seen)) for flags, seen in texts.items()
            if len(seen) == 1 and counts[flags] * 2 > len(tasks)}


def anchor(task_name: str) -> str:
    return task_name.replace(".", "-")


def tasks_markdown(collection=None) -> str:
    """Every task of the collection: its docstring and every flag with its help string."""
    if collection is None:
        from ops_tasks.collection import ns as collection
    common = common_flags(collection)
    parts = ["## Flags most tasks take {#common-flags}", "",
             "Listed once here; each task below names the ones it takes.", "",
             table(("flag", "what it does"), [(f"`{f}`", plain(t)) for f, t in sorted(common.items())])]
    for title, group in task_groups(collection):
        parts += ["", f"## {title}"]
        for name, task in group:
            rows = flag_rows(name, task)
            own = [(f"`{flags}`", plain(text)) for flags, text in rows if common.get(flags) != text]
            shared = [f"`{flags}`" for flags, text in rows if common.get(flags) == text]
            parts += ["", f"### `ops {name}` {{#{anchor(name)}}}", "",
                      plain(inspect.getdoc(task) or ""), ""]
            if own:
                parts += [table(("flag", "what it does"), own), ""]
            if shared:
                parts.append(f"Also {', '.join(shared)} ([flags most tasks take](#common-flags)).")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- profile keys

# What each key of settings' schemas is for. The types, ranges and defaults come from the code;
# only the words are written here. A key the schema has and this lacks (or the reverse) fails the build.
PROFILE_KEYS = {
    "destination": "Where SSH goes: an `~/.ssh/config` alias or `user@host:port`. Without it, the profile's "
                   "name is the destination.",
    "volume": "The persistent volume on the pod. Heavy state (datasets, HF cache, outputs) lives here.",
    "volume_must_be_mount": "The volume must be a real mount point (read from `/proc/self/mountinfo`); "
                            "`pod.status` is not ok otherwise. The `local` profile sets false.",
    "outputs_dir": "The outputs root: one folder per run id.",
    "remote_repo": "The repo on the pod that runs (and `exec`, `pod.sync`) work in.",
    "connect_timeout": "Seconds a connection, and each silence of a round trip, may take before the host "
                       "counts as not answering.",
    "strict_host_keys": "true: a host not in known_hosts is refused; false (throwaway pods): any key "
                        "accepted. Unset: your ssh config's `StrictHostKeyChecking` decides.",
    "known_hosts": "The known_hosts file (unset: your ssh config's, else `~/.ssh/known_hosts`).",
    "tmux_socket": "tmux server the tool uses (`tmux -L NAME`); `local` uses `ops-local`, so your own "
                   "sessions are never touched.",
    "vllm": "Defaults for `vllm.start` on this host (the keys below); a flag wins over them.",
    "archive_patterns": "File-name globs of raw eval files at the top of the volume that "
                        "`artifacts.archive` moves into run directories.",
    "price_per_hour": "US dollars per hour, for a host not rented with `pod.up` (see Costs).",
    "run_timeout": "Each run's wall-clock budget on this host, in seconds (24 h; at most 366 days) unless "
                   "its config sets `timeout`.",
    "run_stall_timeout": "Each run's budget of silence on this host, in seconds (30 min) unless its config "
                         "sets `stall_timeout`.",
}
VLLM_KEYS = {
    "model_id": "The model to serve (`--model-id`).",
    "vllm_bin": "The vLLM program (default `vllm`, run as `vllm serve MODEL`; a path ending in `python` "
                "runs `-m vllm.entrypoints.openai.api_server`).",
    "port": "The server's port (default 8000).",
    "bind_host": "The address it listens on (default 127.0.0.1).",
    "session": "Its tmux session (default `vllm`).",
    "served_model_name": "The name clients ask for.",
    "tensor_parallel_size": "vLLM's `--tensor-parallel-size`.",
    "pipeline_parallel_size": "vLLM's `--pipeline-parallel-size`.",
    "gpu_memory_utilization": "vLLM's `--gpu-memory-utilization`.",
    "max_model_len": "vLLM's `--max-model-len`.",
    "dtype": "vLLM's `--dtype`.",
    "quantization": "vLLM's `--quantization`.",
    "trust_remote_code": "vLLM's `--trust-remote-code`.",
    "extra_args": "More vLLM flags, split like a shell line, each piece quoted.",
    "env": "The server's environment; travels on stdin into a 0600 file on the pod, never argv.",
}
OPS_KEYS = {
    "default_host": "The host of a task without `--host` (after `OPS_DEFAULT_HOST`).",
    "profiles": "The profiles, by name (the keys above).",
    "fleets": "Fleets: a name for a list of hosts (see Fleets).",
}


def _type_text(types) -> str:
    from ops_tasks.settings import _TYPE_NAMES

    return " or ".join(dict.fromkeys(_TYPE_NAMES[t] for t in types))


def _range_text(ranges, key) -> str:
    if key not in ranges:
        return ""
    low, high, open_low = ranges[key]
    high_text = "" if high == float("inf") else f", at most {_number(high)}"
    return f"{'more than' if open_low else 'at least'} {_number(low)}{high_text}"


def _number(value) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _yaml_text(value) -> str:
    """A default as invoke.yaml spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value)
    return ", ".join(value) if isinstance(value, tuple) else str(value)


def _default_text(key) -> str:
    from ops_tasks.settings import Profile

    for field in dataclasses.fields(Profile):
        if field.name == key and field.default is not dataclasses.MISSING and field.default is not None:
            return f"`{_yaml_text(field.default)}`"
    return ""


def _key_rows(schema, ranges, described, where, defaults=True) -> list:
    missing = sorted(set(schema) - set(described))
    stale = sorted(set(described) - set(schema))
    if missing or stale:
        raise ValueError(f"docs/hooks/reference.py: {where} keys without a description {missing}, "
                         f"described but not in the code {stale}")
    return [(f"`{key}`", _type_text(types), _range_text(ranges, key), _default_text(key) if defaults else "",
             described[key]) for key, types in schema.items()]


def profile_keys_markdown() -> str:
    from ops_tasks import settings

    header = ("key", "type", "range", "default", "what it is")
    return "\n".join([
        "## `ops.profiles.NAME`", "",
        table(header, _key_rows(settings.PROFILE_SCHEMA, settings.PROFILE_RANGES, PROFILE_KEYS, "profile")), "",
        "## `ops.profiles.NAME.vllm`", "",
        table(header, _key_rows(settings.VLLM_PROFILE_SCHEMA, settings.VLLM_PROFILE_RANGES, VLLM_KEYS,
                                "vllm", defaults=False)), "",
        "## `ops`", "",
        table(header, _key_rows(settings.OPS_SCHEMA, {}, OPS_KEYS, "ops", defaults=False)), ""])


# ---------------------------------------------------------------- exit codes

# The modules that define expected failures (an OpsError subclass is printed as one line and
# ends the program with its exit_code).
ERROR_MODULES = ("ops_tasks.errors", "ops_tasks.output", "ops_tasks.targets", "ops_tasks.operations.artifacts")


def error_classes() -> list:
    from ops_tasks.errors import OpsError

    for module in ERROR_MODULES:
        importlib.import_module(module)
    found, todo = [], [OpsError]
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo += sorted(cls.__subclasses__(), key=lambda c: c.__name__)
    return found


def exit_codes_markdown() -> str:
    rows = [(f"**{cls.exit_code}**", f"`{cls.__module__}.{cls.__name__}`", plain(inspect.getdoc(cls) or ""))
            for cls in error_classes()]
    return table(("exit", "raised as", "what it means"), rows) + "\n"


GENERATORS = {"tasks": tasks_markdown, "profile-keys": profile_keys_markdown, "exit-codes": exit_codes_markdown}


def on_page_markdown(markdown, page, config, files):
    def generated(match):
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"{page.file.src_path}: no generator {name!r} (docs/hooks/reference.py)")
        return GENERATORS[name]()

    return GENERATED.sub(generated, markdown)
