//! Stream paths (`PREFIX/+/NAME`) and the functions that split and validate raw
//! path text.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arcstr::ArcStr;

use crate::{Error, PathPart, StreamName};

/// The segment that separates a path's prefix from its name.
pub const SEPARATOR_SEGMENT: &str = "+";

/// Splits raw path text at its separator: the first segment that is exactly `+`.
///
/// Returns `(prefix, name)`; a part is empty where the text has nothing there.
/// Text with no separator is all prefix. No validation is done.
///
/// ```
/// use coordinator_types::path;
///
/// assert_eq!(path::split("foo/bar/+/baz/qux"), ("foo/bar", "baz/qux"));
/// assert_eq!(path::split("a/+/b/+/c"), ("a", "b/+/c"));
/// assert_eq!(path::split("foo/+"), ("foo", ""));
/// assert_eq!(path::split("+foo"), ("+foo", ""));
/// ```
pub fn split(path: &str) -> (&str, &str) {
    let mut start = 0;
    loop {
        let end = path[start..].find('/').map_or(path.len(), |i| start + i);
        if &path[start..end] == SEPARATOR_SEGMENT {
            let prefix = &path[..start.saturating_sub(1)];
            let name = path.get(end + 1..).unwrap_or("");
            return (prefix, name);
        }
        if end >= path.len() {
            return (path, "");
        }
        start = end + 1;
    }
}

/// Splits off the last `/`-separated component of raw path text.
///
/// Returns `(rest, last)`; `rest` is empty when there is one component. Applied
/// repeatedly, `foo/bar/+/baz` yields `baz`, `+`, `bar`, `foo`.
pub fn split_last(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Fully validates raw path text: it must contain the separator, and both the
/// prefix and the name must be valid [`StreamName`]s.
pub fn validate(path: &str) -> Result<(), Error> {
    let (prefix, name) = split(path);
    if prefix.len() == path.len() {
        return Err(Error::MissingPathSeparator);
    }
    check_part(prefix, PathPart::Prefix)?;
    check_part(name, PathPart::Name)
}

/// Partially validates raw path text: each part is checked only where it is
/// non-empty, so `PREFIX/+`, `PREFIX/+/`, a bare prefix and the empty text pass.
pub fn validate_partial(path: &str) -> Result<(), Error> {
    let (prefix, name) = split(path);
    if !prefix.is_empty() {
        check_part(prefix, PathPart::Prefix)?;
    }
    if !name.is_empty() {
        check_part(name, PathPart::Name)?;
    }
    Ok(())
}

fn check_part(part: &str, which: PathPart) -> Result<(), Error> {
    StreamName::validate(part).map_err(|e| Error::InvalidPathPart {
        part: which,
        source: Box::new(e),
    })
}

/// A validated, full LogDog stream path: `PREFIX/+/NAME`, where both parts are
/// valid [`StreamName`]s. Cloning shares one allocation.
///
/// ```
/// use coordinator_types::StreamPath;
///
/// let path: StreamPath = "foo/bar/+/baz/qux".parse()?;
/// assert_eq!(path.prefix(), "foo/bar");
/// assert_eq!(path.name(), "baz/qux");
/// assert!("foo/+".parse::<StreamPath>().is_err());
/// # Ok::<(), coordinator_types::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamPath(ArcStr);

impl StreamPath {
    /// Builds `prefix/+/name`.
    pub fn new(prefix: &StreamName, name: &StreamName) -> Self {
        let (p, n) = (prefix.as_str(), name.as_str());
        let mut s = String::with_capacity(p.len() + n.len() + 3);
        s.push_str(p);
        s.push_str("/+/");
        s.push_str(n);
        StreamPath(ArcStr::from(s))
    }

    /// Fully validates raw path text; see [`validate`].
    pub fn validate(path: &str) -> Result<(), Error> {
        validate(path)
    }

    /// Partially validates raw path text; see [`validate_partial`].
    pub fn validate_partial(path: &str) -> Result<(), Error> {
        validate_partial(path)
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix: the text before `/+/`.
    pub fn prefix(&self) -> &str {
        self.split().0
    }

    /// The name: the text after `/+/`.
    pub fn name(&self) -> &str {
        self.split().1
    }

    /// The prefix and the name.
    pub fn split(&self) -> (&str, &str) {
        // A valid prefix holds no '+', so the first "/+/" is the separator.
        match self.0.find("/+/") {
            Some(i) => (&self.0[..i], &self.0[i + 3..]),
            None => split(&self.0),
        }
    }

    /// The prefix and the name as validated [`StreamName`]s (two allocations).
    pub fn to_parts(&self) -> (StreamName, StreamName) {
        let (p, n) = self.split();
        (
            StreamName::from_valid(ArcStr::from(p)),
            StreamName::from_valid(ArcStr::from(n)),
        )
    }

    /// Splits off the last component; see [`split_last`].
    pub fn split_last(&self) -> (&str, &str) {
        split_last(&self.0)
    }
}

impl fmt::Debug for StreamPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StreamPath").field(&&*self.0).finish()
    }
}

impl fmt::Display for StreamPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StreamPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for StreamPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for StreamPath {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        validate(s)?;
        Ok(StreamPath(ArcStr::from(s)))
    }
}

impl TryFrom<&str> for StreamPath {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self, Error> {
        s.parse()
    }
}

impl TryFrom<String> for StreamPath {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        validate(&s)?;
        Ok(StreamPath(ArcStr::from(s)))
    }
}

impl From<StreamPath> for Arc<str> {
    fn from(path: StreamPath) -> Arc<str> {
        Arc::from(path.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors() {
        // (path, prefix, name, full valid, partial valid)
        let cases = [
            ("a/+/b", "a", "b", true, true),
            ("foo/bar/+/baz/qux", "foo/bar", "baz/qux", true, true),
            ("", "", "", false, true),
            ("foo/+", "foo", "", false, true),
            ("a/+/", "a", "", false, true),
            ("/+/", "", "", false, true),
            ("+/foo", "", "foo", false, true),
            ("+foo", "+foo", "", false, false),
            ("a/+foo/+/b", "a/+foo", "b", false, false),
            ("fo+o/bar+/+/baz", "fo+o/bar+", "baz", false, false),
            ("a/+/b/+/c", "a", "b/+/c", false, false),
        ];
        for (path, prefix, name, full, partial) in cases {
            assert_eq!(split(path), (prefix, name), "split {path:?}");
            assert_eq!(validate(path).is_ok(), full, "full {path:?}");
            assert_eq!(validate_partial(path).is_ok(), partial, "partial {path:?}");
            assert_eq!(path.parse::<StreamPath>().is_ok(), full, "parse {path:?}");
            if full {
                let p: StreamPath = path.parse().unwrap();
                assert_eq!(p.split(), (prefix, name));
                let (pn, nn) = p.to_parts();
                assert_eq!(pn.join(&nn), p);
            }
        }
    }

    #[test]
    fn errors_say_which_part() {
        assert_eq!(validate("+foo"), Err(Error::MissingPathSeparator));
        assert_eq!(validate("foo/bar"), Err(Error::MissingPathSeparator));
        assert_eq!(
            validate("foo/+"),
            Err(Error::InvalidPathPart {
                part: PathPart::Name,
                source: Box::new(Error::EmptyName)
            })
        );
        let e = validate("a/+/b/+/c").unwrap_err();
        assert_eq!(
            e.to_string(),
            "stream path name is invalid: stream name segment at byte 2 must begin with an ASCII letter or digit, found '+'"
        );
        let e = validate("fo+o/+/baz").unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidPathPart {
                    part: PathPart::Prefix,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn split_last_repeatedly() {
        let mut rest = "foo/bar/+/baz";
        let mut seen = Vec::new();
        while !rest.is_empty() {
            let (r, last) = split_last(rest);
            seen.push(last);
            rest = r;
        }
        assert_eq!(seen, ["baz", "+", "bar", "foo"]);
        let p: StreamPath = "foo/bar/+/baz".parse().unwrap();
        assert_eq!(p.split_last(), ("foo/bar/+", "baz"));
    }
}
