"""``servekit convert``, ``servekit bench`` and ``servekit advise``: the commands around the server.

Each command parses its flags into the toolkit's options and prints; the work is in
:mod:`servekit.toolkit`, imported when the command runs so ``servekit serve`` never pays for it.
A ToolkitError becomes a one-line message and exit status 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

__all__ = ["advise", "bench", "convert"]


@contextmanager
def _reported() -> Iterator[None]:
    from servekit.toolkit.errors import ToolkitError

    try:
        yield
    except ToolkitError as exc:
        raise click.ClickException(str(exc)) from None


def _shapes(values: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    from servekit.toolkit.specs import parse_shape

    with _reported():
        return tuple(parse_shape(value) for value in values)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", "destination", required=True, type=click.Path(path_type=Path),
              help="The model folder to write, REPO/MODEL.")
@click.option("--version", type=int, help="Version folder to write [default: one past the highest there, or 1].")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="B,D1,...",
              help="Shape of an input, batch first (e.g. 1,64); once per input, in forward() order.")
@click.option("--input-dtype", "input_datatypes", multiple=True, metavar="DATATYPE",
              help="FP32 (default), INT64, ...: once for all inputs or once per input.")
@click.option("--input-names", help="Comma-separated names for the inputs [default: those of SOURCE's config.yaml"
              " when it sits in a model folder, else forward()'s argument names].")
@click.option("--output-names", help="Comma-separated names for the outputs [default: a dict's keys, else those of"
              " SOURCE's config.yaml, else output, output_0, ...].")
@click.option("--module", metavar="FILE.py:NAME", help="The nn.Module class (or factory) for a state dict SOURCE,"
              " or for SOURCE = FILE.py itself.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=1e-4, show_default=True,
              help="Each value must satisfy |onnx - source| <= T * (1 + |source|).")
@click.option("--sample", "samples", type=click.Path(path_type=Path),
              help="Inputs to compare on besides random ones: .npy (one input) or .npz (by input name).")
@click.option("--opset", type=int, help="ONNX opset [default: the newest the exporter and onnxruntime support].")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="max_batch_size of the written config.yaml.")
@click.option("--trust", "--trust-pickle", "trust", is_flag=True, help="Read a pickle (.joblib/.pkl, or a whole "
              "module saved with torch.save), or skops types skops does not trust.")
@click.option("--overwrite", is_flag=True, help="Replace the model file of an existing version folder.")
def convert(source: Path, destination: Path, input_shapes: tuple[str, ...], input_names: str | None,
            output_names: str | None, **options: Any) -> None:
    """Convert a PyTorch or scikit-learn model at SOURCE to ONNX, into a servekit model folder.

    SOURCE is a TorchScript file (.pt), a torch.export program (.pt2), a whole module saved with
    torch.save (.pth, with --trust-pickle), a state dict or .py file with --module, or a
    scikit-learn model (.skops; .joblib/.pkl with --trust). The ONNX model
    gets a dynamic batch dimension, is checked with onnx.checker, and must answer like SOURCE on
    random (and --sample) inputs; then REPO/MODEL/N/model.onnx and REPO/MODEL/config.yaml are written.
    """
    from servekit.toolkit.console import output_console
    from servekit.toolkit.convert import ConvertOptions, convert_model

    with _reported():
        result = convert_model(ConvertOptions(
            source=source, destination=destination, input_shapes=_shapes(input_shapes),
            input_names=_split(input_names), output_names=_split(output_names), **options,
        ))
    console = output_console()
    console.print(f"wrote {result.model_path} ({result.source_kind} -> ONNX opset {result.opset})")
    console.print(f"{'wrote' if result.config_written else 'kept'} {result.config_path}")
    for note in result.notes:
        console.print(note)
    console.print(f"serve it with: servekit serve {destination.parent}")


def _numbers(name: str, text: str | None, kind: Callable[[str], Any]) -> tuple[Any, ...]:
    try:
        values = tuple(kind(part) for part in _split(text))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated numbers", param_hint=name) from None
    if any(value <= 0 for value in values):
        raise click.BadParameter(f"{text!r}: every value must be positive", param_hint=name)
    return values


@click.command()
@click.argument("url")
@click.option("--model", required=True, help="Model to load-test.")
@click.option("--model-version", help="Version [default: the model's default version].")
@click.option("--protocol", type=click.Choice(["http", "simple", "grpc"]), default="http", show_default=True,
              help="http: Open Inference Protocol over HTTP; simple: POST /predict (the server's default model);"
              " grpc: inference.GRPCInferenceService/ModelInfer.")
@click.option("--concurrency", default="1,8,32", show_default=True,
              help="Closed loop: clients sending back to back, one run per value. With --rate: the connection cap.")
@click.option("--rate", help="Open loop instead: requests per second, one run per value (e.g. 100,500).")
@click.option("--duration", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Seconds per run.")
@click.option("--requests", type=click.IntRange(min=1), help="Stop a run after this many requests (--duration still"
              " bounds it).")
@click.option("--warmup", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Unmeasured seconds before each series.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Rows per request.")
@click.option("--binary", is_flag=True, help="http: send tensors with the binary extension instead of JSON.")
@click.option("--compare", metavar="WHAT", help="Run a second series side by side: PROTOCOL[@HOST:PORT] (the same"
              " server over another protocol), model=NAME[:VERSION] (another model on the server, e.g. one with"
              " batching off), or URL (the same load against a second server).")
@click.option("--grpc-channels", type=click.IntRange(min=1), default=1, show_default=True,
              help="gRPC connections the calls share (HTTP/2 streams are concurrent on each).")
@click.option("--timeout", "request_timeout_s", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Per-request timeout, and the grace after a run for answers still out.")
@click.option("--time-limit", "time_limit_s", type=click.FloatRange(min=1), help="Hard limit for the whole bench"
              " [default: twice the planned time plus 30 s].")
@click.option("--out", type=click.Path(path_type=Path), help="Folder for results.json and plot.png.")
def bench(url: str, concurrency: str, rate: str | None, duration: float, warmup: float, out: Path | None,
          model_version: str | None, **options: Any) -> None:
    """Load-test a running server at URL and report req/s and latency percentiles.

    URL is the address of the chosen protocol: http://HOST:PORT for http and simple,
    HOST:PORT for grpc. Each request carries random data shaped from the model's metadata.
    Exit status 1 when a request failed or the time limit cut the bench short.
    """
    import asyncio

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from servekit.toolkit.bench import BenchOptions, run_bench
    from servekit.toolkit.bench_report import print_table, write_json, write_plot
    from servekit.toolkit.console import error_console, output_console

    settings = BenchOptions(url=url, concurrency=_numbers("--concurrency", concurrency, int),
                            rates=_numbers("--rate", rate, float), duration_s=duration, warmup_s=warmup,
                            version=model_version, **options)
    errors = error_console()
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=errors,
                  transient=True) as progress:
        task = progress.add_task("connecting", total=1.0)
        with _reported():
            result = asyncio.run(run_bench(settings, lambda text, done: progress.update(task, description=text,
                                                                                           completed=done)))
    print_table(result, output_console())
    if out is not None:
        write_json(result, out / "results.json")
        problem = write_plot(result, out / "plot.png")
        errors.print(problem or f"wrote {out / 'results.json'} and {out / 'plot.png'}")
    if not result.complete:
        errors.print(f"[red]stopped at the time limit ({settings.limit_s(len(result.series)):.0f} s)[/]")
    if result.errors or not result.complete:
        raise SystemExit(1)



@click.command()
@click.argument("model_path", required=False, type=click.Path(path_type=Path))
@click.option("--require", "requirements", metavar="LIST", help="Comma-separated: flexibility, batteries, latency,"
              " cross-framework, edge, debugging, throughput, each optionally NAME=WEIGHT (default weight 1),"
              " e.g. low_latency=2,throughput [default with a model: latency,throughput].")
@click.option("--write-config", type=click.Path(path_type=Path), help="Write the recommended config.yaml here.")
@click.option("--budget", type=click.FloatRange(min=0.1), default=20.0, show_default=True,
              help="Seconds of measurement in all (loading and converting the model come on top).")
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Largest batch size measured (1, 2, 4, ... up to it).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="B,D1,...",
              help="Input shape, batch first, once per input (TorchScript and nn.Module do not tell theirs).")
@click.option("--input-dtype", "input_datatypes", multiple=True, metavar="DATATYPE", help="As for convert.")
@click.option("--module", metavar="FILE.py:NAME", help="The nn.Module class for a state dict or .py MODEL_PATH.")
@click.option("--threads", help="Thread counts to measure, comma-separated [default: 1 and every usable core].")
@click.option("--trust", "--trust-pickle", "trust", is_flag=True, help="Read a pickle (a scikit-learn .joblib/.pkl, or "
              "a whole module saved with torch.save), or skops types skops does not trust.")
def advise(model_path: Path | None, requirements: str | None, write_config: Path | None, budget: float,
           max_batch: int, input_shapes: tuple[str, ...], input_datatypes: tuple[str, ...], module: str | None,
           threads: str | None, trust: bool) -> None:
    """Recommend runtime, batching and protocol for MODEL_PATH, measured, and why.

    MODEL_PATH is a model file (.onnx, .pt, .pt2, .skops, or a state dict / .py with --module),
    a model folder or a version folder. Without it, print the static decision matrix for the
    requirements given.
    """
    from servekit.toolkit.console import error_console, output_console
    from servekit.toolkit.matrix import parse_requirements

    console = output_console()
    with _reported():
        wanted = parse_requirements(requirements)
    if model_path is None:
        if write_config is not None:
            raise click.UsageError("--write-config needs MODEL_PATH: its settings come from measurements")
        from servekit.toolkit.advise_report import print_matrix

        print_matrix(wanted, console)
        return
    from servekit.toolkit.advise import recommend
    from servekit.toolkit.advise_report import print_matrix, print_measurements, print_recommendation
    from servekit.toolkit.candidates import open_candidates, thread_settings
    from servekit.toolkit.measure import measure_candidates

    counts = list(_numbers("--threads", threads, int)) if threads else thread_settings()
    errors = error_console()
    with _reported(), errors.status("loading the model and its candidates ...") as status, open_candidates(
        model_path, module, _shapes(input_shapes), input_datatypes, trust, counts,
    ) as target:
        for note in target.notes:
            errors.print(note)
        curves = measure_candidates(target.candidates, budget, max_batch,
                                    lambda text: status.update(f"measuring {text} ..."))
        status.stop()
        advice = recommend(curves, wanted, max(counts), target.kind)
        print_measurements(curves, max_batch, console)
        print_matrix(advice.requirements, console)
        print_recommendation(advice, console)
        if advice.curve is None:
            raise click.ClickException("nothing could be measured, so nothing is recommended")
        text = advice.config_text(str(model_path))
        if write_config is None:
            console.print("config.yaml:")
            click.echo(text, nl=False)
        else:
            from servekit.toolkit.model_config import write_config as write

            write(write_config, text)
            console.print(f"wrote {write_config}")
