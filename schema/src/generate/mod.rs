//! The synthetic load-balancer telemetry generator.
//!
//! A discrete-event simulation, one second at a time, of load balancers in front of backends (pools of
//! targets spread over three zones) and the clients that call them:
//!
//! - **Load**: each backend's logical request rate follows a diurnal curve (trough at 02:00 UTC, peak at
//!   14:00), a weekly one (weekends lighter) and slow per-backend noise; arrivals in a second are Poisson.
//!   Each backend has a capacity; its utilisation is (new requests + retries) / capacity of the targets
//!   the load balancer routes to, so lost targets and retries raise it.
//! - **Responses**: target latency is lognormal around the path's median with a Pareto tail; it rises
//!   with utilisation, and so do 5xx responses past about 80 %; above 100 % targets shed load with 503 and
//!   `Retry-After`. A response slower than the backend's timeout is a 504 from the load balancer.
//! - **Clients** follow one retry policy each: none; naive (immediate, up to 3 attempts, also for POST,
//!   ignoring `Retry-After`); exponential backoff with full jitter (up to 3 attempts, `Retry-After`
//!   honoured); budgeted (the same with up to 4 attempts and a token bucket allowing about 10 % retries).
//!   Non-idempotent requests are mostly not retried. A retry is a new row with the same `request_id`,
//!   `attempt` + 1, sent after the response plus the policy's delay; it feeds the backend's load.
//! - **Incidents** are injected and written to `incidents` with their time and scope: target outage,
//!   latency regression, zone loss, bad deploy, retry storm (capacity drops, retries pile on, and the
//!   recorded end is when the backend is observed to have recovered).
//! - **Health**: the load balancer checks every target every 10 s (2 failures mark it unhealthy, 3
//!   passes healthy again) and ejects a target after 5 consecutive 5xx other than 503; `lb_targets` samples
//!   every target every 10, 15 or 20 s (per load balancer) from the same simulation.
//!
//! Everything comes from one seeded ChaCha stream consumed in a fixed order, so a seed gives the same
//! rows, and the same files, byte for byte (for a given build and platform).

mod columns;
mod output;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int16Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson, StandardNormal};

use columns::{RequestColumns, RequestRow, TargetColumns, TargetRow};
pub use columns::{backends_schema, incidents_schema, requests_schema, targets_schema};
pub use output::{Error, FileFormat, Summary, load_into, write_files};

const US: i64 = 1_000_000;
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const SERVICES: [&str; 16] = [
    "api",
    "auth",
    "cart",
    "catalog",
    "checkout",
    "search",
    "images",
    "payments",
    "users",
    "orders",
    "inventory",
    "pricing",
    "reviews",
    "shipping",
    "notify",
    "media",
];
const LISTENER: &str = "https:443";
const HEALTH_LISTENER: &str = "health-check";
const HEALTH_CLIENT: &str = "lb-health-check";
/// Retries the arrival-rate calibration assumes before it has observed any.
const AMPLIFICATION_GUESS: f64 = 1.04;
/// The share of rows that are logged health checks.
const HEALTH_CHECK_SHARE: f64 = 0.01;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Config {
    /// Rows of `lb_requests` (exactly this many).
    pub rows: u64,
    pub seed: u64,
    /// First second of the data, in microseconds since the epoch (UTC).
    pub start_us: i64,
    /// The span the rows are spread over; the arrival rate is set so that `rows` rows fill it.
    pub days: f64,
    pub lbs: u32,
    pub backends: u32,
    pub clients: u32,
    /// Incidents injected per day of data (rounded; at least one when positive).
    pub incidents_per_day: f64,
    /// Rows per output batch.
    pub batch_rows: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rows: 10_000_000,
            seed: 42,
            start_us: 1_704_067_200 * US, // 2024-01-01 00:00:00 UTC
            days: 7.0,
            lbs: 2,
            backends: 8,
            clients: 10_000,
            incidents_per_day: 3.0,
            batch_rows: 65_536,
        }
    }
}

/// A configuration the generator cannot run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Config {
    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.to_string()));
        if !(self.days > 0.0 && self.days <= 3660.0) {
            return bad("--days must be above 0 and at most 3660");
        }
        if self.lbs == 0 || self.lbs > 256 {
            return bad("--lbs must be between 1 and 256");
        }
        if self.backends < self.lbs || self.backends > 4096 {
            return bad("--backends must be at least --lbs (each load balancer fronts one or more) and at most 4096");
        }
        if self.clients == 0 || self.clients > 10_000_000 {
            return bad("--clients must be between 1 and 10000000");
        }
        if !(self.incidents_per_day >= 0.0 && self.incidents_per_day <= 100.0) {
            return bad("--incidents-per-day must be between 0 and 100");
        }
        if self.batch_rows == 0 {
            return bad("batch size must be positive");
        }
        Ok(())
    }
}

/// A batch of generated rows.
#[derive(Debug)]
pub enum Batch {
    Requests(RecordBatch),
    Targets(RecordBatch),
}

/// An incident the generator injected: the ground truth written to `incidents`.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub kind: IncidentKind,
    pub started_us: i64,
    pub ended_us: i64,
    pub lb: Option<String>,
    pub backend: Option<String>,
    pub zone: Option<String>,
    pub target: Option<String>,
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentKind {
    TargetOutage,
    LatencyRegression,
    ZoneLoss,
    BadDeploy,
    RetryStorm,
    /// Not injected: a backend seen shedding load (above 100 % utilisation for 30 s) with no injected
    /// incident in scope, typically the busiest backend at the daily peak. Recorded so that the ground
    /// truth holds every outage the rows show.
    Overload,
}

impl IncidentKind {
    pub const ALL: [IncidentKind; 5] = [
        IncidentKind::TargetOutage,
        IncidentKind::LatencyRegression,
        IncidentKind::ZoneLoss,
        IncidentKind::BadDeploy,
        IncidentKind::RetryStorm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            IncidentKind::TargetOutage => "target_outage",
            IncidentKind::LatencyRegression => "latency_regression",
            IncidentKind::ZoneLoss => "zone_loss",
            IncidentKind::BadDeploy => "bad_deploy",
            IncidentKind::RetryStorm => "retry_storm",
            IncidentKind::Overload => "overload",
        }
    }
}

/// A client's retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    None,
    Naive,
    Exponential,
    Budgeted,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Naive => "naive",
            Policy::Exponential => "exponential_jitter",
            Policy::Budgeted => "budgeted",
        }
    }

    /// A policy drawn from `hash`: 25 % none, 15 % naive, 40 % exponential backoff with jitter, 20 %
    /// budgeted.
    fn drawn(hash: u64) -> Policy {
        match hash % 100 {
            0..25 => Policy::None,
            25..40 => Policy::Naive,
            40..80 => Policy::Exponential,
            _ => Policy::Budgeted,
        }
    }

    fn max_attempts(self) -> u16 {
        match self {
            Policy::None => 1,
            Policy::Naive | Policy::Exponential => 3,
            Policy::Budgeted => 4,
        }
    }
}

/// Who stands behind one client id and how they retry: hidden from the rows, which show only behaviour.
///
/// Most ids are one caller with one policy. Some are a shared (NAT'd) address: 2-4 callers with a
/// policy each, every logical request made by one of them at random. Some callers change policy once,
/// at a deploy somewhere in the generated span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientProfile {
    /// The policy of each caller behind the id.
    pub callers: Vec<Policy>,
    /// From this time (µs since the epoch) on, the first caller follows the second policy.
    pub redeploy: Option<(i64, Policy)>,
}

impl ClientProfile {
    /// Share of client ids shared by several callers, in percent.
    const SHARED_PERCENT: u64 = 5;
    /// Share of single-caller ids whose policy changes at a deploy, in percent.
    const REDEPLOY_PERCENT: u64 = 10;

    /// The profile of client `index` under `cfg` (its seed and span): a function of them alone.
    pub fn of(cfg: &Config, index: u32) -> ClientProfile {
        let hash =
            |salt: u64| splitmix(cfg.seed ^ 0x9e37_79b9 ^ u64::from(index) ^ salt.wrapping_mul(0xa076_1d64_78bd_642f));
        let first = Policy::drawn(hash(0));
        if hash(1) % 100 < Self::SHARED_PERCENT {
            let n = 2 + hash(2) % 3;
            let callers = (0..n).map(|k| if k == 0 { first } else { Policy::drawn(hash(10 + k)) }).collect();
            return ClientProfile { callers, redeploy: None };
        }
        let redeploy = (hash(3) % 100 < Self::REDEPLOY_PERCENT).then(|| {
            let span = (cfg.days * 86_400.0 * US as f64) as u64;
            let at = cfg.start_us + (hash(4) % span.max(1)) as i64;
            // A different policy: one of the other three.
            let others: Vec<Policy> = [Policy::None, Policy::Naive, Policy::Exponential, Policy::Budgeted]
                .into_iter()
                .filter(|&p| p != first)
                .collect();
            (at, others[(hash(5) % 3) as usize])
        });
        ClientProfile { callers: vec![first], redeploy }
    }

    /// The policy `caller` follows at `ts` (µs).
    pub fn policy(&self, caller: usize, ts: i64) -> Policy {
        match self.redeploy {
            Some((at, after)) if caller == 0 && ts >= at => after,
            _ => self.callers[caller],
        }
    }
}

/// The client id of client `index`.
pub fn client_name(index: u32) -> String {
    format!("client-{index:06}")
}

struct Path {
    method: &'static str,
    template: String,
    idempotent: bool,
    /// Median target time at low load, ms.
    median_ms: f64,
    /// Median response size, bytes, for a success.
    response_bytes: f64,
    /// Median request size, bytes.
    request_bytes: f64,
    /// Cumulative share of the backend's requests, for sampling.
    cumulative: f64,
}

struct Backend {
    name: String,
    lb: usize,
    targets: Vec<usize>,
    paths: Vec<Path>,
    /// Share of all logical requests.
    share: f64,
    /// Requests per second one target serves at 100 % utilisation.
    target_capacity: f64,
    timeout_ms: f64,
    weight: i16,
    // per-second state
    noise: f64,
    retry_rate: f64,
    failure_share: f64,
    utilisation: f64,
    /// Since when the utilisation has been above 100 % without a break.
    over_since: Option<i64>,
    capacity_factor: f64,
    latency_factor: f64,
    /// Share of 5xx from targets running a bad deploy's version (0 outside one).
    bad_share: f64,
    routable: Vec<usize>,
    attempts_now: u32,
    retries_now: u32,
    failures_now: u32,
}

struct Target {
    name: String,
    zone: usize,
    backend: usize,
    weight: i16,
    up: bool,
    blackhole: bool,
    bad_version: bool,
    lb_healthy: bool,
    check_fails: u8,
    check_passes: u8,
    ejected_until: i64,
    ejections: u32,
    consecutive_errors: u32,
    // since the last lb_targets sample
    n: u32,
    n_answered: u32,
    sum_ms: f64,
    n_errors: u32,
    n_shed: u32,
}

struct Lb {
    name: String,
    /// Seconds between `lb_targets` samples.
    sample_every: i64,
    targets: Vec<usize>,
}

struct Client {
    name: String,
    profile: ClientProfile,
    /// Retry tokens of a budgeted client.
    tokens: f32,
    /// Heavy callers that hit rate limits (429).
    heavy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EventKind {
    Attempt { backend: u32, client: u32, caller: u8, path: u16, request: u64, attempt: u16 },
    HealthCheck { target: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    ts: i64,
    seq: u64,
    kind: EventKind,
}

struct ActiveIncident {
    kind: IncidentKind,
    start: i64,
    /// Planned end of the trigger (seconds).
    end: i64,
    lb: Option<usize>,
    backend: Option<usize>,
    zone: Option<usize>,
    target: Option<usize>,
    magnitude: f64,
    /// Observed end (retry storms, overloads): when the backend was seen to have recovered.
    recovered: Option<i64>,
    calm_since: Option<i64>,
}

impl ActiveIncident {
    /// The recorded end of a retry storm or an overload: the backend recovered once it has been calm
    /// (below 85 % utilisation and under 2 % failures) for a minute, from when the calm began.
    fn observe_recovery(&mut self, s: i64, backend: &Backend) {
        let calm = backend.utilisation < 0.85 && backend.failure_share < 0.02;
        match (calm, self.calm_since) {
            (true, None) => self.calm_since = Some(s),
            (true, Some(since)) if s - since >= 60 => self.recovered = Some(since),
            (false, _) => self.calm_since = None,
            _ => {}
        }
    }
}

/// The simulation. Pull batches with [`Generator::next_batch`]; when it returns `None`, the requests are
/// done and [`Generator::incidents`] holds the ground truth.
pub struct Generator {
    cfg: Config,
    rng: ChaCha8Rng,
    lbs: Vec<Lb>,
    backends: Vec<Backend>,
    targets: Vec<Target>,
    clients: Vec<Client>,
    incidents: Vec<ActiveIncident>,
    /// Seconds since the epoch of the current step.
    now: i64,
    start: i64,
    end: i64,
    /// Seasonal weight per minute of the range, summed from each minute to the end.
    season_tail: Vec<f64>,
    scale: f64,
    scale0: f64,
    health_check_every: i64,
    events: BinaryHeap<Reverse<Event>>,
    seq: u64,
    next_request: u64,
    logical: u64,
    rows: u64,
    requests: RequestColumns,
    samples: TargetColumns,
    sample_buf: Vec<(i64, usize)>,
    out: VecDeque<Batch>,
    done: bool,
}

impl Generator {
    pub fn new(cfg: Config) -> Result<Generator, ConfigError> {
        cfg.check()?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let start = cfg.start_us.div_euclid(US);
        let end = start + (cfg.days * 86_400.0).round().max(1.0) as i64;

        let lbs: Vec<Lb> = (0..cfg.lbs as usize)
            .map(|i| Lb { name: format!("lb-{:02}", i + 1), sample_every: [10, 15, 20][i % 3], targets: Vec::new() })
            .collect();
        let mut lbs = lbs;
        let mut backends = Vec::new();
        let mut targets = Vec::new();
        let raw_shares: Vec<f64> = (0..cfg.backends).map(|i| 1.0 / f64::from(i + 1).powf(0.8)).collect();
        let total_share: f64 = raw_shares.iter().sum();
        for (i, raw) in raw_shares.iter().enumerate() {
            let lb = i % lbs.len();
            let svc = SERVICES[i % SERVICES.len()];
            let name = if i < SERVICES.len() { svc.to_string() } else { format!("{svc}-{}", i / SERVICES.len()) };
            let n_targets = rng.random_range(3..=8usize);
            let mut ids = Vec::new();
            for k in 0..n_targets {
                let weight = if rng.random_bool(0.2) { 2 } else { 1 };
                ids.push(targets.len());
                lbs[lb].targets.push(targets.len());
                targets.push(Target {
                    name: format!("10.{}.{}.{}:{}", lb % 256, i % 256, k + 10, 8080 + i / 256),
                    zone: (k + i) % ZONES.len(),
                    backend: i,
                    weight,
                    up: true,
                    blackhole: false,
                    bad_version: false,
                    lb_healthy: true,
                    check_fails: 0,
                    check_passes: 0,
                    ejected_until: 0,
                    ejections: 0,
                    consecutive_errors: 0,
                    n: 0,
                    n_answered: 0,
                    sum_ms: 0.0,
                    n_errors: 0,
                    n_shed: 0,
                });
            }
            let speed = rng.random_range(0.6..1.8);
            let paths = backend_paths(svc, speed);
            let timeout_ms = [3_000.0, 5_000.0, 5_000.0, 10_000.0][rng.random_range(0..4usize)];
            backends.push(Backend {
                name,
                lb,
                targets: ids,
                paths,
                share: raw / total_share,
                target_capacity: 0.0,
                timeout_ms,
                weight: 0,
                noise: 1.0,
                retry_rate: 0.0,
                failure_share: 0.0,
                utilisation: 0.0,
                over_since: None,
                capacity_factor: 1.0,
                latency_factor: 1.0,
                bad_share: 0.0,
                routable: Vec::new(),
                attempts_now: 0,
                retries_now: 0,
                failures_now: 0,
            });
        }
        // Each backend's weight: its share of its load balancer's traffic, in percent.
        for l in 0..lbs.len() {
            let lb_total: f64 = backends.iter().filter(|b| b.lb == l).map(|b| b.share).sum();
            for b in backends.iter_mut().filter(|b| b.lb == l) {
                b.weight = (100.0 * b.share / lb_total).round() as i16;
            }
        }
        let clients: Vec<Client> = (0..cfg.clients)
            .map(|i| Client {
                name: client_name(i),
                profile: ClientProfile::of(&cfg, i),
                tokens: 10.0,
                heavy: u64::from(i) * 100 < u64::from(cfg.clients).max(100),
            })
            .collect();

        // Seasonal weights per minute, so the arrival rate can be set to fill the range with `rows`.
        let minutes = ((end - start) as usize).div_ceil(60);
        let mut season_tail = vec![0.0; minutes + 1];
        for m in (0..minutes).rev() {
            season_tail[m] = season_tail[m + 1] + season(start + m as i64 * 60 + 30);
        }
        let targets_n = targets.len() as f64;
        let span = (end - start) as f64;
        let hc_rows = HEALTH_CHECK_SHARE * cfg.rows as f64;
        let health_check_every =
            if hc_rows < 1.0 { i64::MAX } else { ((targets_n * span) / hc_rows).ceil().max(10.0) as i64 };
        let hc_expected =
            if health_check_every == i64::MAX { 0.0 } else { targets_n * span / health_check_every as f64 };
        let client_rows = (cfg.rows as f64 - hc_expected).max(1.0);
        let scale0 = client_rows / (60.0 * season_tail[0] * AMPLIFICATION_GUESS);

        // Capacity: the load at the backend's busiest expected minute is 35-60 % of it (so most backends
        // survive losing a zone), except for one busy backend that runs at about 66 % at peak, so noise
        // pushes it past 80 % now and then.
        let peak = (0..minutes).map(|m| season(start + m as i64 * 60 + 30)).fold(0.0, f64::max).max(0.3);
        let hot = if backends.len() > 1 { 1 } else { usize::MAX };
        for (i, b) in backends.iter_mut().enumerate() {
            let peak_util = if i == hot { 0.66 } else { rng.random_range(0.35..0.60) };
            let capacity = b.share * scale0 * peak * AMPLIFICATION_GUESS / peak_util;
            let weight_sum: f64 = b.targets.iter().map(|&t| f64::from(targets[t].weight)).sum();
            b.target_capacity = capacity / weight_sum;
        }

        let mut g = Generator {
            incidents: Vec::new(),
            rng,
            lbs,
            backends,
            targets,
            clients,
            now: start,
            start,
            end,
            season_tail,
            scale: scale0,
            scale0,
            health_check_every,
            events: BinaryHeap::new(),
            seq: 0,
            next_request: 0,
            logical: 0,
            rows: 0,
            requests: RequestColumns::new(cfg.batch_rows),
            samples: TargetColumns::new(cfg.batch_rows),
            sample_buf: Vec::new(),
            out: VecDeque::new(),
            done: false,
            cfg,
        };
        g.plan_incidents();
        Ok(g)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// `lb_requests` rows generated so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The next batch of `lb_requests` or `lb_targets` rows; `None` once all requests are generated.
    pub fn next_batch(&mut self) -> Option<Batch> {
        while self.out.is_empty() && !self.done {
            self.step();
        }
        self.out.pop_front()
    }

    /// The `backends` dimension.
    pub fn backends_batch(&self) -> RecordBatch {
        let capacity: Vec<f64> = self
            .backends
            .iter()
            .map(|b| {
                let w: f64 = b.targets.iter().map(|&t| f64::from(self.targets[t].weight)).sum();
                (b.target_capacity * w * 1000.0).round() / 1000.0
            })
            .collect();
        let columns: Vec<ArrayRef> = vec![
            std::sync::Arc::new(StringArray::from_iter_values(self.backends.iter().map(|b| b.name.as_str()))),
            std::sync::Arc::new(StringArray::from_iter_values(
                self.backends.iter().map(|b| self.lbs[b.lb].name.as_str()),
            )),
            std::sync::Arc::new(StringArray::from(vec![None::<&str>; self.backends.len()])),
            std::sync::Arc::new(Float64Array::from(capacity)),
            std::sync::Arc::new(Int16Array::from_iter_values(self.backends.iter().map(|b| b.weight))),
        ];
        RecordBatch::try_new(backends_schema(), columns).expect("columns match the schema")
    }

    /// The injected incidents and the observed overloads, by start, with their recorded ends (final once
    /// [`Generator::next_batch`] has returned `None`).
    pub fn incidents(&self) -> Vec<Incident> {
        let mut incidents: Vec<Incident> = self
            .incidents
            .iter()
            .map(|i| {
                let ended = match i.kind {
                    IncidentKind::RetryStorm | IncidentKind::Overload => i.recovered.unwrap_or(self.now.max(i.end)),
                    _ => i.end,
                };
                let target = i.target.map(|t| &self.targets[t]);
                Incident {
                    kind: i.kind,
                    started_us: i.start * US,
                    ended_us: ended * US,
                    lb: i.lb.map(|l| self.lbs[l].name.clone()),
                    backend: i.backend.map(|b| self.backends[b].name.clone()),
                    zone: i.zone.map(|z| ZONES[z].to_string()),
                    target: target.map(|t| t.name.clone()),
                    description: match i.kind {
                        IncidentKind::TargetOutage => "target down: connections refused".to_string(),
                        IncidentKind::LatencyRegression => {
                            format!("slow dependency: target latency x{:.1}", i.magnitude)
                        }
                        IncidentKind::ZoneLoss => "zone unreachable: connections time out".to_string(),
                        IncidentKind::BadDeploy => format!(
                            "rolling deploy of a bad version, then rollback: {:.0}% 5xx on updated targets",
                            100.0 * i.magnitude
                        ),
                        IncidentKind::RetryStorm => format!(
                            "capacity drops to {:.0}% for {} min; retries keep the backend overloaded until it recovers",
                            100.0 * i.magnitude,
                            (i.end - i.start) / 60
                        ),
                        IncidentKind::Overload => format!(
                            "not injected: load above capacity (up to {:.0}%), targets shed it with 503 until it recovers",
                            100.0 * i.magnitude
                        ),
                    },
                }
            })
            .collect();
        // Overloads are recorded when seen, after incidents planned to start later.
        incidents.sort_by_key(|i| i.started_us);
        incidents
    }

    /// `incidents` as a batch.
    pub fn incidents_batch(&self) -> RecordBatch {
        let inc = self.incidents();
        let opt = |f: fn(&Incident) -> Option<&str>| StringArray::from(inc.iter().map(f).collect::<Vec<_>>());
        let columns: Vec<ArrayRef> = vec![
            std::sync::Arc::new(TimestampMicrosecondArray::from_iter_values(inc.iter().map(|i| i.started_us))),
            std::sync::Arc::new(TimestampMicrosecondArray::from_iter_values(inc.iter().map(|i| i.ended_us))),
            std::sync::Arc::new(StringArray::from_iter_values(inc.iter().map(|i| i.kind.name()))),
            std::sync::Arc::new(opt(|i| i.lb.as_deref())),
            std::sync::Arc::new(opt(|i| i.backend.as_deref())),
            std::sync::Arc::new(opt(|i| i.zone.as_deref())),
            std::sync::Arc::new(opt(|i| i.target.as_deref())),
            std::sync::Arc::new(StringArray::from_iter_values(inc.iter().map(|i| i.description.as_str()))),
        ];
        RecordBatch::try_new(incidents_schema(), columns).expect("columns match the schema")
    }

    fn plan_incidents(&mut self) {
        let days = (self.end - self.start) as f64 / 86_400.0;
        let wanted = (self.cfg.incidents_per_day * days).round() as usize;
        let count = if self.cfg.incidents_per_day > 0.0 { wanted.max(1) } else { 0 };
        let span = self.end - self.start;
        // Kinds in a shuffled cycle, so every kind appears once there are five incidents.
        let mut kinds = Vec::new();
        while kinds.len() < count {
            let mut cycle = IncidentKind::ALL.to_vec();
            for i in (1..cycle.len()).rev() {
                let j = self.rng.random_range(0..=i);
                cycle.swap(i, j);
            }
            kinds.extend(cycle);
        }
        kinds.truncate(count);
        for kind in kinds {
            let duration = 60
                * match kind {
                    IncidentKind::TargetOutage => self.rng.random_range(5..=30),
                    IncidentKind::LatencyRegression => self.rng.random_range(15..=60),
                    IncidentKind::ZoneLoss => self.rng.random_range(10..=40),
                    IncidentKind::BadDeploy => self.rng.random_range(10..=45),
                    IncidentKind::RetryStorm => self.rng.random_range(3..=10),
                    IncidentKind::Overload => unreachable!("overloads are observed, not planned"),
                };
            let mut chosen = None;
            for _ in 0..50 {
                let lo = (span / 24).min(3600);
                let hi = (span - duration - span / 12).max(lo + 1);
                let mut start = self.start + self.rng.random_range(lo..hi);
                if kind == IncidentKind::RetryStorm {
                    // Storms start at a busy time of day (11:00-16:00 UTC) when there is one in range.
                    let day = start.div_euclid(86_400) * 86_400;
                    let busy = day + self.rng.random_range(11 * 3600..16 * 3600);
                    if busy > self.start && busy + duration < self.end {
                        start = busy;
                    }
                }
                let b = self.rng.random_range(0..self.backends.len());
                let end = start + duration;
                // Never two incidents at once on one backend (a zone loss touches every backend).
                let clash = self.incidents.iter().any(|o| {
                    let overlaps = start < o.end.max(o.start + 3600) + 600 && o.start < end + 600;
                    overlaps
                        && (o.kind == IncidentKind::ZoneLoss || kind == IncidentKind::ZoneLoss || o.backend == Some(b))
                });
                if !clash {
                    chosen = Some((start, end, b));
                    break;
                }
            }
            let Some((start, end, b)) = chosen else { continue };
            let lb = self.backends[b].lb;
            let mut inc = ActiveIncident {
                kind,
                start,
                end,
                lb: Some(lb),
                backend: Some(b),
                zone: None,
                target: None,
                magnitude: 0.0,
                recovered: None,
                calm_since: None,
            };
            match kind {
                IncidentKind::TargetOutage => {
                    let ts = &self.backends[b].targets;
                    let t = ts[self.rng.random_range(0..ts.len())];
                    inc.target = Some(t);
                    inc.zone = Some(self.targets[t].zone);
                }
                IncidentKind::LatencyRegression => inc.magnitude = self.rng.random_range(3.0..6.0),
                IncidentKind::ZoneLoss => {
                    inc.lb = None;
                    inc.backend = None;
                    inc.zone = Some(self.rng.random_range(0..ZONES.len()));
                }
                IncidentKind::BadDeploy => inc.magnitude = self.rng.random_range(0.2..0.4),
                IncidentKind::RetryStorm => {
                    // Capacity drops enough to take the backend to 130-170 % of what is left.
                    let backend = &self.backends[b];
                    let weight: f64 = backend.targets.iter().map(|&t| f64::from(self.targets[t].weight)).sum();
                    let load = backend.share * season(start) * self.scale0 / (backend.target_capacity * weight);
                    inc.magnitude = (load / self.rng.random_range(1.3..1.7)).clamp(0.05, 0.9);
                }
                IncidentKind::Overload => {}
            }
            self.incidents.push(inc);
        }
        self.incidents.sort_by_key(|i| i.start);
    }

    /// Simulates one second.
    fn step(&mut self) {
        let s = self.now;
        if (s - self.start) % 60 == 0 {
            self.each_minute(s);
        }
        self.apply_incidents(s);
        self.health_checks(s);
        self.route_table(s);
        self.observe_overloads(s);

        // New logical requests.
        for b in 0..self.backends.len() {
            let lambda = self.backends[b].share * season(s) * self.backends[b].noise * self.scale;
            let n = if lambda > 0.0 {
                Poisson::new(lambda).map(|p| p.sample(&mut self.rng) as u64).unwrap_or(0)
            } else {
                0
            };
            for _ in 0..n {
                let ts = s * US + self.rng.random_range(0..US);
                let u: f64 = self.rng.random();
                let client = ((u * u * u) * f64::from(self.cfg.clients)) as u32;
                let path = pick_path(&self.backends[b].paths, self.rng.random());
                let request = splitmix(self.cfg.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ self.next_request);
                self.next_request += 1;
                self.logical += 1;
                let callers = self.clients[client as usize].profile.callers.len();
                let caller = if callers > 1 { self.rng.random_range(0..callers) as u8 } else { 0 };
                self.push(ts, EventKind::Attempt { backend: b as u32, client, caller, path, request, attempt: 1 });
                if let Policy::Budgeted = self.clients[client as usize].profile.policy(caller.into(), ts) {
                    let c = &mut self.clients[client as usize];
                    c.tokens = (c.tokens + 0.1).min(10.0);
                }
            }
        }
        // Logged health checks.
        if self.health_check_every != i64::MAX {
            for t in 0..self.targets.len() {
                if (s - self.start + t as i64 * 7919) % self.health_check_every == 0 {
                    let ts = s * US + self.rng.random_range(0..US);
                    self.push(ts, EventKind::HealthCheck { target: t as u32 });
                }
            }
        }

        let second_end = (s + 1) * US;
        while let Some(Reverse(e)) = self.events.peek().copied() {
            if e.ts >= second_end || self.rows >= self.cfg.rows {
                break;
            }
            self.events.pop();
            match e.kind {
                EventKind::Attempt { backend, client, caller, path, request, attempt } => {
                    self.attempt(e.ts, backend as usize, (client as usize, caller), path as usize, request, attempt)
                }
                EventKind::HealthCheck { target } => self.health_check_row(e.ts, target as usize),
            }
            self.rows += 1;
            if self.requests.len() >= self.cfg.batch_rows {
                self.out.push_back(Batch::Requests(self.requests.finish()));
            }
        }
        self.end_of_second(s);
        self.now += 1;
        if self.rows >= self.cfg.rows {
            self.finish_batches();
        }
    }

    fn push(&mut self, ts: i64, kind: EventKind) {
        self.seq += 1;
        self.events.push(Reverse(Event { ts, seq: self.seq, kind }));
    }

    fn finish_batches(&mut self) {
        self.done = true;
        self.events.clear();
        if self.requests.len() > 0 {
            self.out.push_back(Batch::Requests(self.requests.finish()));
        }
        if self.samples.len() > 0 {
            self.out.push_back(Batch::Targets(self.samples.finish()));
        }
    }

    /// Per-minute updates: backend noise and the arrival rate that lands the last row at the range's end.
    fn each_minute(&mut self, s: i64) {
        for b in &mut self.backends {
            let z: f64 = self.rng.sample(StandardNormal);
            b.noise = (0.85 * b.noise.ln() + 0.05 * z).exp();
        }
        let m = ((s - self.start) / 60) as usize;
        if m < self.season_tail.len() && self.season_tail[m] > 0.0 && self.logical >= 1000 {
            let amplification = (self.rows as f64 / self.logical as f64).max(1.0);
            let hc_left = if self.health_check_every == i64::MAX {
                0.0
            } else {
                self.targets.len() as f64 * (self.end - s).max(0) as f64 / self.health_check_every as f64
            };
            let left = self.cfg.rows as f64 - self.rows as f64 - hc_left;
            let wanted = left / (60.0 * self.season_tail[m] * amplification);
            self.scale = wanted.clamp(0.5 * self.scale0, 2.0 * self.scale0);
        }
    }

    fn apply_incidents(&mut self, s: i64) {
        for t in &mut self.targets {
            t.up = true;
            t.blackhole = false;
            t.bad_version = false;
        }
        for b in &mut self.backends {
            b.capacity_factor = 1.0;
            b.latency_factor = 1.0;
            b.bad_share = 0.0;
        }
        for i in &mut self.incidents {
            let storm_tail = i.kind == IncidentKind::RetryStorm && s >= i.end && i.recovered.is_none();
            if s < i.start || (s >= i.end && !storm_tail) {
                continue;
            }
            match i.kind {
                IncidentKind::TargetOutage => self.targets[i.target.unwrap_or(0)].up = false,
                IncidentKind::ZoneLoss => {
                    for t in self.targets.iter_mut().filter(|t| Some(t.zone) == i.zone) {
                        t.up = false;
                        t.blackhole = true;
                    }
                }
                IncidentKind::LatencyRegression => self.backends[i.backend.unwrap_or(0)].latency_factor = i.magnitude,
                IncidentKind::BadDeploy => {
                    // A rolling deploy: one more target gets the bad version every two minutes.
                    let b = &mut self.backends[i.backend.unwrap_or(0)];
                    b.bad_share = i.magnitude;
                    let updated = (((s - i.start) / 120) as usize + 1).min(b.targets.len());
                    for &t in &b.targets[..updated] {
                        self.targets[t].bad_version = true;
                    }
                }
                IncidentKind::RetryStorm => {
                    let b = i.backend.unwrap_or(0);
                    if s < i.end {
                        self.backends[b].capacity_factor = i.magnitude;
                    } else if s >= i.end + 3600 {
                        // Operators scale out when the backend has not recovered an hour later.
                        self.backends[b].capacity_factor = 1.5;
                    }
                    if s >= i.end {
                        i.observe_recovery(s, &self.backends[b]);
                    }
                }
                IncidentKind::Overload => {}
            }
        }
    }

    /// Records an overload no injected incident explains: a backend above 100 % utilisation for 30 s
    /// while no incident covers it, ended as a retry storm's end is observed.
    fn observe_overloads(&mut self, s: i64) {
        for b in 0..self.backends.len() {
            let covered = self.incidents.iter().any(|i| {
                let in_scope = i.backend == Some(b) || i.kind == IncidentKind::ZoneLoss;
                let open = match i.kind {
                    IncidentKind::RetryStorm | IncidentKind::Overload => i.recovered.is_none(),
                    _ => false,
                };
                in_scope && s >= i.start && (s < i.end || open)
            });
            let backend = &mut self.backends[b];
            let utilisation = backend.utilisation;
            // Time under an incident does not count: an overload outlasting one starts when it ends.
            backend.over_since = if utilisation > 1.0 && !covered { backend.over_since.or(Some(s)) } else { None };
            let over_since = backend.over_since;
            if let Some(i) = self
                .incidents
                .iter_mut()
                .find(|i| i.kind == IncidentKind::Overload && i.backend == Some(b) && i.recovered.is_none())
            {
                if utilisation.is_finite() {
                    i.magnitude = i.magnitude.max(utilisation);
                }
                i.observe_recovery(s, &self.backends[b]);
            } else if let Some(since) = over_since.filter(|&since| s - since >= 30) {
                self.incidents.push(ActiveIncident {
                    kind: IncidentKind::Overload,
                    start: since,
                    end: s,
                    lb: Some(self.backends[b].lb),
                    backend: Some(b),
                    zone: None,
                    target: None,
                    magnitude: if utilisation.is_finite() { utilisation } else { 1.0 },
                    recovered: None,
                    calm_since: None,
                });
            }
        }
    }

    /// The load balancer's own health checks, every 10 s per target (not logged): 2 failures mark a
    /// target unhealthy, 3 passes healthy again.
    fn health_checks(&mut self, s: i64) {
        for (i, t) in self.targets.iter_mut().enumerate() {
            if (s + i as i64) % 10 != 0 {
                continue;
            }
            if t.up {
                t.check_fails = 0;
                t.check_passes = t.check_passes.saturating_add(1);
                if !t.lb_healthy && t.check_passes >= 3 {
                    t.lb_healthy = true;
                }
            } else {
                t.check_passes = 0;
                t.check_fails = t.check_fails.saturating_add(1);
                if t.check_fails >= 2 {
                    t.lb_healthy = false;
                }
            }
        }
    }

    /// Which targets each backend routes to this second, and its utilisation.
    fn route_table(&mut self, s: i64) {
        for b in &mut self.backends {
            b.routable.clear();
            let mut weight = 0.0;
            for &t in &b.targets {
                let t_ = &self.targets[t];
                if t_.lb_healthy && t_.ejected_until <= s {
                    b.routable.push(t);
                    weight += f64::from(t_.weight);
                }
            }
            let lambda = b.share * season(s) * b.noise * self.scale;
            let capacity = b.target_capacity * weight * b.capacity_factor;
            b.utilisation = if capacity > 0.0 { (lambda + b.retry_rate) / capacity } else { f64::INFINITY };
        }
    }

    fn end_of_second(&mut self, s: i64) {
        for b in &mut self.backends {
            b.retry_rate = 0.8 * b.retry_rate + 0.2 * f64::from(b.retries_now);
            let share = if b.attempts_now > 0 { f64::from(b.failures_now) / f64::from(b.attempts_now) } else { 0.0 };
            let alpha = (f64::from(b.attempts_now) / 50.0).min(0.3);
            b.failure_share = (1.0 - alpha) * b.failure_share + alpha * share;
            b.attempts_now = 0;
            b.retries_now = 0;
            b.failures_now = 0;
        }
        // lb_targets samples due at the end of this second.
        let next = s + 1;
        self.sample_buf.clear();
        for l in 0..self.lbs.len() {
            if (next - self.start) % self.lbs[l].sample_every != 0 {
                continue;
            }
            for i in 0..self.lbs[l].targets.len() {
                let t = self.lbs[l].targets[i];
                let ts = next * US + self.rng.random_range(0..250_000);
                self.sample_buf.push((ts, t));
            }
        }
        self.sample_buf.sort_unstable();
        let buf = std::mem::take(&mut self.sample_buf);
        for &(ts, t) in &buf {
            self.sample(ts, t, next);
        }
        self.sample_buf = buf;
    }

    fn sample(&mut self, ts: i64, t: usize, s: i64) {
        let target = &self.targets[t];
        let b = &self.backends[target.backend];
        let every = self.lbs[b.lb].sample_every as f64;
        let rps = f64::from(target.n) / every;
        let avg = (target.n_answered > 0).then(|| round3(target.sum_ms / f64::from(target.n_answered)));
        let error_rate = (target.n > 0).then(|| round6(f64::from(target.n_errors) / f64::from(target.n)));
        let in_flight = rps * avg.unwrap_or(0.0) / 1000.0;
        let idle = if target.up { self.rng.random_range(2..=6) } else { 0 };
        let active = (in_flight.round() as i32 + idle).max(0);
        let queue = if target.up && b.utilisation > 0.8 {
            (in_flight * (b.utilisation.min(3.0) - 0.8) * 5.0).round() as i32 + self.rng.random_range(0..=2)
        } else {
            0
        };
        let row = TargetRow {
            ts,
            lb: &self.lbs[b.lb].name,
            backend: &b.name,
            target: &target.name,
            zone: ZONES[target.zone],
            healthy: target.lb_healthy,
            active_conns: active,
            rejected_conns: target.n_shed as i32,
            queue_depth: queue,
            weight: target.weight,
            ejected: target.ejected_until > s,
            requests_per_s: round3(rps),
            avg_response_ms: avg,
            error_rate,
        };
        self.samples.push(&row);
        let target = &mut self.targets[t];
        target.n = 0;
        target.n_answered = 0;
        target.sum_ms = 0.0;
        target.n_errors = 0;
        target.n_shed = 0;
        if self.samples.len() >= self.cfg.batch_rows {
            self.out.push_back(Batch::Targets(self.samples.finish()));
        }
    }

    fn health_check_row(&mut self, ts: i64, t: usize) {
        let target = &self.targets[t];
        let b = &self.backends[target.backend];
        let rng = &mut self.rng;
        let (lb_status, target_status, connect, target_ms, total, flags) = if target.up {
            let c = round3(lognormal(rng, 0.4, 0.4));
            let tm = round3(lognormal(rng, 1.5, 0.5));
            (200, Some(200), Some(c), Some(tm), round3(c + tm + 0.05), None)
        } else if target.blackhole {
            (504, None, None, None, 2000.0, Some("UF"))
        } else {
            (502, None, None, None, round3(lognormal(rng, 0.5, 0.5)), Some("UF"))
        };
        let row = RequestRow {
            ts,
            lb: &self.lbs[b.lb].name,
            listener: HEALTH_LISTENER,
            backend: &b.name,
            target: Some(&target.name),
            zone: Some(ZONES[target.zone]),
            client_id: HEALTH_CLIENT,
            request_id: splitmix(self.cfg.seed ^ 0x6865_616c_7468 ^ self.seq.wrapping_add(ts as u64)),
            attempt: 1,
            method: "GET",
            path_template: "/healthz",
            lb_status,
            target_status,
            connect_ms: connect,
            target_ms,
            total_ms: total,
            request_bytes: 120,
            response_bytes: if target.up { 64 } else { 0 },
            timed_out: target.blackhole && !target.up,
            response_flags: flags,
            retry_after: None,
            is_health_check: true,
        };
        self.requests.push(&row);
    }

    /// One client attempt: route it, answer it, log it, and schedule the client's retry if it makes one.
    fn attempt(&mut self, ts: i64, b: usize, (c, caller): (usize, u8), p: usize, request: u64, attempt: u16) {
        let s = ts.div_euclid(US);
        let rng = &mut self.rng;
        let backend = &self.backends[b];
        let path = &backend.paths[p];
        let client = &self.clients[c];
        let u = backend.utilisation;
        let request_bytes = lognormal(rng, path.request_bytes, if path.idempotent { 0.3 } else { 1.0 }).round() as i64;

        let mut o = Outcome::default();
        let chosen = if backend.routable.is_empty() {
            None
        } else {
            // Weighted choice among the routable targets.
            let total: i32 = backend.routable.iter().map(|&t| i32::from(self.targets[t].weight)).sum();
            let mut r = rng.random_range(0..total);
            let mut pick = backend.routable[0];
            for &t in &backend.routable {
                r -= i32::from(self.targets[t].weight);
                if r < 0 {
                    pick = t;
                    break;
                }
            }
            Some(pick)
        };
        match chosen {
            None => {
                // No healthy target: the load balancer answers itself.
                o.lb_status = 503;
                o.flags = Some("UH");
                o.total_ms = round3(lognormal(rng, 0.3, 0.5));
            }
            Some(t) if !self.targets[t].up => {
                o.flags = Some("UF");
                if self.targets[t].blackhole {
                    o.lb_status = 504;
                    o.timed_out = true;
                    o.total_ms = round3(2000.0 + lognormal(rng, 0.5, 0.5));
                } else {
                    o.lb_status = 502;
                    o.total_ms = round3(lognormal(rng, 1.0, 0.6));
                }
            }
            Some(t) => {
                let target = &self.targets[t];
                let connect = round3(lognormal(rng, 0.4, 0.45));
                o.connect_ms = Some(connect);
                let shed = u > 1.0 && rng.random_bool((1.0 - 1.0 / u).min(0.95));
                if shed {
                    // Overloaded: the target sheds the request at once.
                    o.target_status = Some(503);
                    o.retry_after = rng.random_bool(0.8).then(|| rng.random_range(1..=5));
                    o.target_ms = Some(round3(lognormal(rng, 0.8, 0.4)));
                    o.shed = true;
                } else {
                    let z: f64 = rng.sample(StandardNormal);
                    let mut ms = path.median_ms
                        * util_factor(u)
                        * backend.latency_factor
                        * if target.bad_version { 1.5 } else { 1.0 }
                        * (0.55 * z).exp();
                    let tail = 0.008 + 0.05 * (u - 0.8).max(0.0);
                    if rng.random_bool(tail.min(0.5)) {
                        // Pareto tail: GC pauses, cold caches, slow disks.
                        let v: f64 = rng.random::<f64>().max(1e-12);
                        ms *= 2.0 * v.powf(-1.0 / 1.3);
                    }
                    let ms = round3(ms.min(600_000.0));
                    if ms > backend.timeout_ms {
                        o.lb_status = 504;
                        o.timed_out = true;
                        o.flags = Some("UT");
                        o.total_ms = round3(connect + backend.timeout_ms + 0.2);
                    } else {
                        o.target_ms = Some(ms);
                        let p5 = 0.0004
                            + (0.15 * ((u - 0.8) / 0.2).max(0.0).powi(2)).min(0.5)
                            + if target.bad_version { backend.bad_share } else { 0.0 };
                        let r: f64 = rng.random();
                        o.target_status = Some(if r < p5 {
                            let k: f64 = rng.random();
                            if k < 0.6 {
                                500
                            } else if k < 0.7 {
                                502
                            } else {
                                o.retry_after = rng.random_bool(0.4).then(|| rng.random_range(1..=10));
                                503
                            }
                        } else if client.heavy && rng.random_bool(0.02) {
                            // A heavy caller over its rate limit.
                            o.retry_after = Some(if rng.random_bool(0.1) { 60 } else { rng.random_range(1..=30) });
                            429
                        } else {
                            let k: f64 = rng.random();
                            match path.method {
                                "GET" if k < 0.025 => 404,
                                "GET" if k < 0.055 => 304,
                                "PUT" if k < 0.01 => 409,
                                _ if k < 0.065 => 400,
                                _ if k < 0.069 => 401,
                                "POST" => 201,
                                "DELETE" => 204,
                                _ => 200,
                            }
                        });
                    }
                }
                if let Some(st) = o.target_status {
                    o.lb_status = st;
                    let ok = (200..400).contains(&st);
                    o.response_bytes = if st == 204 || st == 304 {
                        0
                    } else if ok {
                        lognormal(rng, path.response_bytes, 0.8).round() as i64
                    } else {
                        rng.random_range(90..400)
                    };
                    let tm = o.target_ms.unwrap_or(0.0);
                    // Response transfer at ~50 MB/s plus the load balancer's own time.
                    o.total_ms = round3(connect + tm + o.response_bytes as f64 / 50_000.0 + lognormal(rng, 0.15, 0.3));
                }
                o.target = Some(t);
            }
        }
        let failed = o.lb_status >= 500;

        // Bookkeeping for lb_targets and the backend's load.
        if let Some(t) = o.target.or(chosen) {
            let target = &mut self.targets[t];
            target.n += 1;
            if let Some(ms) = o.target_ms {
                target.n_answered += 1;
                target.sum_ms += ms;
            }
            if failed {
                target.n_errors += 1;
            }
            // Outlier detection counts errors, but not 503 (a target shedding load is busy, not broken;
            // ejecting it would only overload the others).
            if failed && o.lb_status != 503 {
                target.consecutive_errors += 1;
                if target.consecutive_errors >= 5 {
                    // Eject for 30 s times the number of ejections (at most 5 min), unless half the
                    // backend is out already.
                    let backend = &self.backends[b];
                    let out = backend.targets.iter().filter(|&&x| self.targets[x].ejected_until > s).count();
                    let target = &mut self.targets[t];
                    if 2 * (out + 1) <= backend.targets.len() {
                        target.ejections += 1;
                        target.ejected_until = s + (30 * i64::from(target.ejections)).min(300);
                    }
                    target.consecutive_errors = 0;
                }
            } else if !failed {
                target.consecutive_errors = 0;
            }
            if o.shed {
                self.targets[t].n_shed += 1;
            }
        }
        let backend = &mut self.backends[b];
        backend.attempts_now += 1;
        if attempt > 1 {
            backend.retries_now += 1;
        }
        if failed {
            backend.failures_now += 1;
        }

        let backend = &self.backends[b];
        let path = &backend.paths[p];
        let target = o.target.or(chosen).map(|t| &self.targets[t]);
        let row = RequestRow {
            ts,
            lb: &self.lbs[backend.lb].name,
            listener: LISTENER,
            backend: &backend.name,
            target: target.map(|t| t.name.as_str()),
            zone: target.map(|t| ZONES[t.zone]),
            client_id: &self.clients[c].name,
            request_id: request,
            attempt: attempt as i16,
            method: path.method,
            path_template: &path.template,
            lb_status: o.lb_status,
            target_status: o.target_status,
            connect_ms: o.connect_ms,
            target_ms: o.target_ms,
            total_ms: o.total_ms,
            request_bytes,
            response_bytes: o.response_bytes,
            timed_out: o.timed_out,
            response_flags: o.flags,
            retry_after: o.retry_after,
            is_health_check: false,
        };
        self.requests.push(&row);

        let policy = self.clients[c].profile.policy(caller.into(), ts);
        if let Some(delay_s) = self.retry_delay(c, policy, attempt, path.idempotent, &o) {
            let next = ts + (o.total_ms * 1000.0).round() as i64 + (delay_s * 1e6).round() as i64 + 1;
            self.push(
                next,
                EventKind::Attempt {
                    backend: b as u32,
                    client: c as u32,
                    caller,
                    path: p as u16,
                    request,
                    attempt: attempt + 1,
                },
            );
        }
    }

    /// Whether client `c`, following `policy`, retries, and after how many seconds.
    fn retry_delay(&mut self, c: usize, policy: Policy, attempt: u16, idempotent: bool, o: &Outcome) -> Option<f64> {
        let retryable = o.timed_out || matches!(o.lb_status, 429 | 500 | 502 | 503 | 504);
        let client = &mut self.clients[c];
        if !retryable || attempt >= policy.max_attempts() {
            return None;
        }
        let rng = &mut self.rng;
        if !idempotent {
            // POST is retried by naive clients half the time; the others only when the server said it did
            // not process the request (429, 503), and then only sometimes.
            let p = match policy {
                Policy::Naive => 0.5,
                _ if matches!(o.lb_status, 429 | 503) => 0.3,
                _ => 0.0,
            };
            if !rng.random_bool(p) {
                return None;
            }
        }
        // Some callers give up anyway: the user went away, the more often the longer the wait.
        if rng.random_bool(0.03 + 0.17 * (o.total_ms / 10_000.0).min(1.0)) {
            return None;
        }
        let backoff =
            |rng: &mut ChaCha8Rng| rng.random_range(0.0..(0.1 * f64::from(1u32 << attempt.min(16))).min(20.0));
        match policy {
            Policy::None => None,
            Policy::Naive => Some(rng.random_range(0.0..0.02)),
            Policy::Exponential => Some(backoff(rng).max(o.retry_after.map_or(0.0, f64::from))),
            Policy::Budgeted => {
                if client.tokens < 1.0 {
                    return None;
                }
                client.tokens -= 1.0;
                Some(backoff(rng).max(o.retry_after.map_or(0.0, f64::from)))
            }
        }
    }
}

#[derive(Default)]
struct Outcome {
    lb_status: i16,
    target_status: Option<i16>,
    target: Option<usize>,
    connect_ms: Option<f64>,
    target_ms: Option<f64>,
    total_ms: f64,
    response_bytes: i64,
    timed_out: bool,
    flags: Option<&'static str>,
    retry_after: Option<i32>,
    shed: bool,
}

fn backend_paths(svc: &str, speed: f64) -> Vec<Path> {
    let p = |method, template: String, share: f64, median_ms: f64, response_bytes: f64, request_bytes: f64| Path {
        method,
        idempotent: method != "POST",
        template,
        median_ms: median_ms * speed,
        response_bytes,
        request_bytes,
        cumulative: share,
    };
    let mut paths = vec![
        p("GET", format!("/api/v1/{svc}/{{id}}"), 0.45, 12.0, 2_000.0, 450.0),
        p("GET", format!("/api/v1/{svc}"), 0.17, 35.0, 20_000.0, 450.0),
        p("GET", format!("/api/v1/{svc}/search"), 0.08, 70.0, 8_000.0, 600.0),
        p("POST", format!("/api/v1/{svc}"), 0.20, 45.0, 500.0, 2_000.0),
        p("PUT", format!("/api/v1/{svc}/{{id}}"), 0.07, 30.0, 400.0, 1_500.0),
        p("DELETE", format!("/api/v1/{svc}/{{id}}"), 0.03, 18.0, 0.0, 300.0),
    ];
    let mut acc = 0.0;
    for path in &mut paths {
        acc += path.cumulative;
        path.cumulative = acc;
    }
    paths
}

fn pick_path(paths: &[Path], u: f64) -> u16 {
    paths.iter().position(|p| u < p.cumulative).unwrap_or(paths.len() - 1) as u16
}

/// Relative traffic at second `s` (UTC): a diurnal curve from 0.3 at 02:00 to 1.0 at 14:00, lighter on
/// weekends.
pub fn season(s: i64) -> f64 {
    let day_s = s.rem_euclid(86_400) as f64;
    let hour = day_s / 3600.0;
    let diurnal = 0.3 + 0.7 * (1.0 - (2.0 * std::f64::consts::PI * (hour - 2.0) / 24.0).cos()) / 2.0;
    // 1970-01-01 was a Thursday: day 0 = Thursday.
    let weekday = (s.div_euclid(86_400) + 3).rem_euclid(7); // 0 = Monday
    let weekly = match weekday {
        5 => 0.65,
        6 => 0.6,
        4 => 0.92,
        _ => 1.0,
    };
    diurnal * weekly
}

/// How much slower a target answers at utilisation `u` (a queueing curve, capped near saturation).
fn util_factor(u: f64) -> f64 {
    let u = u.clamp(0.0, 0.985);
    1.0 + 0.15 * u / (1.0 - u)
}

fn lognormal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    let z: f64 = rng.sample(StandardNormal);
    median * (sigma * z).exp()
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// SplitMix64: a bijective mix, for ids and per-client choices independent of the simulation's stream.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Parses `--start`: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS]` or with a `T`, as UTC; microseconds since
/// the epoch.
pub fn parse_start(s: &str) -> Result<i64, ConfigError> {
    use chrono::{NaiveDate, NaiveDateTime};
    let s = s.trim().trim_end_matches('Z');
    let parsed = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .or_else(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)));
    parsed
        .map(|t| t.and_utc().timestamp() * US)
        .ok_or_else(|| ConfigError(format!("cannot read --start {s:?}: use YYYY-MM-DD or YYYY-MM-DD HH:MM:SS (UTC)")))
}
