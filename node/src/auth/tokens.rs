//! API tokens: JWTs signed with HS256 by a key the operator configures (`--auth-key-file`,
//! several files for rotation: the first signs, all verify). Verification pins the
//! algorithm (so `alg: none` and algorithm confusion are refused), and requires a
//! signature by a configured key, the configured audience (and issuer, if set), an
//! unexpired `exp`, a subject, a known role and well-formed scopes.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use eq_actors::domain::{MAX_ACTOR_LEN, check_text};
use eq_actors::scope::{Area, Scope};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::roles::Role;

/// Shortest accepted signing key (RFC 7518: an HS256 key must be at least 256 bits).
pub const MIN_KEY_BYTES: usize = 32;

/// Default `aud` of the tokens this installation accepts.
pub const DEFAULT_AUDIENCE: &str = "equipment-live";

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// The claims of an Equipment Live token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Who the caller is; recorded as `updated_by` of every change it makes.
    pub sub: String,
    /// The audience (checked by the verifier; a string or a list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `viewer`, `operator`, `supervisor` or `admin`.
    pub role: String,
    /// Areas the caller may change: `*`, `<site>` or `<site>/<line>`.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    pub scope: Scope,
    /// What the rate limit counts by: the token itself (its signature).
    pub limit_key: String,
    /// The token's `jti`, if it has one (what a single-token revocation names).
    pub token_id: Option<String>,
    /// The token's `iat` (0 if it has none): a subject's revocation refuses tokens issued
    /// until then.
    pub issued_at: u64,
    /// The token's `exp` (seconds since the epoch): a live stream ends then.
    pub expires_at: u64,
}

fn unix_now() -> u64 {
    chrono::Utc::now().timestamp().max(0) as u64
}

impl Principal {
    /// Whether the token has expired by now (the same leeway as the verifier's).
    pub fn expired(&self) -> bool {
        unix_now() > self.expires_at + LEEWAY_SECS
    }

    /// The scope a command carries to the owning actor (`None`: unrestricted).
    pub fn command_scope(&self) -> Option<Scope> {
        (!self.scope.is_everywhere()).then(|| self.scope.clone())
    }
}

/// Why a token was refused (all are answered 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was not signed by a key of this installation")]
    BadSignature,
    #[error("the token's algorithm is not accepted (only HS256)")]
    WrongAlgorithm,
    #[error("the token is for another audience")]
    WrongAudience,
    #[error("the token is from another issuer")]
    WrongIssuer,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token's claims are invalid: {0}")]
    BadClaims(String),
    #[error("the token has been revoked")]
    Revoked,
}

impl TokenError {
    /// A stable code for problems and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::WrongAlgorithm => "token_wrong_algorithm",
            TokenError::WrongAudience => "token_wrong_audience",
            TokenError::WrongIssuer => "token_wrong_issuer",
            TokenError::Malformed(_) => "token_malformed",
            TokenError::BadClaims(_) => "token_bad_claims",
            TokenError::Revoked => "token_revoked",
        }
    }
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(err: jsonwebtoken::errors::Error) -> Self {
        match err.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                TokenError::WrongAlgorithm
            }
            ErrorKind::InvalidAudience => TokenError::WrongAudience,
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            ErrorKind::MissingRequiredClaim(claim) => {
                TokenError::BadClaims(format!("`{claim}` is missing"))
            }
            ErrorKind::Json(e) => TokenError::BadClaims(e.to_string()),
            _ => TokenError::Malformed(err.to_string()),
        }
    }
}

/// The keys and rules tokens are checked with.
pub struct TokenKeys {
    signing: EncodingKey,
    verifying: Vec<DecodingKey>,
    validation: Validation,
    audience: String,
    issuer: Option<String>,
}

impl TokenKeys {
    /// Keys from raw secrets; the first one signs.
    pub fn new(secrets: &[Vec<u8>], audience: &str, issuer: Option<&str>) -> anyhow::Result<Self> {
        let first = secrets.first().context("no token key configured")?;
        for secret in secrets {
            anyhow::ensure!(
                secret.len() >= MIN_KEY_BYTES,
                "a token key must be at least {MIN_KEY_BYTES} bytes"
            );
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        if let Some(issuer) = issuer {
            validation.set_issuer(&[issuer]);
            validation.set_required_spec_claims(&["exp", "aud", "sub", "iss"]);
        }
        Ok(Self {
            signing: EncodingKey::from_secret(first),
            verifying: secrets
                .iter()
                .map(|s| DecodingKey::from_secret(s))
                .collect(),
            validation,
            audience: audience.to_string(),
            issuer: issuer.map(str::to_string),
        })
    }

    /// Keys from files (surrounding whitespace is not part of a key).
    pub fn load(
        files: &[impl AsRef<Path>],
        audience: &str,
        issuer: Option<&str>,
    ) -> anyhow::Result<Self> {
        let secrets = files
            .iter()
            .map(|f| {
                let f = f.as_ref();
                std::fs::read(f)
                    .map(|bytes| bytes.trim_ascii().to_vec())
                    .with_context(|| format!("reading token key {}", f.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Self::new(&secrets, audience, issuer)
    }

    /// Checks a token and returns who is calling.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        check_algorithm(token)?;
        let mut last = TokenError::BadSignature;
        for key in &self.verifying {
            match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                Ok(data) => return principal(data.claims, token),
                // Another key may have signed it (rotation): try the next.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {
                    last = TokenError::BadSignature
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last)
    }

    /// Signs a token with the first key.
    pub fn mint(
        &self,
        subject: &str,
        role: Role,
        scope: &Scope,
        valid_for: Duration,
    ) -> anyhow::Result<String> {
        Ok(self.issue(subject, role, scope, valid_for)?.token)
    }

    /// Signs a token with the first key, and tells its id (what revokes it alone) and
    /// expiry.
    pub fn issue(
        &self,
        subject: &str,
        role: Role,
        scope: &Scope,
        valid_for: Duration,
    ) -> anyhow::Result<Issued> {
        check_text("subject", subject, MAX_ACTOR_LEN)?;
        let now = unix_now();
        let id = uuid::Uuid::new_v4().to_string();
        let claims = Claims {
            sub: subject.to_string(),
            aud: Some(serde_json::Value::String(self.audience.clone())),
            iss: self.issuer.clone(),
            exp: now + valid_for.as_secs(),
            iat: now,
            jti: Some(id.clone()),
            role: role.as_str().to_string(),
            scopes: scope.0.iter().map(ToString::to_string).collect(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.signing)?;
        Ok(Issued {
            token,
            id,
            expires_at: claims.exp,
        })
    }
}

/// A freshly signed token.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    /// Its `jti`.
    pub id: String,
    /// Its `exp` (seconds since the epoch).
    pub expires_at: u64,
}

/// Reads the header's `alg` before anything else: `none`, an asymmetric algorithm (the
/// key-confusion attack) or another HMAC are refused as such, whatever the rest holds.
fn check_algorithm(token: &str) -> Result<(), TokenError> {
    let header = token
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .ok_or_else(|| TokenError::Malformed("not a JWT (header.claims.signature)".into()))?;
    match header.get("alg").and_then(|a| a.as_str()) {
        Some("HS256") => Ok(()),
        _ => Err(TokenError::WrongAlgorithm),
    }
}

/// Turns verified claims into a principal, refusing what this installation does not know.
fn principal(claims: Claims, token: &str) -> Result<Principal, TokenError> {
    if claims.sub.trim().is_empty() {
        return Err(TokenError::BadClaims("`sub` is blank".into()));
    }
    check_text("sub", &claims.sub, MAX_ACTOR_LEN)
        .map_err(|e| TokenError::BadClaims(e.to_string()))?;
    let role = Role::parse(&claims.role)
        .ok_or_else(|| TokenError::BadClaims(format!("unknown role `{}`", claims.role)))?;
    let scope = claims
        .scopes
        .iter()
        .map(|s| Area::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map(Scope)
        .map_err(|e| TokenError::BadClaims(e.to_string()))?;
    // A token from the future would outlive a revocation of its subject by the issuing
    // clock's lead.
    if claims.iat > unix_now() + LEEWAY_SECS {
        return Err(TokenError::BadClaims("`iat` is in the future".into()));
    }
    if let Some(jti) = &claims.jti {
        check_text("jti", jti, MAX_ACTOR_LEN).map_err(|e| TokenError::BadClaims(e.to_string()))?;
    }
    let signature = token.rsplit('.').next().unwrap_or(token);
    Ok(Principal {
        subject: claims.sub,
        role,
        scope,
        limit_key: signature.to_string(),
        token_id: claims.jti,
        issued_at: claims.iat,
        expires_at: claims.exp,
    })
}

/// Writes a new random key file (readable by its owner only) unless one exists.
pub fn ensure_key_file(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let mut bytes = [0u8; 48];
    rand::fill(&mut bytes);
    write_private(
        path,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    )
}

/// Writes a secret to a file only its owner can read (replacing it), creating directories.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{text}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-test";
    const OTHER: &[u8] = b"another-key-of-at-least-32-bytes-xxxxx";

    fn keys() -> TokenKeys {
        TokenKeys::new(&[KEY.to_vec()], DEFAULT_AUDIENCE, None).unwrap()
    }

    fn sign(claims: serde_json::Value, alg: Algorithm, key: &[u8]) -> String {
        jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(key)).unwrap()
    }

    fn claims() -> serde_json::Value {
        let now = chrono::Utc::now().timestamp();
        serde_json::json!({
            "sub": "alice", "aud": "equipment-live", "exp": now + 600, "iat": now,
            "role": "operator", "scopes": ["plant1/press"],
        })
    }

    fn with(mut base: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
        base[key] = value;
        base
    }

    #[test]
    fn a_minted_token_verifies_to_its_principal() {
        let scope = Scope(vec![Area::parse("plant1/press").unwrap()]);
        let token = keys()
            .mint("alice", Role::Operator, &scope, Duration::from_secs(60))
            .unwrap();
        let who = keys().verify(&token).unwrap();
        assert_eq!(
            (who.subject.as_str(), who.role, who.scope),
            ("alice", Role::Operator, scope)
        );
    }

    #[test]
    fn forged_expired_and_foreign_tokens_are_refused() {
        let now = chrono::Utc::now().timestamp();
        let k = keys();
        let cases = [
            (
                sign(claims(), Algorithm::HS256, OTHER),
                TokenError::BadSignature,
            ),
            (
                sign(
                    with(claims(), "exp", (now - 3600).into()),
                    Algorithm::HS256,
                    KEY,
                ),
                TokenError::Expired,
            ),
            (
                sign(
                    with(claims(), "aud", "another-app".into()),
                    Algorithm::HS256,
                    KEY,
                ),
                TokenError::WrongAudience,
            ),
            (
                sign(
                    with(claims(), "nbf", (now + 3600).into()),
                    Algorithm::HS256,
                    KEY,
                ),
                TokenError::NotYetValid,
            ),
            (
                sign(claims(), Algorithm::HS512, KEY),
                TokenError::WrongAlgorithm,
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(k.verify(&token), Err(expected));
        }
        let no_aud = claims().as_object().unwrap().clone();
        let mut no_aud = serde_json::Value::Object(no_aud);
        no_aud.as_object_mut().unwrap().remove("aud");
        assert!(matches!(
            k.verify(&sign(no_aud, Algorithm::HS256, KEY)),
            Err(TokenError::BadClaims(_))
        ));
        for (field, value) in [
            ("role", serde_json::json!("root")),
            ("scopes", serde_json::json!(["a.b"])),
            ("sub", serde_json::json!(" ")),
        ] {
            let token = sign(with(claims(), field, value), Algorithm::HS256, KEY);
            assert!(
                matches!(k.verify(&token), Err(TokenError::BadClaims(_))),
                "{field}"
            );
        }
    }

    #[test]
    fn alg_none_and_garbage_are_refused() {
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let header = serde_json::json!({"alg": "none", "typ": "JWT"});
        let unsigned = format!("{}.{}.", b64(&header), b64(&claims()));
        assert_eq!(keys().verify(&unsigned), Err(TokenError::WrongAlgorithm));
        for garbage in ["", "abc", "a.b.c", "...."] {
            assert!(keys().verify(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn every_configured_key_verifies_and_the_first_signs() {
        let rotated =
            TokenKeys::new(&[OTHER.to_vec(), KEY.to_vec()], DEFAULT_AUDIENCE, None).unwrap();
        let old = sign(claims(), Algorithm::HS256, KEY);
        assert!(
            rotated.verify(&old).is_ok(),
            "a token of the old key still works"
        );
        let new = rotated
            .mint(
                "bob",
                Role::Admin,
                &Scope::everywhere(),
                Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(keys().verify(&new), Err(TokenError::BadSignature));
    }

    #[test]
    fn issuer_is_checked_when_configured() {
        let k = TokenKeys::new(&[KEY.to_vec()], DEFAULT_AUDIENCE, Some("plant-idp")).unwrap();
        assert!(matches!(
            k.verify(&sign(claims(), Algorithm::HS256, KEY)),
            Err(TokenError::BadClaims(_)) | Err(TokenError::WrongIssuer)
        ));
        let good = sign(
            with(claims(), "iss", "plant-idp".into()),
            Algorithm::HS256,
            KEY,
        );
        assert!(k.verify(&good).is_ok());
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(TokenKeys::new(&[b"short".to_vec()], DEFAULT_AUDIENCE, None).is_err());
    }
}
