"""What one person rented, whatever folder they work from: one SQLite database per user
(docs/ARCHITECTURE.md, "Records").

Money and pods are per person, not per checkout: the Lium pods pod.up rented (their price, GPUs,
creation, the folder they were rented from) and the fleets it named live here, so pod.ps, costs,
`--host FLEET` and pod.down work from any folder. A released pod keeps its row (`released_at`):
nothing rented is forgotten. Run results stay in each project's artifacts/ (records.py).

Where: $OPS_STATE_DIR/state.db, else $XDG_STATE_HOME/ops-tasks/state.db, else
~/.local/state/ops-tasks/state.db. Two `ops` at once (a fleet's threads, two terminals) never
fail on a lock: WAL, a busy timeout, and every write one `BEGIN IMMEDIATE` transaction (a
deferred one that read first could not wait its turn). The schema is numbered (PRAGMA
user_version); version 1 imports the JSON records of releases before it once, and each
project's artifacts/fleets/ the first time the store is used from that project. A file that is
not a database is named in one line (exit 2). Only named fields are stored: whatever else a
caller's dict holds (a key, a token) never reaches the file.

sqlite3 is imported on first use: `ops --list` does not pay for it (ARCHITECTURE.md, "Start-up").
"""

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Iterator, Optional

from .errors import ConfigError, OpsError
from .names import RUN_ID

SCHEMA_VERSION = 1
BUSY_S = 30.0  # another `ops` holding the write lock this long is stuck, not busy
STATE_FILE = "state.db"
LEGACY_FLEETS_DIR = "artifacts/fleets"  # releases before the store kept fleets per project
# The fields of a rented pod the store keeps (the pods table's columns besides its row id).
POD_FIELDS = ("alias", "host_id", "lium_id", "name", "huid", "gpu_type", "gpu_count", "price_per_hour",
              "created", "created_at", "recorded_at", "released_at", "project")

SCHEMA_1 = (
    """CREATE TABLE pods (
        row INTEGER PRIMARY KEY,
        alias TEXT NOT NULL,       -- the ~/.ssh/config Host pod.up wrote for it
        host_id TEXT,              -- user@host:port the alias led to (settings.host_identity)
        lium_id TEXT,              -- Lium's id of the pod
        name TEXT, huid TEXT, gpu_type TEXT, gpu_count INTEGER,
        price_per_hour REAL,       -- US dollars, as Lium said when it was rented
        created REAL,              -- when the pod started (epoch seconds)
        created_at TEXT,           -- the same as Lium wrote it
        recorded_at REAL NOT NULL,
        released_at REAL,          -- pod.down removed it; NULL while it may bill
        project TEXT               -- the folder pod.up ran in (NULL: recorded before the store)
    )""",
    "CREATE INDEX pods_by_host ON pods (host_id, released_at)",
    "CREATE INDEX pods_by_lium_id ON pods (lium_id, released_at)",
    """CREATE TABLE fleets (
        name TEXT PRIMARY KEY,
        project TEXT,
        saved_at REAL NOT NULL
    )""",
    """CREATE TABLE fleet_members (
        fleet TEXT NOT NULL REFERENCES fleets (name) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        alias TEXT NOT NULL,
        PRIMARY KEY (fleet, position)
    )""",
    # Folders of old JSON records already imported: each is read once, so a fleet pod.down
    # released is not brought back by its old file.
    "CREATE TABLE imports (source TEXT PRIMARY KEY, imported_at REAL NOT NULL)",
)


# ---------------------------------------------------------------- where


def _xdg(variable: str, default: str) -> Path:
    """An XDG base folder: the variable when it holds an absolute path (the spec ignores others)."""
    value = os.environ.get(variable) or ""
    return Path(value) if os.path.isabs(value) else Path(default).expanduser()


def state_dir() -> Path:
    override = os.environ.get("OPS_STATE_DIR")
    return Path(override).expanduser() if override else _xdg("XDG_STATE_HOME", "~/.local/state") / "ops-tasks"


def cache_dir() -> Path:
    """What may be thrown away (the last pod.ls listing); before the store, the rented pods too."""
    return _xdg("XDG_CACHE_HOME", "~/.cache") / "ops-tasks"


def database_path() -> Path:
    return state_dir() / STATE_FILE


def legacy_pods_dir() -> Path:
    """Where releases before the store kept a JSON file per rented pod (imported once)."""
    return cache_dir() / "lium_pods"


# ---------------------------------------------------------------- opening


def _problem(path: Path, exc: Exception) -> OpsError:
    """One line for what SQLite said of the state database."""
    kind = getattr(exc, "sqlite_errorname", "")
    if kind in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return ConfigError(f"{path}: damaged state database ({exc}): move it aside and ops starts a new one "
                           f"(pod.ps still lists your Lium pods)")
    if kind.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return OpsError(f"{path}: another ops process held the state database for {BUSY_S:.0f}s; try again")
    if kind.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
        return ConfigError(f"{path}: cannot use the state database ({exc}); set OPS_STATE_DIR to a folder "
                           f"you can write")
    return OpsError(f"{path}: state database: {exc}")


@contextlib.contextmanager
def _named_errors(path: Path) -> Iterator[None]:
    import sqlite3

    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise _problem(path, exc) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot use the state database ({exc.strerror or exc}); set OPS_STATE_DIR "
                          f"to a folder you can write") from None


def _connect(path: Path):
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():  # the file (and its -wal, -shm, which take its mode) for this user only
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, timeout=BUSY_S, isolation_level=None)  # transactions are ours: _write
    try:
        db.row_factory = sqlite3.Row
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode = WAL")  # readers never wait for a writer
        db.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        db.close()
        raise
    return db


@contextlib.contextmanager
def _write(db) -> Iterator[None]:
    """One transaction that takes the write lock at its start (waiting up to BUSY_S for it)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled it back itself (a full disk)
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@contextlib.contextmanager
def opened(project_dir=None, *, create: bool = True) -> Iterator[Optional[object]]:
    """The state database, migrated, with project_dir's old fleet records imported. create=False
    (a read): None when there is no database and nothing to import, so a read creates nothing."""
    path = database_path()
    legacy = _legacy_fleets(project_dir)
    if not create and not path.exists() and legacy is None and not _has_json(legacy_pods_dir()):
        yield None
        return
    with _named_errors(path):
        db = _connect(path)
        try:
            _migrate(db, path)
            if legacy is not None and not _imported(db, legacy):
                with _write(db):
                    if not _imported(db, legacy):  # another process may have done it meanwhile
                        _import_fleets(db, legacy, project_dir)
            yield db
        finally:
            db.close()


def _migrate(db, path: Path) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ConfigError(f"{path}: written by a newer ops-tasks (schema {version}, this one knows "
                          f"{SCHEMA_VERSION}): upgrade ops-tasks")
    if version == SCHEMA_VERSION:
        return
    with _write(db):
        version = db.execute("PRAGMA user_version").fetchone()[0]  # two first runs at once: one migrates
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            step(db)
            db.execute(f"PRAGMA user_version = {number}")


def _to_1(db) -> None:
    """The tables, and the rented pods releases before the store kept as JSON files."""
    for statement in SCHEMA_1:
        db.execute(statement)
    folder = legacy_pods_dir()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        record = _read_json(path)
        if record is not None and isinstance(record.get("alias"), str):
            _insert_pod(db, {**_pod_fields(record), "lium_id": _text(record.get("id")), "project": None,
                             "recorded_at": _number(record.get("recorded_at")) or path.stat().st_mtime})


MIGRATIONS = (_to_1,)


# ---------------------------------------------------------------- old JSON records


def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _has_json(folder: Path) -> bool:
    return folder.is_dir() and next(folder.glob("*.json"), None) is not None


def _legacy_fleets(project_dir) -> Optional[Path]:
    """project_dir's folder of old fleet records, when it holds any."""
    if project_dir is None:
        return None
    folder = Path(project_dir) / LEGACY_FLEETS_DIR
    return folder.resolve() if _has_json(folder) else None


def _imported(db, folder: Path) -> bool:
    return db.execute("SELECT 1 FROM imports WHERE source = ?", (str(folder),)).fetchone() is not None


def _import_fleets(db, folder: Path, project_dir) -> None:
    """Each fleet of the folder the store does not know by that name yet (the first one kept wins)."""
    for path in sorted(folder.glob("*.json")):
        aliases = (_read_json(path) or {}).get("aliases")
        if RUN_ID.match(path.stem) and _aliases_ok(aliases) and _fleet_aliases(db, path.stem) is None:
            _replace_fleet(db, path.stem, aliases, project_dir)
    db.execute("INSERT INTO imports (source, imported_at) VALUES (?, ?)", (str(folder), time.time()))


# ---------------------------------------------------------------- rented pods


def _text(value) -> Optional[str]:
    return value if isinstance(value, str) else None


def _number(value) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _pod_fields(pod: dict) -> dict:
    """The columns of a pod from what Lium said (or an old record): named fields, checked types."""
    count = pod.get("gpu_count")
    return {"alias": pod.get("alias"), "host_id": _text(pod.get("host_id")), "name": _text(pod.get("name")),
            "huid": _text(pod.get("huid")), "gpu_type": _text(pod.get("gpu_type")),
            "gpu_count": count if isinstance(count, int) and not isinstance(count, bool) else None,
            "price_per_hour": _number(pod.get("price_per_hour")), "created": _number(pod.get("created")),
            "created_at": _text(pod.get("created_at")), "released_at": None}


def _insert_pod(db, row: dict) -> None:
    columns = [field for field in POD_FIELDS if field in row]
    db.execute(f"INSERT INTO pods ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
               [row[field] for field in columns])


def _pod_dict(row) -> dict:
    """A pod's row as records gave it before the store: Lium's id under `id`."""
    pod = {field: row[field] for field in POD_FIELDS}
    pod["id"] = pod.pop("lium_id")
    return pod


def record_pod(alias: str, pod: dict, host_id: str, project_dir=None) -> None:
    """pod.up rented (or found) this Lium pod behind alias: its price, GPUs and creation time, the
    identity the alias leads to now, and the folder it was rented from (default: this one). A pod
    recorded already and not released is brought up to date, not recorded twice."""
    if not isinstance(alias, str) or not RUN_ID.match(alias):
        raise ConfigError(f"refusing to record a Lium pod under {alias!r}: not an alias")
    now = time.time()
    uptime = _number(pod.get("uptime_s"))
    row = {**_pod_fields({**pod, "alias": alias, "host_id": host_id}),
           "created": now - uptime if uptime is not None else None, "lium_id": _text(pod.get("id")),
           "recorded_at": now, "project": str(Path(project_dir or Path.cwd()).resolve())}
    with opened() as db, _write(db):
        current = db.execute("SELECT row FROM pods WHERE lium_id = ? AND released_at IS NULL",
                             (row["lium_id"],)).fetchone() if row["lium_id"] else None
        if current is None:
            _insert_pod(db, row)
        else:
            columns = [field for field in POD_FIELDS if field != "released_at"]
            db.execute(f"UPDATE pods SET {', '.join(f'{c} = ?' for c in columns)} WHERE row = ?",
                       [row[c] for c in columns] + [current["row"]])


def pod_behind(host_id: str) -> Optional[dict]:
    """The newest pod not released that this host identity leads to; None when pod.up rented none
    there (a host of another kind, or a pod pod.down released: its address may be another's now)."""
    with opened(create=False) as db:
        row = db and db.execute("SELECT * FROM pods WHERE host_id = ? AND released_at IS NULL "
                                "ORDER BY recorded_at DESC, row DESC LIMIT 1", (host_id,)).fetchone()
    return _pod_dict(row) if row else None


def release_pod(lium_id: str, at: Optional[float] = None) -> int:
    """pod.down removed the pod (or Lium no longer lists it): its rows are kept, marked released;
    how many were."""
    with opened() as db, _write(db):
        return db.execute("UPDATE pods SET released_at = ? WHERE lium_id = ? AND released_at IS NULL",
                          (time.time() if at is None else at, lium_id)).rowcount


def rented_pods(released: bool = False) -> list:
    """Every pod recorded and not released (with released, the released ones too), oldest first."""
    where = "" if released else " WHERE released_at IS NULL"
    with opened(create=False) as db:
        rows = db.execute(f"SELECT * FROM pods{where} ORDER BY recorded_at, row").fetchall() if db else []
    return [_pod_dict(row) for row in rows]


# ---------------------------------------------------------------- fleets


def _aliases_ok(aliases) -> bool:
    return isinstance(aliases, list) and bool(aliases) and all(isinstance(a, str) and a for a in aliases)


def _fleet_aliases(db, name: str) -> Optional[list]:
    if db.execute("SELECT 1 FROM fleets WHERE name = ?", (name,)).fetchone() is None:
        return None
    return [row["alias"] for row in
            db.execute("SELECT alias FROM fleet_members WHERE fleet = ? ORDER BY position", (name,))]


def _replace_fleet(db, name: str, aliases: list, project_dir) -> None:
    db.execute("DELETE FROM fleets WHERE name = ?", (name,))  # its members go with it (ON DELETE CASCADE)
    db.execute("INSERT INTO fleets (name, project, saved_at) VALUES (?, ?, ?)",
               (name, str(Path(project_dir).resolve()) if project_dir else None, time.time()))
    db.executemany("INSERT INTO fleet_members (fleet, position, alias) VALUES (?, ?, ?)",
                   [(name, position, alias) for position, alias in enumerate(aliases)])


def save_fleet(project_dir, name: str, aliases: list) -> Path:
    """Remember the pods pod.up rented under one name, so that `--host NAME` means all of them,
    from any folder. The database's path."""
    if not isinstance(name, str) or not RUN_ID.match(name):
        raise ConfigError(f"refusing to record a fleet named {name!r}: not a fleet name")
    if not _aliases_ok(aliases):
        raise ConfigError(f"refusing to record fleet {name!r}: it needs a list of host aliases, got {aliases!r}")
    with opened(project_dir) as db, _write(db):
        _replace_fleet(db, name, list(aliases), project_dir)
    return database_path()


def load_fleet(project_dir, name: str) -> Optional[list]:
    """The aliases recorded for a fleet name (from whichever folder pod.up ran in), or None."""
    if not isinstance(name, str) or not RUN_ID.match(name):
        return None
    with opened(project_dir, create=False) as db:
        return _fleet_aliases(db, name) if db else None


def fleet_names() -> list:
    """Every fleet name recorded (pod.up --name, campaigns), for --host's completion."""
    with opened(create=False) as db:
        return [row["name"] for row in db.execute("SELECT name FROM fleets ORDER BY name")] if db else []


def fleet_after_release(project_dir, name: str, released) -> None:
    """Released pods leave a fleet's name (pod.down, a campaign's teardown), in one transaction:
    the name goes on naming the pods that stay, and a fleet left with none is forgotten."""
    gone = set(released)
    with opened(project_dir) as db, _write(db):
        kept = [alias for alias in _fleet_aliases(db, name) or [] if alias not in gone]
        if kept:
            _replace_fleet(db, name, kept, project_dir)
        else:
            db.execute("DELETE FROM fleets WHERE name = ?", (name,))


def forget_fleet(project_dir, name: str) -> None:
    """pod.down released every pod of the fleet: its name names nothing any more."""
    with opened(project_dir) as db, _write(db):
        db.execute("DELETE FROM fleets WHERE name = ?", (name,))
