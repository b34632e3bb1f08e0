use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::str::FromStr;

use arcstr::ArcStr;
use sha2::{Digest, Sha256};

use crate::{Error, Found, StreamPath};

/// The most hex digits a [`StreamId`] keeps packed (LogDog's IDs have 64).
const PACKED_DIGITS: usize = 64;

/// A stream's Coordinator ID: non-empty printable ASCII (no spaces).
///
/// LogDog's Coordinator uses the lowercase hex SHA-256 of the stream path
/// ([`StreamId::for_path`]); other Coordinators may use other schemes, so only
/// non-emptiness and printability are enforced here.
///
/// An ID of lowercase hex digits (an even number, at most 64, as LogDog's are)
/// is kept as the bytes it spells, inline: no allocation, and 32 bytes where
/// its text would take 64 plus a heap block. Any other ID shares one
/// allocation between clones. Either way [`as_str`](StreamId::as_str) gives
/// the text back exactly, and two IDs are equal exactly when their texts are.
///
/// ```
/// use coordinator_types::{StreamId, StreamPath};
///
/// let path: StreamPath = "foo/+/bar".parse()?;
/// let id = StreamId::for_path(&path);
/// assert_eq!(id.as_str(), "8be6b498586133db3940ea62baf3792460bcfb6595873e4421843d08cafa3709");
/// assert!(id.is_sha256_hex());
/// assert_eq!(id, id.as_str().parse()?);
/// # Ok::<(), coordinator_types::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StreamId(Repr);

/// How a [`StreamId`] holds its text. An ID has exactly one representation
/// (lowercase hex of an even length up to [`PACKED_DIGITS`] is always packed),
/// so the derived equality and hash agree with the text's.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// `len` bytes of `bytes`, which the ID spells as lowercase hex.
    Packed {
        len: u8,
        bytes: [u8; PACKED_DIGITS / 2],
    },
    /// Any other ID's text.
    Text(ArcStr),
}

impl Repr {
    /// The representation of `id` (already validated).
    fn of(id: &str) -> Repr {
        Repr::pack(id).unwrap_or_else(|| Repr::Text(ArcStr::from(id)))
    }

    /// `id` packed, if it is lowercase hex of an even length up to
    /// [`PACKED_DIGITS`].
    fn pack(id: &str) -> Option<Repr> {
        let digits = id.as_bytes();
        if !digits.len().is_multiple_of(2) || digits.len() > PACKED_DIGITS {
            return None;
        }
        // Lowercase only: `hex` also decodes uppercase, which must stay text
        // so that each ID has one representation.
        if !digits
            .iter()
            .all(|d| matches!(d, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        let len = digits.len() / 2;
        let mut bytes = [0; PACKED_DIGITS / 2];
        hex::decode_to_slice(digits, &mut bytes[..len]).ok()?;
        Some(Repr::Packed {
            len: u8::try_from(len).ok()?,
            bytes,
        })
    }
}

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
        StreamId(Repr::Packed {
            len: 32,
            bytes: Sha256::digest(path.as_str().as_bytes()).into(),
        })
    }

    /// True if the ID is 64 hex characters (either case), as LogDog's are.
    pub fn is_sha256_hex(&self) -> bool {
        match &self.0 {
            Repr::Packed { len, .. } => *len == 32,
            Repr::Text(text) => text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()),
        }
    }

    /// The ID as text: a borrow of it, or for a packed ID its digits written
    /// out on the stack (no allocation). [`IdText`] dereferences to `str`.
    pub fn as_str(&self) -> IdText<'_> {
        match &self.0 {
            Repr::Packed { len, bytes } => {
                let n = usize::from(*len);
                let mut digits = [0; PACKED_DIGITS];
                // The lengths match (`len <= PACKED_DIGITS / 2`), so this
                // cannot fail; `hex` writes lowercase digits.
                let _ = hex::encode_to_slice(&bytes[..n], &mut digits[..2 * n]);
                IdText(TextRepr::Digits {
                    len: *len * 2,
                    digits,
                })
            }
            Repr::Text(text) => IdText(TextRepr::Borrowed(text)),
        }
    }
}

/// A [`StreamId`]'s text, from [`StreamId::as_str`]: use it as a `str`.
///
/// ```
/// use coordinator_types::StreamId;
///
/// let id: StreamId = "00ff".parse()?;
/// let text = id.as_str();
/// assert_eq!(text, "00ff");
/// assert_eq!(text.len(), 4);
/// let owned: String = id.as_str().to_owned();
/// assert_eq!(owned, "00ff");
/// # Ok::<(), coordinator_types::Error>(())
/// ```
pub struct IdText<'a>(TextRepr<'a>);

enum TextRepr<'a> {
    /// The first `len` bytes of `digits` (lowercase hex digits).
    Digits {
        len: u8,
        digits: [u8; PACKED_DIGITS],
    },
    Borrowed(&'a str),
}

impl Deref for IdText<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match &self.0 {
            // Hex digits are ASCII, so the conversion cannot fail.
            TextRepr::Digits { len, digits } => {
                std::str::from_utf8(&digits[..usize::from(*len)]).unwrap_or_default()
            }
            TextRepr::Borrowed(text) => text,
        }
    }
}

impl AsRef<str> for IdText<'_> {
    fn as_ref(&self) -> &str {
        self
    }
}

impl PartialEq for IdText<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for IdText<'_> {}

impl PartialEq<str> for IdText<'_> {
    fn eq(&self, other: &str) -> bool {
        &**self == other
    }
}

impl PartialEq<&str> for IdText<'_> {
    fn eq(&self, other: &&str) -> bool {
        &**self == *other
    }
}

impl PartialEq<IdText<'_>> for str {
    fn eq(&self, other: &IdText<'_>) -> bool {
        self == &**other
    }
}

impl PartialEq<IdText<'_>> for &str {
    fn eq(&self, other: &IdText<'_>) -> bool {
        *self == &**other
    }
}

impl PartialEq<String> for IdText<'_> {
    fn eq(&self, other: &String) -> bool {
        &**self == other.as_str()
    }
}

impl PartialEq<IdText<'_>> for String {
    fn eq(&self, other: &IdText<'_>) -> bool {
        self.as_str() == &**other
    }
}

impl From<IdText<'_>> for String {
    fn from(text: IdText<'_>) -> String {
        String::from(&*text)
    }
}

impl fmt::Debug for IdText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl fmt::Display for IdText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl Hash for IdText<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

/// IDs order as their texts do.
impl Ord for StreamId {
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            // Hex digits order as the bytes they spell, and a prefix first.
            (Repr::Packed { len: a, bytes: x }, Repr::Packed { len: b, bytes: y }) => {
                x[..usize::from(*a)].cmp(&y[..usize::from(*b)])
            }
            _ => (*self.as_str()).cmp(&*other.as_str()),
        }
    }
}

impl PartialOrd for StreamId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StreamId").field(&&*self.as_str()).finish()
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl FromStr for StreamId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::validate(s)?;
        Ok(StreamId(Repr::of(s)))
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
        s.parse()
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

    /// Texts that are packed and texts that are not, each kept exactly.
    const SAMPLES: &[&str] = &[
        "00",
        "ff",
        "0a1b",
        "8be6b498586133db3940ea62baf3792460bcfb6595873e4421843d08cafa3709",
        "8BE6B498586133DB3940EA62BAF3792460BCFB6595873E4421843D08CAFA3709",
        "8be6b498586133db3940ea62baf3792460bcfb6595873e4421843d08cafa37090a",
        "abc",
        "0",
        "a1b2c3d4e5f60718293a4b5c6d7e8f90",
        "stream-7",
        "0A",
        "g0",
    ];

    #[test]
    fn text_round_trips_whether_packed_or_not() {
        for text in SAMPLES {
            let id: StreamId = text.parse().unwrap();
            assert_eq!(id.as_str(), *text);
            assert_eq!(id.to_string(), *text);
            assert_eq!(format!("{id:?}"), format!("StreamId({text:?})"));
            assert_eq!(String::from(id.as_str()), *text);
        }
        let packed = |t: &str| matches!(t.parse::<StreamId>().unwrap().0, Repr::Packed { .. });
        assert!(packed("00") && packed("0a1b") && packed(SAMPLES[3]) && packed(SAMPLES[8]));
        // Uppercase, odd lengths, more than 64 digits and other text are kept as text.
        for text in [SAMPLES[4], SAMPLES[5], "abc", "0", "stream-7", "0A", "g0"] {
            assert!(!packed(text), "{text} is not packed");
        }
    }

    #[test]
    fn equality_hash_and_order_follow_the_text() {
        use std::collections::hash_map::DefaultHasher;
        let hash = |id: &StreamId| {
            let mut h = DefaultHasher::new();
            id.hash(&mut h);
            h.finish()
        };
        for a in SAMPLES {
            for b in SAMPLES {
                let (x, y): (StreamId, StreamId) = (a.parse().unwrap(), b.parse().unwrap());
                assert_eq!(x == y, a == b, "{a} == {b}");
                assert_eq!(x.cmp(&y), a.cmp(b), "{a} cmp {b}");
                if a == b {
                    assert_eq!(hash(&x), hash(&y));
                }
            }
        }
    }

    #[test]
    fn sha256_hex_in_either_case() {
        assert!(SAMPLES[3].parse::<StreamId>().unwrap().is_sha256_hex());
        assert!(SAMPLES[4].parse::<StreamId>().unwrap().is_sha256_hex());
        assert!(!SAMPLES[5].parse::<StreamId>().unwrap().is_sha256_hex());
        assert!(!SAMPLES[8].parse::<StreamId>().unwrap().is_sha256_hex());
    }

    proptest::proptest! {
        #[test]
        fn any_valid_id_keeps_its_text_and_order(a in "[0-9a-f!-~]{1,70}", b in "[0-9a-f]{1,66}") {
            let (x, y): (StreamId, StreamId) = (a.parse().unwrap(), b.parse().unwrap());
            proptest::prop_assert_eq!(&*x.as_str(), a.as_str());
            proptest::prop_assert_eq!(&*y.as_str(), b.as_str());
            proptest::prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            proptest::prop_assert_eq!(y.cmp(&x), b.cmp(&a));
            proptest::prop_assert_eq!(x == y, a == b);
        }
    }
}
