"""The function log store: platform lines (START/END/REPORT) are formatted
at flush time, yet every reader sees them, in the order things happened."""

import asyncio
import json
import os

from runtime.core.logs import FLUSH_INTERVAL_S, MAX_OPEN_FILES, WRITE_AT, LogStore

RID_A = "11111111-1111-4111-8111-111111111111"
RID_B = "22222222-2222-4222-8222-222222222222"


def _file_lines(store: LogStore, function: str) -> list[dict]:
    store.flush()
    return [json.loads(raw) for raw in (store.root / f"{function}.log").read_bytes().splitlines()]


def test_platform_lines_match_lambda_and_come_before_later_output(tmp_path):
    async def scenario():
        store = LogStore(tmp_path)
        store.begin("fn", RID_A, "$LATEST")
        store.finish("fn", RID_A, 1_234_567, 2, 128, 40, init_us=15_500, error_type="Function.Fail\"ed")
        assert store._deferred, "formatted later, not on the invoke path"
        store.begin("fn", RID_B, "3")
        store.append("fn", RID_B, "stdout", b"hello")
        return store

    store = asyncio.run(scenario())
    lines = _file_lines(store, "fn")
    assert [(d["r"], d["s"], d["m"]) for d in lines] == [
        (RID_A, "platform", f"START RequestId: {RID_A} Version: $LATEST"),
        (RID_A, "platform", f"END RequestId: {RID_A}"),
        (RID_A, "platform", f"REPORT RequestId: {RID_A}\tDuration: 1.23 ms\tBilled Duration: 2 ms\t"
                            "Memory Size: 128 MB\tMax Memory Used: 40 MB\tInit Duration: 15.50 ms\t"
                            "Status: error\tError Type: Function.Fail\"ed"),
        (RID_B, "platform", f"START RequestId: {RID_B} Version: 3"),
        (RID_B, "stdout", "hello"),
    ]
    times = [d["t"] for d in lines]
    assert times == sorted(times)
    # read() sees what is still deferred, through the same flush
    store.begin("fn", RID_B, "3")
    store.finish("fn", RID_B, 1_000, 1, 128, 40)
    read = [line.message for line in store.read("fn", request_id=RID_B)]
    assert read[-2:] == [f"END RequestId: {RID_B}", f"REPORT RequestId: {RID_B}\tDuration: 0.00 ms\t"
                         "Billed Duration: 1 ms\tMemory Size: 128 MB\tMax Memory Used: 40 MB"]


def test_capture_gets_platform_lines_at_once_and_delete_drops_deferred(tmp_path):
    store = LogStore(tmp_path)
    store.begin("gone", RID_B, "$LATEST")
    store.finish("gone", RID_B, 1_000, 1, 128, 1)
    store.delete("gone")
    store.flush()
    assert not (tmp_path / "gone.log").exists(), "a deleted function's deferred lines must not recreate its log"

    store.start_capture(RID_A)
    store.begin("tail", RID_A, "$LATEST")
    store.finish("tail", RID_A, 2_000_000, 2, 256, 7)
    tail = store.end_capture(RID_A)
    assert tail.splitlines() == [f"START RequestId: {RID_A} Version: $LATEST", f"END RequestId: {RID_A}",
                                 f"REPORT RequestId: {RID_A}\tDuration: 2.00 ms\tBilled Duration: 2 ms\t"
                                 "Memory Size: 256 MB\tMax Memory Used: 7 MB"]
    store.close()


def _open_logs(root) -> set[str]:
    """Files under ``root`` this process holds open, from /proc/self/fd."""
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root) + "/"):
            held.add(os.path.basename(target))
    return held


def test_open_files_are_capped_least_recently_written_closed_first_and_nothing_lost(tmp_path):
    store = LogStore(tmp_path)
    names = [f"fn{i}" for i in range(MAX_OPEN_FILES + 40)]
    for name in names:
        store.append(name, RID_A, "stdout", f"first {name}".encode())
    held = _open_logs(tmp_path)
    assert len(held) == MAX_OPEN_FILES, "one descriptor per function ever invoked would grow without bound"
    assert "fn0.log" not in held and f"{names[-1]}.log" in held, held
    # A closed log is reopened and appended to: earlier lines stay, order kept.
    store.append("fn0", RID_B, "stderr", b"second fn0")
    assert "fn0.log" in _open_logs(tmp_path) and "fn1.log" not in _open_logs(tmp_path)
    for name in names:
        want = [f"first {name}"] + (["second fn0"] if name == "fn0" else [])
        assert [d["m"] for d in _file_lines(store, name)] == want, name
    store.close()
    assert _open_logs(tmp_path) == set()


def test_a_quiet_function_holds_no_buffer_and_large_output_is_written_before_the_flush(tmp_path):
    async def scenario():
        store = LogStore(tmp_path)   # in a running loop: lines wait for the timed flush
        store.append("quiet", RID_A, "stdout", b"x" * 1000)
        assert (tmp_path / "quiet.log").stat().st_size == 0, "lines wait for the flush"
        line = b"y" * 64 * 1024
        for _ in range(WRITE_AT // len(line) + 1):
            store.append("loud", RID_B, "stdout", line)
        assert (tmp_path / "loud.log").stat().st_size >= WRITE_AT, "a flood is written as it comes, not held"
        await asyncio.sleep(FLUSH_INTERVAL_S * 2)
        assert (tmp_path / "quiet.log").stat().st_size > 1000, "the timed flush writes what waited"
        assert store._open["quiet"].pending == [], "a flushed log keeps no bytes in the agent"
        store.close()

    asyncio.run(scenario())


def test_platform_records_are_the_same_whether_or_not_someone_reads_them(tmp_path):
    """Platform lines go to the file as bytes; a capture (or a follower)
    also gets their texts. The file must not depend on whether someone
    reads, and the texts read must be the file's, escapes undone."""
    records = [
        ("fn", RID_A, ("$LATEST", 1_700_000_000_123_456_789), 1_700_000_000_987_654_321, 1_234_567, 2, 128, 40,
         15_500, 'Function.Fail"ed\tnaïve'),
        ("fn", RID_B, None, 1_700_000_001_000_000_000, 999, 1, 10240, 0, 0, ""),
        ("fn", RID_A, ("7", 1_700_000_002_000_000_001), 1_700_000_002_500_000_000, 5_000_000, 5, 256, 300, 0,
         "Runtime.ExitError"),
    ]
    for i, record in enumerate(records):
        unread, read = LogStore(tmp_path / f"unread{i}"), LogStore(tmp_path / f"read{i}")
        read.start_capture(record[1])
        unread._write_platform(record)
        read._write_platform(record)
        captured = read.end_capture(record[1]).splitlines()
        unread.flush()
        read.flush()
        written = (unread.root / "fn.log").read_bytes()
        assert written == (read.root / "fn.log").read_bytes()
        assert captured == [json.loads(line)["m"] for line in written.splitlines()]
        assert captured[-1].endswith(("Error Type: " + record[9]) if record[9] else "Max Memory Used: %d MB" % record[7])
        unread.close()
        read.close()
