//! RFC 9457 problem details: the one error type of the HTTP API, and the one table that maps
//! domain and command errors to HTTP statuses.

use eq_actors::equipment::{CommandError, Rejection};
use poem_openapi::{ApiResponse, Object, payload::Json};

use crate::auth::Refusal;

/// A problem detail (`application/problem+json`).
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct Problem {
    /// A URI reference naming the problem type (`urn:equipment-live:problem:<code>`).
    #[oai(rename = "type")]
    pub kind: String,
    /// Short, human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence.
    pub detail: String,
    /// A stable machine-readable code (`not_found`, `version_mismatch`, …).
    pub code: String,
}

impl Problem {
    pub fn new(status: u16, code: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:equipment-live:problem:{code}"),
            title: title_of(status).to_string(),
            status,
            detail: detail.into(),
            code: code.to_string(),
        }
    }
}

fn title_of(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ if status >= 500 => "Internal Server Error",
        _ => "Client Error",
    }
}

/// Every error an API operation can answer with.
#[derive(Debug, ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum ApiError {
    /// The request does not parse (malformed JSON, a wrong type, a missing field, an
    /// invalid path or header).
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// No valid bearer token: missing, malformed, forged, expired, revoked, or for another
    /// audience.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>, #[oai(header = "WWW-Authenticate")] String),
    /// The token's role may not do this, or the machine is outside the token's site/line
    /// scope.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    /// The equipment does not exist.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// The equipment exists already, is decommissioned, or the idempotency key was used for
    /// another request.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// `If-Match` names a version that is no longer current.
    #[oai(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Json<Problem>),
    /// The request parses but breaks a rule (a field too long, a reason required, …).
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(Json<Problem>),
    /// The body is larger than the gateway accepts (`--max-body-bytes`).
    #[oai(status = 413, content_type = "application/problem+json")]
    TooLarge(Json<Problem>),
    /// The body is not `application/json` (no `Content-Type`, or another media type).
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// This token made too many requests; retry after the given number of seconds.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u32),
    /// The event store or the owning shard is not reachable right now; retry after the
    /// given number of seconds (with the same `Idempotency-Key`).
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u32),
}

/// Turns poem-openapi's request extraction errors into a problem: the bearer check's
/// refusals (401, 429), anything else a 400.
fn bad_request(err: poem::Error) -> ApiError {
    if let Some(refused) = auth_refusal(&err) {
        return refused;
    }
    metrics::counter!("eq_http_rejects_total", "code" => "bad_request").increment(1);
    ApiError::BadRequest(Json(Problem::new(400, "bad_request", err.to_string())))
}

/// The problem for an error of the bearer check (a refused or a missing token), which
/// poem-openapi raises before the handler runs.
pub fn auth_refusal(err: &poem::Error) -> Option<ApiError> {
    if let Some(refusal) = err.downcast_ref::<Refusal>() {
        return Some(refusal.clone().into());
    }
    (err.status() == poem::http::StatusCode::UNAUTHORIZED).then(|| {
        ApiError::unauthorized(
            "token_missing",
            "this operation needs an `Authorization: Bearer <token>` header",
        )
    })
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unauthenticated(e) => ApiError::unauthorized(e.code(), e.to_string()),
            Refusal::RateLimited(wait) => {
                count("rate_limited");
                let secs = wait.as_secs_f64().ceil().max(1.0) as u32;
                ApiError::TooManyRequests(
                    Json(Problem::new(
                        429,
                        "rate_limited",
                        format!("too many requests with this token: retry in {secs} s"),
                    )),
                    secs,
                )
            }
        }
    }
}

impl ApiError {
    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        count(code);
        ApiError::BadRequest(Json(Problem::new(400, code, detail)))
    }

    pub fn unprocessable(code: &str, detail: impl Into<String>) -> Self {
        count(code);
        ApiError::Unprocessable(Json(Problem::new(422, code, detail)))
    }

    /// 401, with the `WWW-Authenticate` challenge of RFC 6750.
    pub fn unauthorized(code: &str, detail: impl Into<String>) -> Self {
        count(code);
        let detail = detail.into();
        // RFC 6750 §3: no error code when the request carried no token at all.
        let challenge = if code == "token_missing" {
            "Bearer realm=\"equipment-live\""
        } else {
            "Bearer realm=\"equipment-live\", error=\"invalid_token\""
        };
        ApiError::Unauthorized(Json(Problem::new(401, code, detail)), challenge.to_string())
    }

    pub fn forbidden(code: &str, detail: impl Into<String>) -> Self {
        count(code);
        ApiError::Forbidden(Json(Problem::new(403, code, detail)))
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::not_found_as("not_found", detail)
    }

    /// A 404 with a more specific code.
    pub fn not_found_as(code: &str, detail: impl Into<String>) -> Self {
        count(code);
        ApiError::NotFound(Json(Problem::new(404, code, detail)))
    }

    pub fn conflict(code: &str, detail: impl Into<String>) -> Self {
        count(code);
        ApiError::Conflict(Json(Problem::new(409, code, detail)))
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        count("unavailable");
        ApiError::Unavailable(Json(Problem::new(503, "unavailable", detail)), 1)
    }
}

fn count(code: &str) {
    metrics::counter!("eq_http_rejects_total", "code" => code.to_string()).increment(1);
}

impl From<eq_actors::domain::InvalidField> for ApiError {
    fn from(err: eq_actors::domain::InvalidField) -> Self {
        ApiError::unprocessable("invalid_field", err.to_string())
    }
}

/// The mapping of command outcomes to HTTP statuses.
impl From<CommandError> for ApiError {
    fn from(err: CommandError) -> Self {
        let detail = err.to_string();
        let code = err.code();
        count(code);
        let problem = |status| Json(Problem::new(status, code, detail.clone()));
        match err {
            CommandError::Rejected(rejection) => match rejection {
                Rejection::NotFound | Rejection::NoSuchStop(_) => ApiError::NotFound(problem(404)),
                Rejection::AlreadyExists
                | Rejection::AlertNotDue
                | Rejection::Decommissioned
                | Rejection::IdempotencyKeyReused => ApiError::Conflict(problem(409)),
                Rejection::VersionMismatch { .. } => ApiError::PreconditionFailed(problem(412)),
                Rejection::ReasonRequired | Rejection::EmptyUpdate => {
                    ApiError::Unprocessable(problem(422))
                }
                Rejection::OutOfScope => ApiError::Forbidden(problem(403)),
            },
            CommandError::Fenced
            | CommandError::Unavailable(_)
            | CommandError::ActorStopped
            | CommandError::NotHosted
            | CommandError::TimedOut => ApiError::Unavailable(problem(503), 1),
        }
    }
}

/// Builds a problem response outside poem-openapi (unknown routes, body limits, …).
pub fn problem_response(status: u16, code: &str, detail: impl Into<String>) -> poem::Response {
    count(code);
    let body = serde_json::json!({
        "type": format!("urn:equipment-live:problem:{code}"),
        "title": title_of(status),
        "status": status,
        "detail": detail.into(),
        "code": code,
    });
    poem::Response::builder()
        .status(
            poem::http::StatusCode::from_u16(status)
                .unwrap_or(poem::http::StatusCode::INTERNAL_SERVER_ERROR),
        )
        .content_type("application/problem+json")
        .body(body.to_string())
}
