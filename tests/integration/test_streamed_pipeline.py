"""A file too big to hold goes through the same stages a slice at a time, and ends exactly as a held one.

``ICEGATE_STREAM_ABOVE_BYTES`` is set to 1 byte here and the slices to a few KiB, so a few thousand
rows make many slices: every record, rejected row, duplicate key and quality check crosses slice
boundaries. The whole-file run of the same bytes, into another lake, is the reference.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest

from benchmarks.generate import posts_frame
from icegate import streamed
from icegate.errors import SchemaMismatch, StorageUnavailable
from icegate.lake import build_catalog
from icegate.payloads import Job, Loaded, Scored
from icegate.pipeline import FileOutcome, LocalRunner, local_sources, run_parse, run_score, run_validate
from icegate.quality import QualityTally
from icegate.settings import Limits, Settings
from icegate.storage import Storage
from icegate.validate import validate_table

POSTS_NAME = "post_results_20260113_175319.csv"
#: Columns that differ between two runs of the same file (when and by which run it was loaded).
RUN_COLUMNS = ("ingested_at", "run_id")


@pytest.fixture(autouse=True)
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streamed, "BLOCK_BYTES", 8 * 1024)


def scraped_posts(rows: int) -> pl.DataFrame:
    """Posts as a scraper writes them: some counts unreadable, and the first posts scraped again at the end."""
    posts = posts_frame(rows)
    unreadable = pl.int_range(pl.len()) % 97 == 5
    posts = posts.with_columns(pl.when(unreadable).then(pl.lit("lots")).otherwise(pl.col("Likes")).alias("Likes"))
    again = posts.head(40).with_columns(pl.lit("7").alias("Likes"))
    return pl.concat([posts, again])


def write(frame: pl.DataFrame, folder: Path, name: str = POSTS_NAME) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_csv(folder / name)
    return folder / name


def run(lake: Path, file: Path, **limits: Any) -> FileOutcome:
    settings = Settings(lake_root=str(lake), limits=Limits(**limits))
    return LocalRunner(settings).run(local_sources([file]).files[0])


def table(lake: Path) -> pl.DataFrame:
    catalog = build_catalog(Settings(lake_root=str(lake)))
    frame = pl.from_arrow(catalog.load_table(("instagram_db", "posts")).scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame.drop(RUN_COLUMNS).sort("post_id", "creator")


def rejected(lake: Path) -> pl.DataFrame:
    (path,) = (lake / "dlq").rglob("rejected.parquet")
    frame = pl.from_arrow(pq.read_table(path))
    assert isinstance(frame, pl.DataFrame)
    return frame


def quality(lake: Path, outcome: FileOutcome) -> dict[str, Any]:
    assert isinstance(outcome.state, Loaded)
    state = outcome.state
    return {
        "score": state.quality.score if state.quality else None,
        "dimensions": state.quality.dimensions if state.quality else None,
        "load": replace(state.load, snapshot_id=None) if state.load else None,
        "counts": (state.rows, state.rows_valid, state.rows_rejected, state.failed_checks),
    }


def test_a_streamed_file_ends_exactly_as_the_same_file_held_whole(tmp_path: Path) -> None:
    # GIVEN one scraped posts file (rows rejected, keys repeated), run whole into one lake
    source = write(scraped_posts(3_000), tmp_path / "landing")
    whole = run(tmp_path / "whole", source)
    assert whole.outcome == "loaded", whole.error

    # WHEN the same file is streamed into another lake, a few KiB at a time
    streamed_run = run(tmp_path / "streamed", source, stream_above_bytes=1)

    # THEN it is loaded through the streamed stages
    assert streamed_run.outcome == "loaded", streamed_run.error
    assert isinstance(streamed_run.state, Loaded)
    assert streamed_run.state.streamed
    assert not isinstance(whole.state, Loaded) or not whole.state.streamed
    # AND the table holds the same rows, the same counts were reported, the same score given
    assert table(tmp_path / "streamed").equals(table(tmp_path / "whole"))
    assert quality(tmp_path / "streamed", streamed_run) == quality(tmp_path / "whole", whole)
    # AND the rejected rows are the same, each at the same record number and line of the file
    assert rejected(tmp_path / "streamed").equals(rejected(tmp_path / "whole"))
    assert rejected(tmp_path / "whole").height == 3_000 // 97 + 1
    # AND no scratch file is left behind
    assert not list((tmp_path / "streamed" / "processing").rglob("*.parquet"))


def test_a_streamed_file_run_again_is_found_loaded_by_its_hash_before_any_parse(tmp_path: Path) -> None:
    # GIVEN a streamed file loaded once
    source = write(scraped_posts(500), tmp_path / "landing")
    first = run(tmp_path / "lake", source, stream_above_bytes=1)
    assert first.outcome == "loaded", first.error

    # WHEN it runs again
    again = run(tmp_path / "lake", source, stream_above_bytes=1)

    # THEN the ledger answers from the content's hash: already loaded, nothing parsed, nothing committed
    assert again.outcome == "already_loaded", again.error
    assert isinstance(again.state, Loaded)
    assert again.state.parsed_uri == ""
    catalog = build_catalog(Settings(lake_root=str(tmp_path / "lake")))
    assert len(catalog.load_table(("instagram_db", "posts")).metadata.snapshots) == 1


def test_a_gzip_that_expands_past_the_whole_file_limit_streams_instead_of_being_refused(tmp_path: Path) -> None:
    # GIVEN a small gzip whose text is bigger than the limit of a file parsed whole
    text = write(scraped_posts(2_000), tmp_path / "text")
    source = tmp_path / "landing" / (POSTS_NAME + ".gz")
    source.parent.mkdir()
    source.write_bytes(gzip.compress(text.read_bytes()))
    limit = text.stat().st_size // 2
    assert source.stat().st_size < limit

    # WHEN it runs with that limit (and streaming only above a size it is far under)
    outcome = run(tmp_path / "lake", source, max_bytes=limit, max_uncompressed_bytes=limit)

    # THEN it streamed and loaded the same rows as the plain text held whole
    assert outcome.outcome == "loaded", outcome.error
    assert isinstance(outcome.state, Loaded)
    assert outcome.state.streamed
    assert run(tmp_path / "whole", text).outcome == "loaded"
    assert table(tmp_path / "lake").drop("source_file").equals(table(tmp_path / "whole").drop("source_file"))


def test_a_malformed_row_late_in_a_streamed_file_is_dead_lettered_as_when_held_whole_and_commits_nothing(
    tmp_path: Path,
) -> None:
    # GIVEN a file whose 1 500th line has a field too many, far past the first slice
    source = write(posts_frame(2_000), tmp_path / "landing")
    lines = source.read_text().splitlines(keepends=True)
    lines[1500] = lines[1500].rstrip("\n") + ",surplus\n"
    source.write_text("".join(lines))

    # WHEN it is streamed, and held whole into another lake
    outcomes = {
        "streamed": run(tmp_path / "streamed", source, stream_above_bytes=1),
        "whole": run(tmp_path / "whole", source),
    }

    # THEN both are dead-lettered by the parser with the same error at the same line of the file
    errors = {}
    for how, outcome in outcomes.items():
        assert outcome.outcome == "dead_lettered", how
        assert outcome.dead_letter is not None
        errors[how] = json.loads(Path(outcome.dead_letter.error_uri).read_text())
    assert (errors["streamed"]["stage"], errors["streamed"]["error_type"]) == ("parse", "MalformedFile")
    assert errors["streamed"]["line"] == errors["whole"]["line"] == 1500  # the record starts on it
    assert errors["streamed"]["message"] == errors["whole"]["message"]
    # AND the streamed run left no table and no scratch file
    catalog = build_catalog(Settings(lake_root=str(tmp_path / "streamed")))
    assert not catalog.table_exists(("instagram_db", "posts"))
    assert not list((tmp_path / "streamed" / "processing").rglob("*.parquet"))


def test_a_file_under_the_threshold_is_held_whole_as_before(tmp_path: Path) -> None:
    # GIVEN a file smaller than the streaming threshold
    source = write(scraped_posts(200), tmp_path / "landing")

    # WHEN it runs with the default threshold
    outcome = run(tmp_path / "lake", source)

    # THEN it went through the held stages
    assert outcome.outcome == "loaded", outcome.error
    assert isinstance(outcome.state, Loaded)
    assert not outcome.state.streamed


class _ReplacedWhileRead(Storage):
    """The object as it was when its hash was read; the parse then reads what replaced it."""

    def sha256(self, uri: str, version_id: str | None = None, *, etag: str | None = None) -> str:
        return hashlib.sha256(b"the bytes that were there before").hexdigest()


@pytest.mark.parametrize("inline", [False, True], ids=["stages-apart", "validated-as-parsed"])
def test_an_object_replaced_between_its_two_reads_is_read_again_not_loaded_under_the_other_hash(
    tmp_path: Path, inline: bool
) -> None:
    # GIVEN a streamed file (some rows rejected) whose bytes change between the hash read and the parse's read
    source = write(scraped_posts(300), tmp_path / "landing")
    settings = Settings(lake_root=str(tmp_path / "lake"), limits=Limits(stream_above_bytes=1))
    job = Job(source=local_sources([source]).files[0], run_id="run-1")

    # WHEN the parse stage runs (on its own, or validating as it parses)
    with pytest.raises(StorageUnavailable, match="changed while it was read"):
        run_parse(job, settings, _ReplacedWhileRead(), inline=streamed.Inline() if inline else None)

    # THEN it fails as transient (the state machine reads it again); what it parsed is only scratch, which expires
    assert {p.relative_to(tmp_path / "lake").parts[0] for p in (tmp_path / "lake").rglob("*.parquet")} <= {"processing"}
    # AND no rows it validated are left as the file's
    assert not list((tmp_path / "lake").rglob("valid.parquet"))


class _SideReadFails(Storage):
    """The second read, which only hashes the object beside the parse, fails."""

    def sha256(self, uri: str, version_id: str | None = None, *, etag: str | None = None) -> str:
        raise ConnectionResetError("the connection was reset")


def test_a_failing_side_read_leaves_the_parse_to_hash_the_file_and_ask_the_ledger(tmp_path: Path) -> None:
    # GIVEN a streamed file loaded once, and a storage whose side read fails
    source = write(scraped_posts(300), tmp_path / "landing")
    settings = Settings(lake_root=str(tmp_path / "lake"), limits=Limits(stream_above_bytes=1))
    assert LocalRunner(settings).run(local_sources([source]).files[0]).outcome == "loaded"

    # WHEN it runs again through that storage
    again = LocalRunner(settings, storage=_SideReadFails()).run(local_sources([source]).files[0])

    # THEN the parse's own hash finds it loaded: the failed shortcut costs nothing but its time
    assert again.outcome == "already_loaded", again.error
    # AND what the runner validated while parsing it is dropped: only the load's rejected rows are kept
    assert len(list((tmp_path / "lake" / "dlq").rglob("rejected.parquet"))) == 1


def test_a_legacy_file_that_looks_like_utf8_at_first_streams_from_a_local_file_as_it_loads_held_whole(
    tmp_path: Path,
) -> None:
    # GIVEN a cp1252 file (ICEGATE_SOURCE_ENCODING=cp1252) whose first accented text happens to be valid UTF-8
    # ("Ã©", bytes C3 A9), and whose "é" (E9), in a slice far on, is not
    posts = posts_frame(2_000).with_columns(pl.col(pl.String).str.replace_all(r"[^\x00-\x7F]", "?"))
    captions = pl.int_range(pl.len())
    posts = posts.with_columns(
        pl.when(captions == 0)
        .then(pl.lit("Ã© first"))
        .when(captions == 1_500)
        .then(pl.lit("café"))
        .otherwise(pl.col("Caption"))
        .alias("Caption")
    )
    source = tmp_path / "landing" / POSTS_NAME
    source.parent.mkdir()
    source.write_bytes(posts.write_csv().encode("cp1252"))

    def run_cp1252(lake: Path, **limits: Any) -> FileOutcome:
        settings = Settings(lake_root=str(lake), source_encoding="cp1252", limits=Limits(**limits))
        return LocalRunner(settings).run(local_sources([source]).files[0])

    whole = run_cp1252(tmp_path / "whole")
    assert whole.outcome == "loaded", whole.error

    # WHEN it is streamed from the local file
    streamed_run = run_cp1252(tmp_path / "streamed", stream_above_bytes=1)

    # THEN it is read in its encoding throughout, as held whole: the same rows
    assert streamed_run.outcome == "loaded", streamed_run.error
    assert isinstance(streamed_run.state, Loaded)
    assert streamed_run.state.streamed
    assert table(tmp_path / "streamed").equals(table(tmp_path / "whole"))
    assert set(table(tmp_path / "streamed").get_column("caption").head(2_000)) >= {"Ã© first", "café"}
    # AND the bytes read ahead to decide that were hashed once: the file's identity is its SHA-256
    assert streamed_run.state.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()


def parquet_frame(path: str | Path) -> pl.DataFrame:
    frame = pl.from_arrow(pq.read_table(path))
    assert isinstance(frame, pl.DataFrame)
    return frame


def test_the_stages_run_apart_as_the_functions_run_them_give_what_the_runner_gives_validating_as_it_parses(
    tmp_path: Path,
) -> None:
    # GIVEN a streamed file (rows rejected, keys repeated)
    source = write(scraped_posts(2_000), tmp_path / "landing")
    settings = Settings(lake_root=str(tmp_path / "apart"), limits=Limits(stream_above_bytes=1))

    # WHEN its stages run one after another, each reading what the last wrote (as the Lambda functions do)
    storage = Storage()
    job = Job(source=local_sources([source]).files[0], run_id="run-apart")
    parsed = run_parse(job, settings, storage)
    scored = run_score(run_validate(parsed, settings, storage), settings, storage)
    # AND the local runner runs them in one process, keeping its scratch objects to compare
    runner = LocalRunner(replace(settings, lake_root=str(tmp_path / "together")))
    together = runner.run(local_sources([source]).files[0], keep_processing=True)

    # THEN the parser wrote its rows for the validator only when the stages ran apart
    assert together.outcome == "loaded", together.error
    assert isinstance(together.state, Scored)
    assert parsed.streamed
    assert together.state.streamed
    assert Path(parsed.parsed_uri).is_file()
    assert together.state.parsed_uri == ""
    assert not list((tmp_path / "together" / "processing").rglob("parsed.parquet"))

    # AND both give the same counts, checks, score and dimensions
    def facts(state: Scored) -> tuple[Any, ...]:
        assert state.quality is not None
        counts = (state.rows, state.rows_valid, state.rows_rejected, state.failed_checks)
        return counts, state.quality.score, state.quality.dimensions, state.quality.passed

    assert facts(scored) == facts(together.state)
    # AND the same valid rows and rejected rows (lines included), in the same order
    assert parquet_frame(scored.valid_uri).equals(parquet_frame(together.state.valid_uri))
    assert parquet_frame(scored.rejected_uri).equals(parquet_frame(together.state.rejected_uri))
    # AND each stage's time is its own: the validator's and scorer's work is not counted as the parse's
    seconds = together.state.stage_seconds
    assert seconds["validate"] > 0
    assert seconds["score"] > 0
    assert sum(seconds[stage] for stage in ("parse", "validate", "score")) <= together.seconds


class _FailsValidating:
    """``validate_table`` failing on one block as it does for a file that does not fit its dataset."""

    def __init__(self, block: int) -> None:
        self.block = block
        self.calls = 0

    def __call__(self, table: Any, dataset: Any, *, file: str, first_row: int = 1) -> Any:
        self.calls += 1
        if self.calls == self.block:
            raise SchemaMismatch(f"the file does not fit dataset {dataset.name!r}: post_id: dtype", file=file)
        return validate_table(table, dataset, file=file, first_row=first_row)


def test_a_file_failing_validation_as_it_is_parsed_is_dead_lettered_by_the_validator_keeping_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a streamed file whose third block the validator refuses
    source = write(scraped_posts(2_000), tmp_path / "landing")
    monkeypatch.setattr(streamed, "validate_table", _FailsValidating(block=3))

    # WHEN the local runner validates it as it parses it
    outcome = run(tmp_path / "lake", source, stream_above_bytes=1)

    # THEN it is dead-lettered by the validator, with its error, after a complete parse
    assert outcome.outcome == "dead_lettered"
    assert outcome.dead_letter is not None
    error = json.loads(Path(outcome.dead_letter.error_uri).read_text())
    assert (error["stage"], error["error_type"]) == ("validate", "SchemaMismatch")
    assert outcome.state.to_dict()["rows"] == 2_040
    # AND, as when the stages run apart, only the stage that ended records its time: nothing was scored
    assert set(outcome.state.to_dict()["stage_seconds"]) == {"parse"}
    # AND no valid or rejected rows were kept, nothing committed
    assert not list((tmp_path / "lake").rglob("valid.parquet"))
    assert not list((tmp_path / "lake").rglob("rejected.parquet"))
    assert not build_catalog(Settings(lake_root=str(tmp_path / "lake"))).table_exists(("instagram_db", "posts"))


def test_a_malformed_row_after_a_block_that_failed_validation_is_the_error_reported_as_when_the_stages_run_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a streamed file whose first block the validator refuses, and whose 1 500th line has a field too many
    source = write(posts_frame(2_000), tmp_path / "landing")
    lines = source.read_text().splitlines(keepends=True)
    lines[1500] = lines[1500].rstrip("\n") + ",surplus\n"
    source.write_text("".join(lines))
    monkeypatch.setattr(streamed, "validate_table", _FailsValidating(block=1))

    # WHEN the local runner validates it as it parses it
    outcome = run(tmp_path / "lake", source, stream_above_bytes=1)

    # THEN the parser's error is the one reported (the validator runs after the parser), at its line
    assert outcome.dead_letter is not None
    error = json.loads(Path(outcome.dead_letter.error_uri).read_text())
    assert (error["stage"], error["error_type"], error["line"]) == ("parse", "MalformedFile", 1500)


def fails_tallying_third_block() -> Any:
    """``QualityTally.add`` failing on the third block (a fault of the scorer's, not of the file)."""
    real = QualityTally.add
    calls = 0

    def add(tally: QualityTally, valid: Any, rejected: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ArithmeticError("the tally overflowed")
        real(tally, valid, rejected)

    return add


def test_a_file_the_scorer_fails_on_as_it_is_parsed_is_dead_lettered_by_the_scorer_after_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a streamed file whose third block the scorer fails to add up
    source = write(scraped_posts(2_000), tmp_path / "landing")
    monkeypatch.setattr(QualityTally, "add", fails_tallying_third_block())

    # WHEN the local runner validates and scores it as it parses it
    outcome = run(tmp_path / "lake", source, stream_above_bytes=1)

    # THEN it is dead-lettered by the scorer, as when the stages run apart, with the validator's counts
    assert outcome.dead_letter is not None
    error = json.loads(Path(outcome.dead_letter.error_uri).read_text())
    assert (error["stage"], error["error_type"]) == ("score", "ArithmeticError")
    state = outcome.state.to_dict()
    assert (state["rows"], state["rows_valid"]) == (2_040, 2_040 - 2_000 // 97 - 1)
    # AND nothing was committed
    assert not build_catalog(Settings(lake_root=str(tmp_path / "lake"))).table_exists(("instagram_db", "posts"))


def test_a_catalog_that_cannot_be_opened_after_the_parse_leaves_no_rejected_rows_behind(tmp_path: Path) -> None:
    # GIVEN a streamed file with rejected rows, and a catalog that fails to open only after its parse ended
    source = write(scraped_posts(300), tmp_path / "landing")
    settings = Settings(lake_root=str(tmp_path / "lake"), limits=Limits(stream_above_bytes=1))

    def opener() -> Any:
        time.sleep(1.5)
        raise ConnectionRefusedError("the catalog is down")

    # WHEN the runner runs it
    with pytest.raises(ConnectionRefusedError):
        LocalRunner(settings, catalog=opener).run(local_sources([source]).files[0])

    # THEN the run stopped before the file left a trace: no rows validated while parsing are left
    assert not list((tmp_path / "lake").rglob("*.parquet"))


def test_a_retried_parse_forgets_what_an_earlier_streamed_attempt_took(tmp_path: Path) -> None:
    # GIVEN a parse that streamed a file, validating it as it went, and failed (the object changed)
    source = write(scraped_posts(300), tmp_path / "landing")
    settings = Settings(lake_root=str(tmp_path / "lake"), limits=Limits(stream_above_bytes=1))
    job = Job(source=local_sources([source]).files[0], run_id="run-1")
    inline = streamed.Inline()
    with pytest.raises(StorageUnavailable):
        run_parse(job, settings, _ReplacedWhileRead(), inline=inline)
    assert inline.started

    # WHEN it is tried again and the file is held whole this time
    parsed = run_parse(job, replace(settings, limits=Limits()), Storage(), inline=inline)

    # THEN nothing of the first attempt is taken for this one's
    assert not parsed.streamed
    assert not inline.started
