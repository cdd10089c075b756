//! `Equipment` operations: register, list, get, update metadata, decommission.

use std::sync::Arc;

use eq_actors::equipment::Action;
use poem::web::Data;
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
};

use super::auth::Caller;
use super::models::{EquipmentPage, EquipmentView, RegisterEquipment, Status, UpdateEquipment};
use super::problem::ApiError;
use super::token::{IdempotencyKey, IfMatch, Token};
use super::{ApiTags, AppState, CommandAnswer, api_command, etag, parse_id};
use crate::auth::Operation;
use crate::history::queries::{self, ListFilter};

/// Answer to a registration.
#[derive(ApiResponse)]
pub enum Registered {
    /// Registered (or the same registration retried with the same `Idempotency-Key`).
    #[oai(status = 201)]
    Created(
        Json<EquipmentView>,
        #[oai(header = "ETag")] String,
        #[oai(header = "Location")] String,
    ),
}

/// Answer with one equipment and its version as `ETag`.
#[derive(ApiResponse)]
pub enum OneEquipment {
    #[oai(status = 200)]
    Ok(Json<EquipmentView>, #[oai(header = "ETag")] String),
}

/// Answer with a page of equipment.
#[derive(ApiResponse)]
pub enum ManyEquipment {
    #[oai(status = 200)]
    Ok(Json<EquipmentPage>),
}

/// Operations of this tag (state comes from the request's data).
#[derive(Default)]
pub struct EquipmentApi;

#[OpenApi(tag = "ApiTags::Equipment")]
impl EquipmentApi {
    /// Register an equipment
    ///
    /// Creates a machine with an initial status (default `yellow`). Answers 409 if the id
    /// exists (also when decommissioned: ids are never reused). Needs the `supervisor` role
    /// and a scope covering the new machine's site and line.
    #[oai(
        path = "/v1/equipment",
        method = "post",
        operation_id = "registerEquipment"
    )]
    async fn register(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        body: Json<RegisterEquipment>,
        /// Makes a retry safe: the same key gives the same answer and at most one event.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
    ) -> Result<Registered, ApiError> {
        let who = caller.require(Operation::Register)?;
        let (id, registration) = body.0.into_domain()?;
        let action = Action::Register(registration);
        let command = api_command(id.clone(), action, who, None, idempotency_key.0)?;
        let answer = state.execute(command).await?;
        let location = format!("/v1/equipment/{id}");
        let CommandAnswer { view, .. } = answer;
        let tag = etag(view.version);
        Ok(Registered::Created(Json(view), tag, location))
    }

    /// List equipment
    ///
    /// Current status of every machine, filtered by site, line and status, ordered by id.
    /// Served from the history database, so a change shows here once the history consumer
    /// has written it (normally within milliseconds).
    #[oai(path = "/v1/equipment", method = "get", operation_id = "listEquipment")]
    #[allow(clippy::too_many_arguments)] // one argument per query parameter
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        site: Query<Option<Token>>,
        line: Query<Option<Token>>,
        status: Query<Option<Status>>,
        /// Include decommissioned machines.
        #[oai(default)]
        include_decommissioned: Query<bool>,
        /// Page size, 1 to 1000 (default 100).
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u64>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<Token>>,
    ) -> Result<ManyEquipment, ApiError> {
        caller.require(Operation::Read)?;
        let db = state.db()?;
        let filter = ListFilter {
            site: site.0.map(Token::into_inner),
            line: line.0.map(Token::into_inner),
            status: status
                .0
                .map(|s| eq_actors::Status::from(s).as_str().to_string()),
            include_decommissioned: include_decommissioned.0,
        };
        let page =
            queries::list_equipment(db, &filter, cursor.0.as_ref().map(Token::as_str), limit.0)
                .await
                .map_err(|e| ApiError::unavailable(format!("history database: {e}")))?;
        let items = page.items.into_iter().map(super::view_from_row).collect();
        Ok(ManyEquipment::Ok(Json(EquipmentPage {
            items,
            next_cursor: page.next_cursor,
        })))
    }

    /// Get an equipment
    ///
    /// The current state, read from the event log (always up to date). The `ETag` is the
    /// version, for `If-Match`.
    #[oai(
        path = "/v1/equipment/:id",
        method = "get",
        operation_id = "getEquipment"
    )]
    async fn get(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        id: Path<Token>,
    ) -> Result<OneEquipment, ApiError> {
        caller.require(Operation::Read)?;
        let id = parse_id(id.0.into_inner())?;
        let view = state.current(&id).await?;
        let tag = etag(view.version);
        Ok(OneEquipment::Ok(Json(view), tag))
    }

    /// Update an equipment's metadata
    ///
    /// Changes name, description, site, line or tags; absent fields stay as they are, and a
    /// body that sets none changes nothing (the answer is the current state, no new
    /// version).
    /// Needs the `supervisor` role; moving a machine needs a scope covering both its old
    /// and its new line.
    #[oai(
        path = "/v1/equipment/:id",
        method = "patch",
        operation_id = "updateEquipment"
    )]
    async fn update(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        id: Path<Token>,
        body: Json<UpdateEquipment>,
        /// The version (`ETag`) this change is based on; 412 if it is no longer current.
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// Makes a retry safe: the same key gives the same answer and at most one event.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
    ) -> Result<CommandResult, ApiError> {
        let who = caller.require(Operation::Update)?;
        let id = parse_id(id.0.into_inner())?;
        let action = Action::UpdateMetadata(body.0.into_domain()?);
        let command = api_command(id, action, who, if_match.0, idempotency_key.0)?;
        Ok(state.execute(command).await?.into())
    }

    /// Decommission an equipment
    ///
    /// The machine keeps its history but refuses further changes. Needs the `admin` role
    /// and a scope covering the machine.
    #[oai(
        path = "/v1/equipment/:id",
        method = "delete",
        operation_id = "decommissionEquipment"
    )]
    async fn decommission(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        id: Path<Token>,
        /// The version (`ETag`) this change is based on; 412 if it is no longer current.
        #[oai(name = "If-Match")]
        if_match: Header<Option<IfMatch>>,
        /// Makes a retry safe: the same key gives the same answer and at most one event.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<IdempotencyKey>>,
    ) -> Result<CommandResult, ApiError> {
        let who = caller.require(Operation::Decommission)?;
        let id = parse_id(id.0.into_inner())?;
        let command = api_command(id, Action::Decommission, who, if_match.0, idempotency_key.0)?;
        Ok(state.execute(command).await?.into())
    }
}

fn default_limit() -> u64 {
    100
}

/// Answer to a command on an existing equipment.
#[derive(ApiResponse)]
pub enum CommandResult {
    /// Applied (or a retry of an applied command: then `Idempotent-Replayed: true`).
    #[oai(status = 200)]
    Ok(
        Json<EquipmentView>,
        #[oai(header = "ETag")] String,
        #[oai(header = "Idempotent-Replayed")] Option<bool>,
    ),
}

impl From<CommandAnswer> for CommandResult {
    fn from(answer: CommandAnswer) -> Self {
        let tag = etag(answer.view.version);
        CommandResult::Ok(Json(answer.view), tag, answer.replayed.then_some(true))
    }
}
