//! Device credentials for NATS (`equipment-live device-credential <id>`). Each device gets
//! its own user in account `EQ`, allowed to publish only its own machine's subjects and to
//! receive only its own replies and refusals (see `deploy/nats/users.conf`). The command
//! prints the block to paste into that file and the secret to put on the device; the secret
//! is shown once and never stored by the node.

use std::fmt::Write as _;

use anyhow::Context;
use eq_actors::EquipmentId;
use eq_actors::subjects::Subjects;
use rand::Rng;

/// How a device authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CredentialKind {
    /// An nkey: the device keeps the seed (`SU…`), the server only knows the public key;
    /// no secret crosses the network.
    Nkey,
    /// A user name and a random password; the server keeps a bcrypt hash.
    Password,
}

/// A freshly issued credential.
#[derive(Debug)]
pub struct DeviceCredential {
    /// The NATS user the device connects as (for an nkey: the public key).
    pub user: String,
    /// What the device needs: the nkey seed, or the password.
    pub secret: String,
    /// The `users.conf` block for the server.
    pub config_block: String,
}

/// Issues a credential for the device of `id`.
pub fn issue(
    subjects: &Subjects,
    id: &EquipmentId,
    kind: CredentialKind,
) -> anyhow::Result<DeviceCredential> {
    let (identity, user, secret) = match kind {
        CredentialKind::Nkey => {
            let pair = nkeys::KeyPair::new_user();
            let seed = pair.seed().context("encoding the nkey seed")?;
            let public = pair.public_key();
            (format!("nkey: \"{public}\""), public, seed)
        }
        CredentialKind::Password => {
            let password = random_password();
            // `$2a$`: the variant nats-server reads reliably (quoted, as printed here).
            let hash = bcrypt::hash_with_result(&password, bcrypt::DEFAULT_COST)
                .context("hashing the password")?
                .format_for_version(bcrypt::Version::TwoA);
            let user = format!("device-{id}");
            (
                format!("user: \"{user}\"\n    password: \"{hash}\""),
                user,
                password,
            )
        }
    };
    let config_block = config_block(subjects, id, &identity);
    Ok(DeviceCredential {
        user,
        secret,
        config_block,
    })
}

/// The block for `deploy/nats/users.conf` (pasted above its final `]`).
fn config_block(subjects: &Subjects, id: &EquipmentId, identity: &str) -> String {
    let list = |subjects: Vec<String>| {
        subjects
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut block = String::new();
    let _ = writeln!(block, "  # device {id}");
    let _ = writeln!(block, "  {{");
    let _ = writeln!(block, "    {identity}");
    let _ = writeln!(block, "    permissions: {{");
    let _ = writeln!(
        block,
        "      publish: {{allow: [{}]}}",
        list(subjects.device_publish_permissions(id))
    );
    let _ = writeln!(
        block,
        "      subscribe: {{allow: [{}]}}",
        list(subjects.device_subscribe_permissions(id))
    );
    let _ = writeln!(block, "    }}");
    let _ = write!(block, "  }}");
    block
}

/// 32 characters of letters and digits: nats-server parses config values, so a password
/// must not be all digits nor contain punctuation that its parser would read.
fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    let mut password = String::from("p");
    for _ in 0..31 {
        password.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    password
}

/// What the command prints: the block for the server, then what goes on the device.
pub fn render(subjects: &Subjects, id: &EquipmentId, credential: &DeviceCredential) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Add to deploy/nats/users.conf, above its final `]`, then check and reload:\n\
         #   nats-server -c deploy/nats/secure.conf -t && nats-server --signal reload\n"
    );
    let _ = writeln!(out, "{}\n", credential.config_block);
    let _ = writeln!(out, "# For the device {id} (shown once; keep it secret):");
    if credential.secret.starts_with("SU") {
        let _ = writeln!(out, "#   nkey seed:    {}", credential.secret);
    } else {
        let _ = writeln!(out, "#   user:         {}", credential.user);
        let _ = writeln!(out, "#   password:     {}", credential.secret);
    }
    let _ = writeln!(
        out,
        "#   inbox prefix: {}   (the client must use it to get replies)",
        subjects.device_inbox_prefix(id)
    );
    let _ = writeln!(
        out,
        "#   publishes:    {} (request/reply) or {} (JetStream)",
        subjects.device_status(id),
        subjects.ingest_status(id)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_nkey_credential_allows_only_the_devices_own_subjects() {
        let id = EquipmentId::parse("press-1").unwrap();
        let c = issue(&Subjects::default(), &id, CredentialKind::Nkey).unwrap();
        assert!(c.secret.starts_with("SU"));
        assert!(c.user.starts_with('U'));
        let pair = nkeys::KeyPair::from_seed(&c.secret).unwrap();
        assert_eq!(pair.public_key(), c.user);
        assert!(c.config_block.contains(&format!("nkey: \"{}\"", c.user)));
        assert!(
            c.config_block
                .contains("publish: {allow: [\"eq.device.press-1.>\", \"eq.ingest.press-1.>\"]}")
        );
        assert!(
            c.config_block
                .contains("subscribe: {allow: [\"_INBOX.press-1.>\", \"eq.rejects.press-1\"]}")
        );
    }

    #[test]
    fn a_password_credential_stores_only_a_bcrypt_hash() {
        let id = EquipmentId::parse("kiln-2").unwrap();
        let c = issue(&Subjects::default(), &id, CredentialKind::Password).unwrap();
        assert_eq!(c.user, "device-kiln-2");
        assert_eq!(c.secret.len(), 32);
        assert!(!c.config_block.contains(&c.secret));
        let hash = c
            .config_block
            .split("password: \"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        assert!(hash.starts_with("$2a$"));
        assert!(bcrypt::verify(&c.secret, hash).unwrap());
    }
}
