//! serde support (feature `serde`). Deserialization validates, so a
//! deserialized value obeys the same rules as a parsed one.

use serde::de::{Error as _, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{MessageIndex, PrefixSecret, ProjectName, StreamId, StreamName, StreamPath};

macro_rules! text_serde {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(D::Error::custom)
            }
        }
    )*};
}

text_serde!(StreamName, StreamPath, ProjectName, StreamId);

impl Serialize for crate::IdText<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

impl Serialize for MessageIndex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.get())
    }
}

impl<'de> Deserialize<'de> for MessageIndex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        MessageIndex::from_wire(v).map_err(D::Error::custom)
    }
}

impl Serialize for PrefixSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.as_bytes())
    }
}

impl<'de> Deserialize<'de> for PrefixSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SecretVisitor;

        impl<'de> Visitor<'de> for SecretVisitor {
            type Value = PrefixSecret;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{} bytes", PrefixSecret::LEN)
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<PrefixSecret, E> {
                PrefixSecret::from_bytes(v).map_err(E::custom)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<PrefixSecret, A::Error> {
                let mut bytes = Vec::with_capacity(PrefixSecret::LEN);
                while let Some(b) = seq.next_element::<u8>()? {
                    if bytes.len() > PrefixSecret::LEN {
                        break;
                    }
                    bytes.push(b);
                }
                PrefixSecret::from_bytes(&bytes).map_err(A::Error::custom)
            }
        }

        d.deserialize_bytes(SecretVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let p: StreamPath = "a/+/b".parse().unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"a/+/b\"");
        assert_eq!(serde_json::from_str::<StreamPath>(&json).unwrap(), p);
        assert!(serde_json::from_str::<StreamPath>("\"a/+\"").is_err());
        assert!(serde_json::from_str::<StreamName>("\"_x\"").is_err());
        assert!(serde_json::from_str::<ProjectName>("\"X\"").is_err());
        assert!(serde_json::from_str::<MessageIndex>("-1").is_err());
        assert_eq!(
            serde_json::from_str::<MessageIndex>("5").unwrap(),
            MessageIndex::from(5)
        );
        let s = PrefixSecret::from([9; 36]);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<PrefixSecret>(&json).unwrap(), s);
        let err = serde_json::from_str::<PrefixSecret>("[1,2,3]").unwrap_err();
        assert!(err.to_string().contains("3 bytes long"), "{err}");
    }
}
