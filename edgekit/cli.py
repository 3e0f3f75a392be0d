"""The `edgekit` command: a thin Click layer over `edgekit.compile` and the target/profile registry.

Exit codes: 0 every target met its budgets · 1 a budget was missed (bundle written) ·
2 bad usage or input · 3 internal failure.
"""

from __future__ import annotations

import logging
import signal
import sys
import traceback

import click

from . import __version__
from .errors import EXIT_BUDGET_MISSED, EXIT_INTERNAL, EdgekitError


def _fail(exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(exc)
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
@click.option("-p", "--profile", default="balanced", show_default=True, metavar="NAME|FILE.toml",
              help="Optimisation profile and its budgets. See `edgekit profiles`.")
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Bundle folder (default: edgekit-out/<model name>). Replaced only by a complete new bundle.")
@click.option("--task", default=None, help="Override the inferred task (feature-extraction, text-classification, image-classification, ...).")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=D1,D2,...",
              help="Fix the free dimensions of an input, repeatable (e.g. --shape input=1,3,224,224).")
@click.option("--data", type=click.Path(), default=None,
              help="Calibration/evaluation samples: a text file (one per line), an image folder, or an .npz (one array per input).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads for every runtime (default: all available cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress output; the report table is still printed.")
@click.option("--debug", is_flag=True, help="Show tracebacks and library logs.")
def compile(model, targets, profile, output, task, shapes, data, threads, quiet, debug) -> None:
    """Export, quantise, verify and benchmark MODEL for each target, into one bundle.

    MODEL is a Hugging Face model folder, a hub id (when online), or an .onnx file; without it the
    embedded default, sentence-transformers/all-MiniLM-L6-v2, is compiled.

    \b
    Examples:
      edgekit compile --target cpu --target intel-cpu
      edgekit compile detector.onnx --shape input=1,3,640,640 --data images/ -o out/detector
      edgekit compile ./classifier --task text-classification --data reviews.txt --profile accurate

    Exit codes: 0 all budgets met, 1 a budget missed (bundle written), 2 bad usage or input, 3 internal failure.
    """
    from .pipeline import compile as compile_model
    from .progress import ConsoleProgress, NullProgress

    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        report = compile_model(model, targets=targets or ("cpu",), profile=profile, output=output, task=task,
                               shapes=shapes, data=data, threads=threads,
                               progress=NullProgress() if quiet else ConsoleProgress())
    except KeyboardInterrupt:
        click.echo("interrupted: no bundle was written", err=True)
        sys.exit(130)
    except Exception as exc:  # every failure becomes one line and an exit code
        _fail(exc, debug)
    click.echo(report.to_markdown())
    click.echo(f"bundle: {report.bundle}", err=True)
    if not report.passed:
        failed = [f"{t.target} ({', '.join(c.budget for c in t.checks if not c.passed)})" for t in report.targets if t.verdict != "pass"]
        click.echo(f"budget missed: {'; '.join(failed)}", err=True)
        sys.exit(EXIT_BUDGET_MISSED)


@main.command()
def targets() -> None:
    """List the built-in targets.

    \b
    Example:
      edgekit targets
    """
    from .config import list_targets

    try:
        for t in list_targets():
            click.echo(f"{t.name:<12} {t.runtime:<12} {t.device:<6} {t.description}")
    except Exception as exc:
        _fail(exc, False)


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
            click.echo(f"{p.name:<10} {p.precision:<5} min_cosine {p.budgets.min_cosine:<6g} {p.description}")
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
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def report(bundles, fmt, output, baseline, max_regression, debug) -> None:
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

    try:
        threshold = parse_fraction(max_regression, "--max-regression")
        text, comparison = review(bundles, format_for(fmt, output), baseline, threshold)
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


if __name__ == "__main__":
    main()
