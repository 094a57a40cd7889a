"""The ``icegate`` command line as a new user meets it: user errors in one line, and ``run`` ingests
only the files it was meant to — never the files icegate wrote itself."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from moto import mock_aws

from icegate.cli import main
from icegate.pipeline import local_sources
from tests.conftest import SAMPLES

POSTS_CSV = "post_results_20260113_175319.csv"
RESTAURANTS_CSV = "instagram_results_20260114_093000.csv"
MISSING_COLUMNS = "post_results_20260116_120000.csv"


def icegate(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def assert_fails_cleanly(result: Result, message: str, exit_code: int = 1) -> None:
    """A user error: the message, a non-zero exit, and no traceback (click's own SystemExit only)."""
    assert result.exit_code == exit_code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def everything_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


def dlq_errors(lake: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((lake / "dlq").rglob("error.json"))]


@pytest.fixture
def fresh_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A new user's empty working directory (the default lake would be ./lake)."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


# --- user errors: one line, non-zero exit, nothing left behind ------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run"], "nothing to ingest: no PATHS given and there is no"),
        (["tables"], "no catalog at"),
        (["maintain", "posts"], "no catalog at"),
        (["dlq"], "no lake at"),
        (["tables", "--lake", "s3://foo"], "ICEGATE_CATALOG_URI must be set"),
        (["maintain", "posts", "--lake", "s3://foo"], "ICEGATE_CATALOG_URI must be set"),
        (["run", str(SAMPLES / POSTS_CSV), "--lake", "s3://foo"], "ICEGATE_CATALOG_URI must be set"),
        (["run", "--lake", "s3://foo"], "with an S3 lake, name the local files or folders"),
        (["run", "landing/"], "no such file or folder: landing"),
    ],
    ids=[
        "run-without-paths",
        "tables",
        "maintain",
        "dlq",
        "tables-on-s3-without-catalog-uri",
        "maintain-on-s3-without-catalog-uri",
        "run-on-s3-without-catalog-uri",
        "run-on-s3-without-paths",
        "run-of-a-folder-that-is-not-there",
    ],
)
def test_a_command_in_a_fresh_folder_says_what_is_wrong_and_leaves_nothing(
    fresh_folder: Path, args: list[str], message: str
) -> None:
    """Regression: `icegate run` gave a SourceNotFound traceback and left dlq/unknown/<run>/ behind;
    `icegate tables --lake s3://foo` a ValueError traceback; `tables` created an empty catalog.db."""
    # GIVEN an empty working directory  WHEN a command is run as a new user would
    result = icegate(*args)

    # THEN one line says what is wrong, the exit code is 1, and nothing was created
    assert_fails_cleanly(result, message)
    assert everything_under(fresh_folder) == []


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ICEGATE_CATALOG_TYPE", "glu", "cannot open the glu catalog"),
        ("ICEGATE_CATALOG_URI", "sqlite:////nonexistent/folder/catalog.db", "cannot open the sql catalog at sqlite:"),
        ("ICEGATE_QUALITY_THRESHOLD_POSTZ", "80", "did you mean ICEGATE_QUALITY_THRESHOLD_POSTS?"),
        ("ICEGATE_MAX_ROWS", "-1", "ICEGATE_MAX_ROWS=-1 must be at least 1"),
    ],
    ids=["unknown-catalog-type", "unreachable-catalog", "misspelt-setting", "negative-limit"],
)
def test_a_bad_setting_stops_run_before_any_file_is_touched(
    fresh_folder: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    """A configuration error is not a bad file: nothing may be dead-lettered for it."""
    monkeypatch.setenv(variable, value)

    result = icegate("run", str(SAMPLES / POSTS_CSV))

    assert_fails_cleanly(result, message)
    assert everything_under(fresh_folder) == []


def test_a_password_in_the_catalog_uri_is_not_shown(fresh_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICEGATE_CATALOG_URI", "postgresql+psycopg://icegate:s3cret@127.0.0.1:1/icegate")

    result = icegate("run", str(SAMPLES / POSTS_CSV))

    assert_fails_cleanly(result, "postgresql+psycopg://icegate:***@127.0.0.1:1/icegate")
    assert "s3cret" not in result.output


@pytest.mark.parametrize("age", ["infd", "-1d", "7", "d", "soon"], ids=repr)
def test_maintain_refuses_a_duration_it_cannot_use(lake: Path, age: str) -> None:
    """Regression: `inf` overflowed into a traceback; a negative age would reach every file."""
    result = icegate("maintain", "posts", "--lake", str(lake), "--orphans-older-than", age)

    assert_fails_cleanly(result, "is not a duration like 30m, 12h or 7d", exit_code=2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["history", "--since", "999999d"], "'999999d' reaches back before the year 1"),
        (["maintain", "posts", "--expire-older-than", "999999d"], "'999999d' reaches back before the year 1"),
        (["history", "--since", "2026-13-01"], "'2026-13-01' is not an ISO date/time"),
    ],
    ids=["since-before-year-1", "expiry-before-year-1", "since-a-date-that-is-not-one"],
)
def test_a_time_that_cannot_be_used_is_refused_in_one_line(lake: Path, args: list[str], message: str) -> None:
    """Regression: a duration reaching back before the year 1 was an OverflowError traceback."""
    result = icegate(*args, "--lake", str(lake))

    assert_fails_cleanly(result, message, exit_code=2)


def test_replay_of_a_run_id_the_dead_letter_prefix_does_not_hold_is_refused(used_lake: Path) -> None:
    """Regression: a mistyped run id printed "nothing … matches" and exit 0, as if there was nothing to do."""
    result = icegate("replay", "--run-id", "local-20260101T000000-typo", "--lake", str(used_lake))

    assert_fails_cleanly(result, "no dead-lettered file nor rejected rows of run 'local-20260101T000000-typo'")


@pytest.mark.parametrize("kept", ["0", "-1"])
def test_maintain_keeps_at_least_the_newest_snapshot(used_lake: Path, kept: str) -> None:
    """Regression: --retain-last -1 was accepted and kept as many as 0."""
    result = icegate("maintain", "restaurants", "--retain-last", kept, "--lake", str(used_lake))

    assert_fails_cleanly(result, "--retain-last", exit_code=2)


def test_a_lake_folder_named_with_a_space_and_percent_is_read_by_every_command(tmp_path: Path) -> None:
    """Regression: the catalog's URI is percent-encoded, so read-only commands looked for `my%20lake/catalog.db`."""
    # GIVEN a lake in a folder whose name URL-encoding changes
    lake = tmp_path / "my lake 100%"
    assert icegate("run", str(SAMPLES / POSTS_CSV), "--lake", str(lake)).exit_code == 0

    # WHEN the commands that only read the lake are run on it
    # THEN they find what was ingested
    tables = icegate("tables", "--lake", str(lake), "--json")
    assert tables.exit_code == 0, tables.output
    assert "instagram_db.posts" in {row["table"] for row in json.loads(tables.stdout)}
    history = icegate("history", "--lake", str(lake), "--json")
    assert [row["outcome"] for row in json.loads(history.stdout)] == ["loaded"]


def test_paths_a_command_cannot_write_are_one_line(tmp_path: Path, used_lake: Path) -> None:
    """Regression: IsADirectoryError and NotADirectoryError tracebacks."""
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("x")

    assert_fails_cleanly(
        icegate("report", "--lake", str(used_lake), "--out", str(tmp_path)), "cannot write the report to"
    )
    assert_fails_cleanly(
        icegate("run", str(SAMPLES / POSTS_CSV), "--lake", str(not_a_folder / "lake")),
        "cannot create the lake folder",
    )


def test_a_moved_lake_is_one_line_and_its_files_are_not_blamed(tmp_path: Path) -> None:
    """Regression: a lake folder moved after a run gave pyarrow FileNotFoundError tracebacks, and a good file
    was dead-lettered as FileNotFoundError at load (retried as CatalogUnavailable, it took 90 s to say so)."""
    # GIVEN a lake that was moved to another folder after a run (its catalog keeps absolute paths)
    first, moved = tmp_path / "lake", tmp_path / "moved"
    assert icegate("run", str(SAMPLES / POSTS_CSV), "--lake", str(first)).exit_code == 0
    first.rename(moved)

    # WHEN it is inspected
    # THEN one line says what is wrong and what to do
    assert_fails_cleanly(icegate("tables", "--lake", str(moved)), "moved or renamed must be moved back")
    # AND a run into it stops before any file ends anywhere: no good file is dead-lettered for it
    result = icegate("run", str(SAMPLES / "post_results_20260115_081500.xlsx"), "--lake", str(moved))
    assert_fails_cleanly(result, "moved or renamed must be moved back")
    assert dlq_errors(moved) == []


@pytest.mark.parametrize(
    "content",
    ["not json", '["a.csv"]', '{"a.csv": "maybe"}'],
    ids=["not-json", "not-an-object", "unknown-outcome"],
)
def test_a_bad_expect_file_is_refused_before_any_file_runs(tmp_path: Path, lake: Path, content: str) -> None:
    """Regression: it was read after every file had run, and then raised a traceback."""
    expect = tmp_path / "expected.json"
    expect.write_text(content)

    result = icegate("run", str(SAMPLES / POSTS_CSV), "--lake", str(lake), "--expect", str(expect))

    assert_fails_cleanly(result, "--expect", exit_code=2)
    assert not lake.exists()


def test_expect_fails_when_an_expected_file_never_ran(tmp_path: Path, lake: Path) -> None:
    """Regression: a file named in the expectations but missing from the run passed (only files that ran were
    checked), so a lost sample went unnoticed by `make demo`."""
    # GIVEN expectations for two files, of which only one is run
    expect = tmp_path / "expected.json"
    expect.write_text(json.dumps({POSTS_CSV: "loaded", RESTAURANTS_CSV: "loaded"}))

    # WHEN the run checks its outcomes against them
    result = icegate("run", str(SAMPLES / POSTS_CSV), "--lake", str(lake), "--expect", str(expect))

    # THEN it fails, naming the file that never ran
    assert result.exit_code == 1, result.output
    assert f"unexpected {RESTAURANTS_CSV}: expected loaded, but no such file ran" in result.output
    assert "every file ended as" not in result.output


def test_dlq_lists_a_damaged_error_json_instead_of_crashing(lake: Path) -> None:
    damaged = lake / "dlq" / "posts" / "run-1" / "error.json"
    damaged.parent.mkdir(parents=True)
    damaged.write_text('{"stage": "parse"}')

    result = icegate("dlq", "--lake", str(lake))

    assert result.exit_code == 0, result.output
    assert "unreadable error.json" in result.output
    assert "KeyError" in result.output


def test_dlq_names_the_file_of_rejected_rows_in_an_s3_lake() -> None:
    """Regression: a loaded file's rejected rows were listed with the file "-" and the error type "rows rejected"."""
    # GIVEN an S3 lake whose DLQ holds the rejected rows of a loaded file (in row groups, read by ranged GETs)
    rows = pa.table({"row_number": list(range(1, 50_001)), "source_file": [f"s3://landing/in/{POSTS_CSV}"] * 50_000})
    sink = io.BytesIO()
    pq.write_table(rows, sink, row_group_size=10_000)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="lake")
        s3.put_object(Bucket="lake", Key="dlq/posts/run-1/rejected.parquet", Body=sink.getvalue())

        # WHEN the DLQ is listed, as JSON and as a table
        listed = icegate("dlq", "--lake", "s3://lake", "--json")
        table = icegate("dlq", "--lake", "s3://lake")

    # THEN the entry names the source file, and what it has not (an error type) is null
    assert listed.exit_code == 0, listed.output
    (entry,) = json.loads(listed.output)
    assert entry == {
        "kind": "rows_rejected",
        "dataset": "posts",
        "run_id": "run-1",
        "file": POSTS_CSV,
        "stage": "validate",
        "error_type": None,
        "message": f"{POSTS_CSV} loaded; 50000 rejected rows in s3://lake/dlq/posts/run-1/rejected.parquet",
        "uri": "s3://lake/dlq/posts/run-1/rejected.parquet",
    }
    assert POSTS_CSV in table.output


def test_a_missing_bucket_is_one_line() -> None:
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="another-bucket")

        result = icegate("dlq", "--lake", "s3://no-such-bucket")

    assert_fails_cleanly(result, "s3://no-such-bucket/dlq: S3 LIST: the object does not exist (NoSuchBucket)")


def test_missing_aws_credentials_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN no AWS credentials anywhere (and no instance metadata to ask)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # no credentials cached by an earlier test

    # WHEN a command reads an S3 lake  THEN botocore's error is the one line
    result = icegate("dlq", "--lake", "s3://some-bucket")

    assert_fails_cleanly(result, "S3: Unable to locate credentials")


# --- run: never ingest what icegate wrote ----------------------------------------------------------


@pytest.fixture
def used_lake(lake: Path) -> Path:
    """A lake after a good file loaded and a bad one was dead-lettered (tables, metadata, DLQ records)."""
    result = icegate("run", str(SAMPLES / RESTAURANTS_CSV), str(SAMPLES / MISSING_COLUMNS), "--lake", str(lake))
    assert result.exit_code == 1, result.output
    assert len(dlq_errors(lake)) == 1
    return lake


def test_running_the_lake_root_skips_its_own_folders(used_lake: Path) -> None:
    """Regression: `icegate run lake` dead-lettered every warehouse, metadata and DLQ file it found."""
    # GIVEN a used lake with one new file in its landing folder
    (used_lake / "landing").mkdir()
    shutil.copy(SAMPLES / POSTS_CSV, used_lake / "landing" / POSTS_CSV)

    # WHEN the whole lake root is run
    result = icegate("run", str(used_lake), "--lake", str(used_lake))

    # THEN only the landing file ran, nothing new was dead-lettered, and the skip is reported
    assert result.exit_code == 0, result.output
    assert len(dlq_errors(used_lake)) == 1
    assert "files icegate wrote (warehouse/" in result.output
    assert "catalog.db 1" in result.output


def test_rerunning_a_dlq_folder_runs_its_source_but_not_icegates_records(used_lake: Path) -> None:
    """Regression: a rerun of a DLQ folder dead-lettered its own error.json and rejected.parquet."""
    # GIVEN the DLQ folder of the dead-lettered file
    (entry,) = dlq_errors(used_lake)
    folder = Path(str(entry["dead_letter_uri"])).parent

    # WHEN it is run again
    result = icegate("run", str(folder), "--lake", str(used_lake))

    # THEN the source ran again (and, still bad, went back to the DLQ for the same reason) ...
    assert result.exit_code == 1, result.output
    errors = dlq_errors(used_lake)
    assert {e["error_type"] for e in errors} == {"SchemaMismatch"}, "error.json itself was not ingested"
    # ... and the skip of its error.json is reported
    assert "skipped 1 file icegate wrote (dlq/ 1)" in result.output


@pytest.mark.parametrize("inside", ["warehouse", "catalog.db", "dlq/posts"], ids=str)
def test_paths_inside_another_lake_are_recognised_by_its_catalog(used_lake: Path, tmp_path: Path, inside: str) -> None:
    """A lake is known by its catalog.db even when --lake names a different one."""
    found = local_sources([used_lake / inside], lake_root=tmp_path / "elsewhere")

    assert found.own, "something was skipped"
    assert all(where.rstrip("/") in inside for _, where in found.own)
    assert not any(Path(f.key).name in ("error.json", "rejected.parquet") for f in found.files)
    if inside.startswith("dlq"):
        assert [Path(f.key).name for f in found.files] == [MISSING_COLUMNS], "a DLQ folder reruns its source"
    else:
        assert found.files == []


def test_a_plain_folder_of_files_is_still_ingested_whole(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(SAMPLES / POSTS_CSV, folder / POSTS_CSV)
    shutil.copy(SAMPLES / RESTAURANTS_CSV, folder / "nested" / RESTAURANTS_CSV)
    (folder / "notes.txt").write_text("x")
    (folder / "error.json").write_text("{}")  # a user's file of that name: not in a DLQ layout

    found = local_sources([folder], lake_root=tmp_path / "lake")

    assert sorted(Path(f.key).name for f in found.files) == sorted([POSTS_CSV, RESTAURANTS_CSV, "error.json"])
    assert found.unsupported == [str(folder / "notes.txt")]
    assert found.own == []


def command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed command's entry point, in a process of its own (it leaves the process itself)."""
    script = f"import sys; sys.argv = ['icegate', *{list(args)!r}]; from icegate.cli import entry; entry()"
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "code", "stream", "expected"),
    [
        (("run", "--json", f"samples/{POSTS_CSV}"), 0, "stdout", '"outcome": "loaded"'),
        (("run", "--workers", "0"), 2, "stderr", "Invalid value for '--workers'"),
        (("dlq",), 1, "stderr", "no lake at"),
        (("run", "nowhere", f"samples/{POSTS_CSV}"), 1, "stderr", "Error: no such file or folder: nowhere\n"),
        (("backfill", "nowhere"), 1, "stderr", "Error: no such file or folder: nowhere\n"),
    ],
    ids=[
        "success-prints-all-its-json",
        "usage-error-exits-2",
        "user-error-exits-1",
        "missing-path-is-a-user-error",
        "missing-backfill-folder-is-a-user-error",
    ],
)
def test_the_command_leaves_the_process_with_its_exit_code_and_all_its_output(
    tmp_path: Path, args: tuple[str, ...], code: int, stream: str, expected: str
) -> None:
    # GIVEN a folder with the sample files (and no lake yet)
    shutil.copytree(SAMPLES, tmp_path / "samples")

    # WHEN the command runs to its end, leaving the process without the interpreter's teardown
    done = command(*args, cwd=tmp_path)

    # THEN its exit code is the command's, and what it wrote was flushed before the process ended
    assert done.returncode == code, done.stderr
    assert expected in getattr(done, stream)
    assert "Traceback" not in done.stderr
    if args[:2] == ("run", "--json"):
        assert {f["outcome"] for f in json.loads(done.stdout)["files"]} >= {"loaded"}
