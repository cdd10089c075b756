//! The API's security scheme (a bearer JWT on every `/v1` operation) and the role check
//! each operation makes before it does anything.

use std::sync::Arc;

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::{ApiKey, Bearer};

use super::AppState;
use super::problem::ApiError;
use crate::auth::{Operation, Principal, Refusal};

/// A JWT signed with HS256 by the installation's key (`equipment-live token` issues them):
/// `sub` (recorded as `updated_by`), `aud` (`equipment-live` unless configured otherwise),
/// `exp`, `role` (`viewer`, `operator`, `supervisor`, `admin`) and `scopes` (`*`, `<site>`
/// or `<site>/<line>`: where the token may change machines).
#[derive(SecurityScheme)]
#[oai(
    rename = "bearerToken",
    ty = "bearer",
    bearer_format = "JWT",
    checker = "admit"
)]
pub struct Caller(pub Principal);

async fn admit(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    admit_token(req, &bearer.token)
}

/// The same token in the `access_token` query parameter (RFC 6750 §2.3), for clients that
/// cannot set headers: a browser's `EventSource`. Only the live stream accepts it; give wall
/// screens a `viewer` token, since URLs end up in proxy logs.
#[derive(SecurityScheme)]
#[oai(
    rename = "accessTokenQuery",
    ty = "api_key",
    key_name = "access_token",
    key_in = "query",
    checker = "admit_query"
)]
pub struct QueryCaller(pub Principal);

async fn admit_query(req: &Request, key: ApiKey) -> poem::Result<Principal> {
    admit_token(req, &key.key)
}

/// A caller of the live stream: the `access_token` query parameter, or a bearer header.
/// The query is tried first: poem-openapi answers with the last scheme's error, and a
/// refused header token (expired, rate-limited) must say why, not "no token".
#[derive(SecurityScheme)]
pub enum StreamCaller {
    Query(QueryCaller),
    Header(Caller),
}

impl StreamCaller {
    pub fn caller(self) -> Caller {
        match self {
            StreamCaller::Header(c) => c,
            StreamCaller::Query(QueryCaller(who)) => Caller(who),
        }
    }
}

/// RFC 6750 §2: a client must not send the token in more than one place. A request with
/// both a bearer header and `access_token` is refused whatever either holds, so that an
/// invalid credential is never outvoted by a valid one.
fn token_in_two_places(req: &Request) -> bool {
    req.headers()
        .contains_key(poem::http::header::AUTHORIZATION)
        && req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .any(|pair| pair == "access_token" || pair.starts_with("access_token="))
}

fn admit_token(req: &Request, token: &str) -> poem::Result<Principal> {
    if token_in_two_places(req) {
        return Err(poem::Error::new(
            Refusal::Unauthenticated(crate::auth::TokenError::Malformed(
                "send the token in one place: the Authorization header or access_token".into(),
            )),
            poem::http::StatusCode::UNAUTHORIZED,
        ));
    }
    let state = req.data::<Arc<AppState>>().ok_or_else(|| {
        poem::Error::from_string(
            "the gateway has no state",
            poem::http::StatusCode::INTERNAL_SERVER_ERROR,
        )
    })?;
    state
        .auth
        .admit(token)
        .map_err(|refusal| poem::Error::new(refusal, poem::http::StatusCode::UNAUTHORIZED))
}

impl Caller {
    /// The caller, if its role may do `operation` (403 otherwise).
    pub fn require(&self, operation: Operation) -> Result<&Principal, ApiError> {
        let who = &self.0;
        if !who.role.may(operation) {
            return Err(ApiError::forbidden(
                "role_forbidden",
                format!(
                    "role `{}` may not {} (needs `{}`)",
                    who.role.as_str(),
                    operation.as_str(),
                    operation.least_role().as_str()
                ),
            ));
        }
        if operation.needs_global_scope() && !who.scope.is_everywhere() {
            return Err(ApiError::forbidden(
                "scope_forbidden",
                format!("{} needs a token scoped `*`", operation.as_str()),
            ));
        }
        Ok(who)
    }
}
