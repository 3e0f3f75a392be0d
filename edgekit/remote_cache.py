"""A shared remote build cache: S3-compatible object storage (AWS S3, MinIO, SeaweedFS, ...) under the local cache.

Rules:
1. `EDGEKIT_CACHE_URL=s3://bucket/prefix` turns it on (`EDGEKIT_CACHE_ENDPOINT`, else boto3's own `AWS_ENDPOINT_URL`,
   names a server other than AWS; credentials are boto3's usual ones). A local miss looks remotely; a local store
   uploads.
2. Layout: `<prefix>/v1/<stage>/<key>/<file>` and the entry record `entry.json`, uploaded **last**: a reader that
   finds no record sees a miss, so an upload cut off half way (a server that dies, a killed build) is never read.
3. Nothing remote is trusted: a downloaded entry is adopted into the local cache (assembled in its `tmp/`, renamed
   into place) and then read as any local entry, its HMAC checked with the shared key (`EDGEKIT_CACHE_KEY`) and
   every file's sha256: a tampered or foreign remote entry is refused, removed locally and rebuilt.
4. Remote failures (unreachable, denied, slow, a missing bucket) never fail a build: each is one event in the
   report's cache record and the build goes on locally. Timeouts are bounded (CONNECT_SECONDS, READ_SECONDS, one
   attempt); after the first failure the remote is not tried again in that build.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from .errors import UsageError

URL_ENV, ENDPOINT_ENV = "EDGEKIT_CACHE_URL", "EDGEKIT_CACHE_ENDPOINT"
CONNECT_SECONDS, READ_SECONDS = 3, 30
ENTRY = "entry.json"


@dataclass
class RemoteCache:
    bucket: str
    prefix: str
    endpoint: str | None = None
    failed: str = ""  # the first failure of this build ("" while the remote works)
    _client: object = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> "RemoteCache | None":
        url = os.environ.get(URL_ENV, "").strip()
        if not url:
            return None
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise UsageError(f"{URL_ENV}={url!r}: expected s3://bucket/prefix")
        return cls(parsed.netloc, parsed.path.strip("/"), os.environ.get(ENDPOINT_ENV) or os.environ.get("AWS_ENDPOINT_URL"))

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _s3(self):
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise RuntimeError("boto3 is not installed: pip install edgekit[s3]") from None

            self._client = boto3.client("s3", endpoint_url=self.endpoint, config=Config(
                connect_timeout=CONNECT_SECONDS, read_timeout=READ_SECONDS, retries={"max_attempts": 1}))
        return self._client

    def _key(self, stage: str, digest: str, name: str) -> str:
        return "/".join(p for p in (self.prefix, "v1", stage, digest, name) if p)

    def download(self, stage: str, digest: str, into: Path) -> bool:
        """Rules 2, 3: the entry's record and files into the folder `into` (made here); False when there is none."""
        s3 = self._s3()
        try:
            record = json.loads(s3.get_object(Bucket=self.bucket, Key=self._key(stage, digest, ENTRY))["Body"].read())
        except s3.exceptions.NoSuchKey:
            return False
        files = record.get("files") if isinstance(record, dict) else None
        if not isinstance(files, dict):
            raise ValueError(f"{ENTRY} of {stage}/{digest[:16]} has no file list")
        into.mkdir(parents=True)
        for name in sorted(files):
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ValueError(f"{name}: a remote entry's path leaves the entry")
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(self.bucket, self._key(stage, digest, name), str(into / name))
        (into / ENTRY).write_text(json.dumps(record))
        return True

    def upload(self, stage: str, digest: str, entry: Path) -> bool:
        """Rule 2: every file, then the record; True once both are there."""
        s3 = self._s3()
        record = json.loads((entry / ENTRY).read_text())
        for name in sorted(record["files"]):
            s3.upload_file(str(entry / name), self.bucket, self._key(stage, digest, name))
        s3.upload_file(str(entry / ENTRY), self.bucket, self._key(stage, digest, ENTRY))
        return True


def adopt(remote: RemoteCache, stage: str, digest: str, local_tmp: Path, final: Path) -> bool:
    """Rule 3: a remote entry assembled in the local cache's `tmp/` and renamed into `final`; False on a miss."""
    local_tmp.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"remote-{os.getpid()}-", dir=local_tmp))
    try:
        if not remote.download(stage, digest, work / "entry"):
            return False
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(work / "entry", final)
        except OSError:
            if not final.is_dir():
                raise
        return True
    finally:
        shutil.rmtree(work, ignore_errors=True)
