//! JSON Web Tokens (HS256): issuing at login, verifying on every authenticated request.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::permissions::Grants;

/// File in the database directory holding the generated secret when none is configured.
pub const SECRET_FILE: &str = "jwt_secret";

/// The claims Broker puts in a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Username.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issue time, seconds since the Unix epoch.
    pub iat: u64,
    /// The user's token generation when the token was issued: a password change or an
    /// `--admin` reset moves the user to the next one, and older tokens stop working.
    #[serde(default, rename = "gen")]
    pub generation: u64,
    /// The user's permissions when the token was issued.
    #[serde(flatten)]
    pub grants: Grants,
}

/// Shortest `--jwt-secret` that does not draw a warning: 32 bytes, HS256's key size.
pub const MIN_SECRET_LEN: usize = 32;

/// Warns loudly when a configured secret is shorter than [`MIN_SECRET_LEN`]: a short HS256
/// secret can be found offline from any one token, and with it any token can be forged.
pub fn warn_if_short(secret: &str) {
    if secret.len() < MIN_SECRET_LEN {
        tracing::warn!(
            length = secret.len(),
            "--jwt-secret is only {} bytes: anyone holding one token can guess a short secret \
             offline and then forge tokens for any user, admins included. Use at least \
             {MIN_SECRET_LEN} random bytes (`openssl rand -hex 32`), or leave --jwt-secret out \
             to have a random one generated and kept in the database directory",
            secret.len()
        );
    }
}

/// Signing and verification keys plus the token lifetime.
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    expiry_secs: u64,
}

impl Keys {
    /// Keys from a shared secret.
    pub fn new(secret: &[u8], expiry_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Broker verifies only tokens it issued itself, on the same clock.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            expiry_secs,
        }
    }

    /// Issues a token for `user` at token `generation`; returns it with its expiry (Unix
    /// seconds).
    ///
    /// # Errors
    /// If encoding fails (it does not for HS256 with valid claims).
    pub fn issue(
        &self,
        user: &str,
        generation: u64,
        grants: Grants,
    ) -> Result<(String, u64), String> {
        let iat = now_secs();
        let exp = iat.saturating_add(self.expiry_secs);
        let claims = Claims {
            sub: user.to_owned(),
            exp,
            iat,
            generation,
            grants,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map(|token| (token, exp))
            .map_err(|e| e.to_string())
    }

    /// Verifies signature, algorithm and expiry, and returns the claims.
    ///
    /// # Errors
    /// A short reason suitable for a 401 answer.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired".to_owned(),
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "invalid token signature".to_owned()
                }
                _ => "invalid token".to_owned(),
            })?;
        // RFC 7519: not accepted on or after `exp` (the library still accepts during that
        // second); streams end at the same instant.
        if claims.exp <= now_secs() {
            return Err("token expired".to_owned());
        }
        Ok(claims)
    }

    /// Token lifetime in seconds.
    pub fn expiry_secs(&self) -> u64 {
        self.expiry_secs
    }
}

/// Time left until the Unix second `exp`, zero if it has passed.
pub fn time_until(exp: u64) -> std::time::Duration {
    (std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp))
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default()
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads the generated secret from `dir`, creating it (random, owner-only) on first start.
///
/// # Errors
/// When the file cannot be read or written.
pub fn load_or_create_secret(dir: &Path) -> std::io::Result<Vec<u8>> {
    let path = dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)?;
    let secret: String = (0..4)
        .map(|_| format!("{:032x}", rand::random::<u128>()))
        .collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    std::io::Write::write_all(&mut file, secret.as_bytes())?;
    file.sync_all()?;
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_verify() {
        let keys = Keys::new(b"secret", 60);
        let (token, exp) = keys.issue("ada", 3, Grants::all()).expect("issue");
        let claims = keys.verify(&token).expect("verify");
        assert_eq!(claims.sub, "ada");
        assert_eq!(claims.generation, 3);
        assert_eq!(claims.exp, exp);
        assert!(claims.grants.admin);
        assert_eq!(
            Keys::new(b"other", 60).verify(&token).unwrap_err(),
            "invalid token signature"
        );
        assert_eq!(keys.verify("garbage").unwrap_err(), "invalid token");
    }

    #[test]
    fn secret_is_generated_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create_secret(dir.path()).expect("create");
        assert_eq!(first.len(), 128);
        assert_eq!(load_or_create_secret(dir.path()).expect("read"), first);
    }
}
