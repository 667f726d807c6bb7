"""The sweep figure's ideal and its judgement of which process limited a run."""

from __future__ import annotations

import pytest

from infra.bench.sweep import MemoryQueue, bottleneck, ideal_seconds


def test_ideal_is_connections_times_latency_over_concurrency() -> None:
    assert ideal_seconds(10_000, 0.05, 10) == pytest.approx(50.0)
    assert ideal_seconds(1_000, 0.05, 10) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="positive"):
        ideal_seconds(10, 0.05, 0)


def test_bottleneck_names_the_saturated_process() -> None:
    assert bottleneck(100.0, bench_cpu=20.0, moto_cpu=95.0).startswith("moto")
    assert bottleneck(100.0, bench_cpu=90.0, moto_cpu=10.0).startswith("bench")
    assert "and" in bottleneck(100.0, bench_cpu=90.0, moto_cpu=90.0)
    assert bottleneck(100.0, bench_cpu=20.0, moto_cpu=None).startswith("provider latency")
    starved = bottleneck(100.0, bench_cpu=20.0, moto_cpu=40.0, machine_busy=0.97)
    assert starved.startswith("the machine's CPU (97% of all cores busy")


def test_memory_queue_hands_out_batches_in_order_and_counts_the_sqs_calls() -> None:
    queue = MemoryQueue("http://queue")
    answer = queue.send_message_batch(
        QueueUrl="http://queue", Entries=[{"Id": str(n), "MessageBody": f"m{n}"} for n in range(12)]
    )
    assert [e["Id"] for e in answer["Successful"]] == [str(n) for n in range(12)]
    assert queue.take(10, wait=0) == [f"m{n}" for n in range(10)]
    assert queue.take(10, wait=0) == ["m10", "m11"]
    assert queue.take(10, wait=0) == []
    assert queue.calls == {"sqs.SendMessageBatch": 1, "sqs.ReceiveMessage": 3, "sqs.DeleteMessageBatch": 2}
    with pytest.raises(ValueError, match="unknown queue"):
        queue.send_message_batch(QueueUrl="http://other", Entries=[])
