//! The checked-in `openapi/openapi.json` must be exactly what the code produces.
//! Regenerate with `cargo run --bin equipment-live -- openapi --out openapi/openapi.json`
//! (or run this test with `EQ_UPDATE_OPENAPI=1`).

#[test]
fn checked_in_spec_matches_the_code() {
    let path = eq_tests::workspace_root().join("openapi/openapi.json");
    let generated = eq_node::gateway::spec_json();
    if std::env::var("EQ_UPDATE_OPENAPI").is_ok() {
        std::fs::write(&path, generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "openapi/openapi.json is out of date: run `cargo run --bin equipment-live -- openapi --out openapi/openapi.json`"
    );
}

#[test]
fn every_operation_documents_its_errors_as_problems() {
    let spec: serde_json::Value = serde_json::from_str(eq_node::gateway::spec_json()).unwrap();
    let paths = spec["paths"].as_object().unwrap();
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            assert!(op["summary"].is_string(), "{method} {path} has a summary");
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.contains_key("400"),
                "{method} {path} documents 400"
            );
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        response["content"]["application/problem+json"].is_object(),
                        "{method} {path} {status} is a problem"
                    );
                }
            }
        }
    }
}
