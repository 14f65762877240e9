//! The `broker_token` login cookie: its attributes (`--cookie-samesite`, `--cookie-secure`),
//! setting it at login and clearing it at logout.

use axum::http::HeaderValue;

use super::COOKIE_NAME;
pub use crate::config::SameSite;

/// How the login cookie is written.
#[derive(Debug, Clone, Copy)]
pub struct CookiePolicy {
    /// `SameSite` attribute.
    pub same_site: SameSite,
    /// Whether the cookie carries `Secure` (sent over HTTPS only).
    pub secure: bool,
}

impl CookiePolicy {
    /// `Set-Cookie` value holding `token` for `max_age` seconds.
    pub fn set(&self, token: &str, max_age: u64) -> Option<HeaderValue> {
        HeaderValue::from_str(&self.format(token, max_age)).ok()
    }

    /// `Set-Cookie` value that makes the browser drop the cookie.
    pub fn clear(&self) -> HeaderValue {
        HeaderValue::from_str(&self.format("", 0))
            .unwrap_or_else(|_| HeaderValue::from_static("broker_token=; Path=/; Max-Age=0"))
    }

    fn format(&self, value: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{COOKIE_NAME}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={}{secure}",
            self.same_site.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes() {
        let policy = CookiePolicy {
            same_site: SameSite::Strict,
            secure: true,
        };
        assert_eq!(
            policy.set("abc", 60).expect("valid"),
            "broker_token=abc; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
        let lax = CookiePolicy {
            same_site: SameSite::Lax,
            secure: false,
        };
        assert_eq!(
            lax.clear(),
            "broker_token=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
        );
    }
}
