"""The ``icegate`` command line: run files through the pipeline locally, inspect tables and the DLQ."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from icegate import constants as c
from icegate.dimensions import ABBREVIATIONS
from icegate.errors import IcegateError
from icegate.settings import Settings, load_settings

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table as IcebergTable

    from icegate.backfill import Plan, Result
    from icegate.pipeline import FileOutcome, LocalRunner
    from icegate.storage import Storage

# Piped output (CI logs, `| tee`) gets a wide table rather than rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON document for scripts instead (schema: README, 'Scripting')."
)
lake_option = click.option(
    "--lake",
    "lake_root",
    metavar="PATH",
    help="Lake root: a local folder or s3://bucket (default: $ICEGATE_LAKE_ROOT or ./lake).",
)


def _settings(lake_root: str | None) -> Settings:
    try:
        return load_settings().with_overrides(lake_root=lake_root)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def _catalog(settings: Settings, *, create: bool) -> Catalog:
    """The catalog, or one line saying why it cannot be opened (config, server, missing lake).

    Commands that only read (``create=False``) never create a SQLite catalog where there was none.
    """
    from icegate.lake import build_catalog

    try:
        needs_uri = settings.catalog_type in ("sql", "rest") or settings.catalog_uri
        uri = settings.resolved_catalog_uri() if needs_uri else ""
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    # The URI's path is percent-encoded (settings.resolved_catalog_uri): the file is its decoded form.
    database = unquote(uri.split("?")[0].removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if database and not create and not Path(database).is_file():
        raise click.ClickException(f"no catalog at {database}: nothing was ingested into this lake yet (--lake?)")
    lake = Path(settings.lake_path())
    new_lake = settings.is_local and create and not lake.exists()
    if new_lake:
        try:
            lake.mkdir(parents=True)
        except OSError as exc:
            raise click.ClickException(f"cannot create the lake folder {lake}: {exc.strerror or exc}") from None
    try:
        return build_catalog(settings)
    except Exception as exc:  # anything while opening the catalog is its configuration or its server
        if new_lake:  # leave nothing behind for a command that did nothing
            shutil.rmtree(lake, ignore_errors=True)
        where = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", uri) or settings.catalog_type
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise click.ClickException(
            f"cannot open the {settings.catalog_type} catalog at {where}: {type(exc).__name__}: {first_line}"
        ) from None


class _Commands(click.Group):
    """Errors a user can act on (settings, storage access) end in one line and exit 1, never a traceback.

    Under ``--json`` such an error, and a bad option (exit 2), also print their JSON document on stdout
    (:class:`_JsonError`): a script that reads stdout gets one document whatever happened.
    """

    def invoke(self, ctx: click.Context) -> Any:
        # The subcommand's arguments, before click parses them: a bad option is raised while parsing them.
        options = ctx.args[: ctx.args.index("--")] if "--" in ctx.args else ctx.args
        as_json = "--json" in options
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            if not as_json:
                raise
            raise _as_json(exc) from None
        except Exception as exc:
            message = _user_error(exc)
            if message is None:
                raise
            error = click.ClickException(message)
            raise (_as_json(error) if as_json else error) from None
        except KeyboardInterrupt:
            # Ctrl-C where a command has no summary to end with: exit 130, as a shell reports SIGINT, not
            # click's "Aborted!" and 1 (a failure), and under --json still one document.
            interrupted = _Interrupted("interrupted (Ctrl-C)")
            raise (_as_json(interrupted) if as_json else interrupted) from None


class _Interrupted(click.ClickException):
    exit_code = 130


class _JsonError(click.ClickException):
    """A user error under ``--json``: shown as click shows it (on stderr), then as a document on stdout."""

    def __init__(self, error: click.ClickException) -> None:
        super().__init__(error.format_message())
        self._error = error

    def show(self, file: Any = None) -> None:
        self._error.show(file)
        click.echo(json.dumps({"error": self._error.format_message(), "exit_code": self.exit_code}))


class _JsonUsageError(_JsonError):
    exit_code = click.UsageError.exit_code


class _JsonInterrupted(_JsonError):
    exit_code = _Interrupted.exit_code


def _as_json(error: click.ClickException) -> _JsonError:
    kinds = {kind.exit_code: kind for kind in (_JsonUsageError, _JsonInterrupted)}
    return kinds.get(error.exit_code, _JsonError)(error)


def _user_error(exc: Exception) -> str | None:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, click.ClickException | click.exceptions.Exit | click.exceptions.Abort):
        return None  # click reports these itself
    if isinstance(exc, IcegateError):
        return str(exc)
    if isinstance(exc, BotoCoreError | ClientError):
        return f"S3: {exc}"
    from icegate.transient import as_transient

    if (transient := as_transient(exc)) is not None:  # a busy or unreadable catalog, throttled storage
        return str(transient)
    return None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="icegate")
def main() -> None:
    """icegate: quality-gated ingestion of scraped files into Apache Iceberg.

    Locally everything lives under a lake root (./lake): processing/, warehouse/, dlq/ and the
    SQLite Iceberg catalog catalog.db. Settings come from ICEGATE_* environment variables.
    """


@main.command()
# Not click's exists=True: a path that is not there is a user error (one line, exit 1), not a bad option (2).
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@lake_option
@click.option(
    "--expect",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON object {file name: loaded|dlq|failed}; exit 0 only when every file ran and ended as it says.",
)
@click.option("--keep-processing", is_flag=True, help="Keep the intermediate files under processing/<run_id>/.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Files run in parallel (parsed, validated and scored in a worker process per CPU); loads into one table "
    "commit together (group commit).",
)
@json_option
def run(
    paths: tuple[Path, ...],
    lake_root: str | None,
    expect: Path | None,
    keep_processing: bool,
    workers: int,
    as_json: bool,
) -> None:
    """Ingest files (or every supported file under folders) through parse → validate → score → load.

    With no PATHS, ingests <lake>/landing/. Each file ends loaded into its dataset's Iceberg table,
    or in <lake>/dlq/<dataset>/<run_id>/ with an error.json that says why. Exits 1 when any file
    went to the DLQ (or, with --expect, when any file ended otherwise than expected), 130 when interrupted (Ctrl-C).
    """
    from icegate.pipeline import LocalRunner, RunInterrupted, WorkerProcessDied, local_sources

    _refuse_missing(paths)
    settings = _settings(lake_root)
    expected = _read_expectations(expect) if expect else None
    targets = list(paths) or [_landing(settings)]
    found = local_sources(targets, settings.lake_path() if settings.is_local else None)
    # With --json, the human output (progress, summary, notes) goes to stderr and stdout is the document.
    with console.capture() if as_json else contextlib.nullcontext() as captured:
        for path in found.unsupported:
            console.print(f"[yellow]skipped[/] {path}: not a supported format ({', '.join(c.SUPPORTED_SUFFIXES)})")
        own_line = _own_files_line(found.own)
        sources = found.files
        if not sources:
            if own_line:
                console.print(own_line)
            raise click.ClickException("no files to ingest")

        # Opened beside the first file's parse; if it cannot be, the run stops with why, before any file ends anywhere.
        runner = LocalRunner(settings, catalog=lambda: _catalog(settings, create=True))
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} files"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=as_json,
        ) as progress:
            task = progress.add_task("starting", total=len(sources))

            def on_stage(source: Any, stage: str) -> None:
                progress.update(task, description=f"{source.name}: {stage}")

            interrupted = False
            try:
                outcomes = runner.run_many(
                    sources,
                    workers=workers,
                    on_stage=on_stage,
                    on_done=lambda _: progress.advance(task),
                    keep_processing=keep_processing,
                )
            except WorkerProcessDied as exc:
                raise click.ClickException(str(exc)) from None
            except RunInterrupted as interrupt:  # Ctrl-C: the files that ended (the running ones finished) are reported
                outcomes, interrupted = interrupt.outcomes, True

        console.print(_summary_table(outcomes))
        if own_line:
            console.print(own_line)
        for outcome in outcomes:
            if outcome.dead_letter:
                entry = outcome.dead_letter
                console.print(
                    f"[red]DLQ[/] {escape(outcome.source.name)}: [bold]{entry.error_type}[/] at {entry.stage}:"
                )
                console.print(f"    {escape(entry.message)}\n    → {escape(entry.error_uri)}")
            elif outcome.outcome == "failed":
                console.print(
                    f"[red]FAILED[/] {escape(outcome.source.name)}, not dead-lettered: {escape(outcome.error)}"
                )
            elif rejected := getattr(outcome.state, "rejected_uri", ""):
                # Loaded, but some rows were not: say where they are (with their checks and line numbers).
                rows = getattr(outcome.state, "rows_rejected", 0)
                console.print(f"[yellow]REJECTED[/] {escape(outcome.source.name)}: {rows} rows → {escape(rejected)}")
            if ignored := _ignored_line(outcome):
                console.print(ignored)
        if interrupted:
            console.print(
                f"[yellow]interrupted after {len(outcomes)} of {len(sources)} files; rerun the same command for the "
                "rest (a file loaded answers 'already loaded')[/]"
            )
        code = 130 if interrupted else _exit_code(outcomes, expected, expect)
    if captured is not None:  # --json
        click.echo(captured.get(), err=True, nl=False)
        click.echo(json.dumps({"files": [_outcome_document(o) for o in outcomes], "exit_code": code}, indent=2))
    sys.exit(code)


def _ignored_line(outcome: FileOutcome) -> str:
    """Headers the file had that no contract column matched: their values are not loaded, so say which."""
    state: Any = outcome.state
    count = getattr(state, "ignored_columns_count", 0)
    if not count:
        return ""
    names = ", ".join(state.ignored_columns)
    more = f" and {count - len(state.ignored_columns)} more" if count > len(state.ignored_columns) else ""
    columns = "column matches" if count == 1 else "columns match"
    return (
        f"[yellow]IGNORED[/] {escape(outcome.source.name)}: {count} header {columns} no {escape(state.dataset)} "
        f"column, not loaded: {escape(names)}{more}"
    )


def _outcome_document(outcome: FileOutcome) -> dict[str, Any]:
    """One file of ``run --json`` (schema in the README, 'Scripting')."""
    state: Any = outcome.state
    quality, load, entry = getattr(state, "quality", None), getattr(state, "load", None), outcome.dead_letter
    return {
        "file": outcome.source.name,
        "source": outcome.source.uri,
        "run_id": outcome.run_id,
        "outcome": outcome.outcome,
        "dataset": getattr(state, "dataset", "") or (entry.dataset if entry else None) or None,
        "rows_read": state.rows if getattr(state, "format", "") else None,  # a format: the file was decoded
        "rows_valid": state.rows_valid if hasattr(state, "valid_uri") and state.valid_uri else None,
        "rows_rejected": state.rows_rejected if hasattr(state, "valid_uri") and state.valid_uri else None,
        "rejected_rows_uri": getattr(state, "rejected_uri", "") or None,
        # Headers no contract column matched (the first 50; the count is of all): null when the file was not decoded.
        "ignored_columns": list(state.ignored_columns) if getattr(state, "format", "") else None,
        "ignored_columns_count": state.ignored_columns_count if getattr(state, "format", "") else None,
        "quality": (
            {
                "score": quality.score,
                "threshold": quality.threshold,
                "passed": quality.passed,
                "dimensions": quality.dimensions,
            }
            if quality
            else None
        ),
        "load": (
            {
                "table": load.table,
                "inserted": load.inserted,
                "updated": load.updated,
                "skipped": load.skipped,
                "duplicates_in_file": load.duplicates_in_file,
                "snapshot_id": load.snapshot_id,
            }
            if load
            else None
        ),
        "dead_letter": (
            {
                "stage": entry.stage,
                "error_type": entry.error_type,
                "message": entry.message,
                "error_uri": entry.error_uri,
            }
            if entry
            else None
        ),
        "error": outcome.error or None,
        "seconds": round(outcome.seconds, 3),
    }


def _refuse_missing(paths: Iterable[Path]) -> None:
    """A file or folder to ingest that is not there: one line naming every such path, before anything runs."""
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise click.ClickException(f"no such file or folder: {', '.join(missing)}")


def _landing(settings: Settings) -> Path:
    """Where ``run`` without PATHS looks, when that can work."""
    if not settings.is_local:
        raise click.ClickException("nothing to ingest: with an S3 lake, name the local files or folders to ingest")
    landing = Path(settings.lake_path(c.LANDING_PREFIX))
    if not landing.is_dir():
        raise click.ClickException(
            f"nothing to ingest: no PATHS given and there is no {landing.resolve()}; "
            "name the files or folders to ingest (icegate run PATH...)"
        )
    return landing


def _own_files_line(own: list[tuple[str, str]]) -> str:
    """One summary line for the files icegate wrote itself, which a run never ingests."""
    if not own:
        return ""
    counts = Counter(where for _, where in own)
    detail = ", ".join(f"{where} {count}" for where, count in counts.items())
    return f"[yellow]skipped[/] {len(own)} file{'s' if len(own) > 1 else ''} icegate wrote ({detail})"


_OUTCOMES = ("loaded", "dlq", "failed")


def _read_expectations(expect: Path) -> dict[str, str]:
    """Read before any file runs: a bad --expect file must not cost a whole run."""
    try:
        expected = json.loads(expect.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise click.BadParameter(f"{expect} is not readable JSON: {exc}", param_hint="--expect") from None
    if not isinstance(expected, dict) or not all(v in _OUTCOMES for v in expected.values()):
        raise click.BadParameter(
            f"{expect} must be a JSON object of file name -> {' or '.join(map(repr, _OUTCOMES))}",
            param_hint="--expect",
        )
    return {str(name): str(outcome) for name, outcome in expected.items()}


def _exit_code(outcomes: list[FileOutcome], expected: dict[str, str] | None, expect: Path | None) -> int:
    if expected is None or expect is None:
        return 1 if any(o.outcome in ("dead_lettered", "failed") for o in outcomes) else 0
    mismatches = []
    for outcome in outcomes:
        want = expected.get(outcome.source.name)
        got = {"dead_lettered": "dlq", "failed": "failed"}.get(outcome.outcome, "loaded")
        if want is None:
            mismatches.append(f"{outcome.source.name}: no expectation in {expect}")
        elif want != got:
            mismatches.append(f"{outcome.source.name}: expected {want}, ended {got}")
    # A file the expectations name that never ran is a failure too: a sample lost or renamed must not pass the demo.
    ran = {outcome.source.name for outcome in outcomes}
    for name, want in expected.items():
        if name not in ran:
            mismatches.append(f"{name}: expected {want}, but no such file ran")
    for mismatch in mismatches:
        console.print(f"[red]unexpected[/] {mismatch}")
    if not mismatches:
        console.print(f"[green]every file ended as {expect.name} expects[/]")
    return 1 if mismatches else 0


def _summary_table(outcomes: list[FileOutcome]) -> Table:
    table = Table(title="icegate run", show_lines=False)
    for header in ("file", "dataset", "rows read/valid/rejected", "score", "dimensions", "ins/upd/skip/dup", "result"):
        table.add_column(header, overflow="fold")
    for outcome in outcomes:
        state: Any = outcome.state
        quality = getattr(state, "quality", None)
        load = getattr(state, "load", None)
        dims = " ".join(f"{ABBREVIATIONS[k]}{v:.2f}" for k, v in quality.dimensions.items()) if quality else ""
        if outcome.dead_letter:
            result = f"[red]DLQ[/] {outcome.dead_letter.error_type}"
        elif outcome.outcome == "failed":
            result = "[red]FAILED[/] (not in the DLQ)"
        elif load and load.already_loaded:
            result = f"[cyan]already loaded[/] (snapshot {load.snapshot_id})"
        else:
            result = f"[green]loaded[/] snapshot {load.snapshot_id}" if load else ""
        table.add_row(
            Text(outcome.source.name),
            getattr(state, "dataset", "") or (outcome.dead_letter.dataset if outcome.dead_letter else ""),
            f"{state.rows}/{state.rows_valid}/{state.rows_rejected}" if hasattr(state, "rows_valid") else "",
            f"{quality.score:.1f}/{quality.threshold:.0f}" if quality else "",
            dims,
            f"{load.inserted}/{load.updated}/{load.skipped}/{load.duplicates_in_file}" if load else "",
            result,
        )
    return table


@main.command()
@lake_option
@json_option
def tables(lake_root: str | None, as_json: bool) -> None:
    """List the Iceberg tables with their row counts and snapshots."""
    settings = _settings(lake_root)
    catalog = _catalog(settings, create=False)
    if settings.namespace not in {ns[0] for ns in catalog.list_namespaces()}:
        if as_json:
            click.echo("[]")
            return
        console.print(f"no tables yet in namespace {settings.namespace!r}")
        return
    documents: list[dict[str, Any]] = []
    table = Table(title=f"tables in {settings.namespace}")
    for header in ("table", "rows", "data files", "snapshots", "current snapshot", "last source"):
        table.add_column(header)
    ledger_sources = _ledger_last_sources(catalog, settings.namespace)
    for identifier in sorted(catalog.list_tables(settings.namespace)):
        iceberg = catalog.load_table(identifier)
        snapshot = iceberg.current_snapshot()
        summary = snapshot.summary.additional_properties if snapshot and snapshot.summary else {}
        # The newer of the ledger's last load and the table's own last marker (a load whose ledger row was lost).
        found = [ledger_sources.get(".".join(identifier)), _marker_last_source(iceberg)]
        last_source = max((x for x in found if x is not None), default=(_NEVER, ""))[1]
        table.add_row(
            ".".join(identifier),
            summary.get("total-records", "0"),
            summary.get("total-data-files", "0"),
            str(len(iceberg.metadata.snapshots)),
            str(snapshot.snapshot_id) if snapshot else "-",
            last_source,
        )
        documents.append(
            {
                "table": ".".join(identifier),
                "rows": int(summary.get("total-records", "0")),
                "data_files": int(summary.get("total-data-files", "0")),
                "snapshots": len(iceberg.metadata.snapshots),
                "current_snapshot_id": snapshot.snapshot_id if snapshot else None,
                "last_source": last_source or None,
            }
        )
    if as_json:
        click.echo(json.dumps(documents, indent=2))
        return
    console.print(table)


_NEVER = datetime.min.replace(tzinfo=UTC)


def _ledger_last_sources(catalog: Catalog, namespace: str) -> dict[str, tuple[datetime, str]]:
    """Table -> when its newest load that still stands finished, and its source, from the ledger: it outlives the
    snapshots that maintenance expires, and it knows which loads were rolled back."""
    from icegate import ledger

    loads = ledger.live_loads(ledger.history(catalog, namespace)).sort("finished_at", nulls_last=False)
    return {
        row["table_name"]: (row["finished_at"] or _NEVER, row["source_uri"] or "")
        for row in loads.iter_rows(named=True)
        if row["table_name"]
    }


def _marker_last_source(iceberg: IcebergTable) -> tuple[datetime, str] | None:
    """When the newest load the table's own history still names (and no rollback undid) committed, and its source:
    for a load whose ledger row was lost (until ``icegate maintain`` rebuilds it)."""
    from icegate.lake.markers import MARKER_FILE, is_undone, loaded_snapshots, rolled_back_loads

    undone = rolled_back_loads(iceberg)
    standing = [
        (snapshot_id, marker)
        for snapshot_id, marker in loaded_snapshots(iceberg)
        if not is_undone(snapshot_id, marker, undone)
    ]
    if not standing:
        return None
    snapshot_id, marker = standing[-1]
    snapshot = iceberg.snapshot_by_id(snapshot_id)
    committed = datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC) if snapshot else _NEVER
    return committed, marker.get(MARKER_FILE, "")


@main.command()
@lake_option
@json_option
def dlq(lake_root: str | None, as_json: bool) -> None:
    """List dead-lettered files with their reasons, and runs that rejected rows."""
    from icegate.storage import Storage

    settings = _settings(lake_root)
    if settings.is_local and not Path(settings.lake_path()).is_dir():
        raise click.ClickException(f"no lake at {Path(settings.lake_path()).resolve()} (--lake?)")
    storage = Storage(settings.s3_endpoint)
    entries = list(storage.list(settings.lake_path(c.DLQ_PREFIX)))
    listed = set(entries)
    table = Table(title="dead-letter entries")
    for header in ("dataset", "run id", "file", "stage", "error", "message"):
        table.add_column(header, overflow="fold")
    documents: list[dict[str, Any]] = []
    for uri in entries:
        parts = uri.split("/")
        if parts[-1] == "error.json":
            document = {"kind": "dead_lettered", **_dead_letter_entry(storage, uri, parts), "uri": uri}
        elif parts[-1] == "rejected.parquet" and f"{'/'.join(parts[:-1])}/error.json" not in listed:
            document = {"kind": "rows_rejected", **_rejected_rows_entry(storage, uri, parts), "uri": uri}
        else:
            continue
        documents.append(document)
        # The table shows what is absent as "-"; the JSON keeps it null (README, 'Scripting').
        label = "rows rejected" if document["kind"] == "rows_rejected" else None
        cells = [document[key] for key in _DLQ_KEYS]
        cells[_DLQ_KEYS.index("error_type")] = cells[_DLQ_KEYS.index("error_type")] or label
        table.add_row(*(Text("-" if cell is None else str(cell)) for cell in cells))
    if as_json:
        click.echo(json.dumps(documents, indent=2, ensure_ascii=False, default=str))
        return
    if table.row_count:
        console.print(table)
    else:
        console.print("the dead-letter prefix is empty")


_DLQ_KEYS = ("dataset", "run_id", "file", "stage", "error_type", "message")


def _dead_letter_entry(storage: Storage, uri: str, parts: list[str]) -> dict[str, Any]:
    """One dead-lettered file; a damaged or hand-edited error.json is listed as such, not a crash."""
    try:
        error = storage.read_json(uri)
        name = Path(error["source"]["key"]).name
        cells: tuple[Any, ...] = (
            error["dataset"],
            error["run_id"],
            name,
            error["stage"],
            error["error_type"],
            error["message"],
        )
    except (ValueError, KeyError, TypeError) as exc:
        message = f"unreadable error.json {uri}: {type(exc).__name__}: {exc}"
        cells = (parts[-3], parts[-2], None, None, None, message)
    return dict(zip(_DLQ_KEYS, cells, strict=True))


def _rejected_rows_entry(storage: Storage, uri: str, parts: list[str]) -> dict[str, Any]:
    """The rejected rows of a file that loaded, named by the file they came from (the rows' ``source_file``)."""

    try:
        rows, source = storage.parquet_first(uri, c.SOURCE_FILE)
    except (IcegateError, OSError, ValueError) as exc:  # a damaged file is listed, not a crash
        name, message = None, f"unreadable rejected.parquet {uri}: {type(exc).__name__}: {exc}"
    else:
        name = Path(str(source)).name if source else None
        message = f"{name or 'the file'} loaded; {rows} rejected rows in {uri}"
    return dict(zip(_DLQ_KEYS, (parts[-3], parts[-2], name, "validate", None, message), strict=True))


def _duration(value: str) -> timedelta:
    units = {"m": "minutes", "h": "hours", "d": "days"}
    try:
        duration: timedelta | None = timedelta(**{units[value[-1]]: float(value[:-1])})
    except (KeyError, ValueError, IndexError, OverflowError):  # no unit, not a number, inf
        duration = None
    if duration is None or duration < timedelta(0):
        raise click.BadParameter(f"{value!r} is not a duration like 30m, 12h or 7d")
    try:
        datetime.now(UTC) - duration  # every use counts back from now
    except OverflowError:
        raise click.BadParameter(f"{value!r} reaches back before the year 1") from None
    return duration


@main.command()
@click.argument("table_name", metavar="TABLE")
@lake_option
@click.option("--expire-older-than", default="7d", show_default=True, help="Expire snapshots older than this.")
@click.option(
    "--retain-last",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Always keep this many newest snapshots.",
)
@click.option("--no-compact", is_flag=True, help="Skip compaction (each partition's small files, the manifests).")
@click.option(
    "--orphans-older-than",
    default="3d",
    show_default=True,
    help="Delete unreferenced files older than this ('off' to keep them); a loader writes files before it commits. "
    "In a local lake, also what runs no longer running left under processing/.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Allow --orphans-older-than under 1d: only when no load is running, or its uncommitted files go.",
)
@json_option
def maintain(
    table_name: str,
    lake_root: str | None,
    expire_older_than: str,
    retain_last: int,
    no_compact: bool,
    orphans_older_than: str,
    force: bool,
    as_json: bool,
) -> None:
    """Compact small files, expire old snapshots and delete files nothing references, for TABLE.

    TABLE is a table name (posts) or namespace.table. Source markers of expired snapshots are kept,
    so a rerun of an old file is still reported as already loaded. In a local lake it also removes
    what killed runs left under processing/, as old as --orphans-older-than.
    """
    from pyiceberg.exceptions import NoSuchTableError

    from icegate.lake.maintain import UnsafeOrphanAge, remove_stale_processing
    from icegate.lake.maintain import maintain as run_maintenance

    expire_age = _duration(expire_older_than)
    orphan_age = None if orphans_older_than == "off" else _duration(orphans_older_than)
    settings = _settings(lake_root)
    namespace, _, name = table_name.rpartition(".")
    identifier = (namespace or settings.namespace, name)
    catalog = _catalog(settings, create=False)
    # Before expiry: a snapshot's marker names the run whose lost ledger row it can rebuild.
    repaired = _repair_ledger(catalog, identifier)
    try:
        report = run_maintenance(
            catalog,
            identifier,
            expire_older_than=expire_age,
            retain_last=retain_last,
            compact_files=not no_compact,
            orphans_older_than=orphan_age,
            force=force,
        )
    except NoSuchTableError:
        raise click.ClickException(f"no table {'.'.join(identifier)} in the catalog") from None
    except UnsafeOrphanAge as exc:
        raise click.BadParameter(str(exc), param_hint="--orphans-older-than") from None
    except IcegateError as exc:
        raise click.ClickException(str(exc)) from None
    # Scratch of killed runs: in S3 a lifecycle rule expires processing/, locally nothing else would remove it.
    # The orphans' age keeps it off a running run's folder (checked above: under a day only with --force).
    leftovers = 0
    if orphan_age is not None and settings.is_local:
        processing = Path(settings.lake_path(c.PROCESSING_PREFIX))
        leftovers = remove_stale_processing(processing, older_than=datetime.now(UTC) - orphan_age)
    if as_json:
        document = {**dataclasses.asdict(report), "ledger_rows_recorded": repaired, "processing_removed": leftovers}
        click.echo(json.dumps(document, indent=2))
        return
    console.print(
        f"{report.table}: compacted {report.files_compacted} small files into {report.files_written}, "
        f"packed {report.manifests_before} manifests into {report.manifests_after}, "
        f"expired {report.snapshots_expired} snapshots, deleted {report.files_deleted} files they alone used "
        f"and {report.orphans_deleted} orphan files"
    )
    if repaired:
        console.print(f"recorded {repaired} loads missing from the ledger (rebuilt from their snapshot markers)")
    if leftovers:
        console.print(f"removed {leftovers} leftovers of runs no longer running from processing/")


def _repair_ledger(catalog: Catalog, identifier: tuple[str, str]) -> int:
    """Ledger rows of loads whose own ledger write was lost, rebuilt from the table's snapshot markers."""
    from pyiceberg.exceptions import NoSuchTableError

    from icegate import ledger
    from icegate.datasets import all_datasets

    if identifier[1] == ledger.LEDGER_TABLE:
        return 0
    try:
        table = catalog.load_table(identifier)
    except NoSuchTableError:
        return 0  # the maintenance itself says so
    dataset = next((d.name for d in all_datasets().values() if d.table == identifier[1]), identifier[1])
    return ledger.repair_from_markers(catalog, identifier[0], table, dataset)


def _since(value: str | None) -> datetime | None:
    """``--since``: a duration back from now (30m, 12h, 7d) or an ISO date/time (UTC unless it says)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        if value[:1].isdigit() and value[-1:] not in ("m", "h", "d"):  # meant as a date: say what a date is
            raise click.BadParameter(
                f"{value!r} is not an ISO date/time like 2026-01-31 or 2026-01-31T12:00, nor a duration like 7d"
            ) from None
        return datetime.now(UTC) - _duration(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@main.command()
@click.argument("dataset", required=False)
@lake_option
@click.option("--since", metavar="WHEN", help="Only outcomes since: a duration (30m, 12h, 7d) or an ISO date/time.")
@click.option(
    "--outcome",
    type=click.Choice(c.LEDGER_OUTCOMES),
    help="Only outcomes of this kind.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the ledger rows as a JSON array (every column).")
def history(dataset: str | None, lake_root: str | None, since: str | None, outcome: str | None, as_json: bool) -> None:
    """Show the ledger: one line per file outcome (loaded, already loaded, dead-lettered, rolled back), oldest first.

    The ledger is the Iceberg table icegate_loads in the namespace; DATASET limits it to one dataset.
    With --json, each row is an object with the ledger's columns (see the README), times in ISO 8601 UTC.
    """
    from icegate import ledger

    since_time = _since(since)
    settings = _settings(lake_root)
    catalog = _catalog(settings, create=False)
    rows = ledger.history(catalog, settings.namespace, dataset=dataset, since=since_time, outcome=outcome)
    if rows.is_empty():  # a typo must not read as "no outcome"; a dataset only the ledger knows still matched above
        _refuse_unknown_names(dataset=dataset)
    if as_json:
        click.echo(json.dumps([_jsonable(row) for row in rows.to_dicts()], indent=2, ensure_ascii=False))
        return
    if rows.is_empty():
        console.print("the ledger has no matching outcome")
        return
    table = Table(title=f"ledger {settings.namespace}.{ledger.LEDGER_TABLE}")
    for header in ("finished (UTC)", "dataset", "file", "outcome", "score", "read/valid/rej", "ins/upd/skip"):
        table.add_column(header, overflow="fold")
    # The run id (what rollback and replay take) heads the detail on a line of its own, never folded, so it can be
    # copied whole without a column of its own making every other column fold.
    table.add_column("run id / detail", no_wrap=True)
    for row in rows.to_dicts():
        finished = row["finished_at"].strftime("%Y-%m-%d %H:%M:%S") if row["finished_at"] else ""
        counts = _counts(row, "rows_read", "rows_valid", "rows_rejected")
        loads = _counts(row, "rows_inserted", "rows_updated", "rows_skipped")
        if row["outcome"] == "dead_lettered":
            # Not error.json's path (too wide to stay unfolded): it is dlq/<dataset>/<run id>/, as `icegate dlq` lists.
            detail = f"{row['error_type']} at {row['stage']}"
        else:
            detail = f"snapshot {row['snapshot_id']}"
        score = f"{row['quality_score']:.1f}" if row["quality_score"] is not None else ""
        cells = (finished, row["dataset"] or "", Path(row["source_key"] or "").name, row["outcome"], score)
        table.add_row(*(Text(str(c)) for c in cells), counts, loads, Text(f"{row['run_id'] or '-'}\n{detail}"))
    console.print(table)


def _refuse_unknown_names(*, dataset: str | None = None, error_type: str | None = None) -> None:
    """A dataset no contract defines or an error type icegate does not raise: one line with the known ones, exit 1.

    Called only when nothing matched, so a name that the records still hold (a dataset whose contract was removed,
    a runtime error such as ``Lambda.TooManyRequestsException``) is never refused.
    """
    from icegate.datasets import all_datasets
    from icegate.errors import error_types

    datasets = [*sorted(all_datasets()), c.UNKNOWN_DATASET]
    if dataset is not None and dataset not in datasets:
        raise click.ClickException(f"no dataset named {dataset!r}; known: {', '.join(datasets)}")
    if error_type is not None and error_type not in error_types():
        raise click.ClickException(f"no error type {error_type!r}; known: {', '.join(error_types())}")


def _counts(row: dict[str, Any], *columns: str) -> str:
    """``18/15/3``, or nothing when the run never got that far."""
    values = [row[c] for c in columns]
    return "" if all(v is None for v in values) else "/".join("-" if v is None else str(v) for v in values)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


@main.command()
@lake_option
@click.option(
    "--out",
    default="report.html",
    show_default=True,
    metavar="PATH",
    help="Where to write the HTML file: a local path or s3://bucket/key.",
)
def report(lake_root: str | None, out: str) -> None:
    """Write the quality report: one self-contained HTML file (opens offline) drawn from the ledger.

    Charts of each dataset's score and dimensions over time, rows loaded per day, dead-letter
    reasons and the top failing checks, and a table of every file with a link to its DLQ entry.
    """
    from icegate.report import build
    from icegate.storage import Storage

    settings = _settings(lake_root)
    page = build(_catalog(settings, create=False), settings)
    try:
        Storage(settings.s3_endpoint).write_bytes(out, page.encode("utf-8"))
    except OSError as exc:  # a folder, a missing parent, no permission: the user's path, not a bug
        raise click.ClickException(f"cannot write the report to {out!r}: {exc.strerror or exc}") from None
    console.print(f"wrote {escape(out)} ({len(page) // 1024} KiB)")


@main.command()
@click.argument("table_name", metavar="TABLE")
@lake_option
@click.option("--run-id", metavar="ID", help="Roll back the load of this run (see `icegate history`).")
@click.option("--file", "file_key", metavar="KEY", help="Roll back the newest load of this file (path, key or name).")
@click.option("--force", is_flag=True, help="Proceed when later loads changed some keys: those keep the later rows.")
@json_option
def rollback(
    table_name: str, lake_root: str | None, run_id: str | None, file_key: str | None, force: bool, as_json: bool
) -> None:
    """Undo one load of TABLE: remove the rows it inserted, restore the rows it replaced (new snapshot).

    The file then counts as not loaded: running it again loads it again. Refuses when later loads
    changed the same keys, unless --force.
    """
    from pyiceberg.exceptions import NoSuchTableError

    from icegate import ledger
    from icegate.datasets import all_datasets
    from icegate.lake.rollback import rollback as roll_back

    if (run_id is None) == (file_key is None):
        raise click.UsageError("give exactly one of --run-id and --file")
    settings = _settings(lake_root)
    namespace, _, name = table_name.rpartition(".")
    identifier = (namespace or settings.namespace, name)
    catalog = _catalog(settings, create=False)
    try:
        done = roll_back(catalog, identifier, run_id=run_id, file=file_key, force=force)
    except NoSuchTableError:
        raise click.ClickException(f"no table {'.'.join(identifier)} in the catalog") from None
    dataset = next((d.name for d in all_datasets().values() if d.table == name), name)
    uuid = str(catalog.load_table(identifier).metadata.table_uuid)
    recorded = ledger.record(catalog, identifier[0], ledger.row_for_rollback(done, dataset=dataset, table_uuid=uuid))
    if as_json:
        document = {k: v for k, v in dataclasses.asdict(done).items() if k != "marker"}
        click.echo(json.dumps({**document, "ledger_recorded": recorded}, indent=2))
    else:
        console.print(
            f"{done.table}: rolled back run {escape(done.run_id)} ({escape(done.source_file)}): removed "
            f"{done.rows_removed} rows, restored {done.rows_restored}, snapshot {done.snapshot_id}"
        )
        if done.keys_kept_later:
            console.print(
                f"kept the later rows of {done.keys_kept_later} keys (runs {escape(', '.join(done.later_runs))})"
            )
    if not recorded:
        click.echo("warning: the ledger row was not written; the rollback snapshot still marks the file", err=True)


@main.command()
@click.option("--run-id", "run_ids", multiple=True, metavar="ID", help="Replay this run's entry (repeatable).")
@click.option("--dataset", metavar="NAME", help="Only entries of this dataset.")
@click.option("--error-type", metavar="TYPE", help="Only files dead-lettered with this error (e.g. QualityGateFailed).")
@click.option("--all", "everything", is_flag=True, help="Every entry (that the other options select).")
@click.option("--rejected", is_flag=True, help="Replay the rejected rows of loaded files instead.")
@lake_option
@json_option
def replay(
    run_ids: tuple[str, ...],
    dataset: str | None,
    error_type: str | None,
    everything: bool,
    rejected: bool,
    lake_root: str | None,
    as_json: bool,
) -> None:
    """Run dead-lettered files (or, with --rejected, the rejected rows of loaded files) again, after a fix.

    Idempotent: content already loaded is "already loaded", rows merge by the dataset's keys. The DLQ
    entry stays as the record; the ledger links the replay to it (replay_of). Exits 1 when any replay
    did not load (dead-lettered again, still rejected, failed).
    """
    from icegate.pipeline import LocalRunner
    from icegate.replay import find_entries
    from icegate.replay import replay as replay_entry

    if not (run_ids or dataset or error_type or everything):
        raise click.UsageError("say what to replay: --run-id, --dataset, --error-type, or --all")
    if rejected and error_type:
        raise click.UsageError("--error-type selects dead-lettered files; rejected rows have none")
    settings = _settings(lake_root)
    if settings.is_local and not Path(settings.lake_path(c.DLQ_PREFIX)).is_dir():
        raise click.ClickException(f"no dead-letter prefix at {Path(settings.lake_path(c.DLQ_PREFIX)).resolve()}")
    runner = LocalRunner(settings, catalog=_catalog(settings, create=True))
    entries = find_entries(runner, run_ids=run_ids, dataset=dataset, error_type=error_type, rejected=rejected)
    if not entries:  # a typo must not read as "nothing to do"; a name only the DLQ knows still matched above
        _refuse_unknown_names(dataset=dataset, error_type=error_type)
        # A run id of neither kind of entry is a typo too (of the other kind: --rejected was meant, or left out).
        if run_ids and not find_entries(runner, run_ids=run_ids, rejected=not rejected):
            raise click.ClickException(
                f"no dead-lettered file nor rejected rows of run {', '.join(map(repr, run_ids))} in "
                f"{settings.lake_path(c.DLQ_PREFIX)} (icegate dlq lists them)"
            )
    with console.capture() if as_json else contextlib.nullcontext() as captured:
        results = []
        for entry in entries:
            result = replay_entry(runner, entry)
            results.append(result)
            note = f": {escape(result.message)}" if result.message else ""
            console.print(
                f"{escape(entry.dataset)}/{escape(entry.run_id)} ({entry.kind}) → [bold]{result.outcome}[/]"
                f" as {escape(result.run_id or '-')}{note}"
            )
        if not entries:
            console.print("nothing in the dead-letter prefix matches")
    code = 1 if any(r.outcome in ("dead_lettered", "failed", "still_rejected") for r in results) else 0
    if captured is not None:
        click.echo(captured.get(), err=True, nl=False)
        click.echo(json.dumps({"replays": [r.to_dict() for r in results], "exit_code": code}, indent=2))
    sys.exit(code)


@main.command()
@click.argument("source", metavar="SOURCE")
@lake_option
@click.option(
    "--suffix",
    "suffixes",
    multiple=True,
    metavar="SUFFIX",
    help="Only files ending so (repeatable), e.g. --suffix .csv --suffix .csv.gz; default: every supported format.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, c.BACKFILL_MAX_WORKERS),
    default=c.BACKFILL_DEFAULT_WORKERS,
    show_default=True,
    help="Files run at once; loads into one table commit together (group commit).",
)
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Run at most N files (oldest first).")
@click.option("--retry-dead-lettered", is_flag=True, help="Run again the files whose last outcome was dead-lettered.")
@click.option("--dry-run", is_flag=True, help="List what would run and what would be skipped; run nothing.")
@json_option
def backfill(
    source: str,
    lake_root: str | None,
    suffixes: tuple[str, ...],
    workers: int,
    limit: int | None,
    retry_dead_lettered: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Load the files already in SOURCE, a local folder or s3://bucket/prefix, oldest first.

    Files the ledger says are loaded are skipped, and so are those last dead-lettered (unless
    --retry-dead-lettered): rerun the same command after an interruption and it resumes. Exits 1 when
    any file was dead-lettered or failed, 130 when interrupted (Ctrl-C).
    """
    from icegate import backfill as backfills
    from icegate.pipeline import LocalRunner

    if "://" not in source:
        _refuse_missing([Path(source)])
    settings = _settings(lake_root)
    try:
        backfills.normalise_suffixes(suffixes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--suffix") from None
    # The ledger of a lake never ingested into is empty: the lake is created only when a file is to run.
    catalog = _existing_catalog(settings)
    with console.capture() if as_json else contextlib.nullcontext() as captured:
        try:
            found = backfills.plan(
                settings, source, catalog, suffixes=suffixes, retry_dead_lettered=retry_dead_lettered, limit=limit
            )
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="SOURCE") from None
        except KeyboardInterrupt:
            raise _Interrupted(f"interrupted while listing {source}: no file ran") from None
        if dry_run or not found.to_run:
            done = backfills.Result(found)
            if dry_run:
                _print_dry_run(found)
        else:
            runner = LocalRunner(settings, catalog=catalog or _catalog(settings, create=True))
            done = _run_backfill(found, runner, workers, quiet=as_json)
        console.print(_backfill_table(done, dry_run=dry_run))
        for line in _backfill_notes(done, dry_run=dry_run):
            console.print(line)
    code = 0 if dry_run else done.exit_code
    if captured is not None:  # --json
        click.echo(captured.get(), err=True, nl=False)
        click.echo(json.dumps(done.to_dict(dry_run=dry_run), indent=2, ensure_ascii=False))
    sys.exit(code)


def _existing_catalog(settings: Settings) -> Catalog | None:
    """The catalog when the lake has one (a dry run creates nothing): None for a local lake never ingested into."""
    database = Path(settings.lake_path(c.CATALOG_DB))
    if settings.is_local and not settings.catalog_uri and settings.catalog_type == "sql" and not database.is_file():
        return None
    return _catalog(settings, create=False)


class _RateColumn(ProgressColumn):
    """Files per second since the start (rich's own speed is a short moving window)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        return Text(f"{task.completed / elapsed:.1f} files/s" if elapsed > 0 else "")


def _run_backfill(found: Plan, runner: LocalRunner, workers: int, *, quiet: bool) -> Result:
    from icegate import backfill as backfills
    from icegate.pipeline import WorkerProcessDied

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} files"),
        _RateColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet,
    ) as progress:
        task = progress.add_task("backfill", total=len(found.to_run))

        def on_done(outcome: FileOutcome) -> None:
            progress.update(task, advance=1, description=f"backfill: {escape(Path(found.uri_of(outcome)).name)}")

        try:
            return backfills.run(found, runner, workers=workers, on_done=on_done)
        except WorkerProcessDied as exc:
            raise click.ClickException(f"{exc}; the files that finished are in the ledger") from None


def _print_dry_run(found: Plan) -> None:
    for candidate in found.to_run:
        again = " (dead-lettered before)" if candidate.status == "dead_lettered" else ""
        console.print(f"[green]would run[/] {escape(candidate.uri)}{again}")
    for candidate in found.over_limit:
        console.print(f"[yellow]over --limit[/] {escape(candidate.uri)}")
    for candidate in found.loaded:
        console.print(f"[cyan]skip[/] {escape(candidate.uri)}: loaded (run {escape(candidate.prior_run_id or '')})")
    for candidate in found.dead_lettered:
        console.print(
            f"[red]skip[/] {escape(candidate.uri)}: dead-lettered (run {escape(candidate.prior_run_id or '')})"
        )


def _backfill_table(done: Result, *, dry_run: bool) -> Table:
    found = done.plan
    table = Table(title=f"icegate backfill {escape(found.source)}" + (" (dry run)" if dry_run else ""))
    table.add_column("files")
    table.add_column("count", justify="right")
    rows: list[tuple[str, object]] = [
        ("listed", found.listed),
        ("skipped: already loaded", len(found.loaded)),
        ("skipped: dead-lettered earlier", len(found.dead_lettered)),
        ("skipped: unsupported", len(found.unsupported)),
    ]
    if found.other_suffix:
        rows.append(("skipped: other suffix", len(found.other_suffix)))
    if found.own:
        rows.append(("skipped: the lake's own", len(found.own)))
    if found.over_limit:
        rows.append(("not run: over --limit", len(found.over_limit)))
    if dry_run:
        rows.append(("would run", len(found.to_run)))
    else:
        rows += [
            ("loaded", done.count("loaded")),
            ("already loaded", done.count("already_loaded")),
            ("dead-lettered", done.count("dead_lettered")),
            ("failed", done.count("failed")),
            ("seconds", f"{done.seconds:.1f}"),
            ("files/s", f"{done.files_per_second:.2f}"),
        ]
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def _backfill_notes(done: Result, *, dry_run: bool) -> list[str]:
    found, notes = done.plan, []
    if found.retried_dead_lettered:
        notes.append(f"{found.retried_dead_lettered} file(s) dead-lettered earlier run again (--retry-dead-lettered)")
    elif found.dead_lettered:
        notes.append(
            f"{len(found.dead_lettered)} file(s) dead-lettered earlier skipped: --retry-dead-lettered runs them"
        )
    if not found.listed:
        notes.append(f"[yellow]nothing found under {escape(found.source)}[/]")
    if dry_run:
        return notes
    for outcome in done.outcomes:
        if outcome.dead_letter:
            entry = outcome.dead_letter
            where = escape(found.uri_of(outcome))
            notes.append(f"[red]DLQ[/] {where}: [bold]{entry.error_type}[/] → {escape(entry.error_uri)}")
        elif outcome.outcome == "failed":
            notes.append(f"[red]FAILED[/] {escape(found.uri_of(outcome))}, not dead-lettered: {escape(outcome.error)}")
    if done.interrupted:
        notes.append(
            f"[yellow]interrupted after {len(done.outcomes)} of {len(found.to_run)} files; "
            "rerun the same command to resume[/]"
        )
    elif found.over_limit:
        notes.append(f"{len(found.over_limit)} more file(s) to run: rerun the same command to continue")
    return notes


def entry() -> None:
    """The ``icegate`` command: :func:`main`, then straight out of the process with its exit code.

    Tearing the interpreter down frees every object a run made (for a 1 M-row file, ~1 GB of rows) and
    unloads every module: ~0.4 s after the work is done and the output written. Once the output and the
    logs are flushed, nothing is left for it to do. A traceback leaves the ordinary way.
    """
    import logging
    import os

    try:
        main()
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    if isinstance(code, str):  # what SystemExit does with a message: print it, exit 1
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
