//! Roles and what each may do: one table, pure.

use serde::{Deserialize, Serialize};

/// A caller's role, from least to most powerful; each role may do what the ones before it
/// may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Wall screens, Grafana, analysts: reads everything, changes nothing.
    Viewer,
    /// Sets the status of machines in its scope.
    Operator,
    /// Also registers and edits machines and corrects stop reasons, in its scope.
    Supervisor,
    /// Also decommissions machines, sees and drains the cluster, and revokes tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "supervisor" => Some(Role::Supervisor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Whether this role may perform `operation` at all (the site/line scope is checked
    /// separately, by the owning actor).
    pub fn may(self, operation: Operation) -> bool {
        self >= operation.least_role()
    }
}

/// What an API call does, as far as permissions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Any read: equipment, history, analytics, the live stream.
    Read,
    SetStatus,
    Register,
    Update,
    CorrectReason,
    Decommission,
    /// See the nodes and the shard assignment.
    ReadCluster,
    /// Drain a node.
    Drain,
    /// List, revoke and un-revoke API tokens.
    ManageTokens,
}

impl Operation {
    pub const ALL: [Operation; 9] = [
        Operation::Read,
        Operation::SetStatus,
        Operation::Register,
        Operation::Update,
        Operation::CorrectReason,
        Operation::Decommission,
        Operation::ReadCluster,
        Operation::Drain,
        Operation::ManageTokens,
    ];

    /// The least role allowed to do it.
    pub fn least_role(self) -> Role {
        match self {
            Operation::Read => Role::Viewer,
            Operation::SetStatus => Role::Operator,
            Operation::Register | Operation::Update | Operation::CorrectReason => Role::Supervisor,
            Operation::Decommission
            | Operation::ReadCluster
            | Operation::Drain
            | Operation::ManageTokens => Role::Admin,
        }
    }

    /// Cluster operations act on the whole installation: they need a token scoped `*`.
    pub fn needs_global_scope(self) -> bool {
        matches!(
            self,
            Operation::ReadCluster | Operation::Drain | Operation::ManageTokens
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::SetStatus => "set status",
            Operation::Register => "register",
            Operation::Update => "update",
            Operation::CorrectReason => "correct a stop reason",
            Operation::Decommission => "decommission",
            Operation::ReadCluster => "read the cluster",
            Operation::Drain => "drain a node",
            Operation::ManageTokens => "manage API tokens",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_may_what_the_table_says() {
        use Operation::*;
        let allowed = |role: Role| -> Vec<Operation> {
            Operation::ALL
                .into_iter()
                .filter(|op| role.may(*op))
                .collect()
        };
        assert_eq!(allowed(Role::Viewer), vec![Read]);
        assert_eq!(allowed(Role::Operator), vec![Read, SetStatus]);
        assert_eq!(
            allowed(Role::Supervisor),
            vec![Read, SetStatus, Register, Update, CorrectReason]
        );
        assert_eq!(allowed(Role::Admin), Operation::ALL.to_vec());
    }
}
