"""Every setting once: its name, its environment variable, its default and its meaning.

One `Settings` object holds them, read from the environment once: by `definitions.py` when the
Dagster code location is built (`dg check defs`, `dagster dev`, the code server), or by a
command of the command line, which then changes it with its flags (`Settings.replace`) and hands
it to the definitions builder; nothing writes the environment to pass a value on.

A group of settings is one small declaration: a `SettingsGroup` subclass whose fields are the
settings (default and one-line meaning in `Field`), the environment variable being VELOCITY_ and
the field's name in capitals unless `env(...)` names another. The README's configuration table is
`configuration_table()` (velocity_platform_tests/test_settings.py holds the two equal).

Secrets (the bearer tokens, the alert webhook's URL) are never held here: the resources read them
through `dg.EnvVar` at run time. They are declared in SECRETS, for the table and for the resources.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from velocity_platform.connectors.object_store import VARIABLES as LAKE_BUCKET_VARIABLES
from velocity_platform.connectors.object_store import check_lake_uri
from velocity_platform.domain.labor import LaborModel
from velocity_platform.domain.policies import HYSTERESIS_DAYS, SpikePolicy

PREFIX = "VELOCITY_"

# The nightly batch starts at this local hour for the business date that just ended (not a setting:
# the schedule, the freshness policy and the batch-window check agree on it).
NIGHTLY_START_HOUR = 2

# XYZ judges a SKU's predictability by the CV of its weekly demand over the weeks it could have
# sold in (docs/architecture.md). Below this many weeks the SKU is "not yet classified". Eight
# of the twelve weeks: on the Online Retail history, for the SKUs with twelve weeks on sale, the
# class from the last n weeks agrees with the twelve-week class for 87.6% / 86.5% of them at
# n = 8 (D = 2011-06-30 / 2011-09-30), 80.1% / 78.5% at 6 and 68.9% / 65.1% at 4; below about
# six weeks one SKU in four or five would carry a class its next weeks overturn.
# velocity_platform_tests/evaluation/test_signals_on_real_history.py measures it again.
XYZ_MIN_WEEKS = 8

# Read by the resources through dg.EnvVar, never held by Settings: variable -> meaning.
SECRETS = {
    "VELOCITY_ERP_TOKEN": "ERP bearer token, a secret: read through `dg.EnvVar` (`erp-dev-token` under make)",
    "VELOCITY_WMS_TOKEN": "WMS bearer token, a secret: read through `dg.EnvVar` (`wms-dev-token` under make)",
    "VELOCITY_ALERT_WEBHOOK_URL": "where failed gates and failed runs are posted as JSON; a secret (it may embed a "
    "token): read through `dg.EnvVar`",
    "VELOCITY_CELERY_BROKER_URL": "the Celery workers' RabbitMQ broker when VELOCITY_EXECUTOR=celery, "
    "`amqp://USER:PASSWORD@HOST:5672//`; a secret (it holds the password): read from the environment by the "
    "executor (config `env:`) and by `velocity-platform worker`, printed masked",
}
ERP_TOKEN_ENV, WMS_TOKEN_ENV, ALERT_WEBHOOK_ENV, CELERY_BROKER_ENV = SECRETS


class SettingsError(ValueError):
    """A setting the environment (or a flag) gives a value it cannot take: one line, naming the variable."""


def env(variable: str) -> AliasChoices:
    """The environment variable of a setting whose name differs from its field's.

    The field's own name stays usable in code (`Settings(timezone=...)`); only the variable is read
    from the environment."""
    return AliasChoices(variable)


class SettingsGroup(BaseSettings):
    """A group of settings read from the environment: VELOCITY_<FIELD> unless `env()` says otherwise;
    an empty variable counts as unset."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_ignore_empty=True, extra="ignore", frozen=True, populate_by_name=True
    )
    # Shown in the README table's default column where the default is worked out, not a value.
    shown_defaults: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_env(cls, **overrides: Any):
        """The group from the environment, `overrides` winning; a bad value is a SettingsError."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise SettingsError(_one_line(cls, exc)) from None

    def replace(self, **changes: Any):
        """A copy with `changes` (validated as the environment's values are)."""
        try:  # model_validate reads no environment: every value is given
            return type(self).model_validate({**dict(self), **changes})
        except ValidationError as exc:
            raise SettingsError(_one_line(type(self), exc)) from None

    @classmethod
    def variable(cls, name: str) -> str:
        alias = cls.model_fields[name].validation_alias
        return alias.choices[0] if isinstance(alias, AliasChoices) else f"{cls.model_config['env_prefix']}{name.upper()}"

    @classmethod
    def settings(cls) -> dict[str, FieldInfo]:
        """The settings of this group (the nested groups aside)."""
        return {
            name: info
            for name, info in cls.model_fields.items()
            if not (isinstance(info.annotation, type) and issubclass(info.annotation, SettingsGroup))
        }


def _one_line(group: type[SettingsGroup], exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        field = next((f for f in group.model_fields if name in (f, group.variable(f))), None)
        variable = group.variable(field) if field else name
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{variable}={error['input']!r}: {message}" if variable and "input" in error else message)
    return "; ".join(problems)


def resource_field(group: type[SettingsGroup], name: str) -> Any:
    """A resource field with the setting's default and meaning: a resource configured in the UI
    shows the same default and description, declared once, here."""
    info = group.model_fields[name]
    return Field(default=info.default, description=info.description)


# --- the groups -----------------------------------------------------------------------------------


class OperationsSettings(SettingsGroup):
    """Thresholds of the gates and signals, the nightly retries, and what the sensors and alerts need."""

    ingestion_success_min: float = Field(
        0.9995, description="Gate: share of the ERP's lines for a date that must arrive as readable lines"
    )
    pareto_tolerance: float = Field(
        0.20, description="Signal: how far a class's share of SKUs may sit from the 20/30/50 Pareto shape"
    )
    # On the Online Retail history class shares move at most 1.1 points on a normal day; 4.5 and
    # 3.1 the days its one 74,215-unit line entered and left the 30-day window.
    pareto_shift_max: float = Field(
        0.025, description="Signal: how far a class's share of SKUs may move from one day to the next"
    )
    day_on_day_factor: float = Field(
        3.0,
        description="Signal: a SKU's 30-day velocity changing by more than this factor in a day counts as changed; "
        "the signal fires when more SKUs change than on a usual day",
    )
    batch_window_hours: float = Field(
        4.0, gt=0, lt=24, description="Signal: hours after the 02:00 start by which the nightly batch must land"
    )
    retry_first_delay_s: float = Field(
        60.0,
        validation_alias=env("VELOCITY_RETRY_FIRST_DELAY_SECONDS"),
        description="Nightly run: wait before retrying a step an ERP outage failed (then doubled)",
    )
    retry_max_delay_s: float = Field(
        900.0,
        validation_alias=env("VELOCITY_RETRY_MAX_DELAY_SECONDS"),
        description="Nightly run: longest wait between two retries of a step inside the batch window",
    )
    delta_max_records: int = Field(
        200_000, description="Sensor: ERP records read per tick at most; the rest waits for the next tick"
    )
    ui_base_url: str = Field("http://127.0.0.1:3000", description="Base URL of the Dagster UI, for the run links in alerts")

    @field_validator("ui_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")


class SourceSettings(SettingsGroup):
    """Where order lines come from."""

    source: Literal["erp", "file"] = Field(
        "erp", description="Where order lines come from: `erp` (the HTTP API) or `file` (a file-drop export)"
    )
    file_path: str | None = Field(
        None, description="The export read when VELOCITY_SOURCE=file (CSV or Parquet, plain or .gz)"
    )
    file_preset: str = Field("online-retail", description="Column mapping of the export: `online-retail`, `online-retail-network` or `erp-lines`")
    default_unit_cube_ft3: float = Field(
        0.1, description="Unit cube given to SKUs whose source has none (flagged `cube_is_default`)"
    )
    # Bounds on what one export may hold, so a bad file costs a one-line refusal or a dead letter,
    # not the machine's memory (a file is held whole while it is mapped: about 4x its size in RSS).
    file_max_bytes: int = Field(
        256 * 2**20, ge=1, description="Largest export read, in bytes once decompressed (the Online Retail export is 45 MB)"
    )
    file_max_line_bytes: int = Field(
        1 * 2**20, ge=1, description="Longest line of a CSV export, in bytes; a longer one is dead-lettered, the rest read"
    )
    file_max_columns: int = Field(1000, ge=1, description="Most columns an export's header may name")

    @field_validator("source", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _file_needs_a_path(self) -> SourceSettings:
        if self.source == "file" and not self.file_path:
            raise ValueError("VELOCITY_SOURCE=file needs VELOCITY_FILE_PATH (the export to read)")
        return self


class SlottingSettings(SettingsGroup):
    """How slotting prices a location (the pick routing) and a move (the labor model; its defaults are the
    domain's LaborModel's)."""

    shown_defaults: ClassVar[dict[str, str]] = {"level_handling_s": "2.2,0,0,1.5"}

    routing: Literal["s-shape", "return", "largest-gap"] = Field(
        "s-shape", description="Pick routing slotting prices locations under: `s-shape`, `return` or `largest-gap`"
    )

    price_on: Literal["target", "reachable"] = Field(
        "target",
        description="What a move's walking saving is measured on: the `target` slotting, or the `reachable` one the "
        "moves that pay lead to (docs/slotting.md, priced against realised)",
    )

    walk_speed_m_s: float = Field(
        LaborModel.walk_speed_m_s, gt=0, description="Picker walking speed in m/s (prices travel saved in hours)"
    )
    move_minutes: float = Field(
        LaborModel.move_minutes, ge=0, description="Labor of one relocation, in minutes (a new SKU's first slot costs none)"
    )
    payback_horizon_days: float = Field(
        LaborModel.payback_horizon_days,
        gt=0,
        description="Days of expected saving a relocation may count on to repay its labor",
    )
    replenish_minutes: float = Field(
        LaborModel.replenish_minutes,
        ge=0,
        description="Labor of one replenishment trip (reserve to pick face), in minutes; counted for baseline and platform alike",
    )
    level_handling_s: Annotated[tuple[float, ...], NoDecode] = Field(
        LaborModel.level_handling_s,
        description="Extra seconds a pick line takes on each level, floor first, comma-separated (golden zone 0; "
        "floor: MTM-1 bend and arise; top: an assumed reach; docs/slotting.md)",
    )

    @field_validator("level_handling_s", mode="before")
    @classmethod
    def _seconds_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = tuple(float(v) for v in value.split(",") if v.strip())
            except ValueError:
                raise ValueError("give seconds per level, floor first, comma-separated (e.g. 2.2,0,0,1.5)") from None
        if isinstance(value, (tuple, list)) and (not value or min(value) < 0):
            raise ValueError("give one or more seconds >= 0")
        return value

    @property
    def labor(self) -> LaborModel:
        return LaborModel(
            self.walk_speed_m_s, self.move_minutes, self.payback_horizon_days, self.replenish_minutes, self.level_handling_s
        )


class HttpSettings(SettingsGroup):
    """How the ERP and WMS clients talk HTTP (one value for both upstreams; the UI can set each resource)."""

    model_config = SettingsConfigDict(env_prefix=f"{PREFIX}HTTP_")

    timeout_s: float = Field(30.0, description="HTTP: per-request timeout in seconds (connect, read, write)")
    max_attempts: int = Field(6, description="HTTP: attempts per request, the first included")
    initial_backoff_s: float = Field(
        0.2, validation_alias=env("VELOCITY_HTTP_BACKOFF_S"), description="HTTP: backoff scale: waits are random in [0, s * 2^n]"
    )
    max_backoff_s: float = Field(10.0, description="HTTP: longest wait between attempts (Retry-After aside)")
    requests_per_second: float = Field(
        50.0, validation_alias=env("VELOCITY_HTTP_RATE_LIMIT_RPS"), description="HTTP: ceiling of requests per second; 0 = none"
    )
    max_concurrent_requests: int = Field(
        4, validation_alias=env("VELOCITY_HTTP_MAX_CONCURRENCY"), description="HTTP: requests in flight at once to one upstream"
    )
    breaker_fail_max: int = Field(8, description="HTTP: consecutive failed requests that open the circuit breaker")
    breaker_reset_s: float = Field(30.0, description="HTTP: cool-down before the breaker lets a trial request through")
    max_response_bytes: int = Field(64 * 1024 * 1024, description="HTTP: cap on one response body, in bytes")
    page_limit: int = Field(
        250,
        description="HTTP: records asked for on a listing's first pages (a demo day is ~1,500 ERP documents: a sixth of a day per page; docs/reliability.md)",
    )
    page_limit_max: int = Field(
        5000,
        description="HTTP: the page size a long listing grows to (doubling every 8 pages from page_limit), so a large day is not held at the request ceiling",
    )


class Settings(SettingsGroup):
    """The platform's settings: where things are, the warehouse, and the groups above."""

    state_dir: Path = Field(Path(".velocity"), description="Where local state lives when the paths below are not set")
    dagster_home: Path | None = Field(
        None,
        validation_alias=env("DAGSTER_HOME"),
        description="Dagster's instance (Dagster's own variable); `dagster.yaml` here is the template copied into it",
    )
    erp_url: str = Field("http://127.0.0.1:8710", description="Base URL of the ERP API")
    wms_url: str = Field("http://127.0.0.1:8720", description="Base URL of the WMS API")
    table_store: Literal["lake", "duckdb-file"] = Field(
        "lake",
        description="Where the asset tables live: `lake` (Delta tables at VELOCITY_LAKE_PATH, many writers) "
        "or `duckdb-file` (one DuckDB file at VELOCITY_DUCKDB_PATH, one writer at a time)",
    )
    lake_path: str | None = Field(
        None,
        description="The lake: a folder holding one Delta table per asset, or an S3-compatible bucket every worker reaches "
        "(`s3://BUCKET/PREFIX`, endpoint and keys from the AWS_* variables)",
    )
    duckdb_path: str | None = Field(None, description="DuckDB file holding the asset tables when VELOCITY_TABLE_STORE=duckdb-file")
    lake_retain_days: int = Field(
        30, ge=0, description="Days of table versions the weekly lake vacuum keeps (the versions directive batches record stay readable)"
    )
    store_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the operational store (watermarks, WMS outbox, push log); "
        "`postgresql+psycopg2://...` in production",
    )
    timezone: str = Field(
        "Europe/London",
        validation_alias=env("VELOCITY_WAREHOUSE_TZ"),
        description="IANA time zone of the warehouse; business dates are days in this zone",
    )
    first_partition_date: dt.date = Field(
        dt.date(2025, 1, 1),
        description="First business date of the daily partitions (`run --source file` moves it back to `--from`)",
    )
    backfill_days_per_run: int = Field(
        30, ge=1, description="Business dates a backfill runs together in one run, oldest range first"
    )
    move_budget: int = Field(200, ge=0, description="Maximum slotting moves per day (a cap, not a target)")
    hysteresis_days: int = Field(
        HYSTERESIS_DAYS,
        ge=0,
        description="Days a relocated SKU is left alone by the planner; the thrash signal's window",
    )
    dlq_rate_max: float = Field(
        0.001, gt=0, le=1, description="Gate: most dead-lettered lines a date may have, as a share of its lines"
    )
    xyz_min_weeks: int = Field(XYZ_MIN_WEEKS, ge=1, description="Whole weeks on sale a SKU needs before it gets an XYZ class")
    wms_push_batch_size: int = Field(
        100, ge=1, le=500, description="Directives per request to the WMS's batch endpoint (at most 500)"
    )
    run_memo_mb: float = Field(
        512.0, ge=0, description="Small frames a run hands from step to step in memory, in MB (the rest is read back)"
    )
    executor: Literal["in-process", "celery"] = Field(
        "in-process",
        description="How a run executes its steps: `in-process` (one process, one machine, nothing to start) or "
        "`celery` (each step a task on the Celery workers `velocity-platform worker` starts; needs "
        "VELOCITY_CELERY_BROKER_URL and Dagster's storage on PostgreSQL)",
    )
    celery_queue: str = Field(
        "dagster",
        description="The Celery queue the runs' steps are sent to and `velocity-platform worker` listens on "
        "(VELOCITY_EXECUTOR=celery; `dagster` is dagster-celery's own default)",
    )
    # Whether VELOCITY_ALERT_WEBHOOK_URL is set; its value (a secret) is dropped as it is read.
    alert_webhook_set: bool = Field(False, validation_alias=env(ALERT_WEBHOOK_ENV), exclude=True)
    # The same for the broker URL (it holds the broker's password).
    celery_broker_set: bool = Field(False, validation_alias=env(CELERY_BROKER_ENV), exclude=True)

    # The groups, each read from the environment with the rest (no variable holds a group itself).
    operations: OperationsSettings = Field(default_factory=OperationsSettings.from_env)
    order_source: SourceSettings = Field(default_factory=SourceSettings.from_env)
    slotting: SlottingSettings = Field(default_factory=SlottingSettings.from_env)
    http: HttpSettings = Field(default_factory=HttpSettings.from_env)

    shown_defaults: ClassVar[dict[str, str]] = {
        "dagster_home": ".velocity/dagster_home",
        "lake_path": ".velocity/lake",
        "duckdb_path": ".velocity/velocity.duckdb",
        "store_url": "sqlite:///.velocity/operational.sqlite",
    }
    # Tokens of the local simulators a command started (`demo`, `run --source file`): development
    # tokens, not secrets, used instead of the token variables. Never read from the environment.
    _stand_in_tokens: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("alert_webhook_set", "celery_broker_set", mode="before")
    @classmethod
    def _only_whether_set(cls, value: Any) -> bool:
        return bool(value.strip()) if isinstance(value, str) else bool(value)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (like Europe/London)") from None
        return value

    @model_validator(mode="after")
    def _paths_under_the_state_dir(self) -> Settings:
        state = self.state_dir.resolve()
        object.__setattr__(self, "state_dir", state)
        object.__setattr__(self, "dagster_home", (self.dagster_home or state / "dagster_home").resolve())
        if self.duckdb_path is None:
            object.__setattr__(self, "duckdb_path", str(state / "velocity.duckdb"))
        if self.lake_path is None:
            object.__setattr__(self, "lake_path", str(state / "lake"))
        else:
            check_lake_uri(self.lake_path)
        if self.store_url is None:
            object.__setattr__(self, "store_url", f"sqlite:///{state / 'operational.sqlite'}")
        if self.executor == "celery" and not self.celery_broker_set:
            # Without it both dagster-celery ends fall back to a guest broker on localhost, which on
            # a worker host is not the deployment's broker: the steps would wait on a queue nobody reads.
            raise ValueError(f"VELOCITY_EXECUTOR=celery needs {CELERY_BROKER_ENV} (the RabbitMQ broker the workers read)")
        if self.executor == "celery" and self.table_store != "lake":
            # Steps of one run on several workers write at once; a DuckDB file has one writer.
            raise ValueError("VELOCITY_EXECUTOR=celery needs VELOCITY_TABLE_STORE=lake (a DuckDB file has one writer)")
        return self

    def replace(self, **changes: Any) -> Settings:
        replaced = super().replace(**changes)
        replaced._stand_in_tokens = dict(self._stand_in_tokens)
        return replaced

    def with_stand_in_tokens(self, **tokens: str) -> Settings:
        """The same settings, with the development token of a simulator this command started
        (variable -> token) used instead of the variable."""
        copy = self.model_copy()
        copy._stand_in_tokens = {**self._stand_in_tokens, **tokens}
        return copy

    def token(self, variable: str) -> str | None:
        """The stand-in token for `variable`, if a command set one (else the resource reads the variable)."""
        return self._stand_in_tokens.get(variable)



# --- the exception service (velocity-platform deltas) ---------------------------------------------


class DeltaServiceSettings(SettingsGroup):
    """How the resident exception service follows the ERP and feeds the WMS (docs/deltas.md)."""

    model_config = SettingsConfigDict(env_prefix=f"{PREFIX}DELTAS_")

    metrics_port: int = Field(9464, ge=0, description="Exception service: port of its Prometheus /metrics on 127.0.0.1 (0: none)")
    long_poll_s: float = Field(
        5.0,
        ge=0,
        description="Exception service: how long the ERP may hold an empty read until a commit arrives "
        "(0: the ERP does not offer long polling; the service polls with backoff)",
    )
    min_interval_s: float = Field(
        0.005, gt=0, description="Exception service: pause after an empty read, doubled on each one after it"
    )
    max_interval_s: float = Field(1.0, gt=0, description="Exception service: longest pause between two reads of an idle ERP")
    max_pages: int = Field(20, ge=1, description="Exception service: ERP pages read per round at most (the rest in the next round)")
    queue_batches: int = Field(
        64, ge=1, description="Exception service: batches of exceptions waiting for the WMS before reading pauses"
    )
    push_concurrency: int = Field(4, ge=1, description="Exception service: requests to the WMS in flight at once")
    # Not the nightly run's VELOCITY_HTTP_RATE_LIMIT_RPS (50): the service has one ERP read in
    # flight at a time (a long poll that returns when something is committed) and at most
    # push_concurrency WMS requests, so it cannot flood either; a 50/s ceiling put a 20 ms floor
    # under every read and tripled the p95 (docs/performance.md).
    requests_per_second: float = Field(
        0.0, ge=0, description="Exception service: ceiling of requests per second to the ERP and to the WMS; 0 = none"
    )
    report_interval_s: float = Field(
        10.0, gt=0, description="Exception service: seconds of batches summed into one runless event on exception_deltas"
    )
    reference_refresh_s: float = Field(
        300.0, gt=0, description="Exception service: how often it re-reads locations and assignments (expected rates: when the nightly tables change)"
    )
    # The spike rule's defaults are the domain's SpikePolicy (measured on real order history).
    spike_multiple: float = Field(
        SpikePolicy.multiple,
        gt=0,
        description="Exception service: eaches ordered today above this multiple of the SKU's largest day of the 90 before is a spike",
    )
    spike_min_units: float = Field(
        SpikePolicy.min_units, ge=0, description="Exception service: fewer eaches today than this are never a spike"
    )
    spike_min_days_sold: int = Field(
        SpikePolicy.min_days_sold,
        ge=1,
        description="Exception service: SKUs sold on fewer of the last 90 days have no range yet and never spike",
    )
    start: dt.datetime | None = Field(
        None,
        description="Exception service: ERP commit time to start reading from when the store has no watermark yet "
        "(ISO-8601 with a zone; default: the moment it first starts)",
    )

    @field_validator("start")
    @classmethod
    def _with_a_zone(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a time zone offset, e.g. 2026-03-01T00:00:00Z")
        return value

    @model_validator(mode="after")
    def _intervals_in_order(self) -> DeltaServiceSettings:
        if self.min_interval_s > self.max_interval_s:
            raise ValueError("VELOCITY_DELTAS_MIN_INTERVAL_S must not exceed VELOCITY_DELTAS_MAX_INTERVAL_S")
        return self



GROUPS: tuple[type[SettingsGroup], ...] = (Settings, SourceSettings, SlottingSettings, OperationsSettings, HttpSettings, DeltaServiceSettings)


def _shown_default(group: type[SettingsGroup], name: str, info: FieldInfo) -> str:
    if name in group.shown_defaults:
        return f"`{group.shown_defaults[name]}`"
    value = info.default
    if value is None:
        return "none"
    if isinstance(value, dt.date):
        value = value.isoformat()
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, int) and value >= 10_000:
        value = f"{value:_}"
    return f"`{value}`"


def configuration_rows() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) of every setting, then of every secret."""
    rows = []
    for group in GROUPS:
        for name, info in group.settings().items():
            if info.exclude:
                continue
            rows.append((group.variable(name), _shown_default(group, name, info), info.description or ""))
    rows += [(variable, "none", meaning) for variable, meaning in SECRETS.items()]
    rows += [(variable, default, meaning) for variable, (default, meaning) in LAKE_BUCKET_VARIABLES.items()]
    return rows


def configuration_table() -> str:
    """The README's configuration table, in markdown."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{variable}` | {default} | {meaning} |" for variable, default, meaning in configuration_rows()]
    return "\n".join(lines)


if __name__ == "__main__":  # `python -m velocity_platform.settings` prints the README's table
    print(configuration_table())

