use std::fmt;
use std::num::NonZeroU64;

use crate::Error;

/// A stream message index: a non-negative integer no larger than `i64::MAX`
/// (the wire type is `int64`).
///
/// A stream's terminal index is an `Option<MessageIndex>` (absent while the stream
/// is open); the wire's `-1` convention lives only in
/// [`MessageIndex::optional_from_wire`] and [`MessageIndex::optional_to_wire`].
/// `Option<MessageIndex>` is 8 bytes.
///
/// ```
/// use coordinator_types::MessageIndex;
///
/// let i = MessageIndex::from_wire(41)?;
/// assert_eq!(i.get(), 41);
/// assert!(MessageIndex::from_wire(-1).is_err());
/// assert_eq!(MessageIndex::optional_from_wire(-1), None);
/// assert_eq!(MessageIndex::optional_to_wire(None), -1);
/// # Ok::<(), coordinator_types::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageIndex(NonZeroU64); // value + 1, so that Option<Self> has a niche.

impl MessageIndex {
    /// Index zero.
    pub const ZERO: MessageIndex = MessageIndex(NonZeroU64::MIN);
    /// The largest index the wire can carry (`i64::MAX`).
    pub const MAX: MessageIndex = match NonZeroU64::new(i64::MAX as u64 + 1) {
        Some(v) => MessageIndex(v),
        None => MessageIndex(NonZeroU64::MIN),
    };

    /// An index from an unsigned value; values above `i64::MAX` are rejected.
    pub fn new(value: u64) -> Result<Self, Error> {
        if value > i64::MAX as u64 {
            return Err(Error::IndexTooLarge { value });
        }
        Ok(MessageIndex(NonZeroU64::MIN.saturating_add(value)))
    }

    /// An index from the wire's `int64`; negative values are rejected.
    pub fn from_wire(value: i64) -> Result<Self, Error> {
        u64::try_from(value)
            .map_err(|_| Error::NegativeIndex { value })
            .and_then(Self::new)
    }

    /// A terminal index from the wire: negative means "none".
    pub fn optional_from_wire(value: i64) -> Option<Self> {
        Self::from_wire(value).ok()
    }

    /// A terminal index for the wire: `None` becomes `-1`.
    pub fn optional_to_wire(index: Option<Self>) -> i64 {
        index.map_or(-1, Self::to_wire)
    }

    /// The index's value.
    pub fn get(self) -> u64 {
        self.0.get() - 1
    }

    /// The index as the wire's `int64` (always non-negative).
    pub fn to_wire(self) -> i64 {
        // get() <= i64::MAX by construction.
        i64::try_from(self.get()).unwrap_or(i64::MAX)
    }
}

impl From<u32> for MessageIndex {
    fn from(value: u32) -> Self {
        MessageIndex(NonZeroU64::MIN.saturating_add(u64::from(value)))
    }
}

impl TryFrom<u64> for MessageIndex {
    type Error = Error;

    fn try_from(value: u64) -> Result<Self, Error> {
        Self::new(value)
    }
}

impl TryFrom<i64> for MessageIndex {
    type Error = Error;

    fn try_from(value: i64) -> Result<Self, Error> {
        Self::from_wire(value)
    }
}

impl From<MessageIndex> for u64 {
    fn from(i: MessageIndex) -> u64 {
        i.get()
    }
}

impl From<MessageIndex> for i64 {
    fn from(i: MessageIndex) -> i64 {
        i.to_wire()
    }
}

impl fmt::Debug for MessageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageIndex({})", self.get())
    }
}

impl fmt::Display for MessageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.get(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip() {
        for v in [0i64, 1, 41, i64::MAX] {
            let i = MessageIndex::from_wire(v).unwrap();
            assert_eq!(i.to_wire(), v);
            assert_eq!(i.get(), v as u64);
            assert_eq!(MessageIndex::optional_to_wire(Some(i)), v);
            assert_eq!(MessageIndex::optional_from_wire(v), Some(i));
        }
        assert_eq!(MessageIndex::MAX.to_wire(), i64::MAX);
        assert_eq!(MessageIndex::ZERO.get(), 0);
    }

    #[test]
    fn rejects_negative_and_too_large() {
        assert_eq!(
            MessageIndex::from_wire(-1),
            Err(Error::NegativeIndex { value: -1 })
        );
        assert_eq!(
            MessageIndex::from_wire(i64::MIN),
            Err(Error::NegativeIndex { value: i64::MIN })
        );
        assert_eq!(
            MessageIndex::new(i64::MAX as u64 + 1),
            Err(Error::IndexTooLarge {
                value: i64::MAX as u64 + 1
            })
        );
        assert_eq!(MessageIndex::optional_from_wire(-1), None);
        assert_eq!(MessageIndex::optional_from_wire(-7), None);
        assert_eq!(MessageIndex::optional_to_wire(None), -1);
    }

    #[test]
    fn ordering_and_size() {
        assert!(MessageIndex::from(3) < MessageIndex::from(4));
        assert_eq!(std::mem::size_of::<Option<MessageIndex>>(), 8);
        assert_eq!(MessageIndex::from(7).to_string(), "7");
    }
}
