use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arcstr::ArcStr;

use crate::{Error, Found, StreamPath};

/// A validated LogDog stream name: one or more `/`-separated segments.
///
/// Each segment begins with an ASCII letter or digit; the rest of the name holds
/// only `A-Z a-z 0-9 . _ - : /`; no segment is empty; the name is at most
/// [`StreamName::MAX_LENGTH`] bytes. Cloning shares one allocation.
///
/// ```
/// use coordinator_types::StreamName;
///
/// let name: StreamName = "foo/bar/baz".parse()?;
/// assert_eq!(name.segments().collect::<Vec<_>>(), ["foo", "bar", "baz"]);
/// assert_eq!(name.split(), ("foo/bar", "baz"));
/// assert_eq!(name.namespaces().collect::<Vec<_>>(), ["foo/bar/", "foo/", ""]);
/// assert_eq!(name.as_namespace(), "foo/bar/baz/");
/// # Ok::<(), coordinator_types::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(ArcStr);

/// The separator between segments of a stream name.
pub(crate) const SEP: u8 = b'/';

impl StreamName {
    /// The maximum length of a stream name, in bytes.
    pub const MAX_LENGTH: usize = 4096;

    /// Checks `name` against the stream name rules, in the order of the behaviour
    /// contract (`docs/behaviour.md` §2, "Stream names"):
    /// empty, too long, segment starts, characters, trailing separator.
    pub fn validate(name: &str) -> Result<(), Error> {
        Self::validate_bytes(name.as_bytes())
    }

    /// Like [`validate`](Self::validate), for bytes that may not be UTF-8
    /// (anything that is not ASCII is illegal).
    pub fn validate_bytes(name: &[u8]) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::EmptyName);
        }
        if name.len() > Self::MAX_LENGTH {
            return Err(Error::NameTooLong {
                len: name.len(),
                max: Self::MAX_LENGTH,
            });
        }
        let mut segment_start = true;
        for (index, &b) in name.iter().enumerate() {
            if segment_start {
                if !b.is_ascii_alphanumeric() {
                    return Err(Error::InvalidSegmentStart {
                        offset: index,
                        found: Found::at(name, index),
                    });
                }
                segment_start = false;
                continue;
            }
            match b {
                SEP => segment_start = true,
                b if is_name_char(b) => {}
                _ => {
                    return Err(Error::IllegalCharacter {
                        index,
                        found: Found::at(name, index),
                    });
                }
            }
        }
        if segment_start {
            return Err(Error::TrailingSeparator);
        }
        Ok(())
    }

    /// Wraps text that is already known to be valid.
    pub(crate) fn from_valid(name: ArcStr) -> Self {
        StreamName(name)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments of the name, in order.
    pub fn segments(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }

    /// How many segments the name has.
    pub fn segment_count(&self) -> usize {
        self.0.bytes().filter(|&b| b == SEP).count() + 1
    }

    /// Splits at the last `/`: the part before it (empty for a one-segment name)
    /// and the last segment.
    pub fn split(&self) -> (&str, &str) {
        match self.0.rfind('/') {
            Some(i) => (&self.0[..i], &self.0[i + 1..]),
            None => ("", &self.0),
        }
    }

    /// Joins this name, as a prefix, with `name` into the path `self/+/name`.
    pub fn join(&self, name: &StreamName) -> StreamPath {
        StreamPath::new(self, name)
    }

    /// The namespaces that contain this name, innermost first: each parent
    /// followed by `/`, ending with the empty namespace.
    pub fn namespaces(&self) -> Namespaces<'_> {
        Namespaces {
            name: &self.0,
            done: false,
        }
    }

    /// The name as a namespace: the name followed by `/`.
    pub fn as_namespace(&self) -> String {
        let mut s = String::with_capacity(self.0.len() + 1);
        s.push_str(&self.0);
        s.push('/');
        s
    }
}

/// Characters allowed after a segment's first character (the separator aside).
pub(crate) fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':')
}

/// Iterator over the namespaces of a [`StreamName`]; see
/// [`StreamName::namespaces`].
#[derive(Debug, Clone)]
pub struct Namespaces<'a> {
    name: &'a str,
    done: bool,
}

impl<'a> Iterator for Namespaces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        // `name` is the remaining parent (without its trailing '/').
        match self.name.rfind('/') {
            Some(i) => {
                let ns = &self.name[..=i];
                self.name = &self.name[..i];
                Some(ns)
            }
            None => {
                self.done = true;
                Some("")
            }
        }
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StreamName").field(&&*self.0).finish()
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StreamName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for StreamName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for StreamName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::validate(s)?;
        Ok(StreamName(ArcStr::from(s)))
    }
}

impl TryFrom<&str> for StreamName {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self, Error> {
        s.parse()
    }
}

impl TryFrom<String> for StreamName {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        Self::validate(&s)?;
        Ok(StreamName(ArcStr::from(s)))
    }
}

impl From<StreamName> for Arc<str> {
    fn from(name: StreamName) -> Arc<str> {
        Arc::from(name.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> Error {
        StreamName::validate(s).unwrap_err()
    }

    #[test]
    fn valid_vectors() {
        for s in [
            "foo/bar",
            "abcdefghijklmnopqrstuvwxyz/ABCDEFGHIJKLMNOPQRSTUVWXYZ/0123456789/a:_-.",
            &"A".repeat(4096),
        ] {
            assert_eq!(StreamName::validate(s), Ok(()), "{s:?}");
            assert_eq!(s.parse::<StreamName>().unwrap().as_str(), s);
        }
    }

    #[test]
    fn invalid_vectors() {
        assert_eq!(
            err(&"A".repeat(4097)),
            Error::NameTooLong {
                len: 4097,
                max: 4096
            }
        );
        assert_eq!(err(""), Error::EmptyName);
        assert_eq!(
            err("/foo/bar"),
            Error::InvalidSegmentStart {
                offset: 0,
                found: Found::Char('/')
            }
        );
        assert_eq!(err("foo/bar/"), Error::TrailingSeparator);
        assert_eq!(
            err("foo//bar"),
            Error::InvalidSegmentStart {
                offset: 4,
                found: Found::Char('/')
            }
        );
        assert_eq!(
            err("foo^bar"),
            Error::IllegalCharacter {
                index: 3,
                found: Found::Char('^')
            }
        );
        assert_eq!(
            err("_foo/bar"),
            Error::InvalidSegmentStart {
                offset: 0,
                found: Found::Char('_')
            }
        );
        assert_eq!(
            err("foo/_bar/baz"),
            Error::InvalidSegmentStart {
                offset: 4,
                found: Found::Char('_')
            }
        );
    }

    #[test]
    fn length_is_checked_before_characters() {
        let mut s = "^".repeat(4097);
        s.insert(0, 'a');
        assert!(matches!(err(&s), Error::NameTooLong { len: 4098, .. }));
    }

    #[test]
    fn non_ascii_and_invalid_utf8_are_illegal() {
        assert_eq!(
            err("fooé"),
            Error::IllegalCharacter {
                index: 3,
                found: Found::Char('é')
            }
        );
        assert_eq!(
            StreamName::validate_bytes(b"foo\xffbar"),
            Err(Error::IllegalCharacter {
                index: 3,
                found: Found::Byte(0xff)
            })
        );
        assert_eq!(
            StreamName::validate_bytes(b"\xc3"),
            Err(Error::InvalidSegmentStart {
                offset: 0,
                found: Found::Byte(0xc3)
            })
        );
    }

    #[test]
    fn errors_name_rule_and_place() {
        assert_eq!(
            err("foo^bar").to_string(),
            "stream name has illegal character '^' at byte 3"
        );
        assert_eq!(
            err("foo//bar").to_string(),
            "stream name segment at byte 4 must begin with an ASCII letter or digit, found '/'"
        );
        assert_eq!(
            err(&"A".repeat(4097)).to_string(),
            "stream name is 4097 bytes long; the maximum is 4096"
        );
    }

    #[test]
    fn segments_and_split() {
        let cases: [(&str, &[&str], (&str, &str)); 3] = [
            ("foo", &["foo"], ("", "foo")),
            ("foo/bar", &["foo", "bar"], ("foo", "bar")),
            ("foo/bar/baz", &["foo", "bar", "baz"], ("foo/bar", "baz")),
        ];
        for (name, segments, split) in cases {
            let n: StreamName = name.parse().unwrap();
            assert_eq!(n.segments().collect::<Vec<_>>(), segments);
            assert_eq!(n.segment_count(), segments.len());
            assert_eq!(n.split(), split);
        }
    }

    #[test]
    fn namespaces() {
        let cases: [(&str, &[&str], &str); 3] = [
            ("foo", &[""], "foo/"),
            ("foo/bar", &["foo/", ""], "foo/bar/"),
            ("foo/bar/baz", &["foo/bar/", "foo/", ""], "foo/bar/baz/"),
        ];
        for (name, namespaces, ns) in cases {
            let n: StreamName = name.parse().unwrap();
            assert_eq!(n.namespaces().collect::<Vec<_>>(), namespaces);
            assert_eq!(n.as_namespace(), ns);
        }
    }

    #[test]
    fn join() {
        let foo: StreamName = "foo".parse().unwrap();
        let bar: StreamName = "bar".parse().unwrap();
        assert_eq!(foo.join(&bar).as_str(), "foo/+/bar");
    }
}
