//! Job labels: which pipeline or job holds a seat (`repository=acme/web`,
//! `job=e2e`), set by a runner and shown with its session.
//!
//! Bounded, because a stranger with a member's key could otherwise make the
//! broker hold any amount of text per session: at most `MAX_LABELS` pairs,
//! keys of at most `MAX_KEY` characters from `[A-Za-z0-9_.-]`, values of at
//! most `MAX_VALUE` characters without control characters, without the
//! bidirectional-text controls that would make a page or a CSV cell show a
//! job name other than the one given (U+202E...), and without the list's
//! separator `,` (so `job=a,k=v` cannot pass for two labels). Keys are
//! unique and kept sorted, so equal label sets compare equal.
//!
//! Cheap to clone and small when absent (one pointer): a session without
//! labels costs nothing but the `None`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Invalid;

/// Most labels one session carries.
pub const MAX_LABELS: usize = 8;
/// Longest label key, in characters.
pub const MAX_KEY: usize = 32;
/// Longest label value, in characters.
pub const MAX_VALUE: usize = 128;

/// A validated set of `KEY=VALUE` labels, sorted by key.
///
/// One thin pointer, none when empty: every live session carries one, and
/// a wide pointer's 8 more bytes are 8 MB a million sessions; labels are
/// read once per admission, so the second hop costs nothing that shows.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Labels(Option<Arc<Pairs>>);

/// The pairs behind a non-empty `Labels`.
type Pairs = Box<[(String, String)]>;

impl Labels {
    /// Validates `pairs`; a later pair with the same key replaces an earlier one.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Labels, Invalid> {
        let mut sorted: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs {
            check_key(&k)?;
            check_value(&k, &v)?;
            match sorted.binary_search_by(|(have, _)| have.as_str().cmp(&k)) {
                Ok(i) => sorted[i].1 = v,
                Err(i) => sorted.insert(i, (k, v)),
            }
            if sorted.len() > MAX_LABELS {
                return Err(Invalid::new("label", format!("at most {MAX_LABELS} labels")));
            }
        }
        Ok(Labels((!sorted.is_empty()).then(|| Arc::new(sorted.into_boxed_slice()))))
    }

    /// One `KEY=VALUE` as typed on a command line.
    pub fn parse_pair(s: &str) -> Result<(String, String), Invalid> {
        let (k, v) = s.split_once('=').ok_or_else(|| Invalid::new("label", format!("{s:?} is not KEY=VALUE")))?;
        check_key(k)?;
        check_value(k, v)?;
        Ok((k.to_string(), v.to_string()))
    }

    /// `KEY=VALUE` pairs joined by `,` (a value holds no `,`), as a query
    /// string carries them; empty: none.
    pub fn parse_list(s: &str) -> Result<Labels, Invalid> {
        let pairs = s.split(',').filter(|p| !p.is_empty()).map(Labels::parse_pair);
        Labels::new(pairs.collect::<Result<Vec<_>, Invalid>>()?)
    }

    /// No labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().flat_map(|p| p.iter()).map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

fn check_key(k: &str) -> Result<(), Invalid> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if k.is_empty() || k.chars().count() > MAX_KEY || !k.chars().all(ok_char) {
        return Err(Invalid::new(
            "label",
            format!("key {k:?}: 1 to {MAX_KEY} characters of letters, digits, '_', '.', '-'"),
        ));
    }
    Ok(())
}

fn check_value(k: &str, v: &str) -> Result<(), Invalid> {
    if v.chars().count() > MAX_VALUE || !v.chars().all(allowed_in_value) {
        return Err(Invalid::new(
            "label",
            format!(
                "value of {k:?}: at most {MAX_VALUE} characters, no control or bidirectional-text characters, no ','"
            ),
        ));
    }
    Ok(())
}

/// Whether `c` may be in a label value: no control character, no
/// bidirectional-text control or mark, not the separator `,`.
pub fn allowed_in_value(c: char) -> bool {
    let bidi = matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    !c.is_control() && !bidi && c != ','
}

/// `v` made a valid label value: refused characters dropped (the separator
/// becomes a space), at most `MAX_VALUE` characters. For values that are
/// not ours to refuse (a CI system's).
pub fn fit_value(v: &str) -> String {
    v.chars().map(|c| if c == ',' { ' ' } else { c }).filter(|c| allowed_in_value(*c)).take(MAX_VALUE).collect()
}

/// `key=value,key=value`.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Labels({self})")
    }
}

/// On the wire: a sequence of (key, value) string pairs.
impl Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_deref().map_or(&[][..], |b| &b[..]).serialize(s)
    }
}

/// Decoding validates (an invalid set fails to decode).
impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Labels, D::Error> {
        let pairs = Vec::<(String, String)>::deserialize(d)?;
        if pairs.len() > MAX_LABELS {
            return Err(serde::de::Error::custom(format!("at most {MAX_LABELS} labels")));
        }
        // One encoding per set: keys strictly ascending (so unique).
        if pairs.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(serde::de::Error::custom("label keys must be unique and in ascending order"));
        }
        Labels::new(pairs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_sorted_and_round_trip() {
        let l = Labels::new([("job".into(), "e2e".into()), ("repository".into(), "acme/web".into())]).unwrap();
        let again = Labels::new([("repository".into(), "acme/web".into()), ("job".into(), "e2e".into())]).unwrap();
        assert_eq!(l, again);
        assert_eq!(l.to_string(), "job=e2e,repository=acme/web");
        let bytes = postcard::to_allocvec(&l).unwrap();
        assert_eq!(postcard::from_bytes::<Labels>(&bytes).unwrap(), l);
        assert!(Labels::new((0..9).map(|i| (format!("k{i}"), "v".into()))).is_err());
        assert!(Labels::parse_pair("bad key=v").is_err());
        assert!(Labels::parse_pair("k=line\nbreak").is_err());
        assert!(Labels::parse_pair(&format!("k={}", "x".repeat(129))).is_err());
        assert_eq!(Labels::parse_pair("k=a=b").unwrap(), ("k".into(), "a=b".into()));
        for spoof in ["e2e\u{202E}lmth.exe", "a\u{2066}b", "x\u{200F}", "e2e,pipeline=release"] {
            assert!(Labels::parse_pair(&format!("job={spoof}")).is_err(), "{spoof:?}");
        }
        assert_eq!(fit_value("e2e\u{202E}x,y\n"), "e2ex y");
        assert!(Labels::parse_pair("job=日本語 ok").is_ok(), "other text is fine");
        assert!(Labels::default().is_empty());
        let too_many: Vec<(String, String)> = (0..9).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(postcard::from_bytes::<Labels>(&postcard::to_allocvec(&too_many).unwrap()).is_err());
        let unsorted = vec![("b".to_string(), "1".to_string()), ("a".to_string(), "2".to_string())];
        assert!(postcard::from_bytes::<Labels>(&postcard::to_allocvec(&unsorted).unwrap()).is_err(), "one encoding");
    }
}
