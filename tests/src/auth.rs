//! API tokens for tests: one random signing key per test process (written to a temporary
//! file that every node of the process is started with), and tokens minted with it by the
//! node's own code.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use eq_actors::scope::{Area, Scope};
use eq_node::auth::{Role, TokenKeys};

struct TestKey {
    _dir: tempfile::TempDir,
    file: PathBuf,
    keys: TokenKeys,
}

fn test_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("eq-auth-")
            .tempdir()
            .expect("temp dir");
        let file = dir.path().join("token.key");
        eq_node::auth::tokens::ensure_key_file(&file).expect("writing the test key");
        let keys = TokenKeys::load(&[&file], eq_node::auth::tokens::DEFAULT_AUDIENCE, None)
            .expect("loading the test key");
        TestKey {
            _dir: dir,
            file,
            keys,
        }
    })
}

/// The key file every test node verifies tokens with.
pub fn key_file() -> &'static Path {
    &test_key().file
}

/// A token for `subject` with `role`, covering `areas` (`*`, `<site>`, `<site>/<line>`).
pub fn token(subject: &str, role: Role, areas: &[&str]) -> String {
    token_with_id(subject, role, areas).0
}

/// Like [`token`], with the token's id (its `jti`).
pub fn token_with_id(subject: &str, role: Role, areas: &[&str]) -> (String, String) {
    let scope = Scope(
        areas
            .iter()
            .map(|a| Area::parse(a).expect("area"))
            .collect(),
    );
    let issued = test_key()
        .keys
        .issue(subject, role, &scope, Duration::from_secs(6 * 3600))
        .expect("minting a token");
    (issued.token, issued.id)
}

/// An admin token scoped everywhere (what the harness's clients use unless told otherwise).
pub fn admin_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| token("test-admin", Role::Admin, &["*"]))
}

/// `Authorization` header value of the admin token.
pub fn admin_bearer() -> String {
    format!("Bearer {}", admin_token())
}

/// A reqwest client that sends the admin token with every request (no overall timeout:
/// live streams stay open).
pub fn admin_http() -> reqwest::Client {
    authorized(admin_token()).build().expect("http client")
}

/// A reqwest client builder that sends `token` with every request.
pub fn authorized(token: &str) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value =
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("token header");
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder().default_headers(headers)
}
