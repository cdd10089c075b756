//! `Status` operations: set an equipment's status.

use std::sync::Arc;

use eq_actors::equipment::Action;
use poem::web::Data;
use poem_openapi::{
    OpenApi,
    param::{Header, Path},
    payload::Json,
};

use super::auth::Caller;
use super::equipment::CommandResult;
use super::models::SetStatus;
use super::problem::ApiError;
use super::token::{IdempotencyKey, IfMatch, Token};
use super::{ApiTags, AppState, api_command, parse_id};
use crate::auth::Operation;

/// Operations of this tag (state comes from the request's data).
#[derive(Default)]
pub struct StatusApi;

#[OpenApi(tag = "ApiTags::Status")]
impl StatusApi {
    /// Set an equipment's status
    ///
    /// Green, yellow or red, with an optional reason code and note. Answers once the change
    /// is persisted in JetStream. With `If-Match`, 412 if the version moved on; with
    /// `Idempotency-Key`, a retry gets the same answer and writes nothing. Needs the
    /// `operator` role and a scope covering the machine's site and line; `updated_by` is
    /// the token's subject.
    #[oai(
        path = "/v1/equipment/:id/status",
        method = "put",
        operation_id = "setStatus"
    )]
    async fn set_status(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        id: Path<Token>,
        body: Json<SetStatus>,
        /// The version (`ETag`) this change is based on; 412 if it is no longer current.
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// Makes a retry safe: the same key gives the same answer and at most one event.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
    ) -> Result<CommandResult, ApiError> {
        let who = caller.require(Operation::SetStatus)?;
        let id = parse_id(id.0.into_inner())?;
        let action = Action::SetStatus(body.0.into_domain()?);
        let command = api_command(id, action, who, if_match.0, idempotency_key.0)?;
        Ok(state.execute(command).await?.into())
    }
}
