//! Signed session tokens: who is on the other end of a socket and what they may do.
//!
//! Tokens are HS256 JWTs carrying a [`Role`], a subject id, an optional race scope and an
//! expiry. The signing secret never ships in `config.toml`: it is read from
//! `PELOTON_AUTH_SECRET`, from `auth.secret_file`, or created at random in the data folder
//! with owner-only permissions. The same [`Keys`] issue tokens offline in the CLI and
//! verify them in the server.

use crate::actors::patrol::voucher::VoucherKey;
use crate::config::Config;
use crate::ids::validate_id;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
pub use peloton_domain::role::Role;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// The environment variable holding the secret itself (hex or any text of 32+ bytes).
pub const SECRET_ENV: &str = "PELOTON_AUTH_SECRET";
/// File name of the generated secret inside the data folder.
pub const SECRET_FILE_NAME: &str = "secret.key";

/// The claims inside a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the user, device or admin the token was issued to.
    pub sub: String,
    /// What the subject may do.
    pub role: Role,
    /// Restricts the token to one race (racers, share links).
    #[serde(default)]
    pub race: Option<String>,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

impl Claims {
    /// Expiry in milliseconds, the protocol's time unit.
    pub fn expires_at_ms(&self) -> i64 {
        self.exp.saturating_mul(1000)
    }

    /// Whether the token is past its expiry plus `leeway_ms` at `now_ms`; saturating, so a
    /// huge `exp` is simply far in the future instead of wrapping into the past.
    pub fn expired_at(&self, now_ms: i64, leeway_ms: i64) -> bool {
        self.expires_at_ms().saturating_add(leeway_ms) <= now_ms
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token was presented.
    #[error("no token presented; send `Authorization: Bearer <token>` or `?token=`")]
    Missing,
    /// The token is past its expiry.
    #[error("token expired")]
    Expired,
    /// Bad signature, malformed, or claims out of range.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token's `exp` is further ahead than any token this server issues may live: a
    /// forged-looking or misconfigured token, refused before it can hold a socket forever.
    #[error("invalid token: exp is more than auth.max_ttl_secs ({max_ttl_secs} s) from now")]
    LivesTooLong {
        /// The configured maximum lifetime.
        max_ttl_secs: u64,
    },
}

/// Why the secret could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[error("auth secret: {0}")]
pub struct SecretError(pub String);

/// Signing and verification keys derived from the secret.
#[derive(Clone)]
pub struct Keys {
    /// Signs tokens (CLI, refresh tests).
    encoding: EncodingKey,
    /// Verifies tokens at upgrade and refresh.
    decoding: DecodingKey,
    /// Expiry and algorithm checks.
    validation: Validation,
    /// Longest lifetime a presented token may still have (`auth.max_ttl_secs`); `None`
    /// (keys built from a bare secret) checks none.
    max_ttl_secs: Option<u64>,
    /// Signs and checks voucher codes; derived from the same secret so whoever can verify
    /// tokens can verify vouchers offline, but never equal to the token key.
    voucher: VoucherKey,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// Keys from raw secret bytes. Secrets shorter than 32 bytes are refused: HS256 is only
    /// as strong as its key.
    pub fn from_secret(secret: &[u8], leeway_secs: u64) -> Result<Keys, SecretError> {
        if secret.len() < 32 {
            return Err(SecretError(format!(
                "the secret must be at least 32 bytes, got {}",
                secret.len()
            )));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_secs;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            max_ttl_secs: None,
            voucher: VoucherKey::derive(secret),
        })
    }

    /// The same keys, refusing in [`Keys::verify`] any token whose `exp` is more than
    /// `max_ttl_secs` (plus the leeway) from now.
    pub fn with_max_ttl(mut self, max_ttl_secs: u64) -> Keys {
        self.max_ttl_secs = Some(max_ttl_secs);
        self
    }

    /// Loads the secret the way the server does: `PELOTON_AUTH_SECRET`, then
    /// `auth.secret_file`, then `<data_dir>/secret.key`, created if missing.
    pub fn load_or_create(config: &Config) -> Result<Keys, SecretError> {
        let secret = match std::env::var(SECRET_ENV) {
            Ok(value) if !value.is_empty() => decode_secret(value.trim()),
            _ => load_or_create_file(&secret_path(config))?,
        };
        Ok(Keys::from_secret(&secret, config.auth.leeway_secs)?
            .with_max_ttl(config.auth.max_ttl_secs))
    }

    /// The key voucher codes are signed with.
    pub fn voucher_key(&self) -> &VoucherKey {
        &self.voucher
    }

    /// Signs `claims`.
    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Verifies a token's signature, expiry and claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?;
        let claims = data.claims;
        if let Some(max_ttl_secs) = self.max_ttl_secs {
            let now_secs = crate::time::now_ms() / 1000;
            let latest = now_secs
                .saturating_add(i64::try_from(max_ttl_secs).unwrap_or(i64::MAX))
                .saturating_add(i64::try_from(self.validation.leeway).unwrap_or(i64::MAX));
            if claims.exp > latest {
                return Err(TokenError::LivesTooLong { max_ttl_secs });
            }
        }
        validate_id("token subject", &claims.sub).map_err(|r| TokenError::Invalid(r.message))?;
        if let Some(race) = &claims.race {
            validate_id("token race", race).map_err(|r| TokenError::Invalid(r.message))?;
        }
        Ok(claims)
    }
}

/// Builds claims valid from `now_secs` for `ttl_secs`.
pub fn claims_for(
    role: Role,
    sub: &str,
    race: Option<&str>,
    now_secs: i64,
    ttl_secs: u64,
) -> Claims {
    Claims {
        sub: sub.to_owned(),
        role,
        race: race.map(str::to_owned),
        iat: now_secs,
        exp: now_secs.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX)),
    }
}

/// The subject of every guest token: guests are anonymous, and one subject keeps them
/// recognisable in logs and under the per-subject socket limits.
pub const GUEST_SUBJECT: &str = "guest";

/// What a guest token is, the one the spectator page fetches from `/api/guest-token` when
/// races are public: a spectator of every race (no race scope), anonymous, living
/// `ttl_secs` (`web.guest_token_ttl_secs`) from `now_secs`.
pub fn guest_claims(now_secs: i64, ttl_secs: u64) -> Claims {
    claims_for(Role::Spectator, GUEST_SUBJECT, None, now_secs, ttl_secs)
}

/// What a share link's token is: a spectator of race `race` only, whose subject names the
/// race it was shared for, living `ttl_secs` from `now_secs`.
pub fn share_claims(race: &str, now_secs: i64, ttl_secs: u64) -> Claims {
    claims_for(
        Role::Spectator,
        &format!("share-{race}"),
        Some(race),
        now_secs,
        ttl_secs,
    )
}

/// Where the secret file is for this configuration.
pub fn secret_path(config: &Config) -> PathBuf {
    if config.auth.secret_file.is_empty() {
        config.server.data_dir.join(SECRET_FILE_NAME)
    } else {
        PathBuf::from(&config.auth.secret_file)
    }
}

/// Secrets are stored as hex; anything else is taken as raw bytes so a passphrase works too.
fn decode_secret(text: &str) -> Vec<u8> {
    let is_hex =
        text.len() % 2 == 0 && !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex {
        (0..text.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
            .collect()
    } else {
        text.as_bytes().to_vec()
    }
}

fn load_or_create_file(path: &Path) -> Result<Vec<u8>, SecretError> {
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(decode_secret(text.trim())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SecretError(format!("cannot read {}: {e}", path.display()))),
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| SecretError(format!("no randomness for a new secret: {e}")))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| SecretError(format!("cannot create {}: {e}", parent.display())))?;
    }
    write_owner_only(path, hex.as_bytes())
        .map_err(|e| SecretError(format!("cannot write {}: {e}", path.display())))?;
    Ok(secret.to_vec())
}

/// Creates the file with mode 0600 from the start, so the secret is never readable by others,
/// and fails rather than overwrite a secret another process created meanwhile.
fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::from_secret(&[7u8; 32], 0).unwrap()
    }

    #[test]
    fn issued_tokens_verify_and_keep_their_claims() {
        let now = crate::time::now_ms() / 1000;
        let claims = claims_for(Role::Racer, "rider-1", Some("race-9"), now, 60);
        let token = keys().issue(&claims).unwrap();
        assert_eq!(keys().verify(&token).unwrap(), claims);
    }

    #[test]
    fn expired_wrong_key_and_garbage_are_refused() {
        let now = crate::time::now_ms() / 1000;
        let old = claims_for(Role::Admin, "ops", None, now - 7200, 60);
        assert_eq!(
            keys().verify(&keys().issue(&old).unwrap()),
            Err(TokenError::Expired)
        );
        let other = Keys::from_secret(&[8u8; 32], 0).unwrap();
        let token = other
            .issue(&claims_for(Role::Admin, "ops", None, now, 60))
            .unwrap();
        assert!(matches!(keys().verify(&token), Err(TokenError::Invalid(_))));
        assert!(matches!(
            keys().verify("not.a.token"),
            Err(TokenError::Invalid(_))
        ));
        let bad_sub = claims_for(Role::Admin, "a/b", None, now, 60);
        assert!(matches!(
            keys().verify(&keys().issue(&bad_sub).unwrap()),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn tokens_living_beyond_the_maximum_are_refused_without_overflow() {
        let keys = keys().with_max_ttl(3600);
        let now = crate::time::now_ms() / 1000;
        let fine = claims_for(Role::Spectator, "s", None, now, 3600);
        assert!(keys.verify(&keys.issue(&fine).unwrap()).is_ok());
        for exp in [now + 3600 + 60, i64::MAX, i64::MAX / 1000 + 1] {
            let mut claims = fine.clone();
            claims.exp = exp;
            assert_eq!(
                keys.verify(&keys.issue(&claims).unwrap()),
                Err(TokenError::LivesTooLong { max_ttl_secs: 3600 })
            );
            assert!(!claims.expired_at(crate::time::now_ms(), i64::MAX));
        }
        assert!(fine.expired_at(i64::MAX, 0));
    }

    #[test]
    fn guest_and_share_tokens_are_spectators_scoped_as_their_use() {
        let guest = guest_claims(100, 60);
        assert_eq!(
            (
                guest.role,
                guest.sub.as_str(),
                guest.race,
                guest.iat,
                guest.exp
            ),
            (Role::Spectator, "guest", None, 100, 160)
        );
        let share = share_claims("r1", 100, 60);
        assert_eq!(
            (
                share.role,
                share.sub.as_str(),
                share.race.as_deref(),
                share.exp
            ),
            (Role::Spectator, "share-r1", Some("r1"), 160)
        );
        // Both verify like any issued token.
        let keys = keys();
        let now = crate::time::now_ms() / 1000;
        let issued = keys.issue(&guest_claims(now, 60)).unwrap();
        assert_eq!(keys.verify(&issued).unwrap().sub, GUEST_SUBJECT);
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Keys::from_secret(b"short", 0).is_err());
    }

    #[test]
    fn secret_file_is_created_owner_only_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s").join(SECRET_FILE_NAME);
        let first = load_or_create_file(&path).unwrap();
        let second = load_or_create_file(&path).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
