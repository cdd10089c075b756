//! Who may do what, through a real node: every role × operation × scope, tokens that must be
//! refused (forged, expired, foreign, `alg: none`), `updated_by` from the token, the
//! per-token rate limit, a body nested too deep, and revoked tokens across nodes. A refused
//! request changes nothing.

use std::time::Duration;

use eq_node::auth::Role;
use eq_tests::auth::{admin_token, token, token_with_id};
use eq_tests::postgres::DbKind;
use eq_tests::{
    ApiClient, NatsOptions, NatsServer, NodeOptions, NodeProcess, TestDatabase, wait_for,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

struct Floor {
    node: NodeProcess,
    _db: TestDatabase,
    _nats: NatsServer,
}

/// A node with machines `a-1`, `a-2` (on plant1/line-a) and `b-1` (plant1/line-b).
async fn floor(options: impl FnOnce(NodeOptions) -> NodeOptions) -> Floor {
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(DbKind::Sqlite).await;
    let node = NodeProcess::start(options(NodeOptions::new(nats.url(), db.url.clone()))).await;
    let admin = node.client();
    for (id, line) in [("a-1", "line-a"), ("a-2", "line-a"), ("b-1", "line-b")] {
        let answer = admin.register(id, "plant1", line).await;
        assert_eq!(answer.status, 201, "{:?}", answer.body);
    }
    Floor {
        node,
        _db: db,
        _nats: nats,
    }
}

/// The callers of the matrix.
fn callers() -> Vec<(&'static str, String)> {
    vec![
        ("viewer", token("wall-1", Role::Viewer, &["*"])),
        (
            "operator-a",
            token("olga", Role::Operator, &["plant1/line-a"]),
        ),
        ("operator-plant", token("otto", Role::Operator, &["plant1"])),
        (
            "supervisor-a",
            token("sue", Role::Supervisor, &["plant1/line-a"]),
        ),
        (
            "supervisor-plant",
            token("sam", Role::Supervisor, &["plant1"]),
        ),
        ("admin-a", token("ada", Role::Admin, &["plant1/line-a"])),
        ("admin-all", admin_token().to_string()),
        ("admin-other-plant", token("alf", Role::Admin, &["plant2"])),
    ]
}

/// One request of the matrix: what it is, and how to send it.
struct Case {
    what: &'static str,
    send: fn(&ApiClient, usize) -> reqwest::RequestBuilder,
    /// Callers allowed to do it (all others must get 403).
    allowed: &'static [&'static str],
    /// Status of an allowed request.
    ok: u16,
}

fn cases() -> Vec<Case> {
    const EVERYONE: &[&str] = &[
        "viewer",
        "operator-a",
        "operator-plant",
        "supervisor-a",
        "supervisor-plant",
        "admin-a",
        "admin-all",
        "admin-other-plant",
    ];
    vec![
        Case {
            what: "read a machine of line b",
            send: |c, _| c.http().get(c.url("/v1/equipment/b-1")),
            allowed: EVERYONE,
            ok: 200,
        },
        Case {
            what: "read the history and reports",
            send: |c, _| c.http().get(c.url("/v1/reports/availability")),
            allowed: EVERYONE,
            ok: 200,
        },
        Case {
            what: "set the status of a machine of line a",
            send: |c, n| {
                let status = ["red", "green"][n % 2];
                c.http()
                    .put(c.url("/v1/equipment/a-1/status"))
                    .json(&json!({"status": status, "reason": "jam"}))
            },
            allowed: &[
                "operator-a",
                "operator-plant",
                "supervisor-a",
                "supervisor-plant",
                "admin-a",
                "admin-all",
            ],
            ok: 200,
        },
        Case {
            what: "set the status of a machine of line b",
            send: |c, n| {
                let status = ["red", "green"][n % 2];
                c.http()
                    .put(c.url("/v1/equipment/b-1/status"))
                    .json(&json!({"status": status, "reason": "jam"}))
            },
            allowed: &["operator-plant", "supervisor-plant", "admin-all"],
            ok: 200,
        },
        Case {
            what: "register a machine on line a",
            send: |c, n| {
                c.http().post(c.url("/v1/equipment")).json(&json!({
                    "id": format!("new-a-{n}"), "name": "New", "site": "plant1", "line": "line-a"
                }))
            },
            allowed: &["supervisor-a", "supervisor-plant", "admin-a", "admin-all"],
            ok: 201,
        },
        Case {
            what: "register a machine on line b",
            send: |c, n| {
                c.http().post(c.url("/v1/equipment")).json(&json!({
                    "id": format!("new-b-{n}"), "name": "New", "site": "plant1", "line": "line-b"
                }))
            },
            allowed: &["supervisor-plant", "admin-all"],
            ok: 201,
        },
        Case {
            what: "rename a machine of line a",
            send: |c, n| {
                c.http()
                    .patch(c.url("/v1/equipment/a-2"))
                    .json(&json!({"name": format!("Press {n}")}))
            },
            allowed: &["supervisor-a", "supervisor-plant", "admin-a", "admin-all"],
            ok: 200,
        },
        Case {
            what: "move a machine from line a to line b",
            send: |c, n| {
                c.http()
                    .patch(c.url(&format!("/v1/equipment/m-{n}")))
                    .json(&json!({"line": "line-b"}))
            },
            allowed: &["supervisor-plant", "admin-all"],
            ok: 200,
        },
        Case {
            what: "decommission a machine of line a",
            send: |c, n| c.http().delete(c.url(&format!("/v1/equipment/d-{n}"))),
            allowed: &["admin-a", "admin-all"],
            ok: 200,
        },
        Case {
            what: "list token revocations",
            send: |c, _| c.http().get(c.url("/v1/admin/revocations")),
            allowed: &["admin-all"],
            ok: 200,
        },
        Case {
            what: "see the cluster",
            send: |c, _| c.http().get(c.url("/v1/cluster")),
            allowed: &["admin-all"],
            ok: 200,
        },
        Case {
            what: "correct the reason of a stop on line b",
            send: |c, n| {
                c.http()
                    .put(c.url("/v1/equipment/b-stop/stops/2/reason"))
                    .json(&json!({"reason": format!("tooling-{n}")}))
            },
            allowed: &["supervisor-plant", "admin-all"],
            ok: 200,
        },
    ]
}

async fn version_of(admin: &ApiClient, id: &str) -> u64 {
    admin.get(id).await.version()
}

#[tokio::test]
async fn each_role_may_do_what_its_role_and_scope_allow_and_nothing_else() {
    let f = floor(|o| o).await;
    let admin = f.node.client();
    // A past stop on line b, for the reason correction (version 2 red, version 3 green).
    admin.register("b-stop", "plant1", "line-b").await;
    for status in ["red", "green"] {
        let answer = admin
            .set_status("b-stop", json!({"status": status}))
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    // Per caller, a machine of line a to move (`m-<n>`) and one to decommission (`d-<n>`).
    let callers = callers();
    for n in 0..callers.len() {
        for prefix in ["m", "d"] {
            let answer = admin
                .register(&format!("{prefix}-{n}"), "plant1", "line-a")
                .await;
            assert_eq!(answer.status, 201);
        }
    }
    let registered = 3 + 3 + 2 * callers.len() as u64;
    admin
        .wait_history_written(registered, Duration::from_secs(30))
        .await;

    let mut allowed_changes_of_b1 = 0;
    let mut matrix = Vec::new();
    for case in cases() {
        for (n, (who, token)) in callers.iter().enumerate() {
            let client = ApiClient::with_token(f.node.base_url(), token);
            let answer = client.send((case.send)(&client, n)).await.unwrap();
            let allowed = case.allowed.contains(who);
            let expected = if allowed { case.ok } else { 403 };
            matrix.push(format!(
                "{:<48} {who:<18} {} (expected {expected})",
                case.what, answer.status
            ));
            assert_eq!(
                answer.status, expected,
                "{who} / {}: {:?}",
                case.what, answer.body
            );
            if allowed {
                if case.what == "set the status of a machine of line b" {
                    allowed_changes_of_b1 += 1;
                }
            } else {
                assert!(answer.is_problem(), "{:?}", answer.body);
                let code = answer.body["code"].as_str().unwrap_or_default();
                assert!(
                    ["role_forbidden", "scope_forbidden", "out_of_scope"].contains(&code),
                    "{who} / {}: {code}",
                    case.what
                );
            }
        }
    }
    println!("{}", matrix.join("\n"));
    // Refused requests changed nothing: b-1 moved exactly once per allowed status change.
    assert_eq!(version_of(&admin, "b-1").await, 1 + allowed_changes_of_b1);
    for (n, (who, _)) in callers.iter().enumerate() {
        let id = format!("new-b-{n}");
        let exists = admin.get(&id).await.status == 200;
        assert_eq!(
            exists,
            ["supervisor-plant", "admin-all"].contains(who),
            "{id}"
        );
    }

    // The drain needs an admin scoped everywhere (last: it stops the node).
    let cluster = admin
        .send(admin.http().get(admin.url("/v1/cluster")))
        .await
        .unwrap();
    let drain_path = format!(
        "/v1/admin/nodes/{}/drain",
        cluster.body["node"].as_str().unwrap()
    );
    for (who, token) in &callers {
        if *who == "admin-all" {
            continue;
        }
        let client = ApiClient::with_token(f.node.base_url(), token);
        let answer = client
            .send(client.http().post(client.url(&drain_path)))
            .await
            .unwrap();
        assert_eq!(answer.status, 403, "{who}");
    }
    assert!(admin.ready().await, "refused drains leave the node up");
    let answer = admin
        .send(admin.http().post(admin.url(&drain_path)))
        .await
        .unwrap();
    assert_eq!(answer.status, 202);
}

#[tokio::test]
async fn changes_are_recorded_under_the_token_subject_never_the_body() {
    let f = floor(|o| o).await;
    let olga = ApiClient::with_token(
        f.node.base_url(),
        &token("olga", Role::Operator, &["plant1/line-a"]),
    );
    let answer = olga
        .set_status(
            "a-1",
            json!({"status": "red", "reason": "jam", "updated_by": "somebody-else"}),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["updated_by"], "olga");
    let admin = f.node.client();
    admin
        .wait_history_written(3 + 1, Duration::from_secs(30))
        .await;
    let history = admin.history("a-1").await;
    assert_eq!(history.last().unwrap()["updated_by"], "olga");
    assert_eq!(history.first().unwrap()["updated_by"], "test-admin");
}

/// Tokens signed with the node's key but wrong in one way, and tokens not signed with it.
fn refused_tokens() -> Vec<(&'static str, String, &'static str)> {
    let key = std::fs::read(eq_tests::auth::key_file()).unwrap();
    let key = key.trim_ascii();
    let now = chrono::Utc::now().timestamp();
    let claims = |patch: Value| {
        let mut c = json!({
            "sub": "mallory", "aud": "equipment-live", "exp": now + 600, "iat": now,
            "role": "admin", "scopes": ["*"],
        });
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let sign = |alg, c: Value, key: &[u8]| {
        jsonwebtoken::encode(&Header::new(alg), &c, &EncodingKey::from_secret(key)).unwrap()
    };
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let good = sign(Algorithm::HS256, claims(json!({})), key);
    let mut tampered = good.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    vec![
        (
            "signed with another key",
            sign(
                Algorithm::HS256,
                claims(json!({})),
                b"not-the-installation-key-but-long-enough",
            ),
            "token_bad_signature",
        ),
        ("tampered signature", tampered, "token_bad_signature"),
        (
            "expired an hour ago",
            sign(Algorithm::HS256, claims(json!({"exp": now - 3600})), key),
            "token_expired",
        ),
        (
            "for another audience",
            sign(Algorithm::HS256, claims(json!({"aud": "mes"})), key),
            "token_wrong_audience",
        ),
        (
            "without an audience",
            sign(Algorithm::HS256, claims(json!({"aud": null})), key),
            "token_bad_claims",
        ),
        (
            "without an expiry",
            sign(Algorithm::HS256, claims(json!({"exp": null})), key),
            "token_bad_claims",
        ),
        (
            "issued an hour from now",
            sign(Algorithm::HS256, claims(json!({"iat": now + 3600})), key),
            "token_bad_claims",
        ),
        (
            "an unknown role",
            sign(Algorithm::HS256, claims(json!({"role": "root"})), key),
            "token_bad_claims",
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(json!({"alg": "none", "typ": "JWT"})),
                b64(claims(json!({})))
            ),
            "token_wrong_algorithm",
        ),
        (
            "HS512 with the right key",
            sign(Algorithm::HS512, claims(json!({})), key),
            "token_wrong_algorithm",
        ),
        ("not a JWT", "hello".to_string(), "token_malformed"),
    ]
}

#[tokio::test]
async fn forged_expired_and_missing_tokens_get_401_and_change_nothing() {
    let f = floor(|o| o).await;
    let admin = f.node.client();
    let http = reqwest::Client::new();
    let url = admin.url("/v1/equipment/a-1/status");
    let body = json!({"status": "red", "reason": "jam"});
    let mut requests: Vec<(String, reqwest::RequestBuilder, &str)> = refused_tokens()
        .into_iter()
        .map(|(what, token, code)| {
            (
                what.to_string(),
                http.put(&url).bearer_auth(token).json(&body),
                code,
            )
        })
        .collect();
    requests.push((
        "no Authorization header".into(),
        http.put(&url).json(&body),
        "token_missing",
    ));
    requests.push((
        "Basic instead of Bearer".into(),
        http.put(&url)
            .basic_auth("admin", Some("admin"))
            .json(&body),
        "token_missing",
    ));
    let refusals_before = admin
        .metric_sum("eq_http_rejects_total", "code=\"token_")
        .await;
    let count = requests.len();
    for (what, request, code) in requests {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{what}");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            challenge.starts_with("Bearer realm="),
            "{what}: {challenge}"
        );
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            content_type.starts_with("application/problem+json"),
            "{what}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{what}: {problem}");
    }
    // The live stream refuses the same way, in the header and in `access_token`, and a
    // token in both places (RFC 6750: one method per request) even if one is valid.
    let live = admin.url("/v1/live?access_token=hello");
    assert_eq!(http.get(&live).send().await.unwrap().status(), 401);
    let both = http
        .get(admin.url(&format!("/v1/live?access_token={}", admin_token())))
        .bearer_auth(admin_token());
    assert_eq!(both.send().await.unwrap().status(), 401);
    let garbage_beside_a_valid_header = http.get(&live).bearer_auth(admin_token());
    assert_eq!(
        garbage_beside_a_valid_header.send().await.unwrap().status(),
        401
    );
    assert_eq!(
        http.get(admin.url("/v1/live"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(version_of(&admin, "a-1").await, 1, "nothing changed");
    let refusals = admin
        .metric_sum("eq_http_rejects_total", "code=\"token_")
        .await;
    assert!(
        refusals - refusals_before >= count as f64,
        "every refusal is counted ({refusals_before} → {refusals})"
    );
    // Open endpoints stay open: probes, metrics and the spec.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(
            http.get(admin.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    // The spec served is the one checked in (and the generated clients are built from).
    let served = http.get(admin.url("/openapi.json")).send().await.unwrap();
    assert_eq!(
        served.text().await.unwrap(),
        eq_node::gateway::spec_json(),
        "GET /openapi.json"
    );
}

#[tokio::test]
async fn a_token_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let f = floor(|o| {
        o.arg("--rate-limit-per-sec", 1)
            .arg("--rate-limit-burst", 3)
    })
    .await;
    let busy = token("busy-tablet", Role::Operator, &["plant1"]);
    let calm = token("calm-tablet", Role::Operator, &["plant1"]);
    let http = reqwest::Client::new();
    let url = f.node.client().url("/v1/equipment/a-1");
    let get = |token: &str| http.get(&url).bearer_auth(token).send();
    for _ in 0..3 {
        assert_eq!(get(&busy).await.unwrap().status(), 200);
    }
    let limited = get(&busy).await.unwrap();
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let problem: Value = limited.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");
    assert_eq!(
        get(&calm).await.unwrap().status(),
        200,
        "buckets are per token"
    );
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(
        get(&busy).await.unwrap().status(),
        200,
        "served again after Retry-After"
    );
}

#[tokio::test]
async fn bodies_nested_too_deep_are_refused_before_parsing() {
    let f = floor(|o| o).await;
    let admin = f.node.client();
    let deep = format!(
        "{{\"status\":\"red\",\"note\":{}1{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let answer = admin
        .send(
            admin
                .http()
                .put(admin.url("/v1/equipment/a-1/status"))
                .header("content-type", "application/json")
                .body(deep),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["code"], "json_too_deep");
    assert_eq!(version_of(&admin, "a-1").await, 1);
}

/// A stop belongs to the line it happened on: after the machine moved, that line's
/// supervisor may still correct it, the new line's may not.
#[tokio::test]
async fn a_stop_reason_is_corrected_by_the_scope_of_the_line_it_happened_on() {
    let f = floor(|o| o).await;
    let admin = f.node.client();
    for status in ["red", "green"] {
        let answer = admin
            .set_status("a-1", json!({"status": status}))
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
    }
    let moved = admin
        .send(
            admin
                .http()
                .patch(admin.url("/v1/equipment/a-1"))
                .json(&json!({"line": "line-b"})),
        )
        .await
        .unwrap();
    assert_eq!(moved.status, 200);
    admin
        .wait_history_written(3 + 3, Duration::from_secs(30))
        .await;
    let correct = |token: String| {
        let client = ApiClient::with_token(f.node.base_url(), &token);
        async move {
            client
                .send(
                    client
                        .http()
                        .put(client.url("/v1/equipment/a-1/stops/2/reason"))
                        .json(&json!({"reason": "tooling"})),
                )
                .await
                .unwrap()
        }
    };
    let refused = correct(token("bea", Role::Supervisor, &["plant1/line-b"])).await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "out_of_scope");
    let allowed = correct(token("sue", Role::Supervisor, &["plant1/line-a"])).await;
    assert_eq!(allowed.status, 200, "{:?}", allowed.body);
    assert_eq!(allowed.body["updated_by"], "sue");
}

/// The status a caller gets for setting `a-1` red through `node`.
async fn set_status_as(node: &NodeProcess, token: &str) -> (u16, Value) {
    let answer = ApiClient::with_token(node.base_url(), token)
        .set_status("a-1", json!({"status": "red", "reason": "jam"}))
        .await
        .unwrap();
    (answer.status, answer.body)
}

async fn revoke(admin: &ApiClient, body: Value) -> eq_tests::client::Answer {
    let url = admin.url("/v1/admin/revocations");
    admin
        .send(admin.http().post(url).json(&body))
        .await
        .unwrap()
}

/// Waits until `node` refuses `token` as revoked (revocations reach other nodes within
/// moments).
async fn wait_until_revoked(node: &NodeProcess, token: &str, what: &str) {
    wait_for(what, Duration::from_secs(10), || async move {
        refused_as_revoked(node, token).await.then_some(())
    })
    .await;
}

async fn refused_as_revoked(node: &NodeProcess, token: &str) -> bool {
    let (status, body) = set_status_as(node, token).await;
    status == 401 && body["code"] == "token_revoked"
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_every_node_until_the_revocation_is_lifted() {
    let mut f = floor(|o| o).await;
    let mut b = NodeProcess::start(
        NodeOptions::new(f._nats.url(), f._db.url.clone())
            .arg("--history", false)
            .arg("--sse-heartbeat-secs", 1),
    )
    .await;
    let admin = f.node.client();
    let revocations = admin.url("/v1/admin/revocations");
    let olga_lost_tablet = token("olga", Role::Operator, &["plant1/line-a"]);
    let otto = token("otto", Role::Operator, &["plant1"]);
    assert_eq!(set_status_as(&b, &olga_lost_tablet).await.0, 200);

    // Only an admin scoped everywhere revokes; the request must name one target.
    let sam = ApiClient::with_token(f.node.base_url(), &token("sam", Role::Supervisor, &["*"]));
    let answer = sam
        .send(
            sam.http()
                .post(&revocations)
                .json(&json!({"kind": "subject", "value": "olga"})),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 403, "{:?}", answer.body);
    for bad in [
        json!({}),
        json!({"kind": "person", "value": "olga"}),
        json!({"kind": "subject", "value": "olga\u{0007}"}),
        json!({"kind": "subject", "value": " "}),
        json!({"kind": "subject", "value": "olga", "reason": false}),
    ] {
        let answer = admin
            .send(admin.http().post(&revocations).json(&bad))
            .await
            .unwrap();
        assert!(
            [400, 422].contains(&answer.status) && answer.is_problem(),
            "{bad}: {} {:?}",
            answer.status,
            answer.body
        );
    }
    assert!(set_status_as(&b, &olga_lost_tablet).await.0 == 200);

    // A wall screen of olga's watching the floor on node b.
    let live = reqwest::Client::new()
        .get(format!(
            "{}/v1/live?id=a-1&access_token={olga_lost_tablet}",
            b.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let mut live = live.bytes_stream();

    // Revoke every token of olga's issued so far, through node a.
    let refusals_before = admin
        .metric_sum("eq_auth_refusals_total", "code=\"token_revoked\"")
        .await;
    let answer = revoke(
        &admin,
        json!({"kind": "subject", "value": "olga", "reason": "tablet lost"}),
    )
    .await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(
        (&answer.body["kind"], &answer.body["value"]),
        (&json!("subject"), &json!("olga"))
    );
    assert_eq!(answer.body["revoked_by"], "test-admin");
    let subject_revocation = answer.body["id"].as_str().unwrap().to_string();
    // The node that took it refuses at once; the other within moments.
    assert!(refused_as_revoked(&f.node, &olga_lost_tablet).await);
    wait_until_revoked(&b, &olga_lost_tablet, "node b refusing the revoked token").await;
    assert!(
        admin
            .metric_sum("eq_auth_refusals_total", "code=\"token_revoked\"")
            .await
            > refusals_before
    );
    // The open live stream ends (its reconnect would get the 401).
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        use futures::StreamExt;
        while let Some(chunk) = live.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the revoked token's live stream still runs");
    // Other callers are untouched.
    assert_eq!(set_status_as(&b, &otto).await.0, 200);
    // A node that starts later knows the revocation before it serves.
    b.restart().await;
    assert!(refused_as_revoked(&b, &olga_lost_tablet).await);

    // Olga's new tablet: a token minted after the revocation's second is accepted.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (olga_new, olga_new_id) = token_with_id("olga", Role::Operator, &["plant1/line-a"]);
    let olga_spare = token("olga", Role::Operator, &["plant1/line-a"]);
    assert_eq!(set_status_as(&b, &olga_new).await.0, 200);

    // One token alone, by its id: the other token of the same subject keeps working.
    let answer = revoke(&admin, json!({"kind": "token", "value": olga_new_id})).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(answer.body["value"], olga_new_id.as_str());
    let token_revocation = answer.body["id"].as_str().unwrap().to_string();
    wait_until_revoked(&b, &olga_new, "node b refusing the one token").await;
    assert_eq!(set_status_as(&b, &olga_spare).await.0, 200);

    let list = admin.send(admin.http().get(&revocations)).await.unwrap();
    let ids: Vec<&str> = list.body["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [token_revocation.as_str(), subject_revocation.as_str()]
    );

    // Lifting the subject's revocation lets the old tablet in again, on every node.
    let lift = |id: &str| admin.http().delete(format!("{revocations}/{id}"));
    let answer = admin.send(lift(&subject_revocation)).await.unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    wait_for(
        "node b accepting the old token again",
        Duration::from_secs(10),
        || {
            let (b, token) = (&b, &olga_lost_tablet);
            async move { (set_status_as(b, token).await.0 == 200).then_some(()) }
        },
    )
    .await;
    let answer = admin.send(lift(&subject_revocation)).await.unwrap();
    assert_eq!(answer.status, 404, "{:?}", answer.body);
    assert!(answer.is_problem());
    assert!(refused_as_revoked(&f.node, &olga_new).await);

    // NATS restarts under both nodes: node b's watch comes back and still follows.
    f._nats.restart();
    for node in [&f.node, &b] {
        let client = node.client();
        wait_for("the node ready again", Duration::from_secs(30), || {
            let client = client.clone();
            async move { client.ready().await.then_some(()) }
        })
        .await;
    }
    let answer = revoke(&admin, json!({"kind": "subject", "value": "otto"})).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    wait_until_revoked(&b, &otto, "node b refusing otto after the restart").await;

    // The longest subject, in letters of four bytes: its id is still one DELETE takes.
    let long = "𝔉".repeat(128);
    let answer = revoke(&admin, json!({"kind": "subject", "value": long})).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    let id = answer.body["id"].as_str().unwrap().to_string();
    let answer = admin.send(lift(&id)).await.unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["value"], long.as_str());
}
