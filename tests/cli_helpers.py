"""Assertions shared by the CLI tests."""


def assert_usage_error(result, *fragments: str) -> None:
    """Exit 2, exactly one line on stderr starting with `error: `, no traceback, and each fragment in it."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def embed_c(folder, out, name: str, *options: str) -> str:
    """`edgekit embed FOLDER -f c -o OUT OPTIONS`, which must succeed; the text of the header OUT/NAME.h."""
    from click.testing import CliRunner

    from edgekit.cli import main

    result = CliRunner().invoke(main, ["embed", str(folder), "-f", "c", "-o", str(out), *options])
    assert result.exit_code == 0, result.output
    return (out / f"{name}.h").read_text()


def rehash(root, relative):
    """Update the manifest entry of `relative` to the file's current bytes, and the manifest's artifact digest with
    it (a consistent but altered bundle: what a deeper check must catch)."""
    import hashlib
    import json

    from edgekit.bundle import artifact_digest

    manifest = json.loads((root / "manifest.json").read_text())
    data = (root / relative).read_bytes()
    for entry in manifest["files"]:
        if entry["path"] == relative:
            entry.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    manifest["artifact_sha256"] = artifact_digest(manifest["files"])
    (root / "manifest.json").write_text(json.dumps(manifest))
