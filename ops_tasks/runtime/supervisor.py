"""The supervisor: one long-lived process per outputs root (it holds supervisor.lock) that
claims queued runs under the queue lock, starts them on free GPUs or CPU slots, watches their
timeouts, stalls and cancels, judges their end and retries them; a newer one takes its queue
over when asked (handover.py).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from .contract import (CONTRACT_VERSION, COUNTS_AS_FAILURE, CPU_POOL, GPU_POOL, MASK, RETRYABLE, SUMMARY_BY_EXIT_CODE,
    TOOL_VERSION, default_cpu_slots, run_units)
from .handover import handover_asked, handover_done, successor_lock
from .keys import run_problem
from .converters import Conversion
from .files import WRITE_RETRY_S, file_digest, makedirs, now, remove_quietly, tail_text, write_json
from .gates import pin_problem, unmet_expectations
from .interpreter import probe_interpreter
from .local_sync import LocalSync, work_dir_of
from .metrics import MetricsWatch
from .procs import (KILL_GRACE_S, descendants, group_alive, kill_group, kill_group_fully, kill_marked,
    marked_pids, owner_marker, process_table, signal_quietly, start_ticks_of, stop_pids)
from .rundir import (archive_attempt, attempts_done, failure_class, git_facts, read_status, restore_attempt,
    restore_contract, set_attempt_state, set_state, stop_leftover_group, summary_verdict, write_contract_start,
    write_exit_code_summary, write_record_end)
from .store import Lock, Store


HEARTBEAT_S = 5.0
POLL_S = 0.25
PROCESS_LOOK_S = 1.0  # how often the runs' process trees are looked at (note_processes)
IDLE_EXIT_S = 2.0  # an idle supervisor lingers this long for a submission racing its exit


class Running:
    """A run the supervisor started: its process, the units it holds and deadlines (monotonic
    clock: a wall clock that jumps must not time a run out)."""

    def __init__(self, entry, proc, units, gpus, log_path):
        self.entry = entry
        self.proc = proc
        self.units = units  # what it holds: GPU indices, or a CPU slot ("cpu2")
        self.gpus = gpus  # what its status says it holds: its GPUs, or on a pod without any its slot
        self.log_path = log_path
        self.marker = owner_marker(entry["run_id"], entry["submission_id"], entry["attempt"])
        self.started = now()
        self.started_mono = self.last_output_mono = time.monotonic()
        self.last_output = self.started
        self.last_size = 0
        self.last_heartbeat = 0
        self.kill_reason = None  # timeout | stalled | cancelled
        self.kill_deadline = None
        self.stop_stages = stop_stages(entry)  # [(signal, grace after it)]: stop_signal, TERM, KILL
        work_dir = work_dir_of(entry)
        self.metrics = MetricsWatch(work_dir or entry["run_dir"], log_path, entry.get("metrics_from_log"))
        self.sync = LocalSync(work_dir, entry["run_dir"], entry["sync_interval"]) if work_dir else None
        self.metrics_at = 0.0  # monotonic time the latest step was last written into status.json
        self.env = {}  # the run's full environment (a summary_from python:... runs in it)
        self.ours = {}  # {contract file: sha256} of what the supervisor wrote
        self.record = {}  # .ops/record.json as written at start
        self.ended = None  # (exit code, finished at, log tail) once it exited: kept while its status waits to be written
        self.conversion = None  # its summary_from Conversion, once the command exited 0
        self.judged = None  # (state, failure class, error), once judged
        self.survivors = []
        self.seen = {}  # {pid: start ticks} of every process seen below the run while it ran
        self.left_behind = []  # pids of those that outlived it (a setsid + env -i daemon), stopped
        self.restored = []  # what the run removed of its own directory, written again
        self.log_fd = None  # the supervisor's own handle on stdout.log: its content outlives an rm -rf


class Supervisor:
    def __init__(self, store, slots=None, foreground=False, successor=False):
        self.store = store
        self.successor = successor
        self.handing_over = None  # the newer contract this one hands its queue to
        self.honoured = set()  # queue files whose entry this contract knows whole
        self.processes_noted = 0.0  # monotonic time of the last look at the runs' process trees
        self.lock = Lock(store.path("supervisor.lock"))
        self.slots = slots  # asked for by the submission that started it (None: the pod's, or the default)
        self.slots_file = None  # .ops/slots as last read: a new --slots changes it
        self.gpu_ids, self.cpu_units = [], []
        self.running = {}
        self.unstarted = {}  # run_id -> (entry, class, reason): a failure whose status waits to be written
        self.claim_after = {}  # run_id -> monotonic time: a start that failed to write is tried again then
        self.foreground = foreground
        self.stopping = False
        self.log_file = open(store.path("supervisor.log"), "a")

    def say(self, message):
        line = "%s %s" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), message)
        try:
            self.log_file.write(line + "\n")
            self.log_file.flush()
        except OSError:
            pass  # a full volume: the line is lost, the supervisor goes on
        try:
            print(line, file=sys.stderr if self.foreground else sys.stdout, flush=True)
        except OSError:
            # --no-tmux and the laptop went away: keep supervising, the log has it all.
            self.foreground = False

    def take_lock(self):
        """The supervisor lock, retried for a while: a status probe may hold it an instant."""
        deadline = now() + 5
        while not self.lock.acquire(blocking=False):
            if now() > deadline:
                return False
            time.sleep(0.05)
        return True

    def take_over(self):
        """A successor: the supervisor lock once the older supervisor has handed over (it exits
        when the runs it started have ended), waiting as long as that takes; one successor waits."""
        waiting = successor_lock(self.store)
        if not waiting.acquire(blocking=False):
            return False
        try:
            self.say("supervisor %d (contract %d): waiting for the older supervisor to hand over its queue"
                     % (os.getpid(), CONTRACT_VERSION))
            while not self.stopping:
                if self.lock.acquire(blocking=False):
                    handover_done(self.store)
                    return True
                time.sleep(POLL_S)
            return False
        finally:
            waiting.release()

    def run(self):
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if not (self.take_over() if self.successor else self.take_lock()):
            self.say("supervisor %d: another supervisor is running; this one exits" % os.getpid())
            return {"started": False, "reason": "another supervisor is running"}
        # After the lock: whoever started us sees us alive at once; nvidia-smi can be slow.
        self.gpu_ids = detect_gpus()
        self.slots_file = self.store.read_slots()
        self.slots = cpu_slot_count(self.store, len(self.gpu_ids), self.slots)
        self.cpu_units = cpu_slots(self.slots)
        self.guarded(self.write_info)
        self.say("supervisor %d up: %s%d CPU slots (runs without GPUs)" % (
            os.getpid(), "".join("GPU %s, " % g for g in self.gpu_ids), len(self.cpu_units)))
        crashed = False
        try:
            self.guarded(self.mark_orphans_lost)
            idle_since = None
            while not self.stopping:
                for step in (self.refresh_slots, self.write_unstarted, self.handle_cancels, self.watch,
                             self.start_ready):
                    self.guarded(step)
                if self.running or self.unstarted or (self.store.queued() and not self.handing_over):
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= IDLE_EXIT_S and self.guarded(self.exit_if_idle):
                    break
                time.sleep(POLL_S)
        except BaseException:
            crashed = True
            raise
        finally:
            if self.stopping or crashed:
                self.abandon_all()
            self.lock.release()
        return {"started": True}

    def handed_over(self):
        """True once a newer supervisor has asked for the queue (handover.json): from then on
        nothing more is claimed, and this one exits when the runs it started have ended."""
        if self.handing_over is None:
            contract = handover_asked(self.store)
            if contract is not None:
                self.handing_over = contract
                self.say("a contract %d supervisor takes the queue: this one (contract %d) claims no more runs "
                         "and exits when its %d running runs end" % (contract, CONTRACT_VERSION, len(self.running)))
        return self.handing_over is not None

    def write_info(self):
        write_json(self.store.path("supervisor.json"), {
            "pid": os.getpid(), "started": now(), "hostname": socket.gethostname(), "tool": TOOL_VERSION,
            "contract": CONTRACT_VERSION,
            # slots: what its runs share (pricing: its GPUs, else its CPU slots); cpu_slots: those of
            # runs without GPUs, on any pod (contract 3 on: older supervisors ran them uncapped beside GPUs).
            "slots": self.gpu_ids or self.cpu_units, "gpus": bool(self.gpu_ids), "cpu_slots": len(self.cpu_units)})

    def guarded(self, step):
        """One step of the loop; an error in it is logged, and the supervisor goes on (its runs
        would otherwise go on unwatched). Returns the step's result (None after an error)."""
        try:
            return step()
        except Exception as exc:
            if isinstance(exc, OSError):  # a full volume, most likely: one line, tried again
                self.say("%s: could not write (tried again): %s" % (step.__name__, exc))
            else:
                import traceback

                self.say("error in %s (the supervisor goes on):\n%s" % (step.__name__, traceback.format_exc()))
            time.sleep(1)
            return None

    def _on_signal(self, signum, frame):
        self.stopping = True

    def exit_if_idle(self):
        """Exit only while holding the queue lock, so a submission never lands unseen."""
        with self.store.queue_lock():
            if self.running or self.unstarted or (self.store.queued() and not self.handed_over()):
                return False
            self.say("queue empty: supervisor exits")
            self.lock.release()
            return True

    def refresh_slots(self):
        """runs.submit --slots N: the CPU slots (runs without GPUs, on any pod) from this loop on
        (runs above a lower count finish where they are; none starts until fewer hold one)."""
        slots = self.store.read_slots()
        if not slots or slots == self.slots_file:
            return
        self.slots_file = slots
        if slots != len(self.cpu_units):
            self.say("CPU slots: %d -> %d (runs.submit --slots)" % (len(self.cpu_units), slots))
            self.slots, self.cpu_units = slots, cpu_slots(slots)
            self.guarded(self.write_info)

    def pool(self, name):
        return self.cpu_units if name == CPU_POOL else self.gpu_ids

    def free_slots(self):
        """{pool: [units no run holds]}, no more of a pool than its size less the units held (a
        pool that --slots made smaller under its runs starts none until they are fewer)."""
        held = [unit for r in self.running.values() for unit in r.units]
        free = {}
        for name in (GPU_POOL, CPU_POOL):
            units = self.pool(name)
            in_use = sum(1 for unit in held if is_cpu_slot(unit) == (name == CPU_POOL))
            free[name] = [u for u in units if u not in held][:max(0, len(units) - in_use)]
        return free

    def mark_orphans_lost(self):
        """Runs in active/ belonged to a supervisor that died: stop what is left of them (it would
        hold GPUs this supervisor hands out) and mark them lost for runs.resume."""
        with self.store.queue_lock():
            for entry in self.store.active():
                run_dir = entry["run_dir"]
                status = read_status(run_dir) or {}
                if stop_leftover_group(status):
                    self.say("%s: stopped what its dead supervisor left running" % entry["run_id"])
                if status.get("state") == "running":
                    set_state(run_dir, entry["run_id"], "lost", kept=status, failure_class="lost", finished=now())
                    self.say("%s: lost (its supervisor died)" % entry["run_id"])
                remove_quietly(self.store.path("active", entry["run_id"] + ".json"))

    # -- starting

    def start_ready(self):
        for entry, slots in self.claim_ready():
            try:
                self.launch(entry, slots)
            except OSError as exc:
                # Nothing started (a full volume, say): the run goes back to the queue, as it was.
                self.unclaim(entry, exc)
            except Exception:
                self.running.pop(entry["run_id"], None)
                self.end_unstarted(entry, "exit_nonzero", "could not start: %s" % sys.exc_info()[1])
                raise

    def claim_ready(self):
        """Claim the runs that fit, under the queue lock: a cancel or a submission sees each run
        either queued or claimed, never half of it. The queue entry stays until the run starts,
        so a claim that could not be written (or a start that failed) leaves it queued."""
        claimed = []
        with self.store.queue_lock():
            if self.handed_over():  # asked under this lock, before the entries were queued
                return claimed
            free = self.free_slots()
            for entry in self.store.queued():
                run_id = entry["run_id"]
                if entry.get("not_before", 0) > now() or run_id in self.running or run_id in self.unstarted:
                    continue
                if self.claim_after.get(run_id, 0) > time.monotonic():
                    continue
                if entry["_file"] not in self.honoured:
                    problem = run_problem(entry)
                    if problem:  # never run by rules it does not know: a key dropped would change the verdict
                        self.end_unstarted(entry, "bad_input", "not run: %s" % problem)
                        continue
                    self.honoured.add(entry["_file"])
                pool, need = run_units(entry.get("gpus"), len(self.gpu_ids))
                if need > len(self.pool(pool)):  # only GPUs: a CPU slot is one, and there is one at least
                    self.end_unstarted(entry, "unschedulable",
                                       "needs %d GPUs, the pod has %d" % (need, len(self.gpu_ids)))
                    remove_quietly(entry["_file"])
                    continue
                if need > len(free[pool]):
                    continue  # first fit: a later, smaller run (or one of the other pool) may use what is free
                try:
                    write_json(self.store.path("active", run_id + ".json"),
                               {k: v for k, v in entry.items() if k != "_file"})
                    set_attempt_state(entry, "running", started=now(), supervisor_pid=os.getpid())
                except OSError as exc:
                    self.unclaim(entry, exc)
                    continue
                slots, free[pool] = free[pool][:need], free[pool][need:]
                claimed.append((entry, slots))
        return claimed

    def unclaim(self, entry, exc):
        """A claim or start that could not be written: the run is queued again (its queue entry
        never went), tried again after WRITE_RETRY_S."""
        run_id = entry["run_id"]
        self.running.pop(run_id, None)
        self._drop_active(run_id)
        self.claim_after[run_id] = time.monotonic() + WRITE_RETRY_S
        try:
            set_attempt_state(entry, "queued", queued_at=entry.get("queued_at") or now())
        except OSError:
            pass  # its status may say running a while: the queue entry is what counts, and it is there
        self.say("%s: could not start (%s): queued again" % (run_id, exc))

    def end_unstarted(self, entry, klass, reason):
        """A claimed or queued run that cannot start: failed, with its reason, contract complete.
        Written now or, on a full volume, by a later loop (write_unstarted) until it is."""
        run_id = entry["run_id"]
        self.unstarted[run_id] = (entry, klass, reason)
        makedirs(entry["run_dir"])
        set_attempt_state(entry, "failed", failure_class=klass, error=reason, finished=now())
        if entry.get("_file"):
            remove_quietly(entry["_file"])
        self._drop_active(run_id)
        del self.unstarted[run_id]
        self.say("%s: failed: %s" % (run_id, reason))

    def write_unstarted(self):
        for entry, klass, reason in list(self.unstarted.values()):
            self.end_unstarted(entry, klass, reason)

    def launch(self, entry, slots):
        run_id, run_dir = entry["run_id"], entry["run_dir"]
        makedirs(run_dir)
        gpus = [s for s in slots if not is_cpu_slot(s)]
        secrets = self.store.secret_env(entry["submission_id"], run_id)
        missing = [k for k, v in entry["env"].items() if v == MASK and k not in (secrets or {})]
        if missing:
            # Never run with "***" where a secret belongs (a new pod on the same volume, say).
            self.end_unstarted(entry, "secrets_missing", "secret env %s is gone from this pod "
                                                         "(~/.ops/runs/env): submit again" % ", ".join(missing))
            return
        # The repo may have moved since the run was queued (hours ago, by another submission).
        moved = pin_problem(entry.get("expect_commit"), entry.get("expect_commit_source"), git_facts(entry["cwd"]),
                            entry["cwd"]) if entry.get("expect_commit") else None
        if moved:
            self.end_unstarted(entry, "commit", moved)
            return
        work_dir = work_dir_of(entry)
        if work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)  # an earlier attempt's: it reached the volume then
            makedirs(work_dir)
        env = dict(entry["env"])
        env.update(secrets or {})
        env.update(OPS_RUN_ID=run_id, OPS_RUN_DIR=work_dir or run_dir, OPS_SUBMISSION_ID=entry["submission_id"],
                   PYTHONUNBUFFERED="1")
        if work_dir:
            env["OPS_VOLUME_RUN_DIR"] = run_dir
        if self.gpu_ids:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        full_env = dict(os.environ)
        full_env.update(env)
        interpreter = probe_interpreter(entry, full_env) if os.path.isdir(entry["cwd"]) else {
            "error": "remote_repo %s does not exist" % entry["cwd"]}
        ours, record = write_contract_start(entry, env, gpus, interpreter)
        log_path = os.path.join(work_dir or run_dir, "stdout.log")
        if not os.path.isdir(entry["cwd"]):
            with open(log_path, "ab") as log:
                log.write(("ops-tasks: remote_repo %s does not exist on this pod\n" % entry["cwd"]).encode())
            self.end_unstarted(entry, "data", "remote_repo %s does not exist" % entry["cwd"])
            return
        run_env = dict(full_env)
        # The marker every process of this attempt inherits, even one that leaves its group.
        full_env["OPS_RUN_OWNER"] = owner_marker(run_id, entry["submission_id"], entry["attempt"])
        with open(log_path, "ab", buffering=0) as log:
            # The supervisor's own handle on the log, taken before the run can remove it.
            log_fd = os.open(log_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                proc = subprocess.Popen(["bash", "-c", entry["command"]], cwd=entry["cwd"], env=full_env,
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, close_fds=True)
            except BaseException:
                os.close(log_fd)
                raise
        remove_quietly(entry["_file"])  # started: from now on its active entry and status say so
        entry = {k: v for k, v in entry.items() if k != "_file"}
        # Its status's gpus: beside GPUs a CPU slot is none (costs count a run's GPUs of the pod's).
        running = Running(entry, proc, slots, gpus if self.gpu_ids else slots, log_path)
        running.log_fd = log_fd
        running.env, running.ours, running.record = run_env, ours, record
        self.running[run_id] = running
        self.claim_after.pop(run_id, None)
        self.say("%s: started (attempt %d, pid %d%s)" % (
            run_id, entry["attempt"], proc.pid, ", GPUs " + ",".join(map(str, gpus)) if gpus else ""))
        self.heartbeat(running, force=True)

    def heartbeat(self, running, force=False):
        if not force and time.monotonic() - running.last_heartbeat < HEARTBEAT_S:
            return
        running.last_heartbeat = time.monotonic()
        latest = {"metrics": running.metrics.latest} if running.metrics.latest is not None else {}
        try:
            set_attempt_state(running.entry, "running", pid=running.proc.pid, pgid=running.proc.pid,
                              pid_start=start_ticks_of(running.proc.pid), gpus=running.gpus,
                              started=running.started, last_output=running.last_output, heartbeat=now(),
                              supervisor_pid=os.getpid(), **latest)
        except OSError as exc:
            self.say("%s: heartbeat not written (tried again): %s" % (running.entry["run_id"], exc))

    # -- watching

    def watch(self):
        self.note_processes()
        for run_id, running in list(self.running.items()):
            try:
                self.watch_one(running)
            except Exception as exc:
                # One run's trouble (its directory removed, the disk full) must not stop the rest;
                # a run that ended stays here until its end is written.
                if isinstance(exc, OSError):
                    self.say("%s: could not write its end (tried again): %s" % (run_id, exc))
                else:
                    import traceback

                    self.say("%s: error while watching it:\n%s" % (run_id, traceback.format_exc()))

    def watch_one(self, running):
        entry = running.entry
        try:
            size = os.path.getsize(running.log_path)
        except OSError:
            size = running.last_size
        if size != running.last_size:
            running.last_size, running.last_output = size, now()
            running.last_output_mono = time.monotonic()
        code = running.proc.poll()
        if code is not None:
            self.finish(running, code)
            return
        self.note_metrics(running)
        if running.sync is not None and running.sync.due():
            try:
                running.sync.sync()
            except OSError as exc:  # a full or slow volume: tried again at the next interval
                self.say("%s: local_sync to the volume failed (tried again): %s" % (entry["run_id"], exc))
        if running.kill_reason is None:
            if entry.get("timeout") and time.monotonic() - running.started_mono > entry["timeout"]:
                self.stop_run(running, "timeout")
            elif entry.get("stall_timeout") and time.monotonic() - running.last_output_mono > entry["stall_timeout"]:
                self.stop_run(running, "stalled")
        elif time.monotonic() > running.kill_deadline:
            self.next_stop_stage(running)
        self.heartbeat(running)

    def note_processes(self):
        """Each running run's process tree, remembered: a process that leaves its group and its
        environment (setsid, env -i) is still found, and stopped, when the run ends."""
        live = [r for r in self.running.values() if r.ended is None]
        # Once a second at most: a pass reads every process's stat (a busy pod has thousands).
        if live and time.monotonic() - self.processes_noted >= PROCESS_LOOK_S:
            self.processes_noted = time.monotonic()
            table = process_table()
            for running in live:
                running.seen.update(descendants(table, running.proc.pid))

    def stop_left_behind(self, running):
        left = stop_pids([(pid, ticks) for pid, ticks in running.seen.items() if pid != running.proc.pid])
        if left:
            self.say("%s: stopped %d process(es) it left behind (outside its group and environment): pids %s" % (
                running.entry["run_id"], len(left), ", ".join(map(str, left))))
        return left

    def note_metrics(self, running):
        """The run's latest logged step into status.json (at most once a second), so runs.status
        shows it while the run goes."""
        if time.monotonic() - running.metrics_at < 1.0:
            return
        before = running.metrics.latest
        if running.metrics.look() != before:
            running.metrics_at = time.monotonic()
            self.heartbeat(running, force=True)

    def stop_run(self, running, reason):
        running.kill_reason = reason
        self.say("%s: %s: stopping its processes" % (running.entry["run_id"], reason))
        self.next_stop_stage(running)

    def next_stop_stage(self, running):
        """The next signal for a run being stopped: its stop_signal, TERM, then KILL, each after
        its grace; sent to its process group and what left it (found by its marker)."""
        if not running.stop_stages:
            kill_group(running.proc.pid, signal.SIGKILL)
            self.stop_marked(running, grace=0)
            running.kill_deadline = time.monotonic() + 1.0
            return
        sig, grace = running.stop_stages.pop(0)
        running.kill_deadline = time.monotonic() + grace
        self.say("%s: SIG%s to its processes (next step in %.0fs)" % (
            running.entry["run_id"], signal.Signals(sig).name[3:], grace))
        kill_group(running.proc.pid, sig)
        for pid in marked_pids(running.marker):  # and what left the group (setsid daemons)
            signal_quietly(pid, sig)

    def stop_marked(self, running, grace=2.0):
        """Stop the run's processes outside its group (setsid daemons), found by its marker."""
        stopped = kill_marked(running.marker, grace)
        if stopped:
            self.say("%s: stopped %d process(es) it left outside its process group: pids %s" % (
                running.entry["run_id"], len(stopped), ", ".join(map(str, stopped))))

    def handle_cancels(self):
        for name in self.store.names("cancel"):
            running = self.running.get(name)
            if running is not None and running.kill_reason is None and running.ended is None:
                self.stop_run(running, "cancelled")
            elif running is None:
                remove_quietly(self.store.path("cancel", name))

    def finish(self, running, code):
        """The run exited: stop what it left, judge it, write its end (or, on a full volume, keep
        it and try again next loop: its exit code and cause are kept until written)."""
        entry = running.entry
        run_id, run_dir = entry["run_id"], entry["run_dir"]
        if running.ended is None:
            # The command's children may live on in its group or outside it: they would keep
            # GPUs busy and write into a finished run's log.
            if group_alive(running.proc.pid):
                kill_group_fully(running.proc.pid, grace=2)
            self.stop_marked(running)
            running.left_behind = self.stop_left_behind(running)
            running.survivors = self.survivors(running)
            running.restored = restore_contract(running)
            if running.restored:
                self.say("%s: it removed %s of its run directory: written again" % (
                    run_id, ", ".join(running.restored)))
            running.ended = (code, now(), tail_text(running.log_path, 200))
        code, finished, log_tail = running.ended
        exit_code = code if code >= 0 else None
        sig = -code if code < 0 else None
        if running.judged is None:  # once: a conversion is not run again after a failed write
            running.judged = self.judge(running, code, log_tail)
        if running.judged is None:  # its conversion goes on: looked at again next loop, the others meanwhile
            self.heartbeat(running)
            return
        state, klass, error = running.judged
        extra = {key: value for key, value in (("error", error), ("metrics", running.metrics.latest),
                                                ("survivors", running.survivors)) if value}
        with self.store.queue_lock():
            status = set_attempt_state(entry, state, exit_code=exit_code, signal=sig, failure_class=klass,
                                       started=running.started, finished=finished, last_output=running.last_output,
                                       gpus=running.gpus, **extra)
            write_record_end(running, status)
            remove_quietly(self.store.path("cancel", run_id))
            del self.running[run_id]
            close_quietly(running)
            retried = state in RETRYABLE and self.retry(entry, klass, status)
            self._drop_active(run_id)
        if running.sync is not None:
            shutil.rmtree(running.sync.work_dir, ignore_errors=True)  # all of it is on the volume now
        if retried:
            return
        if state in COUNTS_AS_FAILURE and entry.get("fail_fast"):
            self.guarded(lambda: self.cancel_submission(entry["submission_id"], run_id))
        self.forget_secrets_when_done(entry["submission_id"])
        self.say("%s: %s%s (exit %s)" % (run_id, state, " [%s]" % klass if klass else "", exit_code if sig is None
                                          else "signal %d" % sig))

    def judge(self, running, code, log_tail):
        """(state, failure class, error) of a run that exited: its stop reason, else its exit code,
        its framework's output converted (summary_from) and its summary; None while the conversion
        goes on (a Conversion: a child with its own deadline). Also writes metrics.jsonl from the
        log when the script wrote none."""
        entry, run_dir = running.entry, running.entry["run_dir"]
        if running.conversion is None:
            wrote_curve = running.metrics.write_curve()
            running.metrics.look()
            if running.sync is not None:
                running.sync.sync()  # the last copy, before any verdict: the run is judged on the volume
            if wrote_curve:
                running.ours["metrics.jsonl"] = file_digest(os.path.join(run_dir, "metrics.jsonl"))
            if running.kill_reason in ("timeout", "stalled"):
                return running.kill_reason, running.kill_reason, None
            if running.kill_reason == "cancelled":
                return "cancelled", None, None
            if code != 0:
                return "failed", failure_class(code, log_tail, entry.get("command")), None
            running.conversion = Conversion(entry, running.env)
        problem = running.conversion.poll()
        if problem is Conversion.PENDING:
            if not os.path.exists(self.store.path("cancel", entry["run_id"])):
                return None
            running.conversion.stop()  # cancelled while converting
            return "cancelled", None, None
        for name in running.conversion.absent:
            if os.path.lexists(os.path.join(run_dir, name)):
                running.ours[name] = file_digest(os.path.join(run_dir, name))
        if problem:
            self.say("%s: %s" % (entry["run_id"], problem))
            return "failed", "bad_output", problem
        unmet = unmet_expectations(entry, run_dir)
        if unmet:
            return "failed", "expectation", "expect: " + "; ".join(unmet)
        if entry.get("summary") == SUMMARY_BY_EXIT_CODE and not write_exit_code_summary(run_dir, entry["run_id"]):
            self.say("%s: summary: exit_code, but the command wrote its own summary.json: kept, and the run is "
                     "judged by it" % entry["run_id"])
        ok, klass, _ = summary_verdict(run_dir)
        return ("succeeded" if ok else "failed"), klass, None

    def survivors(self, running):
        """Pids of the run's processes still alive after TERM and KILL (stuck in the kernel, say):
        said in the log and the status, never silently left."""
        left = marked_pids(running.marker)
        if left:
            self.say("%s: %d process(es) survived TERM and KILL: pids %s" % (
                running.entry["run_id"], len(left), ", ".join(map(str, left))))
        return left

    def retry(self, entry, klass, status):
        """Queue the next attempt when retries remain for this class (under the queue lock). A
        write that fails undoes the retry: the attempt's end stands, and is said."""
        retries, retry_on = entry.get("retries") or 0, entry.get("retry_on")
        used = entry.get("retries_used", 0)
        if used >= retries or (retry_on is not None and klass not in retry_on):
            return False
        run_dir = entry["run_dir"]
        backoff = (entry.get("retry_backoff") or 0) * (2 ** used)
        again = dict(entry, attempt=attempts_done(run_dir) + 2, retries_used=used + 1,
                     not_before=now() + backoff, retry_of=klass)
        queue_file = archived = None
        try:
            queue_file = self.store.enqueue(again)
            archived = archive_attempt(run_dir)
            set_attempt_state(again, "queued", queued_at=now(), retry_of=klass, not_before=again["not_before"])
        except OSError as exc:
            if queue_file:
                remove_quietly(queue_file)
            if archived:
                restore_attempt(run_dir, archived)
            self.say("%s: retry not queued (%s): it stays %s" % (entry["run_id"], exc, status["state"]))
            return False
        self.say("%s: %s [%s]: retry %d of %d in %.0fs" % (entry["run_id"], status["state"], klass,
                                                           used + 1, retries, backoff))
        return True

    def forget_secrets_when_done(self, submission_id):
        """A submission's secret env file goes once none of its runs waits or runs any more (a
        resume after that asks for a new submission, which brings the secrets again)."""
        if any(r.entry["submission_id"] == submission_id for r in self.running.values()):
            return
        with self.store.queue_lock():
            self.store.forget_secrets_if_done(submission_id)

    def cancel_submission(self, submission_id, failed_run):
        """--fail-fast: the submission's runs still queued are cancelled, never started."""
        with self.store.queue_lock():
            for entry in self.store.queued():
                if entry.get("submission_id") != submission_id or entry["run_id"] in self.running:
                    continue
                set_attempt_state(entry, "cancelled", finished=now(), error="fail-fast: %s failed" % failed_run)
                remove_quietly(entry["_file"])
                self.say("%s: cancelled (fail-fast: %s failed)" % (entry["run_id"], failed_run))

    def _drop_active(self, run_id):
        remove_quietly(self.store.path("active", run_id + ".json"))

    def abandon_all(self):
        """Told to stop (tmux killed, SIGTERM) or crashed: stop every run's group, leave them
        lost for runs.resume."""
        for run_id, running in list(self.running.items()):
            kill_group_fully(running.proc.pid, grace=3)
            kill_marked(running.marker, grace=1)
            if running.conversion is not None:
                running.conversion.stop()
            running.proc.poll()
            if running.sync is not None:
                try:
                    running.sync.sync()  # what it wrote since the last interval
                except OSError:
                    pass
            try:
                set_attempt_state(running.entry, "lost", failure_class="lost", started=running.started,
                                  finished=now(), gpus=running.gpus)
            except OSError:
                pass  # its status says running, and no supervisor runs: it reads as lost anyway
            self._drop_active(run_id)
            close_quietly(running)
            self.say("%s: lost (the supervisor stopped; runs.resume queues it again)" % run_id)


def close_quietly(running):
    if running.log_fd is not None:
        try:
            os.close(running.log_fd)
        except OSError:
            pass
        running.log_fd = None


def stop_stages(entry):
    """[(signal, grace)] a stop sends before KILL: the run's stop_signal, then TERM."""
    grace = entry.get("stop_grace") or KILL_GRACE_S
    first = getattr(signal, "SIG" + (entry.get("stop_signal") or "TERM"))
    return [(first, grace)] + ([(signal.SIGTERM, grace)] if first != signal.SIGTERM else [])


def cpu_slots(count):
    return ["cpu%d" % i for i in range(max(1, count))]


def is_cpu_slot(unit):
    return str(unit).startswith("cpu")


def cpu_slot_count(store, gpu_count, asked=None):
    """How many runs without GPUs run at once: runs.submit --slots (asked now, else kept in
    .ops/slots), else the default for a pod with or without GPUs (contract.default_cpu_slots)."""
    return asked or store.read_slots() or default_cpu_slots(gpu_count)


def detect_gpus():
    """GPU indices from nvidia-smi -L ([] without nvidia-smi or GPUs)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             timeout=30, universal_newlines=True)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [int(m.group(1)) for m in re.finditer(r"^GPU (\d+):", out.stdout, re.MULTILINE)]


# Set by sshd in the login that started the supervisor (and kept in tmux's environment): with
# SSH_CLIENT set, bash reads ~/.bashrc even for `bash -c`, so every run would source the pod's
# login files (a hanging conda init would hang every run).
LOGIN_ONLY = ("SSH_CLIENT", "SSH2_CLIENT", "SSH_CONNECTION", "SSH_TTY")


def supervise(request):  # the tmux window's command
    for name in LOGIN_ONLY:
        os.environ.pop(name, None)
    store = Store(request["outputs_dir"], create=True)
    try:
        return Supervisor(store, slots=request.get("slots"), foreground=request.get("foreground"),
                          successor=bool(request.get("successor"))).run()
    except Exception:
        # A tmux window that dies takes its traceback with it: keep it where people look.
        import traceback

        with open(store.path("supervisor.log"), "a") as log:
            log.write("supervisor %d crashed:\n%s" % (os.getpid(), traceback.format_exc()))
        raise
