"""Prometheus metrics of the inference service, in their own registry (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

NAMESPACE = "wattserve"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        kw = {"namespace": NAMESPACE, "registry": self.registry}
        self.requests = Counter("requests", "Generation requests answered, by endpoint and HTTP status",
                                ["endpoint", "status"], **kw)
        self.errors = Counter("request_errors", "Generation requests refused or failed, by endpoint and kind",
                              ["endpoint", "kind"], **kw)
        self.latency = Histogram("request_latency_seconds", "Engine time per generation request",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, **kw)
        self.prompt_tokens = Counter("prompt_tokens", "Prompt tokens processed", **kw)
        self.generated_tokens = Counter("generated_tokens", "Tokens generated", **kw)
        self.in_flight = Gauge("requests_in_flight", "Generation requests being served or queued", **kw)
        self.ready = Gauge("ready", "1 when the model is loaded and warmed up", **kw)
        self.load_seconds = Gauge("model_load_seconds", "Time the engine took to load the model", **kw)
        self.model_info = Gauge("model_info", "The configuration and model this process serves (value 1)",
                                ["config", "engine", "provider", "model", "revision", "precision", "kv_cache"],
                                **kw)
