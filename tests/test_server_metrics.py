"""The Prometheus exposition text, read back by prometheus_client's own parser (the oracle)."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gptoss.engine import EngineStats
from gptoss.server.metrics import Metrics


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_exposition_parses_and_counts():
    metrics = Metrics(lambda: EngineStats(waiting=3, running=2, kv_blocks_used=5, kv_blocks_total=20))
    metrics.request_done("/v1/chat/completions", 200)
    metrics.request_done("/v1/chat/completions", 200)
    metrics.request_done("/v1/responses", 400)
    metrics.tokens(prompt=10, generated=7)
    for seconds in (0.003, 0.2, 0.2, 100.0):
        metrics.first_token(seconds)
    fams = _families(metrics.render())
    requests = {tuple(sorted(s.labels.items())): s.value for s in fams["gptoss_requests"].samples}
    assert requests[(("endpoint", "/v1/chat/completions"), ("status", "200"))] == 2
    assert requests[(("endpoint", "/v1/responses"), ("status", "400"))] == 1
    assert fams["gptoss_generation_tokens"].samples[0].value == 7
    assert fams["gptoss_prompt_tokens"].samples[0].value == 10
    assert fams["gptoss_queue_depth"].samples[0].value == 3
    assert fams["gptoss_kv_cache_usage_ratio"].samples[0].value == 0.25
    ttft = {s.labels.get("le"): s.value for s in fams["gptoss_time_to_first_token_seconds"].samples
            if s.name.endswith("_bucket")}
    assert ttft["0.005"] == 1 and ttft["0.25"] == 3 and ttft["60.0"] == 3 and ttft["+Inf"] == 4
    count = [s.value for s in fams["gptoss_time_to_first_token_seconds"].samples if s.name.endswith("_count")]
    assert count == [4]


def test_without_engine_gauges():
    fams = _families(Metrics().render())
    assert "gptoss_queue_depth" not in fams and "gptoss_requests" in fams
