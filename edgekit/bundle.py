"""The bundle folder: written whole or not at all.

1. Everything is written into a temporary folder beside OUT (same file system, so the final move is a
   rename). `commit()` swaps it into place; an existing OUT is replaced only then.
2. Any failure or interruption (Ctrl-C included) removes the temporary folder: no half-written OUT.
3. An existing OUT that is not an edgekit bundle (no manifest.json), or a bundle holding files its
   manifest does not list, is never replaced: that would lose the user's files. `/` and the home
   folder itself are refused outright.
   With `force`, such an OUT is left untouched and the bundle goes into its subfolder `edgekit-bundle`
   (checked by the same rules, without force): edgekit never deletes files it did not write.
4. `manifest.json` lists every file with its sha256 and size, paths relative to OUT, so the bundle is
   relocatable and verifiable.
5. One build at a time per OUT: a lock file beside it (`.OUT.edgekit-lock`, an advisory `flock`) is held
   from the start of the build to the swap; a second build of the same OUT is refused at once (exit 2)
   instead of interleaving. The kernel drops the lock when a build dies, however it dies.
6. Reading one back is `read_bundle(path) -> Bundle`, the one reader verify, bench, embed and report use:
   a folder with a readable `manifest.json` that lies inside it (a usage error otherwise). `Bundle.target`
   reads a target's `runtime.json` as a `RuntimeRecord` and refuses (exit 2, one line) an artifact path it
   names that is absolute, has a `..` part or resolves outside the target's folder (safety rule 9).
7. The swap is recoverable at every instant. Where Linux can (`renameat2` with RENAME_EXCHANGE) the new folder
   and OUT trade places in one atomic step, and the old bundle is then removed from the temporary name.
   Elsewhere OUT is renamed aside to `.OUT.old-PID-*` and the new folder into place; any exception or
   signal between the two puts the old one back. A build or a reader that finds `.OUT.old-*` and no OUT
   (the process died between the renames) puts the newest back and says so.
8. Leftovers of dead builds: the temporary folders carry their process id (`.OUT.partial-PID-*` beside OUT,
   `edgekit-work-PID-*` in the temporary folder); a build removes those whose process is gone
   (`sweep_stale`), and `edgekit cache info` reports the temporary space they hold.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import logging
import math
import os
import secrets
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from dataclasses import dataclass
from typing import Any

from .errors import UsageError
from .runtimes.base import RuntimeRecord
from .safety import inside_bundle
from .source import sha256_file

VERSIONED_PACKAGES = ("edgekit", "torch", "transformers", "optimum", "optimum-onnx", "optimum-intel", "onnx",
                      "onnxruntime", "openvino", "nncf", "numpy")


MEASUREMENT_FILES = ("report.json", "report.md")

log = logging.getLogger(__name__)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def artifact_digest(files: list[dict[str, Any]]) -> str:
    """The manifest's `artifact_sha256`: the digest of its file list without the measurement files."""
    return sha256_text(json.dumps([f for f in files if f.get("path") not in MEASUREMENT_FILES], sort_keys=True))


def digest_edited(manifest: dict[str, Any]) -> bool:
    """True when the manifest's recorded `artifact_sha256` no longer matches its own file list (edited after the build)."""
    recorded = manifest.get("artifact_sha256")
    return recorded is not None and recorded != artifact_digest(manifest.get("files") or [])


def write_npz(path: Path, arrays: dict[str, Any]) -> None:
    """An .npz whose bytes depend on the arrays only (numpy's savez stamps the current time)."""
    import io
    import zipfile

    import numpy as np

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


FORCED_SUBFOLDER = "edgekit-bundle"


def _foreign_files(out: Path) -> list[str]:
    """Files in an existing bundle that its manifest does not list (the user's, not edgekit's)."""
    try:
        listed = {f["path"] for f in json.loads((out / "manifest.json").read_text()).get("files", [])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return ["manifest.json (unreadable)"]
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.name != "manifest.json" and p.relative_to(out).as_posix() not in listed)


def check_output(out: Path) -> None:
    resolved = out.resolve()
    if resolved == Path(resolved.anchor):
        raise UsageError(f"-o {out}: is the file system root; give a folder of its own, e.g. -o out/my-model")
    if resolved == Path.home().resolve():
        raise UsageError(f"-o {out}: is your home folder itself; give a folder of its own, e.g. -o ~/edgekit-out/my-model")
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is a file; give a folder path")
    below = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if below is not None:
        raise UsageError(f"-o {out}: {below} is a file, not a folder; give a folder path")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "manifest.json").is_file():
            raise UsageError(f"-o {out}: exists and is not an edgekit bundle (no manifest.json); choose another folder or remove it")
        foreign = _foreign_files(out)
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise UsageError(f"-o {out}: an edgekit bundle that also holds files it did not write ({', '.join(foreign[:3])}{more}); "
                             "move them or choose another folder")


def output_folder(out: Path, force: bool = False) -> Path:
    """Where the bundle goes: `out`, or with `force` and an `out` that may not be replaced, `out/edgekit-bundle`."""
    try:
        check_output(out)
        return out
    except UsageError:
        if not force or (out.exists() and not out.is_dir()):
            raise
    inner = out / FORCED_SUBFOLDER
    check_output(inner)
    return inner


def clean_json(value: Any) -> Any:
    """Replace non-finite floats with None, so the JSON is strict (no NaN, no Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(clean_json(data), indent=2, allow_nan=False) + "\n")


class OutputLock:
    """An exclusive `flock` on `.OUT.edgekit-lock` beside OUT, refused (not waited for) when another build holds it."""

    def __init__(self, out: Path):
        self.path = out.parent / f".{out.name}.edgekit-lock"
        self.out = out
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no lock (documented)
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise UsageError(f"-o {self.out}: another edgekit build is writing this bundle now ({holder}); "
                                 "wait for it to finish, or give another -o") from None
            try:  # the previous holder may have removed the file between our open and our lock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()}".encode())
                self._fd = fd
                return self
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None


class BundleWriter:
    """A bundle being written; use as a context manager and call `commit()` at the end."""

    def __init__(self, out: Path, force: bool = False):
        self.out = output_folder(out.resolve(), force)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock = OutputLock(self.out).acquire()
        try:
            restore_orphaned(self.out)  # rule 7: a build that died mid-swap left the old bundle aside
            sweep_stale(self.out)  # rule 8
            check_output(self.out)  # again, now that no other build can change it
            self.root = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-{os.getpid()}-", dir=self.out.parent))
        except BaseException:
            self._lock.release()
            raise
        self._committed = False

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if not self._committed:
                shutil.rmtree(self.root, ignore_errors=True)
        finally:
            self._lock.release()

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def files(self) -> list[dict[str, Any]]:
        return [
            {"path": p.relative_to(self.root).as_posix(), "sha256": sha256_file(p), "size": p.stat().st_size}
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and p != self.root / "manifest.json"
        ]

    def write_manifest(self, source: dict[str, Any], extra: dict[str, Any]) -> None:
        files = self.files()
        write_json(self.root / "manifest.json", {
            "format": "edgekit-bundle/1",
            "source": source,
            **extra,
            "versions": package_versions(),
            "files": files,
            # The build's output without its measurements: the same model, data, options and tool
            # versions give the same list, byte for byte (report.json/report.md hold the timings).
            "artifact_sha256": artifact_digest(files),
        })

    def commit(self) -> Path:
        os.chmod(self.root, 0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        if self.out.exists():
            check_output(self.out)
        replace_folder(self.root, self.out)
        self._committed = True
        return self.out


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux `renameat2` RENAME_EXCHANGE); False where the OS, its C
    library or the file system cannot (rule 7)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_folder(new: Path, out: Path) -> None:
    """Move the complete folder `new` to `out` (same file system), replacing what is there only once the new
    one is in place; recoverable at every instant (rule 7)."""
    if not out.exists():
        os.rename(new, out)
        return
    if exchange(new, out):  # `new` now holds the old bundle
        shutil.rmtree(new, ignore_errors=True)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.rename(out, old)
        os.rename(new, out)
    except BaseException:
        if old.exists() and not out.exists():
            os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def restore_orphaned(out: Path) -> Path | None:
    """Rule 7: with no `out`, the newest `.OUT.old-*` holding a manifest is put back; its path, or None."""
    if out.exists() or out.is_symlink():
        return None
    aside = [p for p in out.parent.glob(f".{out.name}.old-*") if (p / "manifest.json").is_file()]
    if not aside:
        return None
    newest = max(aside, key=lambda p: p.stat().st_mtime)
    os.rename(newest, out)
    log.warning("%s: put back the bundle an interrupted build had set aside as %s", out, newest.name)
    return newest


def pid_in_name(name: str) -> int | None:
    """The process id in a temporary folder's name `...-<pid>-<random>` (as edgekit makes them), or None."""
    parts = name.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def process_gone(name: str) -> bool:
    """True when a temporary folder's name carries the id of a process that is no longer running."""
    pid = pid_in_name(name)
    return pid is not None and not _alive(pid)


def stale_folders(out: Path | None = None) -> list[Path]:
    """Rule 8: temporary folders of builds whose process is gone (beside `out`, and in the temporary folder)."""
    places = [(Path(tempfile.gettempdir()), "edgekit-work-")]
    if out is not None:
        places.append((out.parent, f".{out.name}.partial-"))
    found = []
    for folder, prefix in places:
        try:
            entries = list(folder.glob(f"{prefix}*"))
        except OSError:
            continue
        found += [path for path in entries if path.is_dir() and not path.is_symlink() and process_gone(path.name)]
    return found


def sweep_stale(out: Path | None = None) -> list[Path]:
    """Rule 8: remove what `stale_folders` finds; the paths removed."""
    removed = []
    for path in stale_folders(out):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    if removed:
        log.info("removed %d folder(s) left by builds that died: %s", len(removed), ", ".join(p.name for p in removed))
    return removed


def work_folder() -> tempfile.TemporaryDirectory:
    """A build's temporary folder, named with its process id (rule 8)."""
    return tempfile.TemporaryDirectory(prefix=f"edgekit-work-{os.getpid()}-")


def write_text_atomic(path: Path, text: str) -> Path:
    """Write through a temporary file beside `path`, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# ------------------------------------------------------------------ reading a bundle back (rule 6)

RUNTIME_RECORD = "runtime.json"


@dataclass(frozen=True)
class BundleTarget:
    """One target of a bundle: its folder, its runtime.json and its artifact (inside the folder, checked)."""

    name: str
    folder: Path
    record: RuntimeRecord
    artifact: Path

    def files(self) -> list[Path]:
        """The files that make the artifact, as its runtime says."""
        return self.record.unit.files(self.artifact)


@dataclass(frozen=True)
class Bundle:
    """A bundle as read (rule 6)."""

    root: Path
    manifest: dict[str, Any]

    def target_names(self) -> list[str]:
        """The target folders: those holding a runtime.json, sorted."""
        return sorted(d.name for d in self.root.iterdir() if d.is_dir() and (d / RUNTIME_RECORD).is_file())

    def target(self, name: str) -> BundleTarget:
        folder = inside_bundle(self.root, name)
        record = RuntimeRecord.read(inside_bundle(self.root, f"{name}/{RUNTIME_RECORD}", "."))
        return BundleTarget(name, folder, record, inside_bundle(folder, record.artifact, RUNTIME_RECORD))


def _restore_locked(out: Path) -> None:
    """Rule 7 for a reader: put an orphaned bundle back, holding the build lock (never while a build swaps)."""
    if not any(out.parent.glob(f".{out.name}.old-*")):
        return
    try:
        lock = OutputLock(out.absolute()).acquire()
    except (UsageError, OSError):
        return
    try:
        restore_orphaned(out.absolute())
    finally:
        lock.release()


def read_bundle(path: str | os.PathLike) -> Bundle:
    """A bundle folder and its manifest, checked (rule 6); a usage error for anything else."""
    root = Path(path)
    if not root.exists() and not root.is_symlink() and root.parent.is_dir():
        _restore_locked(root)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder; give an edgekit bundle folder (the -o of compile)")
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise UsageError(f"{root}: not an edgekit bundle (no manifest.json)")
    inside_bundle(root, "manifest.json", ".")  # a manifest linked in from elsewhere is not this bundle's
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{manifest_path}: manifest.json is not valid JSON ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0][:80]})") from None
    except OSError as exc:
        raise UsageError(f"{manifest_path}: cannot read manifest.json ({exc.strerror or exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise UsageError(f"{manifest_path}: not an edgekit manifest (no 'files' list)")
    return Bundle(root, manifest)
