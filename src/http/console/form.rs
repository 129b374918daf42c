//! A form or query as name/value pairs, in order, names repeating (a list
//! of checkboxes sends one pair per box): what `application/x-www-form-
//! urlencoded` is, parsed with `form_urlencoded`, never by hand.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// The pairs of a form body or a query string.
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// Parses a body or a query string.
    pub fn parse(bytes: &[u8]) -> Fields {
        Fields(form_urlencoded::parse(bytes).into_owned().collect())
    }

    /// The first value of `name`, trimmed; `None` when absent or empty.
    pub fn one(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
    }

    /// Every non-empty value of `name`, trimmed, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty()).collect()
    }
}

/// The query string's fields (axum's `Query` cannot hold repeated names).
pub struct Q(pub Fields);

impl<S: Send + Sync> FromRequestParts<S> for Q {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Q, Self::Rejection> {
        Ok(Q(Fields::parse(parts.uri.query().unwrap_or("").as_bytes())))
    }
}

/// `name=value&...`, percent-encoded.
pub fn encode(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_keep_every_value_and_empty_ones_are_absent() {
        let f = Fields::parse(b"email=a%40x.io&email=+b%40x.io+&email=&pool=kse&csrf=");
        assert_eq!(f.all("email"), ["a@x.io", "b@x.io"]);
        assert_eq!(f.one("pool"), Some("kse"));
        assert_eq!(f.one("csrf"), None);
        assert_eq!(f.one("missing"), None);
    }

    #[test]
    fn encoding_round_trips_any_text() {
        let text = "Granted: a@x.io\nRefused: =b&c (GRANT_LIMIT)";
        let f = Fields::parse(encode(&[("note", text)]).as_bytes());
        assert_eq!(f.one("note"), Some(text));
    }
}
