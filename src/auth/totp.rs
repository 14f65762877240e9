//! The optional second factor: time-based one-time passwords (RFC 6238; SHA-1, 6 digits, 30 s
//! steps, one step of clock skew either way), as authenticator apps expect them.
//!
//! A user enrols with `POST /users/me/totp` (a new secret, pending, and its `otpauth://` URI),
//! confirms with a code from the app (`POST /users/me/totp/confirm`), and from then on
//! `POST /login` needs a `code` as well. A code is accepted once: the step it matched is kept,
//! and that step and earlier ones are refused afterwards (RFC 6238 section 5.2).

use serde::{Deserialize, Serialize};
use totp_rs::{Builder, Secret, Totp};

/// Issuer named in the `otpauth://` URI (what the authenticator app shows).
pub const ISSUER: &str = "Broker";

/// Bytes of a generated secret: 160 bits, as RFC 4226 recommends.
const SECRET_BYTES: usize = 20;

/// A user's second factor as stored with the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpState {
    /// The shared secret, base32 (RFC 4648, no padding).
    pub secret: String,
    /// Whether login needs a code: false between enrolment and confirmation.
    pub active: bool,
    /// The last time step a code was accepted for; that step and earlier ones are refused.
    #[serde(default)]
    pub last_step: u64,
}

impl TotpState {
    /// A new, pending second factor with a random secret.
    pub fn generate() -> Self {
        let bytes: [u8; SECRET_BYTES] = rand::random();
        Self {
            secret: Secret::from(bytes.to_vec()).to_base32(),
            active: false,
            last_step: 0,
        }
    }

    /// The `otpauth://totp/...` URI for `username`, to put in an authenticator app (often as
    /// a QR code).
    ///
    /// # Errors
    /// When the secret or the name cannot be encoded (a stored secret that is not base32).
    pub fn uri(&self, username: &str) -> Result<String, String> {
        self.totp(username)?.to_url().map_err(|e| e.to_string())
    }

    /// Checks `code` at Unix time `now`; on success returns the matched time step, which must be
    /// stored as [`last_step`](Self::last_step) so the code cannot be used again.
    pub fn check(&self, code: &str, now: u64) -> Option<u64> {
        let code = code.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let totp = self.totp("user").ok()?;
        // `check` returns the step number of the match.
        totp.check(code, now).filter(|&step| step > self.last_step)
    }

    fn totp(&self, username: &str) -> Result<Totp, String> {
        let secret = Secret::try_from_base32(&self.secret).map_err(|e| e.to_string())?;
        Builder::new()
            .with_secret(secret)
            .with_issuer(Some(ISSUER))
            .with_account_name(username)
            .build()
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 secret "12345678901234567890", truncated to 6 digits.
    #[test]
    fn rfc_6238_test_vectors() {
        let state = TotpState {
            secret: Secret::from(b"12345678901234567890".to_vec()).to_base32(),
            active: true,
            last_step: 0,
        };
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert!(state.check(code, time).is_some(), "{time}: {code}");
        }
        assert!(state.check("000000", 59).is_none());
        assert!(state.check("28708", 59).is_none());
        assert!(state.check("2870822", 59).is_none());
    }

    #[test]
    fn a_step_is_accepted_once_and_skew_is_one_step() {
        let mut state = TotpState::generate();
        assert_eq!(state.secret.len(), 32);
        let totp = state.totp("ada").expect("totp");
        let now = 1_700_000_000;
        let code = totp.generate(now).to_string();
        let step = state.check(&code, now).expect("valid");
        assert_eq!(step, now / 30);
        assert!(state.check(&code, now + 30).is_some(), "one step late");
        assert!(state.check(&code, now + 60).is_none(), "two steps late");
        state.last_step = step;
        assert!(state.check(&code, now).is_none(), "replayed");
        let uri = state.uri("ada").expect("uri");
        assert!(uri.starts_with("otpauth://totp/Broker:ada?"), "{uri}");
        assert!(uri.contains(&format!("secret={}", state.secret)), "{uri}");
    }
}
