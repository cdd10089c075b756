//! Who calls the HTTP API and what they may do: signed tokens ([`tokens`]) and their
//! revocations ([`revocations`]), roles ([`roles`]) and a per-token rate limit
//! ([`limiter`]). The site/line scope of a token is
//! enforced by the owning actor (`eq_actors::scope`); the gateway checks the role.

pub mod limiter;
pub mod revocations;
pub mod roles;
pub mod tokens;

use std::time::Duration;

pub use revocations::Revocations;
pub use roles::{Operation, Role};
pub use tokens::{Principal, TokenError, TokenKeys};

/// Why a request was not let in.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Unauthenticated(TokenError),
    #[error("rate limit exceeded: retry in {0:?}")]
    RateLimited(Duration),
}

/// Token checking and rate limiting of one gateway.
pub struct Auth {
    pub keys: TokenKeys,
    pub limiter: limiter::RateLimiter,
    /// Followed from JetStream once the node is connected (see `revocations::follow`).
    pub revocations: Revocations,
}

impl Auth {
    /// Verifies a bearer token and takes one request from its rate budget.
    pub fn admit(&self, token: &str) -> Result<Principal, Refusal> {
        let principal = self
            .keys
            .verify(token)
            .and_then(|p| match self.revocations.refuses(&p) {
                true => Err(TokenError::Revoked),
                false => Ok(p),
            })
            .map_err(|e| {
                metrics::counter!("eq_auth_refusals_total", "code" => e.code()).increment(1);
                Refusal::Unauthenticated(e)
            })?;
        self.limiter.check(&principal.limit_key).map_err(|wait| {
            metrics::counter!("eq_auth_refusals_total", "code" => "rate_limited").increment(1);
            Refusal::RateLimited(wait)
        })?;
        Ok(principal)
    }
}
