//! `Cluster` operations: who is in the cluster, who leads, which node owns which shard; and
//! draining a node by name.

use std::borrow::Cow;
use std::sync::Arc;

use poem::web::Data;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use serde_json::Value;

use super::auth::Caller;
use super::problem::ApiError;
use super::{ApiTags, AppState};
use crate::auth::Operation;
use crate::cluster::drain;

/// A node of the cluster.
#[derive(Debug, Clone, Object)]
pub struct ClusterNode {
    pub id: String,
    /// Runs equipment actors.
    pub hosts_shards: bool,
    pub gateway: bool,
    pub history: bool,
    /// Leaving: its shards are moving away.
    pub draining: bool,
    pub http_addr: String,
    pub version: String,
    /// How many shards it owns in the current assignment.
    pub shards: u32,
}

/// The cluster as this node sees it.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node: String,
    /// Null while there is none.
    #[oai(nullable)]
    pub leader: Option<String>,
    /// Grows with every change of the assignment.
    pub epoch: u64,
    pub nodes: Vec<ClusterNode>,
    /// `owners[shard]`: the node that owns each shard (null while unassigned).
    pub owners: Vec<ShardOwner>,
}

/// The node that owns a shard, or null.
#[derive(Debug, Clone)]
pub struct ShardOwner(pub Option<String>);

impl Type for ShardOwner {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            nullable: true,
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ParseFromJSON for ShardOwner {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::Null => Ok(ShardOwner(None)),
            Value::String(s) => Ok(ShardOwner(Some(s))),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ToJSON for ShardOwner {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.clone().map_or(Value::Null, Value::String))
    }
}

#[derive(ApiResponse)]
pub enum StatusAnswer {
    #[oai(status = 200)]
    Ok(Json<ClusterStatus>),
}

#[derive(ApiResponse)]
pub enum DrainAnswer {
    /// The node is draining: it hands its shards over, finishes in-flight commands, exits.
    #[oai(status = 202)]
    Accepted,
}

/// Operations of this tag (state comes from the request's data).
#[derive(Default)]
pub struct ClusterApi;

#[OpenApi(tag = "ApiTags::Cluster")]
impl ClusterApi {
    /// The cluster
    ///
    /// Nodes (with their roles and whether they are draining), the leader, and the owner of
    /// every shard.
    #[oai(path = "/v1/cluster", method = "get", operation_id = "getCluster")]
    async fn status(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
    ) -> Result<StatusAnswer, ApiError> {
        caller.require(Operation::ReadCluster)?;
        let view = state.cluster.view().await;
        let nodes = view
            .nodes
            .into_iter()
            .map(|n| ClusterNode {
                shards: view.assignment.shards_of(&n.id).len() as u32,
                id: n.id,
                hosts_shards: n.hosts_shards,
                gateway: n.gateway,
                history: n.history,
                draining: n.draining,
                http_addr: n.http_addr,
                version: n.version,
            })
            .collect();
        Ok(StatusAnswer::Ok(Json(ClusterStatus {
            node: view.me,
            leader: view.leader,
            epoch: view.assignment.epoch,
            nodes,
            owners: view.assignment.owners.into_iter().map(ShardOwner).collect(),
        })))
    }

    /// Drain a node
    ///
    /// The node named by its `id` (as listed by `GET /v1/cluster`; whichever gateway takes
    /// the request forwards it) does what SIGTERM does: it stops taking new shards, hands
    /// its shards to other nodes, finishes in-flight commands, then exits; its `/readyz`
    /// turns false at once. 404 if no live node has this id; 503 if it did not answer.
    #[oai(
        path = "/v1/admin/nodes/:node/drain",
        method = "post",
        operation_id = "drainNode"
    )]
    async fn drain(
        &self,
        state: Data<&Arc<AppState>>,
        caller: Caller,
        /// The node's `id`.
        #[oai(validator(min_length = 1, max_length = 200))]
        node: Path<String>,
    ) -> Result<DrainAnswer, ApiError> {
        let admin = caller.require(Operation::Drain)?;
        let node = node.0;
        if node == state.node_id {
            tracing::info!(by = %admin.subject, "drain requested over HTTP");
            state.shutdown.cancel();
            return Ok(DrainAnswer::Accepted);
        }
        let view = state.cluster.view().await;
        if !view.nodes.iter().any(|n| n.id == node) {
            return Err(ApiError::not_found_as(
                "node_not_found",
                format!("no live node `{node}` (GET /v1/cluster lists them)"),
            ));
        }
        drain::request(&state.nats, state.store.subjects(), &node)
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        tracing::info!(%node, by = %admin.subject, "drain of another node requested over HTTP");
        Ok(DrainAnswer::Accepted)
    }
}
