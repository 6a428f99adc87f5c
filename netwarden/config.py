"""The service's configuration: one YAML file, environment overrides, every option documented.

``netwarden serve --config FILE`` reads the file; any option can be overridden from the
environment as ``NETWARDEN_<SECTION>__<OPTION>`` (for example ``NETWARDEN_API__PORT=9090`` or
``NETWARDEN_ALERTS__ALERTMANAGER_URL=http://127.0.0.1:9093``), which wins over the file.
``netwarden serve --print-config`` prints every option with its default and meaning, generated
from the models below, so the documentation cannot drift from the code.

This is the one reader of ``NETWARDEN_*`` variables: the API token list
(``NETWARDEN_API_TOKENS``, the ``api_tokens`` option) included; the service hands what it read
to the parts that need it. Window length and lateness are :class:`WindowConfig`'s: their
defaults and ranges come from there, and :attr:`ServiceConfig.window_config` builds the one
``WindowConfig`` of the service.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from netwarden.detector.drift_config import RANGES as _DRIFT_RANGES
from netwarden.detector.drift_config import DriftConfig
from netwarden.ingest.windows import WindowConfig
from netwarden.validation import check_ranges

__all__ = ["ConfigError", "ServiceConfig", "defaults_yaml", "load_config"]


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message says where and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Section):
    spec: str = Field(
        "generator",
        description=(
            'where flows come from: "generator" (built-in traffic in real time), "hubble" (Hubble\'s '
            'gRPC API, see the hubble section; "hubble:HOST:PORT" or "hubble:/path/hubble.sock" '
            'names the server), "ebpf" (netwarden\'s own kernel probes, see the ebpf section; root), '
            '"-" (stdin), or a file path (followed like tail -F; "file:PATH" '
            "also works)"
        ),
    )
    from_start: bool = Field(
        True,
        description="a followed file is read from its start "
        "(false: only lines appended after startup)",
    )


class HubbleConfig(_Section):
    server: str = Field(
        "unix:///var/run/cilium/hubble.sock",
        description=(
            "Hubble server for the hubble source: a Cilium agent's socket, or Hubble Relay as "
            "host:port (port 4245)"
        ),
    )
    tls: bool = Field(False, description="connect with TLS (implied by any tls_* option)")
    tls_ca: Path | None = Field(
        None, description=("CA certificate that signed the server's (default: the system's roots)")
    )
    tls_cert: Path | None = Field(None, description="client certificate, for mutual TLS")
    tls_key: Path | None = Field(None, description="client private key, for mutual TLS")
    tls_server_name: str | None = Field(
        None,
        description=(
            "name to check in the server's certificate instead of the host, e.g. "
            "ui.hubble-relay.cilium.io"
        ),
    )
    namespaces: list[str] = Field(
        default_factory=list, description=("only flows from or to these namespaces (empty: all)")
    )
    verdicts: list[str] = Field(
        default_factory=list,
        description=("only flows with these verdicts, e.g. [DROPPED, AUDIT] (empty: all)"),
    )
    since: str | None = Field(
        None,
        description=(
            "on the first connect, also read buffered flows this far back (5m, 1h) or since this "
            "RFC 3339 time (unset: only new flows)"
        ),
    )
    backoff_initial: float = Field(
        0.5, gt=0, description=("seconds before the first reconnect attempt (doubling, jittered)")
    )
    backoff_max: float = Field(
        30.0, gt=0, description="longest wait between reconnect attempts (seconds)"
    )
    resume_overlap: float = Field(
        2.0,
        ge=0,
        le=3600,
        description=(
            "after a reconnect, ask again for flows this many seconds before the newest one seen "
            "(out-of-order arrivals); the ones already read are skipped"
        ),
    )


class EbpfConfig(_Section):
    node_name: str | None = Field(
        None, description=("node name put on the agent's flows (default: this host's name)")
    )
    identity_map: Path | None = Field(
        None,
        description=(
            "YAML identity map: namespaces, pods and labels by network namespace, cgroup or IP, "
            "for hosts without Kubernetes (see netwarden.bpf.identitymap)"
        ),
    )
    kubernetes: str = Field(
        "auto",
        description=(
            'pod identities from the Kubernetes API: "auto" (in-cluster when running in a pod), '
            '"off", or the path of a kubeconfig file'
        ),
    )

    @field_validator("kubernetes", mode="before")
    @classmethod
    def _kubernetes(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads an unquoted `off` as false

    udp_peers: bool = Field(
        True,
        description=(
            "cgroup hooks that tell the peers of unconnected UDP sockets (false: they are "
            "reported as 0.0.0.0:0)"
        ),
    )
    cgroup_root: Path | None = Field(
        None,
        description=(
            "the host's cgroup v2 root: where the UDP peer hooks attach and sockets' cgroups are "
            "looked up to find their pods (default: this process's cgroup2 mount; in a container, "
            "a mount of the host's /sys/fs/cgroup)"
        ),
    )


class GeneratorConfig(_Section):
    seed: int = Field(7, description="random seed of the generated cluster and traffic")
    rate: float = Field(1.0, gt=0, description="traffic volume factor (1.0 = about 14 flows/s)")
    speed: float = Field(1.0, gt=0, description="event time per wall-clock time (1.0 = real time)")
    attacks: list[str] = Field(
        default_factory=list,
        description=(
            "scenarios to inject, cycling (empty: every scenario; see `netwarden generate --help`)"
        ),
    )
    first_attack_after: float = Field(30.0, ge=0, description="seconds before the first attack")
    attack_every: float = Field(600.0, ge=15, description="seconds between attack starts")
    history_hours: float = Field(
        6.0,
        gt=0,
        le=168,
        description=(
            "hours of generated history to train the first model on when the model folder is empty"
        ),
    )


_WINDOW_DEFAULTS: Final = WindowConfig()
#: Option of the windows section -> the WindowConfig parameter it sets.
_WINDOW_PARAMETERS: Final = {
    "seconds": "window_seconds",
    "lateness": "allowed_lateness",
    "max_skew": "max_skew",
}


class WindowsConfig(_Section):
    seconds: float = Field(
        _WINDOW_DEFAULTS.window_seconds,
        description="window length (seconds); must match the model's",
    )
    lateness: float = Field(
        _WINDOW_DEFAULTS.allowed_lateness,
        description=(
            "how far behind the newest event time a flow may arrive and still count (seconds)"
        ),
    )
    max_skew: float = Field(
        _WINDOW_DEFAULTS.max_skew,
        description=(
            "a flow stamped further than this ahead of the stream's time (seconds) does not move "
            "it until later flows confirm it; contradicted, it is dropped and counted (a node's "
            "broken clock or a corrupt line)"
        ),
    )
    idle_close: float = Field(
        30.0,
        gt=0,
        description=(
            "when no flow arrives for this long (wall-clock seconds), event time is moved on by the "
            "time passed, so windows of a quiet stream still close"
        ),
    )

    @field_validator(*_WINDOW_PARAMETERS)
    @classmethod
    def _window_range(cls, value: float, info: ValidationInfo) -> float:
        """WindowConfig checks the range (its error names the parameter and the range)."""
        assert info.field_name is not None
        WindowConfig(**{_WINDOW_PARAMETERS[info.field_name]: value})
        return value


class ModelsConfig(_Section):
    dir: Path | None = Field(None, description="model folder (default: <data_dir>/models)")
    reload_interval: float = Field(
        10.0,
        gt=0,
        description=("seconds between checks for a new current model version (hot reload)"),
    )
    bootstrap: bool = Field(
        True,
        description=(
            "train a first model on generated history when the folder holds none (generator "
            "source only; other sources wait for `netwarden train`)"
        ),
    )
    keep_versions: int = Field(
        10,
        ge=1,
        description=(
            "model versions kept after a retraining (the current one and its rollback target "
            "always)"
        ),
    )
    signing_key_file: Path | None = Field(
        None,
        description=(
            "file holding the key (32+ bytes) model versions must be signed with, e.g. a mounted "
            "Kubernetes Secret; pass the same file to `netwarden train --signing-key` (default: "
            "<data_dir>/model-signing.key, made with mode 0600 on first start)"
        ),
    )


class HistoryConfig(_Section):
    enabled: bool = Field(
        True,
        description=(
            "keep every scored window (features, score, verdict, model version) as Parquet "
            "under <data_dir>/history/windows, partitioned by day: what retraining learns from"
        ),
    )
    flows: bool = Field(
        False, description="also keep compact flow records under <data_dir>/history/flows"
    )
    retention_days: float = Field(
        30.0, gt=0, description="day folders of the history older than this are deleted"
    )
    flush_seconds: float = Field(
        300.0,
        gt=0,
        description=(
            "seconds between writes of the buffered history (and of the labels snapshot); "
            "what is buffered is written on stop too"
        ),
    )


class RetrainConfig(_Section):
    schedule: str | None = Field(
        None,
        description=(
            "cron schedule (UTC) of retraining in the service, e.g. '0 3 * * *' (daily at "
            "03:00); none: retrain with `netwarden retrain` (e.g. a Kubernetes CronJob)"
        ),
    )
    days: float = Field(14.0, gt=0, description="days of history a retraining uses")
    validation_days: float = Field(
        1.0, gt=0, description="the most recent days, held out for the promotion gate"
    )
    gate_ratio: float = Field(
        1.1,
        ge=1.0,
        description="false alerts per identity-day a candidate may have, as a multiple of the "
        "current model's ...",
    )
    gate_tolerance: float = Field(
        0.05, ge=0, description="... plus this many false alerts per identity-day"
    )
    promote: bool = Field(
        True, description="make a candidate that passes the gate current (false: keep it only)"
    )
    timeout_seconds: float = Field(
        3600.0, gt=0, description="a retraining running longer is stopped and counted failed"
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"not a cron expression: {value!r} (e.g. '0 3 * * *')")
        return value.strip()


_DRIFT_DEFAULTS: Final = DriftConfig()


class DriftSection(_Section):
    """The ``drift:`` section: DriftConfig's options, defaults and ranges (one source)."""

    horizon_seconds: float = Field(
        _DRIFT_DEFAULTS.horizon_seconds,
        description=(
            "how far back (event time) each identity's scored windows are counted against the "
            "model's training windows (86400: a whole daily cycle)"
        ),
    )
    buckets: int = Field(
        _DRIFT_DEFAULTS.buckets,
        description=(
            "steps the horizon slides in (8: 3 h each); memory per identity grows with them"
        ),
    )
    min_windows: int = Field(
        _DRIFT_DEFAULTS.min_windows,
        description="windows an identity needs in the horizon before its drift is judged",
    )
    psi_alert: float = Field(
        _DRIFT_DEFAULTS.psi_alert,
        description=(
            "score PSI (population stability index, live vs training) from which the model no "
            "longer fits an identity (and above what sampling alone reaches one time in 1,000): "
            "the NetwardenModelDrift alert"
        ),
    )
    psi_clear: float = Field(
        _DRIFT_DEFAULTS.psi_clear,
        description="score PSI under which a drifted identity fits again (at most psi_alert)",
    )
    above_share_alert: float = Field(
        _DRIFT_DEFAULTS.above_share_alert,
        description=(
            "the model no longer fits either when at least this share of the identity's "
            "windows scores above the threshold ..."
        ),
    )
    above_ratio: float = Field(
        _DRIFT_DEFAULTS.above_ratio,
        description="... and at least this many times the share in training ...",
    )
    min_above: int = Field(
        _DRIFT_DEFAULTS.min_above, description="... and at least this many windows"
    )
    top_features: int = Field(
        _DRIFT_DEFAULTS.top_features,
        description="drifting features named per identity (alert, API, metrics)",
    )
    metric_identities: int = Field(
        _DRIFT_DEFAULTS.metric_identities,
        description=(
            "the most drifting identities with their own netwarden_drift_score_psi and "
            "netwarden_drift_psi series: the series cap, however large the cluster (0: none)"
        ),
    )
    max_identities: int = Field(
        _DRIFT_DEFAULTS.max_identities,
        description="identities tracked at most; past it the one quiet longest is forgotten",
    )

    @field_validator(*_DRIFT_RANGES)
    @classmethod
    def _drift_range(cls, value: float, info: ValidationInfo) -> float:
        """DriftConfig's range (its error names the option and the range)."""
        assert info.field_name is not None
        check_ranges(
            SimpleNamespace(**{info.field_name: value}),
            {info.field_name: _DRIFT_RANGES[info.field_name]},
        )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DriftSection:
        self.drift_config()  # psi_clear above psi_alert, say
        return self

    def drift_config(self) -> DriftConfig:
        """The DriftConfig these options make (ValueError: they do not go together)."""
        return DriftConfig(**self.model_dump())


class StoreConfig(_Section):
    url: str | None = Field(
        None,
        description=(
            "SQLAlchemy URL of the store (anomalies, changes, proposals, alerts): SQLite, "
            "the default, sqlite:///<data_dir>/netwarden.db; or PostgreSQL in cluster mode, "
            "postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE (usually set as "
            "NETWARDEN_STORE__URL from a Secret). Migrated to the newest schema on start"
        ),
    )
    window_retention_days: float = Field(
        7.0,
        gt=0,
        description=(
            "normal scored windows older than this are deleted (hourly); anomalies and their "
            "windows are kept"
        ),
    )


class ApiConfig(_Section):
    host: str = Field("127.0.0.1", description="address the HTTP API listens on")
    port: int = Field(8080, ge=0, le=65_535, description="port of the HTTP API (0: any free port)")
    public_url: str | None = Field(
        None,
        description=(
            "base URL people and Alertmanager use to reach the API, for links in alerts (default: "
            "http://<host>:<port>)"
        ),
    )
    tokens_file: Path | None = Field(
        None,
        description=(
            "YAML/JSON list of {name, role, sha256} API tokens (also NETWARDEN_API_TOKENS="
            "name:role:sha256,...); create one with `netwarden token`"
        ),
    )
    max_body_bytes: int = Field(
        1_048_576,
        ge=65_536,
        le=67_108_864,
        description=(
            "largest request body accepted, in bytes (a 413 past it; the largest body is a "
            "policy proposal, and Kubernetes stores objects up to about 1.5 MiB)"
        ),
    )
    listing_cache_seconds: float = Field(
        1.0,
        ge=0.0,
        le=60.0,
        description=(
            "a list (anomalies, changes, proposals, identities) asked for again within this many "
            "seconds is answered from memory: what the pipeline records shows this much later, "
            "what is done through the API at once (0: every request reads the store)"
        ),
    )
    pipeline_process: bool = Field(
        True,
        description=(
            "run the pipeline (source, windows, scoring, changes, proposals, alerts, history) in "
            "a process of its own beside the API's, sharing the store, so a busy API does not "
            "slow ingest and a replay does not slow the API; false: one process (always so for "
            "a stdin source)"
        ),
    )


class AlertsConfig(_Section):
    alertmanager_url: str | None = Field(
        None,
        description=(
            "Alertmanager base URL, e.g. http://127.0.0.1:9093 (unset: no Alertmanager alerts)"
        ),
    )
    slack_webhook_url: str | None = Field(
        None, description=("Slack incoming-webhook URL (unset: no Slack messages)")
    )
    resend_interval: float = Field(
        60.0, ge=1, description=("seconds between re-sends of a firing alert to Alertmanager")
    )
    group_wait: float = Field(
        30.0, ge=0, description=("Slack: seconds to wait for more anomalies to share one message")
    )
    slack_max_messages: int = Field(
        5,
        ge=1,
        description=(
            "Slack: at most this many messages per slack_rate_interval; the rest fold into a digest"
        ),
    )
    slack_rate_interval: float = Field(
        600.0, ge=1, description="Slack: the rate-limit period (seconds)"
    )
    backoff_initial: float = Field(
        1.0,
        gt=0,
        description=("seconds before the first retry of a failed delivery (doubling, jittered)"),
    )
    backoff_max: float = Field(
        300.0,
        gt=0,
        description="longest wait between retries (seconds); a message is retried until delivered",
    )
    request_timeout: float = Field(10.0, gt=0, description="seconds per HTTP request to a sink")
    firing_hold: float = Field(
        360.0,
        ge=1,
        le=86_400,
        description=(
            "an anomaly Alertmanager never saw firing (it was down, or the anomaly was over "
            "at once) is sent firing for this long, then resolved: longer than the route's "
            "group_wait and group_interval (default 5 m), so Alertmanager notifies it"
        ),
    )
    slack_send_resolved: bool = Field(
        True, description="Slack: a short notice when an announced anomaly is over"
    )
    notify_changes: bool = Field(
        True,
        description=(
            "announce each new change once, as information: a Slack message and an "
            'Alertmanager alert with severity="info" that resolves by itself after 5 minutes '
            "(route it to a quiet receiver)"
        ),
    )


class RemediationConfig(_Section):
    propose_containment: bool = Field(
        True,
        description=(
            "store a containment policy proposal for every new anomaly, for review through "
            "/api/v1/proposals (nothing is applied without approval)"
        ),
    )
    flow_history: int = Field(
        50_000,
        ge=0,
        le=10_000_000,
        description=("recent flows kept in memory to simulate proposals against (0: none)"),
    )
    require_second_approver: bool = Field(
        True,
        description=(
            "a proposal's author cannot approve it: a person's proposal needs another person's "
            "approval (automatic proposals, by netwarden, need one person's)"
        ),
    )
    kubernetes: str = Field(
        "off",
        description=(
            "the cluster approved proposals are applied to (POST /api/v1/proposals/{id}/apply): "
            '"off" (nothing is applied), "in-cluster" (the pod\'s service account), or the '
            "path of a kubeconfig file"
        ),
    )
    kubernetes_context: str | None = Field(
        None, description="kubeconfig context to use (default: the file's current-context)"
    )
    claim_grace_seconds: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description=(
            "an apply or rollback still unfinished after this many seconds is taken for one "
            "whose process died: logged at start, counted in netwarden_proposals_stuck, and "
            "finished by POST /api/v1/proposals/{id}/recover (refused before, as still in "
            "progress)"
        ),
    )

    @field_validator("kubernetes", mode="before")
    @classmethod
    def _kubernetes(cls, value: Any) -> Any:
        if value is False:  # YAML 1.1 reads an unquoted `off` as false
            return "off"
        if isinstance(value, str) and not value.strip():
            raise ValueError('expected "off", "in-cluster" or the path of a kubeconfig file')
        return value.strip() if isinstance(value, str) else value


class ServiceConfig(BaseSettings):
    """Everything ``netwarden serve`` can be told."""

    model_config = SettingsConfigDict(
        env_prefix="NETWARDEN_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Field(
        Path("netwarden-data/service"),
        description=("folder for the store, the models and generated history"),
    )
    source: SourceConfig = Field(default_factory=SourceConfig)
    hubble: HubbleConfig = Field(default_factory=HubbleConfig)
    ebpf: EbpfConfig = Field(default_factory=EbpfConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    windows: WindowsConfig = Field(default_factory=WindowsConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    drift: DriftSection = Field(default_factory=DriftSection)
    api: ApiConfig = Field(default_factory=ApiConfig)
    api_tokens: str = Field(
        "",
        description=(
            "more API tokens as name:role:sha256,... (merged with api.tokens_file); usually "
            "set as NETWARDEN_API_TOKENS"
        ),
    )
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    remediation: RemediationConfig = Field(default_factory=RemediationConfig)

    @field_validator("data_dir")
    @classmethod
    def _not_empty(cls, value: Path) -> Path:
        if not str(value).strip():
            raise ValueError("must not be empty")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings  # the environment wins over the file

    # -- derived --------------------------------------------------------------------------

    @property
    def window_config(self) -> WindowConfig:
        """The windows of this service (valid: each option was checked by WindowConfig)."""
        return WindowConfig(
            window_seconds=self.windows.seconds,
            allowed_lateness=self.windows.lateness,
            max_skew=self.windows.max_skew,
        )

    @property
    def drift_config(self) -> DriftConfig:
        """How the service measures drift (valid: the drift section was checked by DriftConfig)."""
        return self.drift.drift_config()

    @property
    def model_dir(self) -> Path:
        return self.models.dir or self.data_dir / "models"

    @property
    def model_signing_key_file(self) -> Path:
        """The configured signing key file, or the embedded default's in the data folder."""
        return self.models.signing_key_file or self.data_dir / "model-signing.key"

    @property
    def history_dir(self) -> Path:
        return self.data_dir / "history"

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.data_dir / 'netwarden.db'}"

    def public_url(self, port: int | None = None) -> str:
        if self.api.public_url:
            return self.api.public_url.rstrip("/")
        host = self.api.host if self.api.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{port if port is not None else self.api.port}"


def load_config(path: Path | None) -> ServiceConfig:
    """The file (if any) plus environment overrides, validated; ConfigError says what is wrong."""
    data: dict[str, Any] = {}
    where = "environment"
    if path is not None:
        where = str(path)
        try:
            raw = Path(path).read_bytes()
            loaded = yaml.safe_load(raw.decode("utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:  # YAML files are UTF-8; say where it is not
            line = raw.count(b"\n", 0, exc.start) + 1
            raise ConfigError(
                f"{path}: not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
                f"(line {line})"
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of options at the top level")
        data = loaded or {}
    try:
        return ServiceConfig(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{where}: invalid configuration: {problems}") from None


def _describe(model: type[BaseModel], indent: int = 0) -> list[str]:
    lines: list[str] = []
    pad = "  " * indent
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.append(f"{pad}{name}:")
            lines.extend(_describe(annotation, indent + 1))
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, Path):
            default = str(default)
        value = yaml.safe_dump(default, default_flow_style=True).strip()
        value = value.removesuffix("\n...").removesuffix("...").strip()
        lines.append(f"{pad}{name}: {value}  # {field.description}")
    return lines


def defaults_yaml() -> str:
    """Every option with its default and meaning, as a commented YAML file."""
    head = [
        "# netwarden serve configuration (every option, with its default).",
        "# Override any option from the environment: NETWARDEN_<SECTION>__<OPTION>=value.",
    ]
    return "\n".join(head + _describe(ServiceConfig)) + "\n"
