"""The documentation's commands still work: every shell line of README.md and docs/*.md is checked.

Fenced blocks tagged ```sh, ```bash, ```shell or ```console are shell (in ```console, only `$ ` lines).
An HTML comment on the line just before a block marks it:

    <!-- docs-test: slow (why) -->   a long run (compiles a real model, a timed benchmark): checked, not run
    <!-- docs-test: skip (why) -->   needs what a test machine lacks (a GPU, installing packages): checked, not run

Each command line (`&&`, `;` and `|` split it; `VAR=value` prefixes dropped) is, by its first word:

- `edgekit ...`: resolved against the real Click tree (`edgekit.cli.main`): every command must exist, every
  `--option` must exist on that command, and the whole line must parse (values, choices, required options).
  In an unmarked block it is also run, in-process and for real: `--help`, `--version`, `targets`,
  `profiles`, `cache info|clear` as they are; `verify`, `embed` and `report` in a scratch folder where
  every `out/NAME` they name is a copy of a tiny real bundle (a CNN compiled for cpu and intel-cpu). An
  unmarked `compile` or `bench` fails the test: mark it slow (or make it cheap).
- `make TARGET`: the target exists in the Makefile (never run).
- `python benchmarks/X.py --opt ...`: the script exists and declares each `--opt` (never run).
- `pip ...`, `git ...`: not checked. Anything else fails: teach this file about it.

Also: python blocks parse and their `edgekit.compile(...)` keywords exist; every relative link points to an
existing file and heading; docs/layout.md lists every file of edgekit/ and nothing that is gone.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"sh", "bash", "shell", "console"}
MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<kind>[\w-]+)\s*(?:\((?P<why>[^)]*)\))?\s*-->")
MARKS = {"slow", "skip"}
FENCE = re.compile(r"^(?P<indent> {0,3})```(?P<lang>[\w+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    mark: str | None  # None (run), "slow", "skip"
    body: tuple[str, ...]


@dataclass(frozen=True)
class Command:
    block: Block
    line: int
    argv: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.block.path.relative_to(ROOT)}:{self.line} {' '.join(self.argv)}"[:140]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def read_blocks(path: Path) -> tuple[list[Block], list[str]]:
    """Every fenced block of a markdown file, and the problems with its docs-test markers."""
    lines = path.read_text().splitlines()
    blocks, problems = [], []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        marker = MARKER.search(lines[i])
        if marker:
            kind, why = marker["kind"], (marker["why"] or "").strip()
            nxt = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
            where = f"{rel(path)}:{i + 1}"
            if kind not in MARKS:
                problems.append(f"{where}: unknown docs-test marker {kind!r} (known: {sorted(MARKS)})")
            if not why:
                problems.append(f"{where}: a docs-test marker says why, in parentheses")
            if not nxt or nxt["lang"] not in SHELL:
                problems.append(f"{where}: a docs-test marker must be the line just before a shell block")
        if not fence:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].lstrip().startswith("```"):
            body.append(lines[i])
            i += 1
        prev = MARKER.search(lines[start - 1]) if start else None
        blocks.append(Block(path, start + 1, fence["lang"], prev["kind"] if prev else None, tuple(body)))
        i += 1
    return blocks, problems


def commands(block: Block) -> list[Command]:
    """The command lines of a shell block, each split into its simple commands."""
    out, pending, first = [], "", 0
    for offset, raw in enumerate(block.body, start=1):
        text = raw.strip()
        if block.lang == "console":
            if not (pending or text.startswith("$ ")):
                continue
            text = text[2:] if not pending else text
        if not pending:
            first = block.line + offset
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        text, pending = pending + text, ""
        words = shlex.split(text, comments=True)
        argv: list[str] = []
        for word in [*words, "&&"]:
            if word in {"&&", "||", ";", "|"}:
                while argv and re.fullmatch(r"[A-Za-z_]\w*=.*", argv[0]):
                    argv.pop(0)
                if argv:
                    out.append(Command(block, first, tuple(argv)))
                argv = []
            else:
                argv.append(word)
    return out


ALL_BLOCKS: list[Block] = []
MARKER_PROBLEMS: list[str] = []
for _doc in DOCS:
    _blocks, _problems = read_blocks(_doc)
    ALL_BLOCKS += _blocks
    MARKER_PROBLEMS += _problems
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang in SHELL]
COMMANDS = [c for b in SHELL_BLOCKS for c in commands(b)]


# ---------------------------------------------------------------- edgekit lines against the Click tree

def resolve(argv: tuple[str, ...]) -> tuple[click.Command, list[str], list[str]]:
    """(the command, its path of names, the arguments left) for `edgekit ...`; fails on an unknown command."""
    from edgekit.cli import main

    cmd, names, args = main, [], list(argv[1:])
    while isinstance(cmd, click.Group) and args and not args[0].startswith("-"):
        sub = cmd.commands.get(args[0])
        assert sub is not None, f"`edgekit {' '.join(names + [args[0]])}`: no such command (has: {sorted(cmd.commands)})"
        cmd, names, args = sub, names + [args[0]], args[1:]
    return cmd, names, args


def check_edgekit(argv: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Every option of the line exists on its command and the line parses; returns (command path, args)."""
    cmd, names, args = resolve(argv)
    known = {"--help", "-h"}
    for param in cmd.params:
        if isinstance(param, click.Option):
            known |= set(param.opts) | set(param.secondary_opts)
    where = f"`edgekit {' '.join(names)}`".replace(" `", "`")
    for arg in args:
        if arg == "--":
            break
        if arg.startswith("-") and len(arg) > 1 and not re.fullmatch(r"-\d[\d.,]*", arg):
            option = arg.split("=", 1)[0]
            assert option in known, f"{where} has no option {option} (it has: {', '.join(sorted(known))})"
    if "--help" not in args and "-h" not in args and not isinstance(cmd, click.Group):
        try:
            cmd.make_context(" ".join(["edgekit", *names]), list(args))
        except click.ClickException as exc:
            pytest.fail(f"{' '.join(argv)}: does not parse: {exc.format_message()}")
    return names, args


CHEAP = {("targets",), ("profiles",), ("cache", "info"), ("cache", "clear")}
ON_BUNDLE = {("verify",), ("embed",), ("report",)}


def runnable(names: list[str], args: list[str]) -> bool:
    return "--help" in args or "-h" in args or "--version" in args or tuple(names) in CHEAP | ON_BUNDLE


def run_edgekit(names: list[str], args: list[str], scratch: Path, bundle: Path | None) -> None:
    from edgekit.cli import main

    if tuple(names) in ON_BUNDLE:
        assert bundle is not None
        for arg in args:
            found = re.match(r"^out/[^/]+", arg)
            if found and not (scratch / found[0]).exists():
                shutil.copytree(bundle, scratch / found[0])
    result = CliRunner().invoke(main, [*names, *args], catch_exceptions=False)
    assert result.exit_code == 0, f"`edgekit {' '.join(names + args)}` exited {result.exit_code}:\n{result.output}"
    assert result.output.strip() or tuple(names) == ("cache", "clear") or tuple(names) in ON_BUNDLE


# ---------------------------------------------------------------- the other commands

def makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), flags=re.M))


def check_script(argv: tuple[str, ...]) -> None:
    script = ROOT / argv[1]
    assert script.is_file(), f"{argv[1]}: no such script"
    text = script.read_text()
    for arg in argv[2:]:
        if arg.startswith("--"):
            option = arg.split("=", 1)[0]
            assert f'"{option}"' in text, f"{argv[1]} declares no option {option}"


# ---------------------------------------------------------------- tests

def test_docs_have_shell_blocks():
    assert len(COMMANDS) > 40, "the extractor found almost no commands: is the fence syntax still ```sh?"
    assert any(c.block.mark is None and c.argv[0] == "edgekit" for c in COMMANDS)


def test_markers_are_well_formed():
    assert not MARKER_PROBLEMS, "\n".join(MARKER_PROBLEMS)


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.id)
def test_shell_line(command: Command, request, scratch):
    argv, mark = command.argv, command.block.mark
    tool = argv[0]
    if tool == "edgekit":
        names, args = check_edgekit(argv)
        if mark is not None:
            return
        assert runnable(names, args), (
            f"{command.id}: `edgekit {' '.join(names)}` is not cheap enough to run here: put "
            "`<!-- docs-test: slow (why) -->` on the line before its block (it is still checked for options)")
        bundle = request.getfixturevalue("cnn_bundle") if tuple(names) in ON_BUNDLE else None
        run_edgekit(names, args, scratch, bundle)
    elif tool == "make":
        targets = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
        assert targets, f"{command.id}: which make target?"
        missing = set(targets) - makefile_targets()
        assert not missing, f"{command.id}: the Makefile has no target {sorted(missing)}"
    elif tool in {"python", "python3"} and len(argv) > 1 and argv[1].endswith(".py"):
        check_script(argv)
        assert mark is not None, f"{command.id}: benchmarks are long: mark the block slow"
    elif tool in {"pip", "git"}:
        pytest.skip(f"{tool} lines are not checked")
    else:
        pytest.fail(f"{command.id}: unknown shell command {tool!r}: teach tests/test_docs.py about it, or drop it")


def test_python_blocks_parse_and_name_real_arguments():
    from edgekit.request import CompileRequest

    # edgekit.compile(model, **options): the options are CompileRequest's fields
    parameters = {f.name for f in dataclasses.fields(CompileRequest)}
    seen = 0
    for block in (b for b in ALL_BLOCKS if b.lang == "python"):
        tree = ast.parse("\n".join(block.body), filename=f"{rel(block.path)}:{block.line}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "edgekit.compile":
                seen += 1
                unknown = {k.arg for k in node.keywords} - parameters
                assert not unknown, f"{rel(block.path)}:{block.line}: edgekit.compile has no argument {sorted(unknown)}"
    assert seen


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return {slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)}


def test_links_resolve():
    problems = []
    for doc in DOCS:
        text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.S | re.M)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists():
                problems.append(f"{rel(doc)}: link to a missing file {target}")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                problems.append(f"{rel(doc)}: link to a missing heading {target}")
    assert not problems, "\n".join(problems)


def test_layout_lists_the_tree():
    """docs/layout.md names every file of edgekit/ (or its package folder), and only paths that exist."""
    layout = (ROOT / "docs" / "layout.md").read_text()
    listed = set(re.findall(r"`(edgekit/[\w./]+)`", layout))
    problems = []
    for path in sorted(listed):
        gone = not (ROOT / path).exists()
        if gone and path.endswith("/"):  # a package being split from its module: edgekit/X/ from edgekit/X.py
            gone = not (ROOT / (path.rstrip("/") + ".py")).exists()
        if gone and path.endswith(".py") and (ROOT / path[:-3]).is_dir():  # the former module, now a package
            gone = f"`{path[:-3]}/`" not in layout
        if gone:
            problems.append(f"docs/layout.md lists {path}, which is not in the tree")
    for file in sorted((ROOT / "edgekit").rglob("*")):
        if not file.is_file() or "__pycache__" in file.parts or file.suffix == ".pyc":
            continue
        name = rel(file)
        folders = {str(p) + "/" for p in Path(name).parents if str(p) != "."}
        module = name[:-3] + "/" if name.endswith(".py") else None  # edgekit/X.py while layout says edgekit/X/
        if name not in listed and not (folders - {"edgekit/", "edgekit/stages/"}) & listed and module not in listed:
            problems.append(f"docs/layout.md does not list {name}")
    assert not problems, "\n".join(problems)
