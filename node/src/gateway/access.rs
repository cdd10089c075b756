//! `Access` operations: revoking API tokens before they expire (a lost tablet, a person who
//! left) without rotating the signing key. See `crate::auth::revocations`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use eq_actors::domain::{check_name, check_text};
use poem::web::Data;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, param::Path, payload::Json};

use super::auth::Caller;
use super::problem::ApiError;
use super::token::{Name, Text};
use super::{ApiTags, AppState};
use crate::auth::Operation;
use crate::auth::revocations::{MAX_TARGET_LEN, Revocation, RevocationError, Target};

/// Longest reason a revocation records.
const MAX_REASON_LEN: usize = 500;

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum RevocationKind {
    /// Every token of a subject (the `sub` the tokens were minted for) issued up to and
    /// including the second of the revocation; tokens minted for it later are accepted.
    Subject,
    /// One token, by its id (its `jti`; `equipment-live token` prints it).
    Token,
}

/// What to revoke.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct RevokeTokens {
    pub kind: RevocationKind,
    /// The subject, or the token id.
    #[oai(validator(min_length = 1, max_length = 128))]
    pub value: Name,
    /// Why, for the record (at most 500 characters).
    #[oai(nullable, validator(max_length = 500))]
    pub reason: Option<Text>,
}

/// A revocation in force.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct RevocationView {
    /// Names it in `DELETE /v1/admin/revocations/{id}`.
    pub id: String,
    pub kind: RevocationKind,
    /// The subject, or the token id.
    pub value: String,
    pub revoked_at: DateTime<Utc>,
    /// The admin who revoked.
    pub revoked_by: String,
    #[oai(nullable)]
    pub reason: Option<String>,
}

/// Every revocation in force, newest first.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct RevocationList {
    pub revocations: Vec<RevocationView>,
}

impl RevocationView {
    fn new(id: String, revocation: Revocation) -> Self {
        let (kind, value) = match revocation.target {
            Target::Subject { subject } => (RevocationKind::Subject, subject),
            Target::Token { token_id } => (RevocationKind::Token, token_id),
        };
        Self {
            id,
            kind,
            value,
            revoked_at: revocation.revoked_at,
            revoked_by: revocation.revoked_by,
            reason: revocation.reason,
        }
    }
}

impl Example for RevokeTokens {
    fn example() -> Self {
        Self {
            kind: RevocationKind::Subject,
            value: Name("tablet-press-line".into()),
            reason: Some(Text("tablet lost on the night shift".into())),
        }
    }
}

impl Example for RevocationView {
    fn example() -> Self {
        Self::new(
            Target::Subject {
                subject: "tablet-press-line".into(),
            }
            .key(),
            Revocation {
                target: Target::Subject {
                    subject: "tablet-press-line".into(),
                },
                revoked_at: DateTime::from_timestamp(1_764_486_000, 0).unwrap_or_default(),
                revoked_by: "ada".into(),
                reason: Some("tablet lost on the night shift".into()),
            },
        )
    }
}

impl Example for RevocationList {
    fn example() -> Self {
        Self {
            revocations: vec![RevocationView::example()],
        }
    }
}

#[derive(ApiResponse)]
pub enum ListAnswer {
    #[oai(status = 200)]
    Ok(Json<RevocationList>),
}

#[derive(ApiResponse)]
pub enum RevokeAnswer {
    /// Revoked on every node (this one at once, the others within moments).
    #[oai(status = 201)]
    Created(Json<RevocationView>),
}

#[derive(ApiResponse)]
pub enum LiftAnswer {
    /// No longer revoked: the tokens it named are accepted again (until they expire).
    #[oai(status = 200)]
    Ok(Json<RevocationView>),
}

fn unavailable(error: RevocationError) -> ApiError {
    tracing::warn!(%error, "revocation list unavailable");
    ApiError::unavailable(error.to_string())
}

/// Operations of this tag (state comes from the request's data).
#[derive(Default)]
pub struct AccessApi;

#[OpenApi(tag = "ApiTags::Access")]
impl AccessApi {
    /// List token revocations
    ///
    /// Every revocation in force, newest first. Needs the `admin` role scoped `*`.
    #[oai(
        path = "/v1/admin/revocations",
        method = "get",
        operation_id = "listRevocations"
    )]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
    ) -> Result<ListAnswer, ApiError> {
        caller.require(Operation::ManageTokens)?;
        let revocations = state
            .auth
            .revocations
            .list()
            .into_iter()
            .map(|(id, r)| RevocationView::new(id, r))
            .collect();
        Ok(ListAnswer::Ok(Json(RevocationList { revocations })))
    }

    /// Revoke tokens
    ///
    /// Refuses (401, `token_revoked`) either every token of a subject issued up to now
    /// (`kind: subject` — mint the subject a new token afterwards) or one token by its id
    /// (`kind: token`). Holds on every node; revoking a subject again moves its cut-off to
    /// now. Needs the `admin` role scoped `*`.
    #[oai(
        path = "/v1/admin/revocations",
        method = "post",
        operation_id = "revokeTokens"
    )]
    async fn revoke(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        body: Json<RevokeTokens>,
    ) -> Result<RevokeAnswer, ApiError> {
        let admin = caller.require(Operation::ManageTokens)?;
        let RevokeTokens {
            kind,
            value,
            reason,
        } = body.0;
        // What the spec's pattern and lengths describe, checked as token subjects are.
        let value = value.into_inner();
        check_name("value", &value, MAX_TARGET_LEN)?;
        let reason = reason.map(Text::into_inner);
        if let Some(reason) = &reason {
            check_text("reason", reason, MAX_REASON_LEN)?;
        }
        let target = match kind {
            RevocationKind::Subject => Target::Subject { subject: value },
            RevocationKind::Token => Target::Token { token_id: value },
        };
        let revocation = Revocation {
            target,
            revoked_at: Utc::now(),
            revoked_by: admin.subject.clone(),
            reason,
        };
        let id = state
            .auth
            .revocations
            .add(revocation.clone())
            .await
            .map_err(unavailable)?;
        tracing::info!(%id, by = %admin.subject, "tokens revoked");
        metrics::counter!("eq_token_revocations_total", "action" => "revoke").increment(1);
        Ok(RevokeAnswer::Created(Json(RevocationView::new(
            id, revocation,
        ))))
    }

    /// Lift a revocation
    ///
    /// The tokens it named are accepted again (until they expire). Answers 404 if there is
    /// no revocation with this id. Needs the `admin` role scoped `*`.
    #[oai(
        path = "/v1/admin/revocations/:id",
        method = "delete",
        operation_id = "liftRevocation"
    )]
    async fn lift(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        /// The revocation's `id` (the kind, a dot, the value in URL-safe base64: up to 691
        /// characters).
        #[oai(validator(
            min_length = 1,
            max_length = 700,
            pattern = r"^(subject|token)\.[A-Za-z0-9_-]+$"
        ))]
        id: Path<String>,
    ) -> Result<LiftAnswer, ApiError> {
        let admin = caller.require(Operation::ManageTokens)?;
        match state
            .auth
            .revocations
            .remove(&id.0)
            .await
            .map_err(unavailable)?
        {
            Some(revocation) => {
                tracing::info!(id = %id.0, by = %admin.subject, "revocation lifted");
                metrics::counter!("eq_token_revocations_total", "action" => "lift").increment(1);
                Ok(LiftAnswer::Ok(Json(RevocationView::new(id.0, revocation))))
            }
            None => Err(ApiError::not_found_as(
                "revocation_not_found",
                format!("no revocation `{}`", id.0),
            )),
        }
    }
}
