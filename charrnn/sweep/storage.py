"""Where a sweep's trials live, and the two things Optuna leaves to us: asking for a trial under a lock
(so workers on several machines never start more than the study's budget) and, on the journal file,
noticing a worker that died (a database does that with Optuna's heartbeat).

- A path (the default: OUT/journal.log): Optuna's JournalStorage on a JournalFileBackend with the
  open(O_EXCL) lock file, safe for many processes on one machine (or one NFS share). Every worker holds
  an flock on its own file in `<journal>.workers/` for as long as it lives; a RUNNING trial whose
  worker's file is no longer locked belongs to a dead worker (the OS drops the lock even on kill -9).
- `postgresql+psycopg://user:pass@host/db`: RDBStorage with a heartbeat; a trial whose heartbeat stops
  is failed after the grace period and queued again (RetryHeartbeatStaleTrialCallback). Asks take a
  PostgreSQL advisory lock.
Both routes fail a dead worker's trial and queue a retry the same way, so its run directory is resumed.
"""
import contextlib
import fcntl
import os
import socket
import zlib
from pathlib import Path

from ..errors import CharrnnError, UsageError

INSTALL = "pip install 'charrnn[sweep]'"
MAX_RETRY = 3  # a trial whose worker dies more often than this stays failed


def need_optuna(url: str | None = None):
    """optuna (and psycopg for a PostgreSQL URL), or a one-line error saying what to install."""
    try:
        import optuna
    except ImportError:
        raise UsageError(f"charrnn sweep needs optuna: {INSTALL}") from None
    if is_database(url):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise UsageError(f"charrnn sweep on PostgreSQL needs psycopg: {INSTALL}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def is_database(url: str | None) -> bool:
    return url is not None and "://" in url


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    head, sep, tail = url.partition("://")
    if "@" in tail and ":" in tail.split("@", 1)[0]:
        user = tail.split("@", 1)[0].split(":", 1)[0]
        tail = f"{user}:***@{tail.split('@', 1)[1]}"
    return head + sep + tail


def retry(study, frozen, max_retry: int | None = MAX_RETRY) -> None:
    """Queue a failed trial again with the same parameters, pointing back at it (its run dir is resumed).
    A trial stopped by Ctrl-C is always queued again (max_retry None): stopping is not failing."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    RetryHeartbeatStaleTrialCallback(max_retry=max_retry, inherit_intermediate_values=True)(study, frozen)


def original_number(frozen) -> int:
    """The trial a retry continues (its first attempt's number), or the trial's own number."""
    history = frozen.system_attrs.get("retry_history") or []
    return int(history[0]) if history else frozen.number


class Store:
    """An opened storage: the Optuna storage object, the ask lock, and dead-worker detection."""

    def __init__(self, url: str, heartbeat: int = 10):
        optuna = need_optuna(url)
        self.url = url
        self.database = is_database(url)
        if self.database:
            self.storage = _database(optuna, url, heartbeat)
        else:
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
            path = Path(url)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.storage = JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
            except OSError as e:
                raise UsageError(f"cannot open the sweep journal {path}: {e.strerror or e}",
                                 "choose a writable --storage path or --out directory") from None
            self.workers_dir = Path(f"{path}.workers")
        self._held = None

    # -- studies -----------------------------------------------------------------------------------
    def study_names(self) -> list[str]:
        return [s.study_name for s in self.storage.get_all_studies()]

    def load(self, name: str):
        import optuna
        if name not in self.study_names():
            known = ", ".join(self.study_names()) or "none"
            raise UsageError(f"no study named {name!r} in {self.describe()}", f"studies there: {known}")
        return optuna.load_study(study_name=name, storage=self.storage)

    def describe(self) -> str:
        return redact(self.url) if self.database else str(self.url)

    # -- the ask lock ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def ask_lock(self, study_name: str):
        """Held from the budget check until the new trial names its worker; `release()` ends it early."""
        if self.database:
            from sqlalchemy import text
            key = zlib.crc32(f"charrnn-sweep:{study_name}".encode()) - 2**31
            conn = self.storage.engine.connect()
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            self._held = lambda: (conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key}), conn.close())
        else:
            fd = os.open(f"{self.url}.ask.lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._held = lambda: os.close(fd)  # closing drops the flock
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held()

    # -- workers ---------------------------------------------------------------------------------
    def worker_name(self, index: int) -> str:
        return f"{socket.gethostname()}-{os.getpid()}-{index}"

    def hold_worker(self, name: str):
        """Lock this worker's file for the life of the process (journal only): the proof it is alive."""
        if self.database:
            return None
        self.workers_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.workers_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def drop_worker(self, name: str, fd) -> None:
        if fd is not None:
            (self.workers_dir / f"{name}.lock").unlink(missing_ok=True)
            os.close(fd)

    def _worker_dead(self, name: str | None) -> bool:
        if name is None:  # asked under the ask lock but died before naming itself
            return True
        try:
            fd = os.open(self.workers_dir / f"{name}.lock", os.O_RDWR)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    def fail_dead_trials(self, study) -> list[int]:
        """Under the ask lock: fail the RUNNING trials of dead workers and queue retries.
        On a database, Optuna's heartbeat check does it (study.optimize runs it too, but a worker that
        is only waiting for others' trials must run it itself). Returns the failed numbers (journal)."""
        if self.database:
            import optuna
            optuna.storages.fail_stale_trials(study)
            return []
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState
        failed = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not self._worker_dead(t.user_attrs.get("worker")):
                continue
            # The owner told its result before letting go of its lock: look again before failing it.
            now = next(x for x in study.get_trials(deepcopy=False) if x.number == t.number)
            if now.state != TrialState.RUNNING:
                continue
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except (UpdateFinishedTrialError, RuntimeError, ValueError):
                continue
            frozen = next(x for x in study.get_trials(deepcopy=True) if x.number == t.number)
            retry(study, frozen)
            failed.append(t.number)
        return failed


def _database(optuna, url: str, heartbeat: int):
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    if not url.startswith("postgresql"):
        raise UsageError(f"unsupported storage URL {redact(url)!r}",
                         "use postgresql+psycopg://user:password@host:port/database, or a journal file path")
    import time
    import warnings

    from sqlalchemy.exc import IntegrityError, ProgrammingError
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeat_interval is marked experimental
                return RDBStorage(
                    url, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                        max_retry=MAX_RETRY, inherit_intermediate_values=True),
                    engine_kwargs={"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}})
        except (IntegrityError, ProgrammingError):
            # Two machines starting on a fresh database both create Optuna's tables; one loses the
            # race ("already exists"). The tables are there a moment later: open them again.
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
        except Exception as e:  # sqlalchemy's OperationalError, ArgumentError, ...: say it in one line
            reason = " ".join(str(getattr(e, "orig", None) or e).split())
            raise CharrnnError(f"cannot reach the sweep database {redact(url)}: {reason[:300]}",
                               "check the URL, that the server is up and that this machine may connect") from None
