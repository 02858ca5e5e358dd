"""The function log store: platform lines (START/END/REPORT) are formatted
at flush time, yet every reader sees them, in the order things happened."""

import asyncio
import json

from runtime.core.logs import LogStore

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
