"""The `edgekit` command: a thin Click layer over `edgekit.compile` and the target/profile registry.

Exit codes: 0 every target met its budgets · 1 a budget was missed (bundle written) ·
2 bad usage or input · 3 internal failure.
"""

from __future__ import annotations

import logging
import signal
import sys
import traceback
from pathlib import Path

import click
from click.core import ParameterSource

from . import __version__
from .errors import EXIT_BUDGET_MISSED, EXIT_INTERNAL, EdgekitError, UsageError, environment_error
from .request import DEFAULT_PROFILE, DEFAULT_TARGETS


PROGRESS_HELP = ("How progress is shown on stderr: auto (a live bar on a terminal, plain lines otherwise), plain "
                 "(one line per event), json (one JSON object per line: docs/cli.md) or none. -q means none, "
                 "except that a JSON stream asked for is kept.")
progress_option = click.option("--progress", "progress_mode", type=click.Choice(["auto", "plain", "json", "none"]),
                               default="auto", show_default=True, help=PROGRESS_HELP)


def _fail(exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(exc)
    if not isinstance(exc, UsageError):
        exc = environment_error(exc) or exc  # errors.py rule 4: a full disk or a read-only place is the user's
    if isinstance(exc, EdgekitError):
        prefix = "error" if exc.exit_code == 2 else "internal error"
        click.echo(f"{prefix}: {exc}", err=True)
        sys.exit(exc.exit_code)
    first = str(exc).splitlines()[0] if str(exc) else ""
    click.echo(f"internal error: {type(exc).__name__}: {first}" + ("" if debug else " (rerun with --debug for the traceback)"), err=True)
    sys.exit(EXIT_INTERNAL)


def _sigterm(signum, frame):
    raise KeyboardInterrupt


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgekit")
def main() -> None:
    """Compile open models for edge targets, then prove the result.

    \b
    Example:
      edgekit compile                       # the embedded all-MiniLM-L6-v2, target cpu
      edgekit compile ./my-model --target cpu --target intel-cpu -o out/my-model
    """


@main.command()
@click.argument("model", required=False)
@click.option("-t", "--target", "targets", multiple=True, metavar="NAME|FILE.toml",
              help="Deployment target, repeatable (default: cpu). See `edgekit targets`.")
@click.option("-p", "--profile", default=DEFAULT_PROFILE, show_default=True, metavar="NAME|FILE.toml",
              help="Optimisation profile and its budgets. See `edgekit profiles`.")
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Bundle folder (default: edgekit-out/<model name>). Replaced only by a complete new bundle.")
@click.option("--task", default=None, help="Override the inferred task (feature-extraction, text-classification, image-classification, ...).")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=D1,D2,...",
              help="Fix the free dimensions of an input, repeatable (e.g. --shape input=1,3,224,224).")
@click.option("--data", type=click.Path(), default=None,
              help="Calibration/evaluation samples: a text file (one per line), a .jsonl or .csv file (text and optional "
                   "label column), an image folder (one subfolder per class for labels), or an .npz (one array per input, "
                   "optional 'labels').")
@click.option("--text-column", default="text", show_default=True, help="The text field of a .jsonl/.csv --data file.")
@click.option("--label-column", default=None, help="The label field of a .jsonl/.csv --data file (default: 'label' when present).")
@click.option("--calibration-samples", type=int, default=None, help="Override the profile's calibration sample count.")
@click.option("--eval-samples", type=int, default=None, help="Override the profile's evaluation sample count.")
@click.option("--seed", type=int, default=None, help="Override the profile's seed (shuffling and the split).")
@click.option("--min-cosine", type=float, default=None, metavar="X", help="Budget: worst per-sample cosine against the original.")
@click.option("--max-drop", "max_drop", multiple=True, metavar="METRIC=X",
              help="Budget, repeatable: largest drop original − artifact, e.g. accuracy=0.01 (metrics: accuracy, macro_f1, "
                   "top1_agreement, top5_agreement, retrieval_agreement_at_5).")
@click.option("--max-latency-ms", type=float, default=None, metavar="X", help="Budget: p90 latency in milliseconds.")
@click.option("--max-size-mb", type=float, default=None, metavar="X", help="Budget: artifact size in MB.")
@click.option("--min-speedup", type=float, default=None, metavar="X",
              help="Budget: p50 speedup over the original, e.g. 1.0 (never slower).")
@click.option("--max-ppl-increase", type=float, default=None, metavar="X",
              help="Budget, generative models: largest relative perplexity increase over the original, e.g. 0.05.")
@click.option("--min-token-agreement", type=float, default=None, metavar="X",
              help="Budget, generative models: smallest share of next tokens whose top-1 is the original's, e.g. 0.9.")
@click.option("--junit", type=click.Path(), default=None, metavar="PATH",
              help="Also write a JUnit XML file: one test case per target and budget (written even when a budget fails).")
@click.option("--require-measured", is_flag=True,
              help="Fail a target whose device is not on this machine (latency not measured). Without it such a target "
                   "is built, verified on the CPU and judged on what was measured.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads for every runtime (default: all available cores).")
@click.option("--trust-remote-code", is_flag=True,
              help="Let a Hugging Face model run the Python files it ships (auto_map). Without it such a model is refused.")
@click.option("--force", is_flag=True,
              help="Accept an -o that is /, your home folder or a folder of other files: the bundle goes into its "
                   "subfolder edgekit-bundle; nothing there is deleted.")
@click.option("--no-cache", is_flag=True,
              help="Neither read nor write the build cache (EDGEKIT_CACHE_DIR, default ~/.cache/edgekit).")
@click.option("--no-bench", is_flag=True,
              help="Build and verify only: no latency is measured, latency budgets are not checked (pure build steps).")
@click.option("--project", type=click.Path(), default=None, metavar="FILE",
              help="Build every model of a project file (edgekit.toml, or a pyproject.toml with [tool.edgekit]). "
                   "Default without MODEL: the one in this folder, if any.")
@click.option("--jobs", type=click.IntRange(min=1), default=None, metavar="N",
              help="With a project: build up to N models at once, in separate processes, as memory allows (default 1).")
@click.option("--shard", default=None, metavar="I/N",
              help="With a project: build only the I-th of N shards (whole models; the plan --list-shards prints).")
@click.option("--list-shards", type=click.IntRange(min=1), default=None, metavar="N",
              help="With a project: print how its models split into N shards and exit (with --json: for a CI matrix).")
@click.option("--json", "as_json", is_flag=True, help="With --list-shards: one JSON document.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="With a project: build on this machine (--jobs) or one Ray task per model on a Ray cluster.")
@click.option("--address", default=None, metavar="ADDR",
              help="With --executor ray: the cluster to join (e.g. auto, ray://head:10001); default a local one.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output; the report table is still printed.")
@progress_option
@click.option("--debug", is_flag=True, help="Show tracebacks and library logs.")
def compile(model, targets, profile, output, task, shapes, data, text_column, label_column, calibration_samples, eval_samples,
            seed, min_cosine, max_drop, max_latency_ms, max_size_mb, min_speedup, max_ppl_increase, min_token_agreement, junit,
            require_measured, threads, trust_remote_code, force, no_cache, no_bench, project, jobs, shard, list_shards, as_json,
            executor, address, quiet, progress_mode, debug) -> None:
    """Export, quantise, verify and benchmark MODEL for each target, into one bundle.

    MODEL is a Hugging Face model folder, a hub id (when online), or an .onnx file; without it the
    models of the project file (--project, or edgekit.toml / pyproject.toml's [tool.edgekit] in this
    folder) are built, each into <output>/<name>, and one table is printed; without either, the
    embedded default, sentence-transformers/all-MiniLM-L6-v2, is compiled. With a project, options that
    describe one model (--target, --shape, --data, budgets, ...) belong in the project file.

    \b
    Examples:
      edgekit compile --target cpu --target intel-cpu
      edgekit compile detector.onnx --shape input=1,3,640,640 --data images/ -o out/detector
      edgekit compile ./classifier --task text-classification --data reviews.txt --profile accurate
      edgekit compile ./classifier --data reviews.jsonl --max-drop accuracy=0.01 --junit edgekit.xml
      edgekit compile --target intel-npu --target cuda --target intel-gpu   # built and verified without the devices
      edgekit compile --project edgekit.toml --jobs 2 --no-bench
      edgekit compile --project edgekit.toml --shard 2/3        # one job of a CI matrix (--list-shards 3 --json)

    Exit codes: 0 all budgets met, 1 a budget missed (bundle written), 2 bad usage or input, 3 internal failure;
    with a project, the worst of its models.
    """
    from .pipeline import run
    from .progress import make_progress, quiet_libraries
    from .project import BuildOptions
    from .request import CompileRequest

    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries(debug)
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        project_file = _project_file(model, project, jobs, shard, list_shards, as_json, address, executor)
    except Exception as exc:
        _fail(exc, debug)
    if project_file is not None:
        _compile_project(click.get_current_context(), project_file, jobs or 1, make_progress(progress_mode, quiet), debug,
                         BuildOptions(no_bench=no_bench, cache=not no_cache, threads=threads, force=force,
                                      require_measured=require_measured, trust_remote_code=trust_remote_code), shard,
                         (executor, address))
        return
    try:
        request = CompileRequest(
            model, targets=targets or DEFAULT_TARGETS, profile=profile, output=output, task=task, shapes=shapes, data=data,
            threads=threads, progress=make_progress(progress_mode, quiet), text_column=text_column,
            label_column=label_column, junit=junit, require_measured=require_measured, trust_remote_code=trust_remote_code,
            force=force, no_bench=no_bench, cache=not no_cache,
            overrides={"min_cosine": min_cosine, "max_drop": list(max_drop), "max_latency_ms": max_latency_ms,
                       "max_size_mb": max_size_mb, "min_speedup": min_speedup, "max_ppl_increase": max_ppl_increase,
                       "min_token_agreement": min_token_agreement, "calibration_samples": calibration_samples,
                       "eval_samples": eval_samples, "seed": seed})
        report = run(request)
    except KeyboardInterrupt:
        click.echo("interrupted: no bundle was written", err=True)
        sys.exit(130)
    except Exception as exc:  # every failure becomes one line and an exit code
        _fail(exc, debug)
    _show(report, junit)


def _show(report, junit: str | None) -> None:
    """The report table on stdout; where the bundle went, what was not measured and which budget missed on stderr
    (exit 1 when one did)."""
    click.echo(report.to_markdown())
    click.echo(f"bundle: {report.bundle}", err=True)
    if junit:
        click.echo(f"junit: {junit}", err=True)
    for item in report.unmeasured:
        click.echo(f"not measured: {item['target']}: {item['reason']}", err=True)
    if report.provisional:
        click.echo(f"verdict {report.verdict} is provisional: {report.provisional}", err=True)
    for f in report.failed:
        click.echo(f"not built: {f.target}: {f.error}", err=True)
    missed = [f"{t.target} ({', '.join(c.budget for c in t.checks if c.passed is False and c.gating)})"
              for t in report.targets if t.verdict != "pass"]
    if missed:
        click.echo(f"budget missed: {'; '.join(missed)}", err=True)
    if report.exit_code:
        sys.exit(report.exit_code)


# compile's options that apply to a whole project; every other one describes one model
_PROJECT_OPTIONS = ("model", "project", "jobs", "threads", "force", "no_cache", "no_bench", "quiet", "progress_mode", "debug",
                    "require_measured", "trust_remote_code", "shard", "list_shards", "as_json", "executor", "address")


def _project_file(model, project, jobs, shard, list_shards, as_json, address=None, executor="local") -> Path | None:
    """The project file to build (None: one MODEL); the project-only options checked against it. `--list-shards`
    prints the plan and exits."""
    from .project import project_to_build

    project_file = project_to_build(model, project)
    for flag, value in (("--jobs", jobs), ("--shard", shard), ("--list-shards", list_shards), ("--address", address),
                        ("--executor ray", "ray" if executor == "ray" else None)):
        if project_file is None and value is not None:
            raise UsageError(f"{flag} works on the models of a project file (--project); with one MODEL leave it out")
    if as_json and list_shards is None:
        raise UsageError("--json goes with --list-shards N")
    if list_shards is not None:
        _list_shards(project_file, list_shards, as_json)
        sys.exit(0)
    return project_file


def _list_shards(path: Path, count: int, as_json: bool) -> None:
    from .project import load_project
    from .shards import plan_json, plan_table

    project = load_project(path)
    click.echo(plan_json(project, count) if as_json else plan_table(project, count), nl=as_json)


def _compile_project(ctx: click.Context, path: Path, jobs: int, progress, debug: bool, options: BuildOptions,
                     shard: str | None = None, executor: tuple[str, str | None] = ("local", None)) -> None:
    from .project import build_project, exit_code, load_project, reject_model_options, summary_markdown
    from .shards import parse_shard, select

    given = {p.name: p.opts[-1] for p in ctx.command.params if p.name not in _PROJECT_OPTIONS
             and ctx.get_parameter_source(p.name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    try:
        reject_model_options(given, path)
        project = load_project(path)
        if shard is not None:  # only this shard's models (shards rule 1)
            project = select(project, parse_shard(shard))
            click.echo(f"shard {shard}: {', '.join(m.name for m in project.models) or 'no models'}", err=True)
        if executor[0] == "ray":  # one Ray task per model (ray_executor.py)
            from .ray_executor import build_project as on_ray

            outcomes = on_ray(project, options, progress, executor[1])
        else:
            outcomes = build_project(project, jobs, options, progress,
                                     say=lambda text: click.echo(f"note: {text}", err=True))
    except KeyboardInterrupt:
        click.echo("interrupted: bundles already written are kept; the others were not written", err=True)
        sys.exit(130)
    except Exception as exc:
        _fail(exc, debug)
    click.echo(summary_markdown(outcomes), nl=False)
    for outcome in outcomes:
        if outcome.error:
            if debug:
                click.echo(outcome.detail, err=True)
            click.echo(outcome.line(), err=True)
        elif outcome.exit_code == EXIT_BUDGET_MISSED:
            missed = "; ".join(f"{t.target} ({', '.join(t.missed)})" for t in outcome.results if t.verdict != "pass")
            click.echo(f"budget missed: {outcome.name}: {missed}", err=True)
    sys.exit(exit_code(outcomes))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
def targets(as_json) -> None:
    """List the built-in targets: runtime, device, precision, and whether the device is on this machine.

    A target whose device is absent still compiles here: its artifact is verified on the CPU and its
    latency is marked not measured (see `compile --require-measured`).

    \b
    Examples:
      edgekit targets
      edgekit targets --json
    """
    import json

    from .config import list_targets
    from .devices import probe_all

    try:
        rows = []
        listed = list_targets()
        found = probe_all(listed)
        for t in listed:
            here = found[t.name]
            rows.append({"name": t.name, "runtime": t.runtime, "device": t.device,
                         "execution_provider": t.execution_provider or None,
                         # a target without its own precision builds the profile's (int8 or fp32)
                         "precision": t.precision, "precision_from": "target" if t.precision else "profile",
                         "precisions": list(t.precisions) or ["int8", "fp32"],
                         "static_shapes": t.static_shapes, "max_opset": t.max_opset, "max_ir_version": t.max_ir_version,
                         "present": here.present, "reason": here.reason or None, "description": t.description})
    except Exception as exc:
        _fail(exc, False)
    if as_json:
        click.echo(json.dumps({"targets": rows}, indent=2))
        return
    click.echo(f"{'target':<11} {'runtime':<12} {'device':<6} {'precision':<16} {'here':<5} description / why not here")
    for r in rows:
        precision = r["precision"] or "profile's"
        if len(r["precisions"]) > 1 and r["precision"]:
            precision += f" (or {', '.join(p for p in r['precisions'] if p != r['precision'])})"
        click.echo(f"{r['name']:<11} {r['runtime']:<12} {r['device']:<6} {precision:<16} {'yes' if r['present'] else 'no':<5} "
                   f"{r['description'] if r['present'] else r['reason']}")


@main.command()
def profiles() -> None:
    """List the built-in profiles and their budgets.

    \b
    Example:
      edgekit profiles
    """
    from .config import list_profiles

    try:
        for p in list_profiles():
            devices = f" (device targets: {p.device_precision})" if p.device_precision else ""
            click.echo(f"{p.name:<10} {p.precision:<5} min_cosine {p.budgets.min_cosine:<6g} {p.description}{devices}")
    except Exception as exc:
        _fail(exc, False)


@main.command()
@click.argument("bundles", nargs=-1, required=True, metavar="BUNDLE [BUNDLE...]")
@click.option("-f", "--format", "fmt", type=click.Choice(["md", "json", "html"]), default=None,
              help="md: a table to paste into a pull request; json: every figure and setting; html: one self-contained "
                   "page with latency and accuracy plots. Default: from the -o extension, else md.")
@click.option("-o", "--output", type=click.Path(), default=None, help="Write to FILE (atomically) instead of stdout.")
@click.option("--baseline", type=click.Path(), default=None, metavar="OLD",
              help="A bundle to compare against, target by target (matched by target and profile).")
@click.option("--max-regression", default="5%", show_default=True, metavar="PCT",
              help="Allowed rise of p50/p90 latency and size against --baseline, as 5% or 0.05.")
@click.option("--junit", type=click.Path(), default=None, metavar="PATH",
              help="Also write one JUnit XML file for every bundle's budgets (suites edgekit.<model>.<target>).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def report(bundles, fmt, output, baseline, max_regression, junit, debug) -> None:
    """Review one or more bundles: one table across models, targets and profiles; with --baseline, what changed.

    \b
    Examples:
      edgekit report out/my-bert                           # markdown table on stdout
      edgekit report out/a out/b -o review.html            # one self-contained HTML page with plots
      edgekit report out/new --baseline out/old --max-regression 5%

    Exit codes: 0 done (and no regression against --baseline), 1 a regression beyond --max-regression
    (p50/p90 latency or size up, or cosine min down by more than 0.005), 2 bad usage or input.
    """
    from .review import format_for, parse_fraction, review, write_atomic
    from .review import junit as review_junit

    try:
        threshold = parse_fraction(max_regression, "--max-regression")
        text, comparison = review(bundles, format_for(fmt, output), baseline, threshold)
        if junit:
            from .junit import write_junit

            click.echo(f"junit: {write_junit(None, junit, review_junit(bundles))}", err=True)
        if output:
            written = write_atomic(output, text)
            click.echo(f"report: {written}", err=True)
        else:
            click.echo(text, nl=False)
    except Exception as exc:
        _fail(exc, debug)
    if comparison is not None and comparison.regressed:
        click.echo(f"regression beyond {threshold:.1%} against {baseline}: {comparison.summary()}", err=True)
        sys.exit(EXIT_BUDGET_MISSED)


def _batches(ctx, param, value: str) -> list[int]:
    try:
        sizes = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise click.BadParameter("expected batch sizes separated by commas, e.g. 1,8,32") from None
    if not sizes or any(b < 1 or b > 4096 for b in sizes):
        raise click.BadParameter("batch sizes must be between 1 and 4096, e.g. 1,8,32")
    return sizes


@main.command()
@click.argument("path")
@click.option("-t", "--target", "targets", multiple=True, metavar="NAME",
              help="Which targets of a bundle to run, or which runtime(s) for an artifact or a model (repeatable).")
@click.option("--batch", "batches", default="1", callback=_batches, show_default=True, metavar="B1,B2,...",
              help="Batch sizes: latency at batch 1, throughput at each larger size.")
@click.option("--duration", type=click.FloatRange(min=0.1), default=3.0, show_default=True, metavar="S",
              help="Minimum timed seconds (at least 50 runs; bounded at 3×S or S+10 s).")
@click.option("--original", is_flag=True, help="Also measure the original model, interleaved, for speedups.")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=D1,D2,...", help="Fix free input dimensions (as in compile).")
@click.option("--sequence-length", type=click.IntRange(min=1), default=128, show_default=True,
              help="Tokens per input for text models.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads for every runtime (default: all cores).")
@click.option("--json", "json_path", type=click.Path(), default=None, help="Also write every figure and setting to this JSON file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@progress_option
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def bench(path, targets, batches, duration, original, shapes, sequence_length, threads, json_path, quiet, progress_mode,
          debug) -> None:
    """Benchmark a bundle, one artifact, or a model, with the same harness as compile.

    \b
    Examples:
      edgekit bench out/minilm --original --batch 1,8,32     # every target of a bundle vs the original
      edgekit bench out/minilm/intel-cpu/model.xml --duration 10
      edgekit bench ./my-bert --target cpu --target intel-cpu --original   # FP32 export, on the fly
    """
    from .bench import bench as run_bench
    from .bundle import write_json
    from .progress import make_progress

    try:
        shape_map = dict(graph_shape(s) for s in shapes)
        result = run_bench(path, list(targets) or None, batches, duration, original, threads, sequence_length, shape_map,
                           make_progress(progress_mode, quiet))
        if json_path:
            write_json(Path(json_path), result.to_dict())
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        _fail(exc, debug)
    click.echo(result.to_markdown())


def graph_shape(text: str):
    from .graph import parse_shape_option

    return parse_shape_option(text)


@main.command()
@click.argument("bundle")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="Threads for each runtime.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def verify(bundle, threads, debug) -> None:
    """Check a bundle: every file's sha256 and size, and each artifact rerunning its stored reference.

    Each target's artifact is loaded in its runtime with its runtime.json settings (on the CPU when
    the target's device is not here) and run on the input stored at build time; its outputs must match
    the stored ones within the recorded tolerance. Firmware builds run this before `edgekit embed`.

    \b
    Example:
      edgekit verify out/minilm

    Exit codes: 0 intact, 1 a mismatch (the first one is named), 2 not a bundle or a path leaving it.
    """
    from .verify_bundle import verify as verify_bundle

    try:
        result = verify_bundle(bundle, threads)
    except Exception as exc:
        _fail(exc, debug)
    if not result.ok:
        click.echo(f"mismatch: {result.mismatch}", err=True)
        sys.exit(EXIT_BUDGET_MISSED)
    for line in result.targets:
        click.echo(f"ok  {line}")
    click.echo(f"intact: {result.files} files match manifest.json; {len(result.targets)} target(s) reproduce their reference")


@main.command()
@click.argument("target", metavar="BUNDLE/TARGET")
@click.option("-f", "--format", "fmt", type=click.Choice(["c", "bin"]), default="c", show_default=True,
              help="c: a header and source holding the artifact as a byte array; bin: the raw files plus the manifest.")
@click.option("-o", "--output", required=True, type=click.Path(), metavar="DIR",
              help="Folder to write (atomically); replaced only if an earlier embed wrote it.")
@click.option("--align", type=int, default=64, show_default=True, help="Alignment of the C arrays in bytes (a power of two).")
@click.option("--name", default=None, metavar="PREFIX", help="C identifier prefix (default: edgekit_<target>).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def embed(target, fmt, output, align, name, debug) -> None:
    """Turn one target of a bundle into files a firmware build consumes.

    \b
    Examples:
      edgekit embed out/minilm/cpu --format c -o firmware/model          # edgekit_cpu.h and edgekit_cpu.c
      edgekit embed out/minilm/intel-cpu -f c -o fw --align 128 --name minilm
      edgekit embed out/minilm/cpu --format bin -o rootfs/models/minilm
    """
    from .embed import embed as embed_target

    try:
        out = embed_target(target, fmt, output, align, name)
    except Exception as exc:
        _fail(exc, debug)
    click.echo(f"embedded: {out}", err=True)



@main.group()
def cache() -> None:
    """The build cache: export, samples and artifacts reused when nothing that determines them changed.

    Location: EDGEKIT_CACHE_DIR, else $XDG_CACHE_HOME/edgekit, else ~/.cache/edgekit.
    """


@cache.command("info")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
def cache_info(as_json) -> None:
    """Where the cache is, and how many entries and bytes each step holds."""
    import json

    from .cache import describe

    try:
        info = describe()
    except Exception as exc:
        _fail(exc, False)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"cache: {info['dir']}")
    for stage, figures in info["stages"].items():
        click.echo(f"  {stage:<10} {figures['entries']:>4} entries  {figures['bytes'] / 1e6:>9.1f} MB")
    click.echo(f"  {'total':<10} {'':>4}          {info['bytes'] / 1e6:>9.1f} MB")
    stale = info["stale_temp"]
    if stale["folders"]:
        click.echo(f"stale temporary space: {len(stale['folders'])} folder(s) of builds that died, "
                   f"{stale['bytes'] / 1e6:.1f} MB (the next build removes them)")


@cache.command("clear")
def cache_clear() -> None:
    """Remove every entry (builds running now see an empty cache, never half of one)."""
    from .cache import clear

    try:
        freed = clear()
    except Exception as exc:
        _fail(exc, False)
    click.echo(f"cache cleared: {freed / 1e6:.1f} MB freed", err=True)


if __name__ == "__main__":
    main()
