//! `Analytics` operations: time in state for one machine, and fleet reports (availability
//! per machine, line and shift; downtime by reason as a Pareto; MTBF and MTTR). Read from
//! the state spans the history consumer maintains; computed by `history::analytics`.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use eq_actors::Version;
use eq_actors::domain::{Line, ReasonCode, Site};
use eq_actors::equipment::{Action, ReasonCorrection};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
};

use super::auth::Caller;
use super::equipment::CommandResult;
use super::problem::ApiError;
use super::token::{IdempotencyKey, IfMatch, Token};
use super::{ApiTags, AppState, api_command, parse_id};
use crate::auth::Operation;
use crate::history::analytics::{self, FleetTotals, Scope, Totals, Window};
use crate::history::calendar::Calendar;
use crate::history::queries::{self, SpanFilter};

/// The longest window a report may cover.
const MAX_WINDOW_DAYS: i64 = 400;

/// Figures over a window.
#[derive(Debug, Clone, Object)]
pub struct Figures {
    pub green_seconds: f64,
    pub yellow_seconds: f64,
    /// Red without a planned reason.
    pub red_seconds: f64,
    /// Red with a reason the catalogue marks planned (not planned production time).
    pub planned_stop_seconds: f64,
    /// In service, inside the shifts (if the site has a calendar), less planned stops.
    pub planned_seconds: f64,
    /// Green / planned time (null without planned time).
    #[oai(nullable)]
    pub availability: Option<f64>,
    /// Unplanned stops that began in the window.
    pub stops: u64,
    /// Mean time to repair: unplanned red time per stop (null without stops).
    #[oai(nullable)]
    pub mttr_seconds: Option<f64>,
    /// Mean time between failures: planned time not red, per stop (null without stops).
    #[oai(nullable)]
    pub mtbf_seconds: Option<f64>,
}

impl From<&Totals> for Figures {
    fn from(t: &Totals) -> Self {
        let s = |ms: i64| ms as f64 / 1000.0;
        Figures {
            green_seconds: s(t.green_ms),
            yellow_seconds: s(t.yellow_ms),
            red_seconds: s(t.red_ms),
            planned_stop_seconds: s(t.planned_stop_ms),
            planned_seconds: s(t.planned_ms()),
            availability: t.availability(),
            stops: t.stops,
            mttr_seconds: t.mttr_ms().map(|ms| ms / 1000.0),
            mtbf_seconds: t.mtbf_ms().map(|ms| ms / 1000.0),
        }
    }
}

/// Downtime of one reason.
#[derive(Debug, Clone, Object)]
pub struct ReasonDowntime {
    /// Reason code; `unqualified` for red without a reason.
    pub reason: String,
    /// Name from the catalogue.
    #[oai(nullable)]
    pub name: Option<String>,
    /// Group in the catalogue's tree.
    #[oai(nullable)]
    pub parent: Option<String>,
    /// Planned downtime (catalogue).
    pub planned: bool,
    pub seconds: f64,
    /// Stops that began with this reason.
    pub stops: u64,
    /// Share of all red time in the window (0 to 1).
    pub share: f64,
}

/// One machine's time in each status.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct TimeInState {
    pub equipment_id: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub figures: Figures,
    /// Red time by reason, largest first.
    pub downtime: Vec<ReasonDowntime>,
}

/// A machine's figures.
#[derive(Debug, Clone, Object)]
pub struct MachineFigures {
    pub id: String,
    /// Where the machine was at the end of the window.
    pub site: String,
    pub line: String,
    pub figures: Figures,
}

/// A line's figures (spans count for the line the machine was on at the time).
#[derive(Debug, Clone, Object)]
pub struct LineFigures {
    pub site: String,
    pub line: String,
    pub figures: Figures,
}

/// A shift's figures (every site's shifts of that name).
#[derive(Debug, Clone, Object)]
pub struct ShiftFigures {
    pub shift: String,
    pub figures: Figures,
}

/// Availability of a fleet.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct AvailabilityReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub total: Figures,
    pub lines: Vec<LineFigures>,
    pub machines: Vec<MachineFigures>,
    /// Per shift, where sites have shift calendars.
    pub shifts: Vec<ShiftFigures>,
}

/// Downtime of a fleet by reason.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct DowntimeReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Largest first.
    pub reasons: Vec<ReasonDowntime>,
    /// The same rolled up to the catalogue's top-level groups (a reason without a parent
    /// is its own group), largest first.
    pub categories: Vec<CategoryDowntime>,
}

/// Downtime of a top-level group of reasons.
#[derive(Debug, Clone, Object)]
pub struct CategoryDowntime {
    pub category: String,
    #[oai(nullable)]
    pub name: Option<String>,
    pub seconds: f64,
    pub stops: u64,
    pub share: f64,
}

/// One stop of a machine: red from `start` until it left red.
#[derive(Debug, Clone, Object)]
pub struct StopView {
    /// The version of the event that began the stop: use it to correct the reason.
    pub version: u64,
    pub start: DateTime<Utc>,
    /// Null while the machine is still red.
    #[oai(nullable)]
    pub end: Option<DateTime<Utc>>,
    pub seconds: f64,
    /// The reason in effect (after corrections); null: unqualified.
    #[oai(nullable)]
    pub reason: Option<String>,
    /// Planned downtime (catalogue).
    pub planned: bool,
}

/// The stops that began in a window.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct StopList {
    pub equipment_id: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub stops: Vec<StopView>,
}

/// The reason a past stop should have.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct StopReason {
    /// A reason code (of the catalogue, if one is configured); absent or null: unqualified.
    #[oai(nullable)]
    pub reason: Option<Token>,
}

impl poem_openapi::types::Example for StopReason {
    fn example() -> Self {
        StopReason {
            reason: Some(Token("jam".into())),
        }
    }
}

#[derive(ApiResponse)]
pub enum StopsAnswer {
    #[oai(status = 200)]
    Ok(Json<StopList>),
}

#[derive(ApiResponse)]
pub enum TimeInStateAnswer {
    #[oai(status = 200)]
    Ok(Json<TimeInState>),
}

#[derive(ApiResponse)]
pub enum AvailabilityAnswer {
    #[oai(status = 200)]
    Ok(Json<AvailabilityReport>),
}

#[derive(ApiResponse)]
pub enum DowntimeAnswer {
    #[oai(status = 200)]
    Ok(Json<DowntimeReport>),
}

/// Operations of this tag.
#[derive(Default)]
pub struct AnalyticsApi;

#[OpenApi(tag = "ApiTags::Analytics")]
impl AnalyticsApi {
    /// Time in each status
    ///
    /// Seconds per status, availability (green / planned time), stops, MTTR and MTBF, and
    /// red time by reason over `[from, to)` (default: the last 24 hours). Planned time is
    /// the site's shifts when it has a calendar, less planned stops. `from` must be before
    /// `to`, at most 400 days apart (400 `invalid_range` otherwise).
    #[oai(
        path = "/v1/equipment/:id/time-in-state",
        method = "get",
        operation_id = "getTimeInState"
    )]
    async fn time_in_state(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        id: Path<Token>,
        /// Start of the window (default: 24 hours before `to`).
        from: Query<Option<DateTime<Utc>>>,
        /// End of the window, exclusive (default: now).
        to: Query<Option<DateTime<Utc>>>,
    ) -> Result<TimeInStateAnswer, ApiError> {
        caller.require(Operation::Read)?;
        let (id, from, to, filter) = one_machine(&state, id.0, from.0, to.0).await?;
        let fleet = compute(&state, &filter, from, to).await?;
        let totals = fleet.all;
        Ok(TimeInStateAnswer::Ok(Json(TimeInState {
            equipment_id: id,
            from,
            to,
            figures: (&totals).into(),
            downtime: downtime(&totals, &state.calendar),
        })))
    }

    /// A machine's stops
    ///
    /// The stops (red periods) that began in `[from, to)` (default: the last 24 hours),
    /// with their reasons after corrections; a stop without a reason is unqualified. `from`
    /// must be before `to`, at most 400 days apart (400 `invalid_range` otherwise).
    #[oai(
        path = "/v1/equipment/:id/stops",
        method = "get",
        operation_id = "listStops"
    )]
    async fn stops(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        id: Path<Token>,
        from: Query<Option<DateTime<Utc>>>,
        to: Query<Option<DateTime<Utc>>>,
    ) -> Result<StopsAnswer, ApiError> {
        caller.require(Operation::Read)?;
        let (id, from, to, filter) = one_machine(&state, id.0, from.0, to.0).await?;
        // Up to now: a stop that began in the window may end after it.
        let now = Utc::now().max(to);
        let spans = queries::spans(
            state.db()?,
            &filter,
            Window {
                from_ms: from.timestamp_millis(),
                to_ms: now.timestamp_millis(),
            },
        )
        .await
        .map_err(|e| ApiError::unavailable(format!("history database: {e}")))?;
        let planned = state.calendar.planned_reasons();
        let at = |ms: i64| Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
        let stops = analytics::stops(&spans)
            .into_iter()
            .filter(|s| s.start_ms >= from.timestamp_millis() && s.start_ms < to.timestamp_millis())
            .map(|s| StopView {
                version: s.version,
                start: at(s.start_ms),
                end: s.end_ms.map(at),
                seconds: (s.end_ms.unwrap_or(now.timestamp_millis()) - s.start_ms) as f64 / 1000.0,
                planned: s.reason.as_ref().is_some_and(|r| planned.contains(r)),
                reason: s.reason,
            })
            .collect();
        Ok(StopsAnswer::Ok(Json(StopList {
            equipment_id: id,
            from,
            to,
            stops,
        })))
    }

    /// Assign or correct the reason of a past stop
    ///
    /// Recorded as an event of its own through the machine's actor (the history is never
    /// overwritten); reports reflect it once the history has it. The stop must have ended
    /// (while a machine is still red, set its status with a reason instead). With a
    /// catalogue configured, the reason must be one of its codes. Needs the `supervisor`
    /// role and a scope covering the machine.
    #[oai(
        path = "/v1/equipment/:id/stops/:version/reason",
        method = "put",
        operation_id = "correctStopReason"
    )]
    #[allow(clippy::too_many_arguments)] // one argument per request part
    async fn correct_reason(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        id: Path<Token>,
        /// The stop's `version` (from the stop list); at most 2^53 - 1, like every version
        /// (what a JSON number holds exactly).
        #[oai(validator(minimum(value = "0"), maximum(value = "9007199254740991")))]
        version: Path<u64>,
        body: Json<StopReason>,
        /// The machine's current version (`ETag`); 412 if it moved on.
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// Makes a retry safe.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
    ) -> Result<CommandResult, ApiError> {
        let who = caller.require(Operation::CorrectReason)?;
        let id = parse_id(id.0.into_inner())?;
        let reason = body
            .0
            .reason
            .map(|t| ReasonCode::parse(t.into_inner()))
            .transpose()
            .map_err(ApiError::from)?;
        if let Some(code) = &reason
            && !state.calendar.reasons.is_empty()
            && state.calendar.reason(code.as_str()).is_none()
        {
            return Err(ApiError::unprocessable(
                "unknown_reason",
                format!("{code:?} is not in the reason catalogue"),
            ));
        }
        let (stop, ended) = match queries::span_at(state.db()?, id.as_str(), version.0)
            .await
            .map_err(|e| ApiError::unavailable(format!("history database: {e}")))?
        {
            Some((span, ended)) if span.starts_stop => (span, ended),
            found => {
                if found.is_none() {
                    // 404 `not_found` for an unknown machine, before `no_such_stop`.
                    state.current(&id).await?;
                }
                return Err(ApiError::not_found_as(
                    "no_such_stop",
                    format!("no stop begins at version {}", version.0),
                ));
            }
        };
        if !ended {
            return Err(ApiError::conflict(
                "stop_in_progress",
                "the machine is still red: set its status with a reason instead",
            ));
        }
        let action = Action::CorrectReason(ReasonCorrection {
            stop_version: Version(version.0),
            reason,
        });
        // A stop belongs to the line it happened on: the caller's scope must cover that
        // line, wherever the machine is now (the stop's place is history: it cannot move
        // between this check and the write, so the actor need not check it again).
        let mut command = api_command(id, action, who, if_match.0, idempotency_key.0)?;
        if let Some(scope) = command.scope.take() {
            let covered = Site::parse(stop.site.as_str())
                .ok()
                .zip(Line::parse(stop.line.as_str()).ok())
                .is_some_and(|(site, line)| scope.covers(&site, &line));
            if !covered {
                return Err(ApiError::forbidden(
                    "out_of_scope",
                    format!(
                        "the stop happened on {}/{}, outside the caller's scope",
                        stop.site, stop.line
                    ),
                ));
            }
        }
        Ok(state.execute(command).await?.into())
    }

    /// Availability of a fleet
    ///
    /// Per machine, per line and in total, with stops, MTTR and MTBF, over `[from, to)`
    /// (default: the last 24 hours), for a site and line if given; per shift where sites
    /// have shift calendars. `from` must be before `to`, at most 400 days apart (400
    /// `invalid_range` otherwise).
    #[oai(
        path = "/v1/reports/availability",
        method = "get",
        operation_id = "getAvailabilityReport"
    )]
    async fn availability(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        /// Only this site.
        site: Query<Option<Token>>,
        /// Only this line.
        line: Query<Option<Token>>,
        from: Query<Option<DateTime<Utc>>>,
        to: Query<Option<DateTime<Utc>>>,
    ) -> Result<AvailabilityAnswer, ApiError> {
        caller.require(Operation::Read)?;
        let (from, to) = window(from.0, to.0)?;
        let window = window_of(from, to);
        let spans = load(&state, &site_filter(site.0, line.0), window).await?;
        let fleet = aggregate(&state, &spans, window, None);
        let shifts = state
            .calendar
            .shift_names()
            .into_iter()
            .map(|shift| ShiftFigures {
                figures: (&aggregate(&state, &spans, window, Some(&shift)).all).into(),
                shift,
            })
            .collect();
        Ok(AvailabilityAnswer::Ok(Json(AvailabilityReport {
            from,
            to,
            total: (&fleet.all).into(),
            lines: fleet
                .lines
                .iter()
                .map(|((site, line), t)| LineFigures {
                    site: site.clone(),
                    line: line.clone(),
                    figures: t.into(),
                })
                .collect(),
            machines: fleet
                .machines
                .iter()
                .map(|(id, (site, line, t))| MachineFigures {
                    id: id.clone(),
                    site: site.clone(),
                    line: line.clone(),
                    figures: t.into(),
                })
                .collect(),
            shifts,
        })))
    }

    /// Downtime by reason
    ///
    /// Red time and stops per reason code over `[from, to)` (default: the last 24 hours),
    /// largest first (a Pareto); `unqualified` collects red time without a reason. `from`
    /// must be before `to`, at most 400 days apart (400 `invalid_range` otherwise).
    #[oai(
        path = "/v1/reports/downtime",
        method = "get",
        operation_id = "getDowntimeReport"
    )]
    async fn downtime(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        /// Only this site.
        site: Query<Option<Token>>,
        /// Only this line.
        line: Query<Option<Token>>,
        from: Query<Option<DateTime<Utc>>>,
        to: Query<Option<DateTime<Utc>>>,
    ) -> Result<DowntimeAnswer, ApiError> {
        caller.require(Operation::Read)?;
        let (from, to) = window(from.0, to.0)?;
        let fleet = compute(&state, &site_filter(site.0, line.0), from, to).await?;
        Ok(DowntimeAnswer::Ok(Json(DowntimeReport {
            from,
            to,
            reasons: downtime(&fleet.all, &state.calendar),
            categories: categories(&fleet.all, &state.calendar),
        })))
    }
}

/// A known machine (404 otherwise), its window and its spans' filter.
async fn one_machine(
    state: &AppState,
    id: Token,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<(String, DateTime<Utc>, DateTime<Utc>, SpanFilter), ApiError> {
    let id = parse_id(id.into_inner())?;
    let (from, to) = window(from, to)?;
    state.current(&id).await?;
    let filter = SpanFilter {
        equipment_id: Some(id.to_string()),
        ..SpanFilter::default()
    };
    Ok((id.to_string(), from, to, filter))
}

fn site_filter(site: Option<Token>, line: Option<Token>) -> SpanFilter {
    SpanFilter {
        equipment_id: None,
        site: site.map(Token::into_inner),
        line: line.map(Token::into_inner),
    }
}

/// The window `[from, to)`, defaulting to the 24 hours before now.
fn window(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let to = to.unwrap_or_else(Utc::now);
    let from = from.unwrap_or(to - Duration::hours(24));
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_range",
            "`from` must be before `to`",
        ));
    }
    if to - from > Duration::days(MAX_WINDOW_DAYS) {
        return Err(ApiError::bad_request(
            "invalid_range",
            format!("a window is at most {MAX_WINDOW_DAYS} days"),
        ));
    }
    Ok((from, to))
}

/// The spans that overlap `[from, to)`.
async fn load(
    state: &AppState,
    filter: &SpanFilter,
    window: Window,
) -> Result<Vec<analytics::Span>, ApiError> {
    queries::spans(state.db()?, filter, window)
        .await
        .map_err(|e| ApiError::unavailable(format!("history database: {e}")))
}

fn window_of(from: DateTime<Utc>, to: DateTime<Utc>) -> Window {
    Window {
        from_ms: from.timestamp_millis(),
        to_ms: to.timestamp_millis(),
    }
}

/// Aggregates spans over the window (only shift `shift`, if given).
fn aggregate(
    state: &AppState,
    spans: &[analytics::Span],
    window: Window,
    shift: Option<&str>,
) -> FleetTotals {
    let planned_reasons = state.calendar.planned_reasons();
    let scope = Scope {
        window,
        now_ms: Utc::now().timestamp_millis(),
        planned_reasons: &planned_reasons,
    };
    let calendar = &state.calendar;
    analytics::fleet(spans, scope, |site| calendar.planned(site, window, shift))
}

/// Reads the spans that overlap the window and aggregates them.
async fn compute(
    state: &AppState,
    filter: &SpanFilter,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<FleetTotals, ApiError> {
    let window = window_of(from, to);
    let spans = load(state, filter, window).await?;
    Ok(aggregate(state, &spans, window, None))
}

/// The Pareto of red time, with the catalogue's names.
fn downtime(totals: &Totals, calendar: &Calendar) -> Vec<ReasonDowntime> {
    let red = (totals.red_ms + totals.planned_stop_ms).max(1) as f64;
    totals
        .pareto()
        .into_iter()
        .map(|(reason, t)| {
            let entry = calendar.reason(&reason);
            ReasonDowntime {
                name: entry.map(|r| r.name.clone()).filter(|n| !n.is_empty()),
                parent: entry.and_then(|r| r.parent.clone()),
                planned: entry.is_some_and(|r| r.planned),
                seconds: t.red_ms as f64 / 1000.0,
                stops: t.stops,
                share: t.red_ms as f64 / red,
                reason,
            }
        })
        .collect()
}

/// Red time rolled up to the top of the catalogue's tree.
fn categories(totals: &Totals, calendar: &Calendar) -> Vec<CategoryDowntime> {
    let red = (totals.red_ms + totals.planned_stop_ms).max(1) as f64;
    let mut groups: std::collections::BTreeMap<String, (i64, u64)> = Default::default();
    for (reason, t) in &totals.by_reason {
        let group = groups.entry(calendar.root_of(reason)).or_default();
        group.0 += t.red_ms;
        group.1 += t.stops;
    }
    let mut out: Vec<CategoryDowntime> = groups
        .into_iter()
        .map(|(category, (ms, stops))| CategoryDowntime {
            name: calendar
                .reason(&category)
                .map(|r| r.name.clone())
                .filter(|n| !n.is_empty()),
            seconds: ms as f64 / 1000.0,
            stops,
            share: ms as f64 / red,
            category,
        })
        .collect();
    out.sort_by(|a, b| {
        b.seconds
            .total_cmp(&a.seconds)
            .then_with(|| a.category.cmp(&b.category))
    });
    out
}
