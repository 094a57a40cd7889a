"""Group commit through the stages: the Lambda loader's waiting room in the lake, and `icegate run --workers`."""

from __future__ import annotations

import dataclasses
import gzip
import json
import multiprocessing
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

from icegate import constants as c
from icegate import ledger as ledger_module
from icegate.cli import main
from icegate.lake import build_catalog, loaded_snapshots
from icegate.lake.markers import MARKER_RUN
from icegate.ledger import history
from icegate.payloads import Job, Scored, SourceObject
from icegate.pipeline import (
    LocalRunner,
    WorkerProcessDied,
    _StageProcesses,
    object_queue,
    run_load,
    run_parse,
    run_score,
    run_validate,
)
from icegate.settings import Limits, Settings
from icegate.storage import Storage
from icegate.waiting import InProcessQueue, WaitingLoad
from tests.frames import SCRAPER_HEADER, observe_commits, scraper_posts_csv
from tests.interrupts import ctrl_c_as_the_first_load_starts
from tests.ledger_support import ledger_rows


def posts_csv(folder: Path, second: int, ids: range) -> Path:
    """A scraper's posts file holding ``ids`` (the same post always has the same row)."""
    path = folder / f"post_results_20260113_1200{second:02d}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(scraper_posts_csv(ids))
    return path


def scored(path: Path, settings: Settings, storage: Storage) -> Scored:
    job = Job(source=SourceObject(bucket="", key=str(path)), run_id=f"run-{path.stem[-6:]}")
    parsed = run_parse(job, settings, storage)
    result = run_score(run_validate(parsed, settings, storage), settings, storage)
    assert result.quality is not None
    assert result.quality.passed
    return result


def stored_ids(settings: Settings) -> list[str]:
    table = build_catalog(settings).load_table((settings.namespace, "posts"))
    return sorted(pl.from_arrow(table.scan().to_arrow())["post_id"])  # type: ignore[index]


def ledger_outcomes(settings: Settings) -> Counter[tuple[str, str]]:
    rows = history(build_catalog(settings), settings.namespace, dataset="posts")
    return Counter(zip(rows["run_id"], rows["outcome"], strict=True))


@pytest.fixture
def storage(lake: Path) -> Storage:
    lake.mkdir()
    return Storage()


def test_a_lambda_loader_commits_the_files_waiting_in_the_lake_with_its_own(
    lake: Path, settings: Settings, storage: Storage, tmp_path: Path
) -> None:
    # GIVEN file b waiting under processing/_waiting/ (its loader announced it and is still in its turn)
    first = scored(posts_csv(tmp_path, 1, range(0, 20)), settings, storage)
    second = scored(posts_csv(tmp_path, 2, range(10, 30)), settings, storage)
    queue = object_queue(settings, storage)
    waiting_b = WaitingLoad(second, None, queue.read_rows(second))
    with queue.turn(waiting_b):
        assert len(list(storage.list(settings.lake_path(c.PROCESSING_PREFIX, c.WAITING_FOLDER)))) == 1

        # WHEN file a's loader runs
        loaded_a = run_load(first, settings, storage, waiting=object_queue(settings, storage))

        # THEN both files are in the table, each with its own snapshot and marker, every key once
        assert stored_ids(settings) == [f"P{i:06d}" for i in range(30)]
        table = build_catalog(settings).load_table((settings.namespace, "posts"))
        assert sorted(props[MARKER_RUN] for _, props in loaded_snapshots(table)) == sorted(
            [first.run_id, second.run_id]
        )
        # AND both are recorded as loaded in the ledger, by the loader that committed them
        assert ledger_outcomes(settings) == Counter({(first.run_id, "loaded"): 1, (second.run_id, "loaded"): 1})
        assert loaded_a.load is not None
        assert loaded_a.load.inserted == 20

        # WHEN b's own loader comes to it
        loaded_b = run_load(second, settings, storage, waiting=object_queue(settings, storage))

    # THEN it reports b's own counts (10 new keys, 10 stored), adds no row and no second ledger row
    assert loaded_b.load is not None
    assert not loaded_b.load.already_loaded
    assert (loaded_b.load.inserted, loaded_b.load.skipped) == (10, 10)
    assert len(stored_ids(settings)) == 30
    assert ledger_outcomes(settings)[(second.run_id, "loaded")] == 1
    # AND nothing is left waiting
    assert list(storage.list(settings.lake_path(c.PROCESSING_PREFIX, c.WAITING_FOLDER))) == []


def raw_ledger_outcomes(settings: Settings) -> Counter[tuple[str, str]]:
    """Every row of the ledger table as stored (``history`` shows a load once even when it is there twice)."""
    rows = ledger_rows(settings)
    return Counter(zip(rows["run_id"], rows["outcome"], strict=True))


def test_a_file_committed_by_another_loaders_group_is_recorded_once_whichever_loader_reaches_the_ledger_first(
    lake: Path, settings: Settings, storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN file b waiting in the lake while file a's loader takes its turn
    first = scored(posts_csv(tmp_path, 1, range(0, 20)), settings, storage)
    second = scored(posts_csv(tmp_path, 2, range(10, 30)), settings, storage)
    queue = object_queue(settings, storage)
    # AND a's loader is slow between its group commit (a and b) and its ledger append, long enough for b's own
    # loader to find b's marker and finish (a loaded machine: seen in the 50-execution burst)
    real_record_rows = ledger_module.record_rows
    b_loaded: list[Any] = []

    def b_finishes_first(catalog: Any, namespace: str, rows: Any, **kwargs: Any) -> bool:
        if not b_loaded and {row["run_id"] for row in rows} == {first.run_id, second.run_id}:
            b_loaded.append(run_load(second, settings, storage, waiting=object_queue(settings, storage)))
        return real_record_rows(catalog, namespace, rows, **kwargs)

    monkeypatch.setattr(ledger_module, "record_rows", b_finishes_first)
    with queue.turn(WaitingLoad(second, None, queue.read_rows(second))):
        # WHEN a's loader runs
        run_load(first, settings, storage, waiting=object_queue(settings, storage))

    # THEN b's loader ran inside that window and reported b's own load, not "already loaded"
    assert len(b_loaded) == 1
    assert not b_loaded[0].load.already_loaded
    assert (b_loaded[0].load.inserted, b_loaded[0].load.skipped) == (10, 10)
    # AND the ledger holds exactly one row per run: a and b loaded, each once
    assert raw_ledger_outcomes(settings) == Counter({(first.run_id, "loaded"): 1, (second.run_id, "loaded"): 1})


def test_a_load_that_fails_stops_waiting_so_no_other_loader_commits_it(
    lake: Path, settings: Settings, storage: Storage, tmp_path: Path
) -> None:
    # GIVEN a file whose valid rows are gone before its load (its load fails)
    doomed = scored(posts_csv(tmp_path, 1, range(0, 5)), settings, storage)
    storage.delete(doomed.valid_uri)

    # WHEN its loader runs and fails
    with pytest.raises(Exception, match="valid"):
        run_load(doomed, settings, storage, waiting=object_queue(settings, storage))

    # THEN it left no entry behind for another loader to pick up
    assert list(storage.list(settings.lake_path(c.PROCESSING_PREFIX, c.WAITING_FOLDER))) == []


def test_threads_of_one_process_take_turns_and_the_next_one_commits_all_that_wait(
    lake: Path, settings: Settings, storage: Storage, tmp_path: Path
) -> None:
    # GIVEN the posts table's turn held (by file x), while the loads of files a and b start on two threads
    a = scored(posts_csv(tmp_path, 1, range(0, 10)), settings, storage)
    b = scored(posts_csv(tmp_path, 2, range(5, 15)), settings, storage)
    x = scored(posts_csv(tmp_path, 3, range(100, 101)), settings, storage)
    catalog = build_catalog(settings)
    commits = observe_commits(catalog)
    queue = InProcessQueue(max_files=10, max_bytes=10_000_000)
    results: dict[str, Any] = {}
    threads = [
        threading.Thread(target=lambda s=s: results.update({s.run_id: run_load(s, settings, storage, catalog, queue)}))
        for s in (a, b)
    ]
    with queue.turn(WaitingLoad(x, None, object_queue(settings, storage).read_rows(x))) as turn:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(turn.others()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert {w.run_id for w in turn.others()} == {a.run_id, b.run_id}
    # WHEN the turn is released (x leaves without loading)
    for thread in threads:
        thread.join(timeout=60)

    # THEN whichever thread got the turn next committed both files in one catalog commit, one ledger append
    assert commits.count("posts") == 1
    assert commits.count(c.LEDGER_TABLE) == 1
    # (each planned against the other: the one committed first inserts its 10 keys, the other its 5 new ones)
    assert sorted(r.load.inserted for r in results.values()) == [5, 10]
    assert ledger_outcomes(settings) == Counter({(a.run_id, "loaded"): 1, (b.run_id, "loaded"): 1})


def test_a_file_that_finished_its_stages_first_waits_for_the_files_before_it_in_the_runs_order(
    lake: Path, settings: Settings, storage: Storage, tmp_path: Path
) -> None:
    # GIVEN files a then b in the run's order (half their keys shared), and z before both, which will not load
    z = posts_csv(tmp_path, 0, range(200, 201))
    a = scored(posts_csv(tmp_path, 1, range(0, 10)), settings, storage)
    b = scored(posts_csv(tmp_path, 2, range(5, 15)), settings, storage)
    order = [(SourceObject(bucket="", key=str(z)), "posts"), (a.source, "posts"), (b.source, "posts")]
    queue = InProcessQueue(max_files=10, max_bytes=10_000_000, order=order)
    catalog = build_catalog(settings)
    commits = observe_commits(catalog)
    results: dict[str, Any] = {}

    def load(file: Scored) -> threading.Thread:
        thread = threading.Thread(
            target=lambda: results.update({file.run_id: run_load(file, settings, storage, catalog, queue)})
        )
        thread.start()
        return thread

    # WHEN b is ready to load first
    late = load(b)
    late.join(timeout=0.5)
    # THEN it waits for the files before it: nothing is committed
    assert late.is_alive()
    assert commits == []

    # WHEN z ends without loading (dead-lettered) and a is ready
    queue.ended(SourceObject(bucket="", key=str(z)))
    early = load(a)
    for thread in (early, late):
        thread.join(timeout=60)

    # THEN a is stored first, as a run of one file at a time would: b keeps only its 5 keys a lacks
    assert (results[a.run_id].load.inserted, results[b.run_id].load.inserted) == (10, 5)
    assert results[b.run_id].load.skipped == 5


def test_a_failed_load_stops_waiting_without_touching_a_run_whose_id_ends_like_its_own(
    lake: Path, settings: Settings, storage: Storage, tmp_path: Path
) -> None:
    # GIVEN two files waiting, one under a run id that ends with the other's (an execution named by hand)
    file = scored(posts_csv(tmp_path, 0, range(10)), settings, storage)
    other = dataclasses.replace(file, run_id=f"retry-{file.run_id}")
    queue = object_queue(settings, storage)
    with queue.turn(WaitingLoad(other, None, None)), queue.turn(WaitingLoad(file, None, None)):
        # WHEN the first run's load is found dead (its dead letter stops it waiting)
        removed = queue.stop_waiting("posts", file.run_id)

        # THEN its entry alone is gone: the other file still waits
        (left,) = queue.waiting_uris("posts")
        assert left.endswith(f"-{other.run_id}.json")
        assert len(removed) == 1
        assert removed[0].endswith(f"-{file.run_id}.json")
        assert not removed[0].endswith(f"-{other.run_id}.json")


def test_a_file_listed_without_its_version_keeps_its_place_once_its_parse_pinned_one() -> None:
    # GIVEN a run's order of S3 files listed without version ids (no right to list versions), one key listed
    # with two versions
    listed = [SourceObject(bucket="landing", key=key) for key in ("a.csv", "b.csv")]
    versions = [SourceObject(bucket="landing", key="c.csv", version_id=v) for v in ("v1", "v2")]
    queue = InProcessQueue(max_files=10, max_bytes=10_000_000, order=[(s, "posts") for s in [*listed, *versions]])

    # WHEN their parses pin the versions they read  THEN each is found at its place in the run's order
    pinned = [dataclasses.replace(source, version_id="3HL4kqtJlcpXroDTDmJ") for source in listed]
    assert [queue.position(source) for source in pinned] == [0, 1]
    assert [queue.position(source) for source in versions] == [2, 3]
    assert queue.position(dataclasses.replace(versions[0], version_id="v9")) is None


def test_icegate_run_with_workers_loads_every_file_once_like_a_sequential_run(lake: Path, tmp_path: Path) -> None:
    # GIVEN 12 files whose keys overlap by half with the next one's, and one file that fails the contract
    landing = tmp_path / "landing"
    for n in range(12):
        posts_csv(landing, n, range(n * 10, n * 10 + 20))
    (landing / "post_results_20260113_130000.csv").write_text("Post ID,Likes\nP1,2\n", encoding="utf-8")

    # WHEN `icegate run --workers 4` ingests them
    result = CliRunner().invoke(main, ["run", str(landing), "--lake", str(lake), "--workers", "4", "--json"])

    # THEN the 12 are loaded and the bad one dead-lettered, as a sequential run would
    document = json.loads(result.stdout)
    outcomes = Counter(f["outcome"] for f in document["files"])
    assert outcomes == Counter({"loaded": 12, "dead_lettered": 1}), result.output
    settings = Settings(lake_root=str(lake))
    # AND every key is stored exactly once, one snapshot and one ledger row per loaded file
    assert stored_ids(settings) == [f"P{i:06d}" for i in range(130)]
    table = build_catalog(settings).load_table((settings.namespace, "posts"))
    assert len(list(loaded_snapshots(table))) == 12
    assert sum(1 for (_, outcome) in ledger_outcomes(settings) if outcome == "loaded") == 12
    # AND a rerun with workers finds every file already loaded
    again = CliRunner().invoke(main, ["run", str(landing), "--lake", str(lake), "--workers", "4", "--json"])
    assert Counter(f["outcome"] for f in json.loads(again.stdout)["files"]) == Counter(
        {"already_loaded": 12, "dead_lettered": 1}
    )


def test_ctrl_c_during_icegate_run_with_workers_reports_each_file_that_ended(
    lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN 8 files, and Ctrl-C arriving while the first of them loads
    landing = tmp_path / "landing"
    for n in range(8):
        posts_csv(landing, n, range(n * 10, n * 10 + 20))
    ctrl_c_as_the_first_load_starts(monkeypatch)

    # WHEN `icegate run --workers 2` ingests them
    result = CliRunner().invoke(main, ["run", str(landing), "--lake", str(lake), "--workers", "2", "--json"])

    # THEN it ends with exit code 130 (not click's "Aborted!"), having let the files under way finish
    document = json.loads(result.stdout)
    assert result.exit_code == document["exit_code"] == 130, result.output
    # AND it reports each file the ledger holds, with its run: the one loading at the interrupt too
    recorded = ledger_outcomes(Settings(lake_root=str(lake)))
    assert recorded, "the file loading at the interrupt finished"
    assert Counter((f["run_id"], f["outcome"]) for f in document["files"]) == recorded
    assert f"interrupted after {len(recorded)} of 8 files" in result.stderr


def test_a_file_named_twice_in_a_run_with_workers_ends_as_it_does_alone(lake: Path, tmp_path: Path) -> None:
    # GIVEN three files, the first named twice (a file and its folder both given)
    files = [posts_csv(tmp_path, n, range(n * 10, n * 10 + 20)) for n in range(3)]
    sources = [SourceObject(bucket="", key=str(path)) for path in (files[0], files[1], files[0], files[2])]
    runner = LocalRunner(Settings(lake_root=str(lake)))
    outcomes: list[Any] = []

    # WHEN they run 2 at a time (on a thread of the test's own, so that a run that never ends fails the test)
    thread = threading.Thread(target=lambda: outcomes.extend(runner.run_many(sources, workers=2, processes=0)))
    thread.start()
    thread.join(timeout=120)

    # THEN the run ends: the first copy loaded, the second found loaded, the files after them loaded
    assert not thread.is_alive(), "the run waits for ever"
    assert [o.outcome for o in outcomes].count("loaded") == 3
    assert [o.outcome for o in outcomes].count("already_loaded") == 1


def test_icegate_run_with_workers_stores_the_values_a_sequential_run_stores(lake: Path, tmp_path: Path) -> None:
    # GIVEN 8 scrapes of the same posts with other like counts, the first one far the largest (the slowest)
    landing = tmp_path / "landing"
    landing.mkdir()
    for n in range(8):
        rows = [
            f"pizza,P{i:06d},chef,2026-01-05,{n},1,#food,Caption {i},A pizza,https://www.instagram.com/p/P{i:06d}/,success"
            for i in range(30_000 if n == 0 else 50)
        ]
        (landing / f"post_results_20260113_1200{n:02d}.csv").write_text("\n".join([SCRAPER_HEADER, *rows]) + "\n")

    # WHEN they run one at a time into one lake, and 4 at a time into another
    for workers, folder in (("1", "sequential"), ("4", "parallel")):
        result = CliRunner().invoke(main, ["run", str(landing), "--lake", str(lake / folder), "--workers", workers])
        assert result.exit_code == 0, result.output

    # THEN both store the first scrape's like counts (insert_new keeps the row stored first)
    def likes(folder: str) -> pl.DataFrame:
        table = build_catalog(Settings(lake_root=str(lake / folder))).load_table(("instagram_db", "posts"))
        frame = pl.from_arrow(table.scan(selected_fields=("post_id", "likes")).to_arrow())
        assert isinstance(frame, pl.DataFrame)
        return frame.sort("post_id")

    assert likes("parallel").equals(likes("sequential"))
    assert set(likes("parallel")["likes"]) == {0}


@pytest.mark.parametrize("gzipped", [False, True], ids=["csv", "gzip-stored-small"])
def test_a_group_holds_no_more_rows_than_one_file_may_have(
    lake: Path, settings: Settings, storage: Storage, tmp_path: Path, gzipped: bool
) -> None:
    # GIVEN files of 10 rows waiting beside a loader's own, and a per-file limit that leaves room for one of
    # them beside its own rows (gzipped: each stores a fraction of the rows it holds)
    paths = [posts_csv(tmp_path, n, range(n * 10, n * 10 + 10)) for n in range(4)]
    if gzipped:
        paths = [_gzipped(path) for path in paths]
    files = [scored(path, settings, storage) for path in paths]
    held = [f.rows_bytes for f in files]
    assert all(held[0] * 0.9 < size < held[0] * 1.1 for size in held), held
    if gzipped:
        assert all((f.source.size or 0) * 2 < f.rows_bytes for f in files)
    limit = int(held[0] * 2.5)
    limited = dataclasses.replace(settings, limits=dataclasses.replace(settings.limits, max_bytes=limit))
    queue = object_queue(limited, storage)
    waiting = [WaitingLoad(f, None, queue.read_rows(f)) for f in files]
    with queue.turn(waiting[1]), queue.turn(waiting[2]), queue.turn(waiting[3]), queue.turn(waiting[0]) as turn:
        # WHEN the first file's loader looks at what waits
        taken = turn.others()

    # THEN it takes one more file only: the rows of two more would take more than one file may
    assert [w.run_id for w in taken] == [files[1].run_id]


def _gzipped(path: Path) -> Path:
    packed = path.with_name(path.name + ".gz")
    packed.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return packed


def test_run_many_reports_outcomes_in_the_order_of_the_files(lake: Path, settings: Settings, tmp_path: Path) -> None:
    # GIVEN six files
    sources = [SourceObject(bucket="", key=str(posts_csv(tmp_path, n, range(n, n + 3)))) for n in range(6)]

    # WHEN three workers run them
    outcomes = LocalRunner(settings).run_many(sources, workers=3)

    # THEN each outcome stands at its file's place
    assert [o.source.key for o in outcomes] == [s.key for s in sources]
    assert {o.outcome for o in outcomes} == {"loaded"}


def test_run_many_with_stage_processes_ends_each_file_as_a_run_on_threads_does(
    lake: Path, settings: Settings, tmp_path: Path
) -> None:
    # GIVEN five posts files whose keys overlap, one file that cannot be parsed, and one already loaded
    sources = [SourceObject(bucket="", key=str(posts_csv(tmp_path, n, range(2 * n, 2 * n + 4)))) for n in range(5)]
    broken = tmp_path / "post_results_20260113_120059.csv"
    broken.write_bytes(b"Post ID,Creator\n\xff\xfe\x00 not text\n")
    sources.append(SourceObject(bucket="", key=str(broken)))
    LocalRunner(settings).run(sources[0])
    stages: list[str] = []

    # WHEN four workers run them, parse/validate/score in two worker processes
    outcomes = LocalRunner(settings).run_many(
        sources, workers=4, processes=2, on_stage=lambda source, stage: stages.append(stage)
    )

    # THEN every file ends as a sequential run ends it: loaded once, already loaded, or dead-lettered with why
    assert [o.outcome for o in outcomes] == ["already_loaded", "loaded", "loaded", "loaded", "loaded", "dead_lettered"]
    assert stored_ids(settings) == [f"P{i:06d}" for i in range(12)]
    entry = outcomes[-1].dead_letter
    assert entry is not None
    assert (entry.stage, entry.error_type) == (c.PARSE, "MalformedFile")
    assert Path(entry.error_uri).is_file()
    # AND the ledger holds each file's outcome, and no processing object is left behind
    outcomes_recorded = Counter(history(build_catalog(settings), settings.namespace)["outcome"])
    assert outcomes_recorded == Counter({"loaded": 5, "already_loaded": 1, "dead_lettered": 1})
    assert not any((lake / c.PROCESSING_PREFIX).rglob("*.parquet"))
    # AND progress names each file's parse and its load (the stages in between run in the worker processes)
    assert Counter(stages) == Counter({c.PARSE: 6, c.LOAD: 5})


def test_a_worker_process_that_dies_stops_the_run_saying_which_file_it_was_taking(
    lake: Path, settings: Settings, tmp_path: Path
) -> None:
    # GIVEN stage processes that have taken one file through its stages
    first, second = (posts_csv(tmp_path, n, range(n, n + 3)) for n in (1, 2))
    stages = _StageProcesses(settings, 1)
    try:
        ready = stages.until_load(Job(source=SourceObject(bucket="", key=str(first)), run_id="run-first"), False)
        assert isinstance(ready, Scored)

        # WHEN the worker process is killed (as the kernel does when memory runs out) before the next file
        for child in multiprocessing.active_children():
            child.kill()
            child.join()

        # THEN the next file's stages fail with why, naming the file, instead of a broken-pool traceback
        with pytest.raises(
            WorkerProcessDied, match=rf"stopped while taking {re.escape(str(second))} .* same command again"
        ):
            stages.until_load(Job(source=SourceObject(bucket="", key=str(second)), run_id="run-second"), False)
    finally:
        stages.close()


def test_a_streamed_file_waits_for_its_tables_turn_but_is_never_taken_into_a_group(
    lake: Path, settings: Settings, storage: Storage, tmp_path: Path
) -> None:
    # GIVEN a streamed file x and a small file a for the posts table, while the table's turn is held (by h)
    streaming = dataclasses.replace(settings, limits=Limits(stream_above_bytes=1))
    x = scored(posts_csv(tmp_path, 1, range(0, 10)), streaming, storage)
    a = scored(posts_csv(tmp_path, 2, range(5, 15)), settings, storage)
    h = scored(posts_csv(tmp_path, 3, range(100, 101)), settings, storage)
    assert x.streamed
    assert not a.streamed
    catalog = build_catalog(settings)
    commits = observe_commits(catalog)
    queue = InProcessQueue(max_files=10, max_bytes=10_000_000)
    results: dict[str, Any] = {}
    threads = [
        threading.Thread(target=lambda: results.update(x=run_load(x, streaming, storage, catalog, queue))),
        threading.Thread(target=lambda: results.update(a=run_load(a, settings, storage, catalog, queue))),
    ]
    with queue.turn(WaitingLoad(h, None, object_queue(settings, storage).read_rows(h))) as turn:
        # WHEN both loads start and wait for the turn
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(queue._tables["posts"].entries) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        # THEN the files a group would take are a, never x
        assert len(queue._tables["posts"].entries) == 3
        assert [w.run_id for w in turn.others()] == [a.run_id]
    for thread in threads:
        thread.join(timeout=60)

    # AND when the turn is released, each committed in its own commit, x streaming its rows in
    assert commits.count("posts") == 2
    assert ledger_outcomes(settings) == Counter({(a.run_id, "loaded"): 1, (x.run_id, "loaded"): 1})
    assert results["x"].streamed
    assert sorted(r.load.inserted for r in results.values()) == [5, 10]
