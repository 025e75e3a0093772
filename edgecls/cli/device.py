"""The board: `edgecls run`, `benchmark` and `doctor`."""

from __future__ import annotations

import inspect
import json
import typing
from pathlib import Path

import typer
from rich.table import Table

from edgecls.cli.common import command, console, err, table_parameters, with_signature


def _run(ctx: typer.Context, config: Path | None = None, **options) -> None:
    """Classify frames from a camera, video, stream or folder with a bundle's artifact; send
    records and decisions to the line (JSON log, MQTT, HTTP, GPIO, a command, saved frames)."""
    from edgecls.runtime.loop import process_started
    from edgecls.runtime.loop import run as run_loop
    from edgecls.runtime.loop_options import LoopOptions, merge_options, read_device_file

    given = {name: value for name, value in options.items() if _given(ctx, name)}
    chosen = merge_options(read_device_file(config), given) if config else LoopOptions(**options)
    summary = run_loop(
        chosen.to_config(),
        log=lambda msg: err.print(msg, markup=False, highlight=False),
        began=process_started(),
    )
    if summary.interrupted_by:  # stopped cleanly, outputs flushed; the exit code says by whom
        raise typer.Exit(128 + summary.interrupted_by)
    if summary.unreadable:  # some of the images given could not be classified (named above)
        raise typer.Exit(1)


def _given(ctx: typer.Context, name: str) -> bool:
    """Typed on the command line (or from the environment), not a default: these win over the
    device file."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _run_parameters() -> list[inspect.Parameter]:
    """The command's options, made from LoopOptions: one table for the CLI and the device file."""
    from edgecls.runtime.loop_options import LoopOptions

    hints = typing.get_type_hints(LoopOptions)
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("ctx", kw, annotation=typer.Context),
        inspect.Parameter(
            "bundle",
            kw,
            default=typer.Argument(
                None, help="bundle folder (export/NAME), or `bundle:` in --config"
            ),
            annotation=hints["bundle"],
        ),
        inspect.Parameter(
            "config",
            kw,
            default=typer.Option(
                None, help="device file (YAML): any option below as a key; flags given here win"
            ),
            annotation=Path | None,
        ),
    ]
    return params + table_parameters(LoopOptions, skip=("bundle",))


command(name="run", stops=False)(with_signature(_run, _run_parameters()))  # its own: a clean stop


@command()
def benchmark(
    bundle: Path = typer.Argument(..., help="bundle folder (export/NAME)"),
    data: Path | None = typer.Option(None, help="labelled images: adds accuracy per artifact"),
    runs: int = typer.Option(50, min=1, help="timed runs per artifact after warm-up"),
    threads: int | None = typer.Option(None, help="inference threads; default all cores"),
    delegate: str = typer.Option("auto", help="LiteRT delegate"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
):
    """Size, load time, latency p50/p90/p99 and FPS of every artifact, side by side."""
    from edgecls.bundle.backends import RuntimeOptions
    from edgecls.runtime.benchmark import benchmark_bundle

    options = RuntimeOptions(threads=threads, delegate=delegate)
    report = benchmark_bundle(bundle, data, runs=runs, options=options)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"{bundle}: {runs} runs, {report['threads']} threads")
    cols = ["artifact", "precision", "size", "load ms", "p50 ms", "p90 ms", "p99 ms", "FPS"]
    cols += ["accuracy"] if data else []
    for col in cols:
        table.add_column(col, justify="left" if col in ("artifact", "precision") else "right")
    for r in report["artifacts"]:
        row = [
            r["file"],
            r["precision"],
            f"{r['bytes'] / 1024:,.0f} KiB",
            f"{r['load_ms']:.1f}",
            f"{r['p50_ms']:.3f}",
            f"{r['p90_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r['fps']:.1f}",
        ]
        table.add_row(*row, *([f"{r['accuracy']:.4f}"] if data else []))
    console.print(table)
    for r in report["artifacts"]:
        for w in r["warnings"]:
            err.print(f"warning: {r['file']}: {w}", markup=False, highlight=False)


@command()
def doctor(as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Python, CPU, board, runtimes, delegates, ONNX Runtime providers and cameras here."""
    from edgecls.runtime.doctor import doctor as probe

    report = probe()
    if as_json:
        print(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v if v else '-'}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(value) or "none"
        console.print(f"{key:>22}: {value}", highlight=False, markup=False)


@command()
def sign(
    bundle: Path = typer.Argument(..., help="bundle folder (export/NAME)"),
    key: Path = typer.Option(..., help="private EC key (PEM); its password: $EDGECLS_KEY_PASSWORD"),
):
    """Sign every file of a bundle (OpenSSF model signing): bundle.sig, beside them."""
    from edgecls.bundle.signing import sign_bundle

    console.print(f"signed: {sign_bundle(bundle, key)}", highlight=False)


@command()
def verify(
    bundle: Path = typer.Argument(..., help="bundle folder (export/NAME)"),
    trust: Path = typer.Option(..., help="public EC key (PEM) the bundle must be signed by"),
):
    """Check that a bundle is, file for file, what the trusted key signed (exit 2 if not)."""
    from edgecls.bundle.signing import verify_bundle

    verify_bundle(bundle, trust)
    console.print(f"{bundle}: signed by {trust}, every file as signed", highlight=False)


@command()
def serve(
    folder: Path = typer.Argument(..., help="folder of bundle folders (BUNDLE_DIR/NAME/)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0: every one)"),
    port: int = typer.Option(8000, min=0, max=65535, help="port (0: any free one)"),
    token: str | None = typer.Option(None, help="require 'Authorization: Bearer TOKEN'"),
):
    """Serve bundles to a fleet: /bundles/NAME/index.json and /bundles/NAME/FILE (Range)."""
    from edgecls.runtime.loop_options import is_loopback
    from edgecls.serve import serve as serve_bundles

    if not token and not is_loopback(host):
        err.print(
            f"warning: --host {host} serves the bundles to anyone who reaches it: give --token "
            "TOKEN (the boards then fetch http://TOKEN@host:port/bundles/NAME)"
        )

    def ready(server) -> None:
        h, p = server.server_address[:2]
        console.print(f"serving {folder} on http://{h}:{p}/bundles/ (Ctrl-C stops)",
                      highlight=False)  # fmt: skip

    serve_bundles(folder, host, port, token, ready)


def _broker(url: str, ca: Path | None):
    from edgecls.runtime.loop_options import LoopOptions, parse_mqtt

    return parse_mqtt(url, LoopOptions(mqtt_ca=ca))


@command()
def deploy(
    bundle: Path | None = typer.Argument(None, help="the bundle folder that is served (signed)"),
    mqtt: str = typer.Option(..., help="the boards' broker: mqtt[s]://[user:pass@]host/prefix"),
    group: str = typer.Option(..., help="the boards' --group"),
    url: str | None = typer.Option(None, help="where boards fetch it: http://HOST:8000/bundles/NAME"),
    canary: str | None = typer.Option(None, help="goes first; the rest follow once it promoted"),
    policy: str | None = typer.Option(None, help="agreement=0.95,latency=1.5,frames=200"),
    status: bool = typer.Option(False, "--status", help="show the group's boards instead"),
    mqtt_ca: Path | None = typer.Option(None, help="CA certificate for mqtts://"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
):  # fmt: skip
    """Roll a bundle out to a group of boards (a retained MQTT message), or show the fleet."""
    from edgecls import fleet

    broker = _broker(mqtt, mqtt_ca)
    if status:
        return _status(broker, group, as_json)
    if bundle is None or url is None:
        raise typer.BadParameter("give BUNDLE and --url (or --status)")
    rollout = fleet.new_rollout(bundle, group, url, canary, fleet.Policy.parse(policy))
    warning = fleet.served_check(rollout)
    if warning:
        err.print(f"warning: {warning}", markup=False, highlight=False)
    topic = fleet.publish_rollout(broker, rollout)
    if as_json:
        return print(json.dumps({**rollout.to_dict(), "url": None, "topic": topic}))
    console.print(f"rollout {rollout.rollout}: {rollout.short} to group {group} on {topic}"
                  + (f", canary {canary}" if canary else ""), highlight=False)  # fmt: skip


def _status(broker, group: str, as_json: bool) -> None:
    from edgecls.fleet import read_fleet, status_rows

    rollout, boards = read_fleet(broker, group)
    if as_json:
        return print(
            json.dumps({"rollout": rollout and {**rollout, "url": None}, "boards": boards})
        )
    if rollout:
        b = rollout.get("bundle") or {}
        sha, canary = str(b.get("manifest_sha256"))[:12], rollout.get("canary") or "-"
        console.print(f"rollout {rollout.get('rollout')}: {b.get('name')}-{sha}, canary {canary}",
                      highlight=False)  # fmt: skip
    table = Table(title=f"group {group}: {len(boards)} boards")
    for col in ("board", "active", "candidate", "agreement", "state", "rollout", "last seen"):
        table.add_column(col, justify="right" if col == "agreement" else "left")
    for row in status_rows(boards):
        table.add_row(*row)
    console.print(table)
