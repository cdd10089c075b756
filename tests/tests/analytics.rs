//! Factory analytics through the public API, on SQLite and PostgreSQL: a short "day" of
//! status changes (stops with reasons, an unqualified stop, planned maintenance) made over
//! HTTP, then time in state, availability and the downtime Pareto compared with figures
//! computed by hand from the recorded times in the history.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use eq_tests::postgres::DbKind;
use eq_tests::{NatsOptions, NatsServer, NodeOptions, NodeProcess, TestDatabase, wait_for};
use serde_json::{Value, json};

const CALENDAR: &str = r#"{
  "sites": {"works": {"time_zone": "Europe/Berlin",
            "shifts": [{"name": "all-day", "start": "00:00", "end": "00:00"}]}},
  "reasons": [
    {"code": "mechanical", "name": "Mechanical"},
    {"code": "jam", "name": "Material jam", "parent": "mechanical"},
    {"code": "maintenance", "name": "Planned maintenance", "planned": true}
  ]
}"#;

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.002
}

async fn factory_day(kind: DbKind) {
    let nats = NatsServer::start(NatsOptions::default());
    let db = TestDatabase::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let calendar = dir.path().join("calendar.json");
    std::fs::write(&calendar, CALENDAR).unwrap();
    let node = NodeProcess::start(
        NodeOptions::new(nats.url(), db.url.clone()).arg("--calendar-file", calendar.display()),
    )
    .await;
    let client = node.client();
    for (id, line) in [("press-1", "line-1"), ("kiln-1", "line-2")] {
        let answer = client
            .send(client.http().post(client.url("/v1/equipment")).json(
                &json!({"id": id, "name": id, "site": "works", "line": line, "status": "green"}),
            ))
            .await
            .unwrap();
        assert_eq!(answer.status, 201, "{:?}", answer.body);
    }
    // The day: press-1 jams, runs, stops without a reason, runs, goes into maintenance.
    let steps: [(&str, Value); 6] = [
        ("press-1", json!({"status": "red", "reason": "jam"})),
        ("kiln-1", json!({"status": "yellow"})),
        ("press-1", json!({"status": "green"})),
        ("press-1", json!({"status": "red"})),
        ("press-1", json!({"status": "green"})),
        ("press-1", json!({"status": "red", "reason": "maintenance"})),
    ];
    for (id, body) in steps {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let answer = client.set_status(id, body).await.unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Wait for the history, then take the recorded times from it.
    let press = wait_for("press-1 history", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let items = client.history("press-1").await;
            (items.len() == 6).then_some(items)
        }
    })
    .await;
    let kiln = wait_for("kiln-1 history", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let items = client.history("kiln-1").await;
            (items.len() == 2).then_some(items)
        }
    })
    .await;
    let t: Vec<DateTime<Utc>> = press.iter().map(|i| time(&i["recorded_at"])).collect();
    let from = t[0];
    let to = Utc::now();
    // By hand: green [t0,t1) + [t2,t3) + [t4,t5); jam [t1,t2); unqualified [t3,t4);
    // maintenance (planned) [t5, to).
    let green = seconds(t[0], t[1]) + seconds(t[2], t[3]) + seconds(t[4], t[5]);
    let (jam, unqualified, maintenance) =
        (seconds(t[1], t[2]), seconds(t[3], t[4]), seconds(t[5], to));
    let query = format!(
        "from={}&to={}",
        from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
    .replace('+', "%2B");
    let answer = client
        .send(
            client
                .http()
                .get(client.url(&format!("/v1/equipment/press-1/time-in-state?{query}"))),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let f = &answer.body["figures"];
    let num = |v: &Value| v.as_f64().unwrap();
    assert!(
        close(num(&f["green_seconds"]), green),
        "{f} vs green {green}"
    );
    assert!(close(num(&f["red_seconds"]), jam + unqualified), "{f}");
    assert!(close(num(&f["planned_stop_seconds"]), maintenance), "{f}");
    assert!(close(num(&f["yellow_seconds"]), 0.0), "{f}");
    let planned = green + jam + unqualified;
    assert!(close(num(&f["planned_seconds"]), planned), "{f}");
    assert!(close(num(&f["availability"]), green / planned), "{f}");
    assert_eq!(
        f["stops"], 2,
        "two unplanned stops; maintenance is not a failure"
    );
    assert!(
        close(num(&f["mttr_seconds"]), (jam + unqualified) / 2.0),
        "{f}"
    );
    assert!(close(num(&f["mtbf_seconds"]), green / 2.0), "{f}");
    let downtime: BTreeMap<String, Value> = answer.body["downtime"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["reason"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    assert!(close(num(&downtime["jam"]["seconds"]), jam));
    assert_eq!(downtime["jam"]["parent"], "mechanical");
    assert_eq!(downtime["jam"]["name"], "Material jam");
    assert!(close(num(&downtime["unqualified"]["seconds"]), unqualified));
    assert_eq!(downtime["maintenance"]["planned"], true);

    // The fleet: per line, per machine, per shift (one all-day shift: the same as the total).
    let answer = client
        .send(
            client
                .http()
                .get(client.url(&format!("/v1/reports/availability?site=works&{query}"))),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let report = &answer.body;
    let k = time(&kiln[1]["recorded_at"]);
    let kiln_green = seconds(from.max(time(&kiln[0]["recorded_at"])), k);
    let kiln_yellow = seconds(k, to);
    let lines: BTreeMap<String, Value> = report["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["line"].as_str().unwrap().to_string(),
                l["figures"].clone(),
            )
        })
        .collect();
    assert!(close(num(&lines["line-2"]["green_seconds"]), kiln_green));
    assert!(close(num(&lines["line-2"]["yellow_seconds"]), kiln_yellow));
    assert!(close(num(&lines["line-1"]["green_seconds"]), green));
    assert_eq!(report["machines"].as_array().unwrap().len(), 2);
    assert!(close(
        num(&report["total"]["green_seconds"]),
        green + kiln_green
    ));
    assert_eq!(report["shifts"][0]["shift"], "all-day");
    assert!(close(
        num(&report["shifts"][0]["figures"]["green_seconds"]),
        green + kiln_green
    ));
    // The Pareto: largest first.
    let answer = client
        .send(
            client
                .http()
                .get(client.url(&format!("/v1/reports/downtime?line=line-1&{query}"))),
        )
        .await
        .unwrap();
    let seconds: Vec<f64> = answer.body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| num(&r["seconds"]))
        .collect();
    assert_eq!(seconds.len(), 3);
    assert!(seconds.windows(2).all(|w| w[0] >= w[1]), "{seconds:?}");
    let categories: BTreeMap<String, f64> = answer.body["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["category"].as_str().unwrap().to_string(),
                num(&c["seconds"]),
            )
        })
        .collect();
    assert!(
        close(categories["mechanical"], jam),
        "jam rolls up into mechanical"
    );

    // Stops, and correcting the reason of the unqualified one (an event, not an overwrite).
    let answer = client
        .send(
            client
                .http()
                .get(client.url(&format!("/v1/equipment/press-1/stops?{query}"))),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let stops: Vec<(u64, Option<String>, bool)> = answer.body["stops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["version"].as_u64().unwrap(),
                s["reason"].as_str().map(String::from),
                s["end"].is_string(),
            )
        })
        .collect();
    assert_eq!(
        stops,
        [
            (2, Some("jam".into()), true),
            (4, None, true),
            (6, Some("maintenance".into()), false)
        ]
    );
    let correct = |version: u64, body: Value| {
        let client = client.clone();
        async move {
            client
                .send(
                    client
                        .http()
                        .put(client.url(&format!("/v1/equipment/press-1/stops/{version}/reason")))
                        .json(&body),
                )
                .await
                .unwrap()
        }
    };
    let answer = correct(4, json!({"reason": "jam", "updated_by": "supervisor-2"})).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.version(), 7, "the correction is an event of its own");
    assert_eq!(
        correct(6, json!({"reason": "jam"})).await.body["code"],
        "stop_in_progress"
    );
    assert_eq!(
        correct(3, json!({"reason": "jam"})).await.body["code"],
        "no_such_stop"
    );
    assert_eq!(
        correct(4, json!({"reason": "gremlins"})).await.body["code"],
        "unknown_reason"
    );
    let pareto_url = client.url(&format!("/v1/reports/downtime?line=line-1&{query}"));
    let reasons = wait_for(
        "the report reflects the correction",
        Duration::from_secs(20),
        || {
            let (client, url) = (client.clone(), pareto_url.clone());
            async move {
                let answer = client.send(client.http().get(url)).await.ok()?;
                let reasons: BTreeMap<String, f64> = answer.body["reasons"]
                    .as_array()?
                    .iter()
                    .map(|r| {
                        (
                            r["reason"].as_str().unwrap().to_string(),
                            num(&r["seconds"]),
                        )
                    })
                    .collect();
                (!reasons.contains_key("unqualified")).then_some(reasons)
            }
        },
    )
    .await;
    assert!(close(reasons["jam"], jam + unqualified), "{reasons:?}");
    // The history still shows what was recorded at the time, and the correction after it.
    let history = client.history("press-1").await;
    assert!(history[3]["reason"].is_null());
    assert_eq!(history[6]["kind"], "reason_corrected");

    // Bad input: a clear problem.
    for path in [
        "/v1/equipment/press-1/time-in-state?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        "/v1/reports/availability?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "/v1/reports/downtime?site=a.b",
    ] {
        let answer = client
            .send(client.http().get(client.url(path)))
            .await
            .unwrap();
        assert_eq!(answer.status, 400, "{path}: {:?}", answer.body);
        assert!(answer.is_problem());
    }
    let answer = client
        .send(
            client
                .http()
                .get(client.url("/v1/equipment/ghost-1/time-in-state")),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 404);
}

#[tokio::test]
async fn a_factory_day_through_the_api_sqlite() {
    factory_day(DbKind::Sqlite).await;
}

#[tokio::test]
async fn a_factory_day_through_the_api_postgres() {
    factory_day(DbKind::Postgres).await;
}
