"""One typed settings object, read from `BLUEPRINT_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BalancerName = Literal[
    "round_robin",
    "weighted_round_robin",
    "least_connections",
    "least_response_time",
    "p2c_peak_ewma",
    "p2c_expected_latency",
    "consistent_hash",
    "random",
]


class Settings(BaseSettings):
    """Everything a Blueprint process can be told; defaults suit one machine.

    Nested values (dicts) are given as JSON, e.g.
    `BLUEPRINT_BALANCERS='{"diag": "round_robin"}'`.
    """

    model_config = SettingsConfigDict(env_prefix="BLUEPRINT_", extra="ignore", frozen=True)

    # Discovery
    discovery: Literal["redis", "kubernetes", "static", "memory"] = "redis"
    redis_url: str | None = Field(
        default=None, description="Redis for discovery; unset: the one `blueprint up` started"
    )
    redis_prefix: str = Field(default="blueprint", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    lease_ttl_seconds: float = Field(
        default=3.0, gt=0.2, le=300, description="an instance not heard from this long is gone"
    )
    resync_seconds: float = Field(
        default=0.5, gt=0, le=60, description="full re-read of the registry, as pub/sub drops"
    )
    static_endpoints: dict[str, list[str]] = Field(
        default_factory=dict, description='static discovery: {"diag": ["127.0.0.1:50051"]}'
    )
    kubernetes_namespace: str | None = Field(
        default=None, description="kubernetes discovery; unset: the pod's own namespace"
    )
    kubernetes_port_name: str = Field(
        default="grpc", description="the Service port whose EndpointSlice ports are dialled"
    )
    kubernetes_api_url: str | None = Field(
        default=None, description="API server override (tests, kubectl proxy); unset: in-cluster"
    )

    # Serving
    bind_host: str = "127.0.0.1"
    advertise_host: str = Field(default="127.0.0.1", description="the address others dial")
    port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop", description="a server's event loop: libuv's (faster) or the stdlib's"
    )
    instance_id: str | None = None
    ready_file: Path | None = Field(
        default=None,
        description="once serving, the bound ports are written here (JSON), for a supervisor",
    )
    weight: int = Field(default=1, ge=1, le=1000, description="share for weighted balancing")
    drain_grace_seconds: float = Field(
        default=10.0, ge=0, le=300, description="in-flight calls get this long after SIGTERM"
    )
    propagation_seconds: float = Field(
        default=1.0, ge=0, le=60, description="wait after deregistering, so clients notice"
    )
    max_connection_age_seconds: float = Field(
        default=30.0, gt=0, description="re-spreads long-lived connections of mesh-less clients"
    )

    # Overload: the adaptive concurrency limit and its queue (blueprint.mesh.admission)
    admission_enabled: bool = Field(
        default=True, description="shed unary calls over an adaptive concurrency limit"
    )
    admission_min_limit: int = Field(
        default=8,
        ge=1,
        le=100_000,
        description="the limit never goes below this; 1 only for handlers that hold the CPU",
    )
    admission_initial_limit: int | None = Field(
        default=None, ge=1, le=100_000, description="the limit at start; unset: min_limit or 20"
    )
    admission_max_limit: int = Field(default=1000, ge=1, le=100_000)
    admission_tolerance: float = Field(
        default=1.5, gt=1, le=100, description="latency over no-load counted as queueing inside"
    )
    admission_queue_size: int = Field(
        default=100, ge=0, le=100_000, description="calls that may wait for a slot; 0: none"
    )
    admission_queue_interval_seconds: float = Field(
        default=0.1, gt=0, le=10, description="a burst may wait this long (CoDel interval)"
    )
    admission_loop_busy_seconds: float = Field(
        default=0.02, gt=0, le=10, description="event-loop lag from which it has no spare time"
    )
    admission_loop_busy_demand: float = Field(
        default=0.75,
        gt=0,
        le=1,
        description="share of time the loop's thread wants the CPU from which it has no spare time",
    )
    admission_retry_after_max_seconds: float = Field(
        default=5.0, ge=0.05, le=300, description="longest RetryInfo delay a shed call is given"
    )
    admission_shed_rate_target: float = Field(
        default=20.0,
        gt=0,
        description="refusals per second the RetryInfo delay is stretched to hold shedding near",
    )
    admission_queue_target_seconds: float = Field(
        default=0.01, gt=0, le=10, description="the wait under a standing queue (CoDel target)"
    )

    # Health (server side): hard dependencies probed, health and discovery follow.
    health_check_interval_seconds: float = Field(
        default=1.0, gt=0, le=60, description="how often each hard dependency is probed"
    )
    health_check_timeout_seconds: float = Field(
        default=1.0, gt=0, le=60, description="a probe not answered by then has failed"
    )
    health_failures_to_down: int = Field(
        default=2, ge=1, le=100, description="failed probes in a row before NOT_SERVING"
    )

    # Client
    discovery_min_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="a read keeping fewer of the trusted endpoints is held back for a while",
    )
    discovery_hold_seconds: float = Field(
        default=10.0, ge=0, le=600, description="how long such a read is distrusted"
    )
    endpoint_health_watch: bool = Field(
        default=True, description="follow each endpoint's grpc.health.v1 Watch; off: discovery only"
    )
    balancer: BalancerName = "p2c_expected_latency"
    balancers: dict[str, BalancerName] = Field(
        default_factory=dict, description="per target service, overriding `balancer`"
    )
    hash_key_header: str = Field(default="x-blueprint-hash-key", pattern=r"^[a-z0-9_.-]+$")
    default_timeout_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="for a call with no deadline of its own"
    )
    method_timeouts: dict[str, float] = Field(
        default_factory=dict,
        description='per method: {"blueprint.diag.v1.Diagnostics/Work": 70}',
    )

    # Resilience (client side, per target service)
    retry_budget_ratio: float = Field(
        default=0.2, ge=0, le=1, description="retries may add this share of calls (Envoy, Linkerd)"
    )
    retry_budget_min_per_second: float = Field(
        default=5.0, ge=0, description="retries always allowed, so a quiet client can still retry"
    )
    max_attempts: int = Field(default=3, ge=1, le=10, description="first try plus retries")
    retry_backoff_base_seconds: float = Field(default=0.025, gt=0, le=10)
    retry_backoff_max_seconds: float = Field(default=1.0, gt=0, le=60)
    breaker_window: int = Field(default=20, ge=2, le=10_000, description="calls in the window")
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_slow_call_rate: float = Field(default=0.8, gt=0, le=1)
    breaker_slow_call_seconds: float = Field(default=1.0, gt=0)
    breaker_open_seconds: float = Field(default=5.0, gt=0, description="before half-open probes")
    breaker_half_open_probes: int = Field(default=3, ge=1, le=100)
    ejection_consecutive_failures: int = Field(default=5, ge=1)
    ejection_base_seconds: float = Field(default=10.0, gt=0, description="doubles on repeats")
    ejection_max_share: float = Field(default=0.5, ge=0, le=1, description="never eject more")
    bulkhead_max_in_flight: int = Field(default=1000, ge=1, description="per target service")
    hedge_after_seconds: float | None = Field(
        default=None, gt=0, description="hedge idempotent reads after this; unset: off"
    )
    throttle_enabled: bool = Field(
        default=True, description="refuse calls locally while a target refuses many (SRE book)"
    )
    throttle_k: float = Field(
        default=2.0,
        ge=1,
        le=100,
        description="send up to K x the calls a target accepts; lower throttles harder",
    )
    throttle_window_seconds: float = Field(
        default=120.0, gt=0, le=3600, description="requests and accepts are counted this long"
    )

    # Telemetry
    otlp_endpoint: str | None = Field(default=None, description="OTLP/gRPC collector, host:port")
    trace_sampling_ratio: float = Field(default=1.0, ge=0, le=1)
    telemetry_enabled: bool = Field(default=True, description="off: no spans, no RPC metrics")

    # Data (blueprint.infra.sql, ids)
    database_url: str | None = Field(
        default=None,
        description="the writer; postgresql://… or sqlite:///…; unset: <state_dir>/<service>.db",
    )
    database_replica_urls: list[str] = Field(
        default_factory=list, description='read replicas of database_url, JSON: ["postgresql://…"]'
    )
    database_shard_urls: list[str] = Field(
        default_factory=list, description="one writer per shard; unset: one shard, database_url"
    )
    database_shard_replica_urls: list[list[str]] = Field(
        default_factory=list,
        description='replicas per shard, in shard order: [["r0a", "r0b"], ["r1a"]]',
    )
    database_pool_min: int = Field(
        default=5, ge=1, le=1000, description="connections kept open per engine (the guide's 5)"
    )
    database_pool_max: int = Field(
        default=20, ge=1, le=1000, description="connections open at most per engine (guide: 20)"
    )
    database_pool_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="wait for a free pooled connection, then fail"
    )
    database_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    database_command_timeout_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="PostgreSQL: one statement may take this long"
    )
    database_pool_recycle_seconds: float = Field(
        default=1800.0, gt=0, description="replace older connections (proxies drop idle ones)"
    )
    read_your_writes_seconds: float = Field(
        default=5.0, ge=0, le=3600, description="a caller that wrote reads the writer this long"
    )
    database_replica_retry_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="an unreachable replica is skipped this long"
    )
    ids_lease_seconds: float = Field(
        default=10.0, ge=1, le=600, description="worker-id lease TTL in Redis; renewed every third"
    )
    ids_max_clock_backwards_ms: int = Field(
        default=1000,
        ge=0,
        le=60_000,
        description="a clock step back this small is waited out; larger refuses ids",
    )

    # Idempotency keys of mutations (blueprint.infra.idempotency)
    idempotency_lease_seconds: float = Field(
        default=2.0,
        gt=0,
        le=600,
        description="a repeat is ABORTED this long while an attempt works; then it resumes",
    )
    idempotency_retention_seconds: float = Field(
        default=86_400.0,
        ge=60,
        le=30 * 86_400,
        description="a key's first answer is replayed this long (the guide: 24 h)",
    )

    # Queues and workers (blueprint.infra.queue, `blueprint work NAME`)
    worker_handlers: dict[str, str] = Field(
        default_factory=dict,
        description='more `blueprint work` names: {"NAME": "module:attribute"} of a HandlerSpec',
    )
    worker_concurrency: int = Field(
        default=4, ge=1, le=256, description="messages one worker process handles at once"
    )
    worker_color: Literal["blue", "green"] | None = Field(
        default=None, description="this worker's blue-green colour; unset: always consumes"
    )
    worker_live_color_file: Path | None = Field(
        default=None,
        description="holds the live colour; a worker consumes only while it names worker_color",
    )
    worker_live_poll_seconds: float = Field(
        default=2.0, gt=0, le=300, description="how often the live-colour file is read"
    )
    queue_visibility_timeout_seconds: float = Field(
        default=30.0, ge=0.05, le=3600, description="idle this long: taken over by another"
    )
    queue_max_deliveries: int = Field(
        default=5, ge=1, le=1000, description="deliveries before the dead-letter stream"
    )
    queue_retry_base_seconds: float = Field(
        default=1.0, gt=0, le=3600, description="first retry delay; doubles per failure"
    )
    queue_retry_max_seconds: float = Field(default=300.0, gt=0, le=86_400)
    queue_retry_jitter: float = Field(default=0.2, ge=0, lt=1 / 3, description="± share")
    queue_block_seconds: float = Field(
        default=1.0, gt=0, le=60, description="a blocked read returns this often"
    )
    queue_promote_interval_seconds: float = Field(
        default=0.5, gt=0, le=60, description="how often due retries are moved back"
    )
    queue_processed_ttl_seconds: float = Field(
        default=86_400.0, gt=0, description="how long a redelivered message is recognised"
    )
    queue_handler_timeout_seconds: float | None = Field(
        default=300.0, gt=0, description="a handler running longer has failed; unset: none"
    )
    queue_batch_size: int = Field(
        default=100, ge=1, le=1000, description="messages per run of a batch handler"
    )
    queue_depth_interval_seconds: float = Field(
        default=5.0, gt=0, le=300, description="how often a worker samples backlog, lag, DLQ"
    )
    queue_batch_max_wait_seconds: float = Field(
        default=0.05, ge=0, le=10, description="how long a batch that is not full waits for more"
    )

    # Cache (blueprint.infra.cache)
    cache_ttl_seconds: float = Field(default=300.0, gt=0, description="cache-aside entry life")
    cache_ttl_jitter: float = Field(
        default=0.1, ge=0, lt=1, description="± share, so keys filled together expire apart"
    )
    cache_negative_ttl_seconds: float = Field(
        default=30.0, ge=0, description="how long a miss is remembered; 0: not at all"
    )
    cache_stale_seconds: float = Field(
        default=0.0, ge=0, description="serve stale this long while one caller refreshes; 0: off"
    )
    cache_xfetch_beta: float = Field(
        default=1.0, ge=0, description="probabilistic early refresh (XFetch); 0: off"
    )
    cache_lock_ttl_seconds: float = Field(default=5.0, ge=0.01, description="single-flight lock")
    cache_wait_seconds: float = Field(
        default=10.0, gt=0, description="how long a caller waits for another's load"
    )
    cache_near_ttl_seconds: float = Field(
        default=0.0, ge=0, description="in-process near cache for hot keys; 0: off"
    )
    cache_near_max_entries: int = Field(default=1024, ge=1)

    # Shortener (blueprint.shortener): links, pastes, clicks
    shortener_code_scheme: Literal["snowflake", "hash"] = Field(
        default="snowflake",
        description="generated codes: base62 of a Snowflake id, or the guide's hash of the URL",
    )
    shortener_hash_salt: str = Field(
        default="blueprint", min_length=1, description="hash scheme: keeps codes unguessable"
    )
    shortener_max_url_length: int = Field(default=2048, ge=64, le=65_536)
    shortener_max_ttl_days: int = Field(
        default=3650, ge=1, le=36_500, description="longest expiry a link or paste may ask for"
    )
    shortener_near_cache_seconds: float = Field(
        default=1.0, ge=0, le=60, description="in-process copy of hot links; bounds staleness"
    )
    shortener_paste_max_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=3 * 1024 * 1024, description="under gRPC's 4 MiB"
    )
    shortener_paste_inline_max_bytes: int = Field(
        default=32 * 1024, ge=0, description="larger paste bodies go to the blob store"
    )
    shortener_blob_dir: Path | None = Field(
        default=None, description="local blob store; unset: <state_dir>/blobs/shortener"
    )
    shortener_purge_interval_seconds: float = Field(
        default=60.0, ge=0, le=86_400, description="expired links/pastes purge; 0: off"
    )
    shortener_purge_batch: int = Field(default=500, ge=1, le=100_000)
    shortener_max_pending_clicks: int = Field(
        default=10_000, ge=1, description="clicks awaiting publish; beyond: dropped, counted"
    )
    shortener_redis_max_connections: int = Field(default=64, ge=4, le=10_000)

    # Local runs (`blueprint up`)
    replicas: int = Field(default=2, ge=1, le=32)
    state_dir: Path = Path(".blueprint")
    start_timeout_seconds: float = Field(
        default=60.0, gt=0, le=600, description="a replica not ready by then has failed to start"
    )
    restart_backoff_seconds: float = Field(
        default=1.0, gt=0, le=60, description="first wait before a restart; doubles per failure"
    )
    restart_attempts: int = Field(
        default=5, ge=1, le=100, description="failed starts in a row before `up` gives up"
    )

    # Diagnostics service: fault injection for tests and benchmarks.
    diag_slowdown: float = Field(
        default=1.0, ge=0, le=1000, description="multiplies Work durations: a slow replica"
    )
    diag_failure_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of Echo calls answered UNAVAILABLE"
    )
    register_as: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9-]*$",
        description="discovery name to register under instead of the service's own",
    )

    @model_validator(mode="after")
    def _heartbeat_fits_lease(self) -> Settings:
        if self.resync_seconds > self.lease_ttl_seconds:
            raise ValueError("resync_seconds must not exceed lease_ttl_seconds")
        return self

    @model_validator(mode="after")
    def _worker_colour_comes_with_its_file(self) -> Settings:
        if (self.worker_color is None) != (self.worker_live_color_file is None):
            raise ValueError(
                "worker_color and worker_live_color_file are set together or not at all"
            )
        return self

    @model_validator(mode="after")
    def _admission_limits_in_order(self) -> Settings:
        if not self.admission_min_limit <= self.admission_start_limit <= self.admission_max_limit:
            raise ValueError(
                "need admission_min_limit <= admission_initial_limit <= admission_max_limit"
            )
        if self.admission_queue_target_seconds > self.admission_queue_interval_seconds:
            raise ValueError(
                "admission_queue_target_seconds must not exceed admission_queue_interval_seconds"
            )
        return self

    @property
    def admission_start_limit(self) -> int:
        if self.admission_initial_limit is not None:
            return self.admission_initial_limit
        return min(self.admission_max_limit, max(self.admission_min_limit, 20))

    def balancer_for(self, service: str) -> BalancerName:
        return self.balancers.get(service, self.balancer)


def load_or_exit() -> Settings:
    """The settings from the environment, or exit naming every bad BLUEPRINT_* variable
    (for commands: a traceback would bury the one line that matters)."""
    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(
            f"BLUEPRINT_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in error.errors()
        )
        raise SystemExit(f"blueprint: bad settings: {problems}") from None
