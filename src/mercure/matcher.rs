//! Topic matchers: which topics a subscription selects and a token grants.
//!
//! Three kinds, as the specification and its older form define them:
//! - `exact` (`match=`, `match_exact=`, `match_type: exact`): byte-for-byte equality;
//! - `urlpattern` (`match_urlpattern=`, `match_type: urlpattern`): a WHATWG URL Pattern,
//!   relative ones resolved against the hub's URL (the `urlpattern` crate, on the
//!   linear-time `regex` engine, so a crafted pattern cannot backtrack for ever);
//! - the older selectors (`topic=`, and the `mercure` claim): `*`, an exact topic, or an
//!   RFC 6570 URI template.
//!
//! `*` matches every topic whatever the kind.

use regex::Regex;
use url::Url;
use urlpattern::{UrlPattern, UrlPatternInit, UrlPatternMatchInput};

/// Longest matcher accepted, in bytes.
pub const MAX_MATCHER_LEN: usize = 2048;

/// One compiled topic matcher.
#[derive(Debug)]
pub enum Matcher {
    /// `*`: every topic.
    Any,
    /// The topic itself.
    Exact(String),
    /// A URL Pattern, compiled against the hub's URL.
    UrlPattern(Box<UrlPattern>),
    /// An older selector: the topic itself, or a URI template that matches it.
    Template(String, Regex),
}

impl Matcher {
    /// An `exact` matcher.
    ///
    /// # Errors
    /// When the value is too long or holds forbidden characters.
    pub fn exact(value: &str) -> Result<Self, String> {
        check_value(value)?;
        Ok(if value == "*" {
            Self::Any
        } else {
            Self::Exact(value.to_owned())
        })
    }

    /// A `urlpattern` matcher; relative patterns are resolved against `base` (the hub's URL).
    ///
    /// # Errors
    /// When the value is not a well-formed URL Pattern.
    pub fn url_pattern(value: &str, base: &Url) -> Result<Self, String> {
        check_value(value)?;
        if value == "*" {
            return Ok(Self::Any);
        }
        let init = UrlPatternInit::parse_constructor_string::<Regex>(value, Some(base.clone()))
            .map_err(|e| format!("invalid URL pattern '{value}': {e}"))?;
        let pattern = UrlPattern::parse(init, Default::default())
            .map_err(|e| format!("invalid URL pattern '{value}': {e}"))?;
        Ok(Self::UrlPattern(Box::new(pattern)))
    }

    /// An older selector: `*`, an exact topic, or an RFC 6570 URI template.
    ///
    /// # Errors
    /// When the value is too long, holds forbidden characters or is a broken template.
    pub fn selector(value: &str) -> Result<Self, String> {
        check_value(value)?;
        if value == "*" {
            return Ok(Self::Any);
        }
        if !value.contains(['{', '}']) {
            return Ok(Self::Exact(value.to_owned()));
        }
        let regex = template_regex(value)?;
        Ok(Self::Template(value.to_owned(), regex))
    }

    /// A matcher of an authorization detail's `topics`: `match_type` `exact` (the default)
    /// or `urlpattern`.
    ///
    /// # Errors
    /// An unknown `match_type` or an invalid value.
    pub fn of_type(match_type: Option<&str>, value: &str, base: &Url) -> Result<Self, String> {
        match match_type {
            None | Some("exact") => Self::exact(value),
            Some("urlpattern") => Self::url_pattern(value, base),
            Some(other) => Err(format!("unsupported match_type '{other}'")),
        }
    }

    /// Whether `topic` is selected; relative topics are resolved against `base`.
    pub fn matches(&self, topic: &str, base: &Url) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(value) => value == topic,
            Self::Template(raw, regex) => raw == topic || regex.is_match(topic),
            Self::UrlPattern(pattern) => base.join(topic).is_ok_and(|url| {
                pattern
                    .test(UrlPatternMatchInput::Url(url))
                    .unwrap_or(false)
            }),
        }
    }
}

/// Whether any of `matchers` selects any of `topics`.
pub fn any_matches(matchers: &[Matcher], topics: &[String], base: &Url) -> bool {
    topics
        .iter()
        .any(|topic| matchers.iter().any(|m| m.matches(topic, base)))
}

/// The characters no topic, matcher, id or type may hold: C0 and C1 controls, DEL, and the
/// Unicode format characters the specification names (general category `Cf`; the common ones).
pub fn has_forbidden_chars(value: &str) -> bool {
    value.chars().any(|c| {
        c.is_control()
            || matches!(c,
                '\u{00AD}' | '\u{0600}'..='\u{0605}' | '\u{061C}' | '\u{06DD}' | '\u{070F}'
                | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}')
    })
}

fn check_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_MATCHER_LEN {
        return Err(format!("matcher longer than {MAX_MATCHER_LEN} bytes"));
    }
    if has_forbidden_chars(value) {
        return Err("matcher must not contain control or format characters".into());
    }
    Ok(())
}

/// A regular expression that matches the expansions of an RFC 6570 template (levels 1–4),
/// anchored at both ends. Literal text matches itself; each expression matches what its
/// operator may expand to.
fn template_regex(template: &str) -> Result<Regex, String> {
    const UNRESERVED: &str = r"(?:[A-Za-z0-9\-._~,]|%[0-9A-Fa-f]{2})*";
    const RESERVED: &str = r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*";
    let mut out = String::from("^");
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let (literal, after) = rest.split_at(open);
        if literal.contains('}') {
            return Err(format!("invalid URI template '{template}': stray '}}'"));
        }
        out.push_str(&regex::escape(literal));
        let close = after
            .find('}')
            .ok_or_else(|| format!("invalid URI template '{template}': unclosed '{{'"))?;
        let expression = &after[1..close];
        let (operator, vars) = match expression.chars().next() {
            Some(c @ ('+' | '#' | '.' | '/' | ';' | '?' | '&')) => (Some(c), &expression[1..]),
            _ => (None, expression),
        };
        let valid_var = |v: &str| {
            let name = v.trim_end_matches('*');
            let name = name.split(':').next().unwrap_or(name);
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '%')
        };
        if vars.is_empty() || !vars.split(',').all(valid_var) {
            return Err(format!(
                "invalid URI template '{template}': bad expression '{{{expression}}}'"
            ));
        }
        out.push_str(&match operator {
            None => UNRESERVED.to_owned(),
            Some('+') => RESERVED.to_owned(),
            Some('#') => format!("(?:#{RESERVED})?"),
            Some('.') => format!(r"(?:\.{UNRESERVED})*"),
            Some('/') => format!("(?:/{UNRESERVED})*"),
            Some(';') => format!("(?:;{UNRESERVED}(?:={UNRESERVED})?)*"),
            Some('?') => format!(
                r"(?:\?{UNRESERVED}(?:={UNRESERVED})?(?:&{UNRESERVED}(?:={UNRESERVED})?)*)?"
            ),
            Some(_) => format!("(?:&{UNRESERVED}(?:={UNRESERVED})?)*"),
        });
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("invalid URI template '{template}': stray '}}'"));
    }
    out.push_str(&regex::escape(rest));
    out.push('$');
    Regex::new(&out).map_err(|e| format!("invalid URI template '{template}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://hub.example/.well-known/mercure").expect("url")
    }

    #[test]
    fn exact_and_wildcard() {
        let m = Matcher::exact("https://example.com/foo").expect("valid");
        assert!(m.matches("https://example.com/foo", &base()));
        assert!(!m.matches("https://example.com/Foo", &base()));
        assert!(
            Matcher::exact("*")
                .expect("valid")
                .matches("anything", &base())
        );
        assert!(Matcher::exact("a\u{7}b").is_err());
        assert!(Matcher::exact("a\u{200B}b").is_err());
    }

    #[test]
    fn url_patterns() {
        let m = Matcher::url_pattern("https://example.com/books/:id", &base()).expect("valid");
        assert!(m.matches("https://example.com/books/1", &base()));
        assert!(!m.matches("https://example.com/books/1/reviews", &base()));
        assert!(!m.matches("https://example.com/authors/1", &base()));
        assert!(!m.matches("not a url at all \u{0}", &base()));
        let relative = Matcher::url_pattern("/books/:id", &base()).expect("valid");
        assert!(relative.matches("/books/7", &base()));
        assert!(relative.matches("https://hub.example/books/7", &base()));
        assert!(Matcher::url_pattern("https://example.com/(", &base()).is_err());
    }

    #[test]
    fn uri_templates() {
        let m = Matcher::selector("https://example.com/books/{id}").expect("valid");
        assert!(m.matches("https://example.com/books/1", &base()));
        assert!(m.matches("https://example.com/books/{id}", &base()));
        assert!(!m.matches("https://example.com/books/1/x", &base()));
        let reserved = Matcher::selector("https://example.com/{+path}").expect("valid");
        assert!(reserved.matches("https://example.com/a/b/c", &base()));
        let query = Matcher::selector("https://example.com/s{?q,page}").expect("valid");
        assert!(query.matches("https://example.com/s?q=x&page=2", &base()));
        assert!(Matcher::selector("https://example.com/{id").is_err());
        assert!(Matcher::selector("https://example.com/{}").is_err());
        assert!(Matcher::selector("*").expect("valid").matches("x", &base()));
    }
}
