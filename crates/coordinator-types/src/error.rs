use std::fmt;

/// Why a value was rejected: which rule failed, and where.
///
/// Messages never contain secret bytes: a [`PrefixSecret`](crate::PrefixSecret)
/// error reports lengths only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A stream name was empty.
    #[error("stream name must contain at least one character")]
    EmptyName,
    /// A stream name was longer than [`StreamName::MAX_LENGTH`](crate::StreamName::MAX_LENGTH) bytes.
    #[error("stream name is {len} bytes long; the maximum is {max}")]
    NameTooLong {
        /// The name's length in bytes.
        len: usize,
        /// The maximum length in bytes.
        max: usize,
    },
    /// A segment of a stream name did not begin with an ASCII letter or digit.
    #[error(
        "stream name segment at byte {offset} must begin with an ASCII letter or digit, found {found}"
    )]
    InvalidSegmentStart {
        /// Byte offset of the segment's first character.
        offset: usize,
        /// What was found there.
        found: Found,
    },
    /// A stream name held a character outside `A-Z a-z 0-9 . _ - : /`.
    #[error("stream name has illegal character {found} at byte {index}")]
    IllegalCharacter {
        /// Byte index of the character.
        index: usize,
        /// The character.
        found: Found,
    },
    /// A stream name ended with `/`.
    #[error("stream name must not end with the separator '/'")]
    TrailingSeparator,
    /// A stream path had no `+` segment separating prefix and name.
    #[error("stream path has no \"/+/\" separator between prefix and name")]
    MissingPathSeparator,
    /// One part of a stream path is not a valid stream name.
    #[error("stream path {part} is invalid: {source}")]
    InvalidPathPart {
        /// Which part.
        part: PathPart,
        /// Why it is invalid; byte indexes are relative to the part.
        source: Box<Error>,
    },
    /// A prefix secret had the wrong length.
    #[error("prefix secret is {found} bytes long; it must be exactly {required} bytes")]
    SecretLength {
        /// The length found.
        found: usize,
        /// The required length.
        required: usize,
    },
    /// A prefix secret in hex had the wrong length (two hex digits per byte).
    #[error("prefix secret hex is {found} characters long; it must be exactly {required}")]
    SecretHexLength {
        /// The length found, in bytes of text.
        found: usize,
        /// The required length ([`PrefixSecret::LEN`](crate::PrefixSecret::LEN) × 2).
        required: usize,
    },
    /// A prefix secret in hex held something other than a hex digit. The
    /// character itself is not reported: it is part of a credential.
    #[error("prefix secret hex has a character that is not a hex digit at byte {index}")]
    SecretHexCharacter {
        /// Byte index of the character.
        index: usize,
    },
    /// The operating system's secure random source failed.
    #[error("the operating system's secure random source failed: {0}")]
    RandomSource(String),
    /// A message index was negative.
    #[error("message index {value} is negative")]
    NegativeIndex {
        /// The value found.
        value: i64,
    },
    /// A message index does not fit the wire's non-negative `i64`.
    #[error("message index {value} exceeds the maximum {}", i64::MAX)]
    IndexTooLarge {
        /// The value found.
        value: u64,
    },
    /// A project name was empty.
    #[error("project name must not be empty")]
    EmptyProject,
    /// A project name did not begin with a lowercase ASCII letter.
    #[error("project name must begin with a lowercase letter, found {found}")]
    ProjectStart {
        /// The first character.
        found: Found,
    },
    /// A project name held a character outside `a-z 0-9 - _`.
    #[error("project name has invalid character {found} at byte {index}")]
    ProjectCharacter {
        /// Byte index of the character.
        index: usize,
        /// The character.
        found: Found,
    },
    /// A stream ID was empty.
    #[error("stream ID must not be empty")]
    EmptyStreamId,
    /// A stream ID held a character that is not printable ASCII.
    #[error("stream ID has invalid character {found} at byte {index}")]
    StreamIdCharacter {
        /// Byte index of the character.
        index: usize,
        /// The character.
        found: Found,
    },
}

/// Which part of a stream path an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathPart {
    /// The part before `/+/`.
    Prefix,
    /// The part after `/+/`.
    Name,
}

impl fmt::Display for PathPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathPart::Prefix => "prefix",
            PathPart::Name => "name",
        })
    }
}

/// The offending character in an [`Error`]: a character, or a byte that is not
/// valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Found {
    /// A character (possibly non-ASCII).
    Char(char),
    /// A byte that does not start valid UTF-8.
    Byte(u8),
}

impl Found {
    /// Describes the character that starts at `bytes[index]`.
    pub(crate) fn at(bytes: &[u8], index: usize) -> Found {
        let rest = bytes.get(index..).unwrap_or_default();
        match rest.utf8_chunks().next() {
            Some(chunk) => match chunk.valid().chars().next() {
                Some(c) => Found::Char(c),
                None => Found::Byte(rest.first().copied().unwrap_or_default()),
            },
            None => Found::Byte(0),
        }
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Char(c) => write!(f, "{c:?}"),
            Found::Byte(b) => write!(f, "invalid UTF-8 byte 0x{b:02x}"),
        }
    }
}
