use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::{Error, Found, StreamPath};

/// A stream's Coordinator ID: non-empty printable ASCII (no spaces).
///
/// LogDog's Coordinator uses the lowercase hex SHA-256 of the stream path
/// ([`StreamId::for_path`]); other Coordinators may use other schemes, so only
/// non-emptiness and printability are enforced here.
///
/// ```
/// use coordinator_types::{StreamId, StreamPath};
///
/// let path: StreamPath = "foo/+/bar".parse()?;
/// let id = StreamId::for_path(&path);
/// assert_eq!(id.as_str(), "8be6b498586133db3940ea62baf3792460bcfb6595873e4421843d08cafa3709");
/// assert!(id.is_sha256_hex());
/// # Ok::<(), coordinator_types::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(Arc<str>);

impl StreamId {
    /// Checks `id`: non-empty, every byte printable ASCII other than space.
    pub fn validate(id: &str) -> Result<(), Error> {
        if id.is_empty() {
            return Err(Error::EmptyStreamId);
        }
        let bytes = id.as_bytes();
        // The common case, a valid ID, without an early exit (so the loop
        // compiles to vector compares); the error path finds the offender.
        if bytes.iter().fold(true, |ok, &b| ok & b.is_ascii_graphic()) {
            return Ok(());
        }
        match bytes.iter().position(|b| !b.is_ascii_graphic()) {
            Some(index) => Err(Error::StreamIdCharacter {
                index,
                found: Found::at(bytes, index),
            }),
            None => Ok(()),
        }
    }

    /// The LogDog Coordinator's ID for `path`: lowercase hex SHA-256 of the path.
    pub fn for_path(path: &StreamPath) -> StreamId {
        let digest = Sha256::digest(path.as_str().as_bytes());
        StreamId(Arc::from(hex::encode(digest)))
    }

    /// True if the ID is 64 hex characters (either case), as LogDog's are.
    pub fn is_sha256_hex(&self) -> bool {
        self.0.len() == 64 && self.0.bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StreamId").field(&&*self.0).finish()
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for StreamId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::validate(s)?;
        Ok(StreamId(Arc::from(s)))
    }
}

impl TryFrom<&str> for StreamId {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self, Error> {
        s.parse()
    }
}

impl TryFrom<String> for StreamId {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        Self::validate(&s)?;
        Ok(StreamId(Arc::from(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_vectors() {
        for (path, id) in [
            (
                "testing/+/foo/bar",
                "f53fe51cc97b9fbf00e69a388bfd079168d1e15c3fe708e44f049dc9688f52ad",
            ),
            (
                "foo/+/bar",
                "8be6b498586133db3940ea62baf3792460bcfb6595873e4421843d08cafa3709",
            ),
        ] {
            let p: StreamPath = path.parse().unwrap();
            assert_eq!(StreamId::for_path(&p).as_str(), id);
        }
    }

    #[test]
    fn validation() {
        assert_eq!(StreamId::validate(""), Err(Error::EmptyStreamId));
        assert_eq!(
            StreamId::validate("ab cd"),
            Err(Error::StreamIdCharacter {
                index: 2,
                found: Found::Char(' ')
            })
        );
        assert!("abc123".parse::<StreamId>().is_ok());
        assert!(!"abc123".parse::<StreamId>().unwrap().is_sha256_hex());
    }
}
