"""The build cache: expensive steps are reused when nothing that determines their output has changed.

1. Location: `EDGEKIT_CACHE_DIR`, else `$XDG_CACHE_HOME/edgekit`, else `~/.cache/edgekit`. Entries live in
   `v1/<stage>/<key>/`: the step's files plus `entry.json` (the sha256 and size of each file, and the
   step's small results). `--no-cache` neither reads nor writes; `edgekit cache clear` empties it.
2. A key is the sha256 of everything that determines the step's output (`key`): content hashes of the
   model and the data, the options, the versions of edgekit and of every library that does the work
   (`bundle.package_versions`), a digest of edgekit's own source files, Python, and the CPU (kernels
   differ by instruction set).
3. Writes are atomic: an entry is assembled in `tmp/` inside the cache and renamed into place, so an
   interrupted build or a full disk leaves no partial entry (`tmp/` folders carry their process id: those of
   processes that died, killed ones included, are swept by the next build; others once they are old).
   Two builds storing the same key at once: the first rename wins and the other's copy is dropped.
   A store that fails (disk full, read-only cache) is reported and the build goes on without it.
4. Reads trust nothing: every file is copied out and its copy's sha256 checked against `entry.json`.
   A damaged entry (edited, truncated, a missing file, unreadable `entry.json`) is removed, reported,
   and rebuilt.
5. Entries are authenticated (the trust model: docs/security.md). `entry.json` carries an HMAC-SHA256 over
   its stage, its key, every file's sha256 and size, and the step's results, made with a key that is not
   stored in the cache: `EDGEKIT_CACHE_KEY` (set the same secret on every machine sharing a cache), else a
   random key in the user's config folder (`$XDG_CONFIG_HOME/edgekit/cache.key`, made at first use, mode
   0600). An entry without a valid HMAC (edited results, a consistent rewrite of files and hashes, another
   key's entry) is reported, removed and rebuilt. With no key at hand (the config folder not writable and no
   `EDGEKIT_CACHE_KEY`) nothing is read from or stored in the cache.
6. A copy out that fails on the writing side (the output's disk full or read-only) is the environment's
   fault, never the entry's: the entry stays, the build stops with a usage error naming the folder and the
   space the file needs (exit 2).
7. A shared remote level under the local one (`EDGEKIT_CACHE_URL=s3://bucket/prefix`, remote_cache.py): a local
   miss is looked up remotely and a found entry adopted into the local cache, then read and checked as any local
   entry (HMAC with the shared key, every sha256); a local store is uploaded, files first and the record last.
   A remote failure is an event, never a failed build.
8. A `--no-bench` build whose every input is unchanged is written whole from a `result` entry (result_cache.py):
   timings are never reused, so a build that benchmarks reuses its steps and reruns verification.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import hmac
import json
import logging
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ENVIRONMENT_ERRNOS, UsageError
from .source import sha256_file

log = logging.getLogger(__name__)

WRITE_SIDE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # a copy out cannot fail so for reading (rule 6)

LAYOUT = "v1"
ENTRY = "entry.json"
STALE_TMP_SECONDS = 6 * 3600


KEY_ENV = "EDGEKIT_CACHE_KEY"


def key_file() -> Path:
    """Rule 5: where the user's own cache key lives when EDGEKIT_CACHE_KEY is not set (never inside a cache)."""
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    return (Path(base).expanduser() if base else Path.home() / ".config") / "edgekit" / "cache.key"


def authentication_key() -> bytes | None:
    """Rule 5: the HMAC key, from EDGEKIT_CACHE_KEY or the key file (made with 32 random bytes at first use); None
    when neither can be had."""
    given = os.environ.get(KEY_ENV, "")
    if given:
        return given.encode("utf-8")
    path = key_file()
    try:
        data = path.read_bytes()
        if len(data) >= 16:
            return data
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    except FileExistsError:  # another build made it first
        pass
    except OSError:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if len(data) >= 16 else None


def entry_mac(key: bytes, record: dict[str, Any]) -> str:
    """Rule 5: the HMAC of what an entry claims: its stage, key, files (sha256 and size) and results."""
    claimed = {name: record.get(name) for name in ("stage", "key", "files", "results")}
    return hmac.new(key, json.dumps(claimed, sort_keys=True).encode("utf-8"), hashlib.sha256).hexdigest()


def default_root() -> Path:
    given = os.environ.get("EDGEKIT_CACHE_DIR", "").strip()
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "edgekit"


def _cpu() -> str:
    """The CPU model and instruction-set flags: artifacts calibrated with other kernels may differ."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return f"{platform.machine()} {model} flags:{hashlib.sha256(' '.join(sorted(flags)).encode()).hexdigest()[:16]}"


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of edgekit's own source files: a checkout with changed code never reuses entries built by
    other code under the same version number."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def environment() -> dict[str, Any]:
    from .bundle import package_versions

    return {"layout": LAYOUT, "python": sys.version.split()[0], "cpu": _cpu(), "versions": package_versions(),
            "code": code_digest()}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)  # Path, numpy dtype, ...


def key(stage: str, parts: dict[str, Any]) -> str:
    """The cache key of `stage` given everything that determines its output."""
    text = json.dumps({"stage": stage, **_plain(parts)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def content_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative paths and contents), in a stable order."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file() and ".git" not in p.relative_to(path).parts:
            digest.update(p.relative_to(path).as_posix().encode() + b"\0" + sha256_file(p).encode() + b"\n")
    return digest.hexdigest()


@dataclass
class Event:
    stage: str
    key: str
    outcome: str  # "hit" | "stored" | "damaged" | "store failed" | "no key" | "remote hit" | "uploaded" | "remote failed"
    detail: str = ""
    label: str = ""  # what the entry is for a reader ("cpu artifact"); the stage when empty

    def to_dict(self) -> dict[str, str]:
        return {"stage": self.stage, "label": self.label or self.stage, "key": self.key[:16], "outcome": self.outcome,
                **({"detail": self.detail} if self.detail else {})}


@dataclass
class BuildCache:
    """One build's view of the cache; `enabled=False` (--no-cache) makes every lookup a miss and stores nothing."""

    root: Path = field(default_factory=default_root)
    enabled: bool = True
    events: list[Event] = field(default_factory=list)
    remote: Any = None  # a remote_cache.RemoteCache under the local one (rule 7), from EDGEKIT_CACHE_URL

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.enabled:
            self._sweep_tmp()
            if self.remote is None:
                from .remote_cache import RemoteCache

                self.remote = RemoteCache.from_env()

    # -- the remote level (rule 7): never fails a build
    def _remote(self, what: str, stage: str, digest: str, label: str, call) -> Any:
        remote = self.remote
        if remote is None or remote.failed:
            return None
        try:
            return call(remote)
        except Exception as exc:  # unreachable, denied, slow, malformed: reported, the build goes on locally
            remote.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            log.warning("remote cache %s: %s failed (%s); going on without it", remote.url, what, remote.failed)
            self.events.append(Event(stage, digest, "remote failed", f"{what} {remote.url}: {remote.failed}", label))
            return None

    def _pull(self, stage: str, digest: str, label: str) -> None:
        from .remote_cache import adopt

        entry = self._entry(stage, digest)
        if self._remote("download", stage, digest, label,
                        lambda r: adopt(r, stage, digest, self.root / LAYOUT / "tmp", entry)):
            self.events.append(Event(stage, digest, "remote hit", self.remote.url, label))

    # -- paths
    def _entry(self, stage: str, digest: str) -> Path:
        return self.root / LAYOUT / stage / digest

    def _sweep_tmp(self) -> None:
        tmp = self.root / LAYOUT / "tmp"
        if not tmp.is_dir():
            return
        from .bundle import process_gone

        now = time.time()
        for item in tmp.iterdir():
            try:  # a store of a process that died (its pid is in the name), or one too old to be alive
                if process_gone(item.name) or \
                        now - item.stat().st_mtime > STALE_TMP_SECONDS:
                    shutil.rmtree(item, ignore_errors=True)
            except OSError:
                continue

    # -- read
    def fetch(self, stage: str, digest: str, dest: Path, label: str = "") -> dict[str, Any] | None:
        """Copy the entry's files into `dest` and return its results, or None on a miss (or a damaged entry)."""
        if not self.enabled:
            return None
        entry = self._entry(stage, digest)
        if not entry.is_dir() and authentication_key() is not None:
            self._pull(stage, digest, label)  # rule 7: a local miss looks remotely; the entry is then checked as any
        if not entry.is_dir():
            return None
        secret = authentication_key()
        if secret is None:
            self._no_key(stage, digest, label)
            return None
        try:
            record = json.loads((entry / ENTRY).read_text())
            files = record["files"]
            results = record.get("results", {})
            if record.get("key") != digest or record.get("stage") != stage or not isinstance(files, dict):
                raise ValueError("entry.json does not describe this entry")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return self._damaged(stage, digest, entry, f"{ENTRY}: {exc}", label=label)
        if not hmac.compare_digest(str(record.get("mac", "")), entry_mac(secret, record)):
            return self._damaged(stage, digest, entry, f"{ENTRY}: not authenticated by this machine's cache key "
                                 f"({KEY_ENV} or {key_file()}); it was edited or written with another key", label=label)
        dest.mkdir(parents=True, exist_ok=True)
        copied = []
        for name, want in sorted(files.items()):
            src, dst = entry / name, dest / name
            if Path(name).is_absolute() or ".." in Path(name).parts:
                return self._damaged(stage, digest, entry, f"{name}: path leaves the entry", copied, label)
            try:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
            except OSError as exc:
                if exc.errno in WRITE_SIDE_ERRNOS:  # rule 6: the output's fault, never the entry's
                    for path in copied + [dst]:
                        path.unlink(missing_ok=True)
                    raise UsageError(f"{dst.parent}: {ENVIRONMENT_ERRNOS[exc.errno].split(':')[0]} (the build needs "
                                     f"about {int(want.get('size') or 0) / 1e6:.1f} MB more there for {name}); free "
                                     "some space there or choose another location") from exc
                return self._damaged(stage, digest, entry, f"{name}: {exc.strerror or exc}", copied + [dst], label)
            copied.append(dst)
            got = sha256_file(dst)
            if got != want.get("sha256") or dst.stat().st_size != want.get("size"):
                return self._damaged(stage, digest, entry, f"{name}: sha256 {got[:12]}…, recorded {str(want.get('sha256'))[:12]}…",
                                     copied, label)
        self.events.append(Event(stage, digest, "hit", label=label))
        log.info("cache hit: %s %s", stage, digest[:16])
        return results

    def discard(self, stage: str, digest: str, why: str, label: str = "") -> None:
        """An entry a later check found false (prepare rule 5): reported, removed, rebuilt by the caller."""
        self._damaged(stage, digest, self._entry(stage, digest), why, label=label)

    def _no_key(self, stage: str, digest: str, label: str) -> None:
        """Rule 5: no key, no cache (said once per build)."""
        if not any(e.outcome == "no key" for e in self.events):
            log.warning("build cache not used: no key to authenticate its entries (set %s, or make %s writable)",
                        KEY_ENV, key_file().parent)
        self.events.append(Event(stage, digest, "no key", label=label))

    def _damaged(self, stage: str, digest: str, entry: Path, why: str, copied: list[Path] = (), label: str = "") -> None:
        for path in copied:
            path.unlink(missing_ok=True)
        log.warning("cache entry %s/%s is damaged (%s); rebuilding it", stage, digest[:16], why)
        self.events.append(Event(stage, digest, "damaged", why, label))
        self._remove(entry)
        return None

    def _remove(self, entry: Path) -> None:
        """Move the entry aside (one rename, so readers see all or nothing), then delete it."""
        trash = self.root / LAYOUT / "tmp" / f"trash-{entry.name}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(entry, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    # -- write
    def store(self, stage: str, digest: str, files: dict[str, Path], results: dict[str, Any] | None = None,
              label: str = "") -> None:
        """Add an entry holding `files` (name in the entry -> file) and `results` (JSON). Never fails the build."""
        if not self.enabled or self._entry(stage, digest).is_dir():
            return
        secret = authentication_key()
        if secret is None:
            self._no_key(stage, digest, label)
            return
        tmp = None
        try:
            (self.root / LAYOUT / "tmp").mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{stage}-{os.getpid()}-", dir=self.root / LAYOUT / "tmp"))
            record: dict[str, Any] = {"stage": stage, "key": digest, "files": {}, "results": _plain(results or {}),
                                      "created_by": f"edgekit pid {os.getpid()}"}
            for name, src in sorted(files.items()):
                dst = tmp / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                record["files"][name] = {"sha256": sha256_file(dst), "size": dst.stat().st_size}
            record["mac"] = entry_mac(secret, record)
            (tmp / ENTRY).write_text(json.dumps(record, indent=1, sort_keys=True))
            final = self._entry(stage, digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if final.is_dir():  # another build stored the same key first: theirs is as good as ours
                    shutil.rmtree(tmp, ignore_errors=True)
                    return
                raise
            tmp = None
            self.events.append(Event(stage, digest, "stored", label=label))
            if self._remote("upload", stage, digest, label, lambda r: r.upload(stage, digest, final)):
                self.events.append(Event(stage, digest, "uploaded", self.remote.url, label))
        except OSError as exc:
            log.warning("could not store %s in the build cache at %s: %s", stage, self.root, exc.strerror or exc)
            self.events.append(Event(stage, digest, "store failed", str(exc.strerror or exc), label))
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def summary(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "dir": str(self.root), "events": [e.to_dict() for e in self.events],
                **({"remote": self.remote.url} if self.remote is not None else {})}


# ---------------------------------------------------------------- `edgekit cache`

def describe(root: Path | None = None) -> dict[str, Any]:
    root = Path(root) if root is not None else default_root()
    stages: dict[str, dict[str, int]] = {}
    base = root / LAYOUT
    if base.is_dir():
        for stage in sorted(p for p in base.iterdir() if p.is_dir() and p.name != "tmp"):
            entries = [e for e in stage.iterdir() if e.is_dir()]
            size = sum(f.stat().st_size for e in entries for f in e.rglob("*") if f.is_file())
            stages[stage.name] = {"entries": len(entries), "bytes": size}
    from .bundle import stale_folders

    stale = stale_folders()
    stale_bytes = sum(f.stat().st_size for p in stale for f in p.rglob("*") if f.is_file() and not f.is_symlink())
    return {"dir": str(root), "stages": stages, "bytes": sum(s["bytes"] for s in stages.values()),
            # work folders of builds that died (bundle rule 8): the next build removes them
            "stale_temp": {"folders": [str(p) for p in stale], "bytes": stale_bytes}}


def clear(root: Path | None = None) -> int:
    """Remove every entry; return the bytes freed. Only edgekit's own layout folder is deleted."""
    root = Path(root) if root is not None else default_root()
    if root.exists() and not root.is_dir():
        raise UsageError(f"cache {root}: is a file, not a cache folder (EDGEKIT_CACHE_DIR)")
    freed = describe(root)["bytes"]
    base = root / LAYOUT
    if base.is_dir():
        aside = root / f".{LAYOUT}-clearing-{os.getpid()}-{time.monotonic_ns()}"
        os.rename(base, aside)  # builds running now see an empty cache, never half of one
        shutil.rmtree(aside, ignore_errors=True)
    return freed
