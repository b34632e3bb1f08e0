use std::fmt;
use std::str::FromStr;

use subtle::ConstantTimeEq;

use crate::Error;

/// A LogDog prefix secret: exactly [`PrefixSecret::LEN`] opaque bytes that prove
/// ownership of a stream prefix.
///
/// This is a credential. Its `Debug` shows only its length, it has no `Display`,
/// and equality is constant-time. Errors about secrets report lengths, never bytes.
///
/// ```
/// use coordinator_types::PrefixSecret;
///
/// let secret = PrefixSecret::generate()?;
/// assert_eq!(secret.as_bytes().len(), 36);
/// assert_eq!(format!("{secret:?}"), "PrefixSecret(<redacted 36 bytes>)");
/// assert!(PrefixSecret::from_bytes(&[0; 35]).is_err());
///
/// // From hex, e.g. a secret given on a command line: 72 hex digits.
/// let from_hex: PrefixSecret = "00".repeat(36).parse()?;
/// assert_eq!(from_hex, PrefixSecret::from([0; 36]));
/// # Ok::<(), coordinator_types::Error>(())
/// ```
#[derive(Clone)]
pub struct PrefixSecret([u8; PrefixSecret::LEN]);

impl PrefixSecret {
    /// The length of every prefix secret, in bytes.
    pub const LEN: usize = 36;

    /// A fresh secret from the operating system's secure random source
    /// (feature `generate`).
    #[cfg(feature = "generate")]
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; Self::LEN];
        getrandom::fill(&mut bytes).map_err(|e| Error::RandomSource(e.to_string()))?;
        Ok(PrefixSecret(bytes))
    }

    /// Copies a secret from `bytes`, which must be exactly [`Self::LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        <[u8; Self::LEN]>::try_from(bytes)
            .map(PrefixSecret)
            .map_err(|_| Error::SecretLength {
                found: bytes.len(),
                required: Self::LEN,
            })
    }

    /// Decodes a secret from [`Self::LEN`] × 2 hex digits (either case, nothing
    /// else: no prefix, no whitespace). Also available as [`FromStr`].
    ///
    /// Errors are [`Error::SecretHexLength`] (the text's length) and
    /// [`Error::SecretHexCharacter`] (the byte index of the first character that
    /// is not a hex digit); neither repeats any of the text.
    pub fn from_hex(hex: &str) -> Result<Self, Error> {
        let text = hex.as_bytes();
        if text.len() != Self::LEN * 2 {
            return Err(Error::SecretHexLength {
                found: text.len(),
                required: Self::LEN * 2,
            });
        }
        let mut bytes = [0u8; Self::LEN];
        for (i, (byte, pair)) in bytes.iter_mut().zip(text.chunks_exact(2)).enumerate() {
            let digit = |offset: usize| {
                pair.get(offset)
                    .and_then(|&c| char::from(c).to_digit(16))
                    .ok_or(Error::SecretHexCharacter {
                        index: 2 * i + offset,
                    })
            };
            // Each digit is below 16, so the byte cannot overflow.
            *byte = u8::try_from(digit(0)? * 16 + digit(1)?).unwrap_or_default();
        }
        Ok(PrefixSecret(bytes))
    }

    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// Compares with raw bytes in constant time (for a given length).
    pub fn ct_eq_bytes(&self, other: &[u8]) -> bool {
        bool::from(self.0.as_slice().ct_eq(other))
    }
}

impl From<[u8; PrefixSecret::LEN]> for PrefixSecret {
    fn from(bytes: [u8; PrefixSecret::LEN]) -> Self {
        PrefixSecret(bytes)
    }
}

impl TryFrom<&[u8]> for PrefixSecret {
    type Error = Error;

    fn try_from(bytes: &[u8]) -> Result<Self, Error> {
        Self::from_bytes(bytes)
    }
}

impl TryFrom<Vec<u8>> for PrefixSecret {
    type Error = Error;

    fn try_from(bytes: Vec<u8>) -> Result<Self, Error> {
        Self::from_bytes(&bytes)
    }
}

impl FromStr for PrefixSecret {
    type Err = Error;

    /// [`PrefixSecret::from_hex`].
    fn from_str(hex: &str) -> Result<Self, Error> {
        Self::from_hex(hex)
    }
}

impl PartialEq for PrefixSecret {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for PrefixSecret {}

impl fmt::Debug for PrefixSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrefixSecret(<redacted {} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_must_be_exact() {
        for len in [0, 1, 35, 37, 64] {
            let bytes = vec![0xabu8; len];
            let err = PrefixSecret::from_bytes(&bytes).unwrap_err();
            assert_eq!(
                err,
                Error::SecretLength {
                    found: len,
                    required: 36
                }
            );
            let msg = err.to_string();
            assert_eq!(
                msg,
                format!("prefix secret is {len} bytes long; it must be exactly 36 bytes")
            );
            assert!(!msg.to_lowercase().contains("ab"), "{msg}");
        }
        assert!(PrefixSecret::from_bytes(&[7; 36]).is_ok());
        assert!(PrefixSecret::try_from(vec![7; 36]).is_ok());
    }

    #[cfg(feature = "generate")]
    #[test]
    fn generate_is_random_and_36_bytes() {
        let a = PrefixSecret::generate().unwrap();
        let b = PrefixSecret::generate().unwrap();
        assert_eq!(a.as_bytes().len(), 36);
        assert_ne!(a, b);
        assert_ne!(a.as_bytes(), &[0u8; 36]);
    }

    #[test]
    fn debug_is_redacted() {
        let s = PrefixSecret::from([0x41; 36]);
        let dbg = format!("{s:?} {s:#?}");
        assert!(!dbg.contains("65"), "{dbg}");
        assert!(!dbg.contains('A'), "{dbg}");
        assert!(!dbg.contains("41"), "{dbg}");
    }

    #[test]
    fn from_hex_decodes_either_case() {
        let mut text = "0123456789abcdefABCDEF".repeat(4);
        text.truncate(72);
        let secret = PrefixSecret::from_hex(&text).unwrap();
        assert_eq!(
            &secret.as_bytes()[..11],
            &[
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xab, 0xcd, 0xef
            ]
        );
        assert_eq!(hex::encode(secret.as_bytes()), text.to_lowercase());
        assert_eq!(text.parse::<PrefixSecret>().unwrap(), secret);
    }

    #[test]
    fn from_hex_rejects_bad_text_without_repeating_it() {
        let good = "a1".repeat(36);
        let cases = [
            (
                String::new(),
                Error::SecretHexLength {
                    found: 0,
                    required: 72,
                },
            ),
            (
                good[..71].to_owned(),
                Error::SecretHexLength {
                    found: 71,
                    required: 72,
                },
            ),
            (
                format!("{good}00"),
                Error::SecretHexLength {
                    found: 74,
                    required: 72,
                },
            ),
            (
                format!("0x{}", &good[2..]),
                Error::SecretHexCharacter { index: 1 },
            ),
            (
                format!("{}g", &good[..71]),
                Error::SecretHexCharacter { index: 71 },
            ),
            (
                format!("{} {}", &good[..40], &good[41..]),
                Error::SecretHexCharacter { index: 40 },
            ),
            // A two-byte character in 72 bytes of text: found at its first byte.
            (
                format!("{}é", &good[..70]),
                Error::SecretHexCharacter { index: 70 },
            ),
        ];
        for (text, want) in cases {
            let err = PrefixSecret::from_hex(&text).unwrap_err();
            assert_eq!(err, want, "{text:?}");
            assert_eq!(text.parse::<PrefixSecret>().unwrap_err(), want);
            let msg = err.to_string();
            // No secret digits, and no quoted character (how `Found` shows one).
            assert!(
                !msg.contains("a1") && !msg.contains('\'') && !msg.contains('é'),
                "{msg}"
            );
        }
    }

    #[test]
    fn equality() {
        let a = PrefixSecret::from([1; 36]);
        let mut other = [1; 36];
        assert_eq!(a, PrefixSecret::from(other));
        other[35] = 2;
        assert_ne!(a, PrefixSecret::from(other));
        assert!(a.ct_eq_bytes(&[1; 36]));
        assert!(!a.ct_eq_bytes(&[1; 35]));
        assert!(!a.ct_eq_bytes(&other));
    }
}
