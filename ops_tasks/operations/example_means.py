"""Per-example means of a run, in bounded memory whatever the number of examples.

Groups, the models x tasks table and comparisons pool or pair runs by example, so they need each
run's {example key: mean of its lines}. A run of up to MEANS_IN_MEMORY examples keeps that as a
dict. A larger one (a results.jsonl of ten million lines) writes its (key, sum, count) to PARTS
files by a hash of the key, and is read back one part at a time: an example's lines all land in
one part whatever their order, so a part holds whole examples, and two runs' parts of one number
hold the same keys. Memory then holds one part of each run taken together (1/PARTS of them);
the files live in the report's spool folder (disk about a third of the results' size), removed
with it.
"""

import marshal
import os
import shutil
import tempfile
import weakref
import zlib
from typing import Iterator, Optional

MEANS_IN_MEMORY = 200_000  # examples of one run held as a dict; past it, the run is spilled to parts
PARTS = 64
BATCH = 65_536  # (key, sum, count) held before they are written to their parts


# An example key is its id (a str), ("line", n) for a line without one, or ("cluster", c, key) for
# an example of cluster c (a results line's `cluster` field, or --cluster-by's); the report wraps
# keys as ("task", task, key) and ("stratum", i, key) where it pools tasks or pairs strata.


def part_of(key) -> int:
    """The part an example key lands in: stable across processes (the reading's workers spill, the
    report's parent reads), unlike hash() of a str; a cluster's examples all in one part."""
    if type(key) is str:
        return zlib.crc32(key.encode("utf-8", "surrogatepass")) % PARTS
    if key[0] == "cluster":
        return zlib.crc32(key[1].encode("utf-8", "surrogatepass")) % PARTS
    return key[1] % PARTS  # ("line", n): an example without an id, by its line number


def cluster_of(key):
    """What an example's score is clustered by: its cluster when it has one, else the example. In a
    task, (task, that); across strata the cluster itself (one question answered by several models)."""
    if type(key) is not tuple:
        return key
    kind = key[0]
    if kind == "cluster":
        return ("cluster", key[1])
    if kind == "task":
        return ("task", key[1], cluster_of(key[2]))
    if kind == "stratum":
        return cluster_of(key[2])
    return key


class RunMeans:
    """One run's example means: a dict while it has at most MEANS_IN_MEMORY examples, else spilled
    to PARTS files in `folder` (a temporary one, removed with the object, when none is given)."""

    def __init__(self, folder: Optional[str] = None):
        self.sums: Optional[dict] = {}
        self.folder = folder
        self.count = 0  # examples (distinct keys), known once closed; while in memory, len(sums)
        self._clustered = False  # a spilled run: some example named a cluster (in memory: read off the keys)
        self._pending: list = []
        self._split: Optional[list] = None

    # ---- filling (one reading of a results.jsonl)

    def add_lines(self, lines):
        """Take each (key, score) of `lines` in, and pass it on (reward_stats reads the same lines)."""
        sums = self.sums
        for key, score in lines:
            if sums is not None:
                total, count = sums.get(key, (0.0, 0))
                sums[key] = (total + score, count + 1)
                if len(sums) > MEANS_IN_MEMORY:
                    self._spill()
                    sums = None
            else:
                self._pending.append((key, score, 1))
                if len(self._pending) >= BATCH:
                    self._flush()
            yield key, score

    def close(self) -> "RunMeans":
        """Done filling: write what is pending and count the examples."""
        if self.sums is not None:
            self.count = len(self.sums)
            return self
        self._flush()
        self.count = sum(len(self.part(i)) for i in range(PARTS))
        return self

    def _spill(self) -> None:
        if self.folder is None:
            self.folder = tempfile.mkdtemp(prefix="ops-report-means-")
            weakref.finalize(self, shutil.rmtree, self.folder, True)
        else:
            self.folder = tempfile.mkdtemp(prefix="means-", dir=self.folder)
        self._pending = [(key, total, count) for key, (total, count) in self.sums.items()]
        self.sums = None
        self._flush()

    def _flush(self) -> None:
        by_part = [[] for _ in range(PARTS)]
        for item in self._pending:
            by_part[part_of(item[0])].append(item)
            if not self._clustered and type(item[0]) is tuple and item[0][0] == "cluster":
                self._clustered = True
        for number, items in enumerate(by_part):
            if items:
                with open(os.path.join(self.folder, str(number)), "ab") as handle:
                    marshal.dump(items, handle)  # str, tuple, float, int: what marshal round-trips
        self._pending = []

    # ---- reading

    @property
    def spilled(self) -> bool:
        return self.sums is None

    @property
    def clustered(self) -> bool:
        """Whether some example names a cluster (its interval and pairing are then clustered)."""
        if self.sums is None:
            return self._clustered
        return any(type(key) is tuple and key[0] == "cluster" for key in self.sums)

    def means(self) -> dict:
        """Every example's mean, for a run held in memory (a spilled one is read by part)."""
        assert self.sums is not None, "a spilled run is read part by part"
        return {key: total / count for key, (total, count) in self.sums.items()}

    def part(self, number: int) -> dict:
        """{key: mean} of the examples in one part."""
        if self.sums is not None:
            if self._split is None:
                self._split = [{} for _ in range(PARTS)]
                for key, (total, count) in self.sums.items():
                    self._split[part_of(key)][key] = total / count
            return self._split[number]
        sums = {}
        path = os.path.join(self.folder, str(number))
        if os.path.exists(path):
            with open(path, "rb") as handle:  # our own file, written above
                while True:
                    try:
                        items = marshal.load(handle)
                    except EOFError:
                        break
                    for key, total, count in items:
                        old_total, old_count = sums.get(key, (0.0, 0))
                        sums[key] = (old_total + total, old_count + count)
        return {key: total / count for key, (total, count) in sums.items()}

    def __getstate__(self):  # a worker hands a spilled run to the report's parent by its folder
        assert self.sums is None or not self.sums, "only a spilled run crosses processes"
        return {"sums": None, "folder": self.folder, "count": self.count, "_pending": [], "_split": None,
                "_clustered": self._clustered}

    def __setstate__(self, state):
        self.__dict__.update(state)


def from_dict(means: dict) -> RunMeans:
    """A RunMeans over means already known (a spool's pickled dict)."""
    run = RunMeans()
    run.sums = {key: (value, 1) for key, value in means.items()}
    run.count = len(means)
    return run


class Parts:
    """Several runs' example means part by part, as often as iterated: [one dict per run] once
    when every run is held in memory (`single`), else once per part (a run in memory split by the
    same hash). keyed: per run, a function over each of its dicts (the report keys by task)."""

    def __init__(self, runs: list, keyed: Optional[list] = None):
        self.runs, self.keyed = runs, keyed

    @property
    def single(self) -> bool:
        return not any(run.spilled for run in self.runs)

    def __iter__(self) -> Iterator[list]:
        for dicts in self._parts():
            yield dicts if self.keyed is None else [key(d) for key, d in zip(self.keyed, dicts)]

    def _parts(self) -> Iterator[list]:
        if self.single:
            yield [run.means() for run in self.runs]
            return
        for number in range(PARTS):
            yield [run.part(number) for run in self.runs]
