//! Mercure access tokens: their keys, their validation, and the rights they carry.
//!
//! Both claim forms are read: the older `mercure: {publish: [...], subscribe: [...]}`
//! selectors (any `typ`), and RFC 9068 access tokens (`typ: at+jwt`) whose
//! `authorization_details` hold entries of type `https://mercure.rocks/authorization-detail`.
//! A token carrying a Mercure authorization detail that does not parse is refused whole.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::config::MercureConfig;
use super::matcher::Matcher;

/// The `type` of a Mercure authorization detail.
pub const DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";
/// Most authorization details, and matchers per detail, accepted in one token.
const MAX_DETAILS: usize = 64;

/// What a token is presented for: the publisher and the subscriber keys may differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `POST /.well-known/mercure`.
    Publish,
    /// `GET /.well-known/mercure`.
    Subscribe,
}

/// The rights of a valid token.
#[derive(Debug)]
pub struct TokenGrants {
    /// Topics the holder may publish to.
    pub publish: Vec<Matcher>,
    /// Topics whose private updates the holder may receive.
    pub subscribe: Vec<Matcher>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// The `subscribe` authorization details in token order: their topic matchers and their
    /// `payload`, if any.
    pub subscribe_payloads: Vec<(Vec<Matcher>, Option<Value>)>,
    /// The older claim's `mercure.payload`.
    pub legacy_payload: Option<Value>,
}

impl TokenGrants {
    /// The payload of this holder's subscription with matcher `matcher` (the query's value):
    /// that of the first `subscribe` authorization detail one of whose topics matches the
    /// matcher taken as a topic (none if that detail carries none), else the older
    /// `mercure.payload`, which applies to every subscription.
    pub fn payload_for(&self, matcher: &str, base: &Url) -> Option<Value> {
        self.subscribe_payloads
            .iter()
            .find(|(topics, _)| topics.iter().any(|m| m.matches(matcher, base)))
            .map_or_else(|| self.legacy_payload.clone(), |(_, p)| p.clone())
    }
}

/// One verification key and the algorithms it verifies.
struct Key {
    decoding: DecodingKey,
    algorithms: Vec<Algorithm>,
}

impl Key {
    /// An HS256 secret, or a PEM public key: RSA (RS256/384/512), P-256 (ES256) or Ed25519
    /// (EdDSA).
    fn parse(value: &str) -> Result<Self, String> {
        let trimmed = value.trim();
        if !trimmed.starts_with("-----BEGIN") {
            return Ok(Self {
                decoding: DecodingKey::from_secret(value.as_bytes()),
                algorithms: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            });
        }
        if let Ok(decoding) = DecodingKey::from_rsa_pem(trimmed.as_bytes()) {
            return Ok(Self {
                decoding,
                algorithms: vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
            });
        }
        if let Ok(decoding) = DecodingKey::from_ec_pem(trimmed.as_bytes()) {
            return Ok(Self {
                decoding,
                algorithms: vec![Algorithm::ES256],
            });
        }
        if let Ok(decoding) = DecodingKey::from_ed_pem(trimmed.as_bytes()) {
            return Ok(Self {
                decoding,
                algorithms: vec![Algorithm::EdDSA],
            });
        }
        Err(
            "a Mercure JWT key must be an HS256 secret or an RSA, EC (P-256) or Ed25519 PEM \
             public key"
                .into(),
        )
    }
}

/// The configured keys and the claims every token must carry.
#[derive(Default)]
pub struct TokenKeys {
    publisher: Option<Key>,
    subscriber: Option<Key>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl TokenKeys {
    /// Keys from the flags.
    ///
    /// # Errors
    /// A key that is neither an HS256 secret nor a usable PEM public key.
    pub fn new(config: &MercureConfig) -> Result<Self, String> {
        let both = config.mercure_jwt_key.as_deref();
        let parse = |v: Option<&str>| v.map(Key::parse).transpose();
        Ok(Self {
            publisher: parse(config.mercure_publisher_jwt_key.as_deref().or(both))?,
            subscriber: parse(config.mercure_subscriber_jwt_key.as_deref().or(both))?,
            issuer: config.mercure_issuer.clone(),
            audience: config.mercure_audience.clone(),
        })
    }

    /// Whether a key is configured for `role`.
    pub fn has(&self, role: Role) -> bool {
        self.key(role).is_some()
    }

    fn key(&self, role: Role) -> Option<&Key> {
        match role {
            Role::Publish => self.publisher.as_ref(),
            Role::Subscribe => self.subscriber.as_ref(),
        }
    }

    /// Validates `token` for `role` and reads its rights; relative URL patterns in it are
    /// resolved against `base`.
    ///
    /// # Errors
    /// Why the token is refused (reported as `invalid_token`).
    pub fn verify(&self, token: &str, role: Role, base: &Url) -> Result<TokenGrants, String> {
        let key = self.key(role).ok_or("no Mercure key configured")?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
        if !key.algorithms.contains(&header.alg) {
            return Err("token algorithm not accepted".into());
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = key.algorithms.clone();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|e| format!("invalid token: {e}"))?;
        let claims = data.claims;
        let mut grants = TokenGrants {
            publish: Vec::new(),
            subscribe: Vec::new(),
            exp: claims.exp,
            subscribe_payloads: Vec::new(),
            legacy_payload: None,
        };
        if let Some(details) = claims.authorization_details {
            let typ = header.typ.as_deref().unwrap_or("").to_ascii_lowercase();
            if typ != "at+jwt" && typ != "application/at+jwt" {
                return Err(
                    "an access token with authorization_details must have typ at+jwt".into(),
                );
            }
            read_details(&details, base, &mut grants)?;
        }
        if let Some(legacy) = claims.mercure {
            for selector in legacy.publish.unwrap_or_default() {
                grants.publish.push(Matcher::selector(&selector)?);
            }
            for selector in legacy.subscribe.unwrap_or_default() {
                grants.subscribe.push(Matcher::selector(&selector)?);
            }
            grants.legacy_payload = legacy.payload.filter(|p| !p.is_null());
        }
        Ok(grants)
    }
}

#[derive(Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    mercure: Option<LegacyClaim>,
    #[serde(default)]
    authorization_details: Option<Value>,
}

/// The older `mercure` claim.
#[derive(Deserialize)]
struct LegacyClaim {
    #[serde(default)]
    publish: Option<Vec<String>>,
    #[serde(default)]
    subscribe: Option<Vec<String>>,
    /// Data attached to each of the holder's subscriptions.
    #[serde(default)]
    payload: Option<Value>,
}

/// Reads the Mercure entries of `authorization_details` (others are left alone).
fn read_details(details: &Value, base: &Url, grants: &mut TokenGrants) -> Result<(), String> {
    let details = details
        .as_array()
        .ok_or("authorization_details must be an array")?;
    if details.len() > MAX_DETAILS {
        return Err("too many authorization details".into());
    }
    for detail in details {
        if detail.get("type").and_then(Value::as_str) != Some(DETAIL_TYPE) {
            continue;
        }
        let actions = detail
            .get("actions")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or("a Mercure authorization detail needs a non-empty actions array")?;
        let mut publish = false;
        let mut subscribe = false;
        for action in actions {
            match action.as_str() {
                Some("publish") => publish = true,
                Some("subscribe") => subscribe = true,
                Some(_) => {}
                None => return Err("actions must be strings".into()),
            }
        }
        let topics = detail
            .get("topics")
            .and_then(Value::as_array)
            .filter(|t| !t.is_empty() && t.len() <= MAX_DETAILS)
            .ok_or("a Mercure authorization detail needs a topics array of 1 to 64 matchers")?;
        let payload = match detail.get("payload") {
            None | Some(Value::Null) => None,
            Some(payload @ Value::Object(_)) => Some(payload.clone()),
            Some(_) => {
                return Err("a Mercure authorization detail's payload must be an object".into());
            }
        };
        let mut subscribe_topics = Vec::new();
        for topic in topics {
            let value = topic
                .get("match")
                .and_then(Value::as_str)
                .ok_or("each topic matcher needs a string 'match'")?;
            let match_type = match topic.get("match_type") {
                None => None,
                Some(Value::String(t)) => Some(t.as_str()),
                Some(_) => return Err("match_type must be a string".into()),
            };
            if publish {
                grants
                    .publish
                    .push(Matcher::of_type(match_type, value, base)?);
            }
            if subscribe {
                grants
                    .subscribe
                    .push(Matcher::of_type(match_type, value, base)?);
                subscribe_topics.push(Matcher::of_type(match_type, value, base)?);
            }
        }
        if subscribe {
            grants.subscribe_payloads.push((subscribe_topics, payload));
        }
    }
    Ok(())
}
