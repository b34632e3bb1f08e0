//! Message bodies in the negotiated encoding.

use coordinator_api::Error;
use prost::Message;

use crate::wire::Encoding;

/// Encodes requests and decodes responses in one [`Encoding`].
#[derive(Clone)]
pub(crate) enum Codec {
    Binary,
    #[cfg(feature = "json")]
    Json(prost_reflect::DescriptorPool),
}

impl Codec {
    /// The codec for `encoding` (for JSON, the descriptors of the `logdog`
    /// messages are decoded once here).
    pub(crate) fn new(encoding: Encoding) -> Result<Codec, String> {
        match encoding {
            Encoding::Binary => Ok(Codec::Binary),
            #[cfg(feature = "json")]
            Encoding::Json => prost_reflect::DescriptorPool::decode(
                coordinator_services::proto::FILE_DESCRIPTOR_SET,
            )
            .map(Codec::Json)
            .map_err(|e| e.to_string()),
        }
    }

    pub(crate) fn encoding(&self) -> Encoding {
        match self {
            Codec::Binary => Encoding::Binary,
            #[cfg(feature = "json")]
            Codec::Json(_) => Encoding::Json,
        }
    }

    /// The request body for `message` (of protobuf type `type_name`).
    #[cfg_attr(not(feature = "json"), allow(unused_variables))]
    pub(crate) fn encode<M: Message>(
        &self,
        type_name: &str,
        message: &M,
    ) -> Result<Vec<u8>, Error> {
        match self {
            Codec::Binary => Ok(message.encode_to_vec()),
            #[cfg(feature = "json")]
            Codec::Json(pool) => {
                let dynamic = prost_reflect::DynamicMessage::decode(
                    descriptor(pool, type_name)?,
                    message.encode_to_vec().as_slice(),
                )
                .map_err(|e| local(format_args!("encoding {type_name} as JSON: {e}")))?;
                serde_json::to_vec(&dynamic)
                    .map_err(|e| local(format_args!("encoding {type_name} as JSON: {e}")))
            }
        }
    }

    /// The response message of protobuf type `type_name` from `body`. A body
    /// that does not decode is a transient `Internal` error (the client's own
    /// failure, retried).
    pub(crate) fn decode<M: Message + Default>(
        &self,
        type_name: &str,
        body: &[u8],
    ) -> Result<M, Error> {
        let undecodable = |e: &dyn std::fmt::Display| {
            Error::internal(format!(
                "invalid response from the Coordinator: could not decode {type_name}: {e}"
            ))
        };
        match self {
            Codec::Binary => M::decode(body).map_err(|e| undecodable(&e)),
            #[cfg(feature = "json")]
            Codec::Json(pool) => {
                let body = crate::wire::strip_xssi(body);
                let mut de = serde_json::Deserializer::from_slice(body);
                let options = prost_reflect::DeserializeOptions::new().deny_unknown_fields(false);
                let dynamic = prost_reflect::DynamicMessage::deserialize_with_options(
                    descriptor(pool, type_name)?,
                    &mut de,
                    &options,
                )
                .map_err(|e| undecodable(&e))?;
                de.end().map_err(|e| undecodable(&e))?;
                dynamic.transcode_to::<M>().map_err(|e| undecodable(&e))
            }
        }
    }
}

#[cfg(feature = "json")]
fn descriptor(
    pool: &prost_reflect::DescriptorPool,
    type_name: &str,
) -> Result<prost_reflect::MessageDescriptor, Error> {
    pool.get_message_by_name(type_name)
        .ok_or_else(|| local(format_args!("no descriptor for {type_name}")))
}

/// A failure of this client that asking again cannot fix: transient (never a
/// server's verdict) but not retried.
#[cfg(feature = "json")]
fn local(what: std::fmt::Arguments<'_>) -> Error {
    Error::internal(format!("pRPC client: {what}")).with_retry(false)
}

#[cfg(test)]
mod tests {
    use coordinator_services::proto::logdog as proto;

    use super::*;

    #[test]
    fn binary_round_trip_and_garbage() {
        let codec = Codec::new(Encoding::Binary).unwrap();
        let req = proto::TerminateStreamRequest {
            project: "p".into(),
            id: "i".into(),
            secret: vec![1; 36],
            terminal_index: 7,
        };
        let body = codec.encode("logdog.TerminateStreamRequest", &req).unwrap();
        let back: proto::TerminateStreamRequest = codec
            .decode("logdog.TerminateStreamRequest", &body)
            .unwrap();
        assert_eq!(back, req);
        let e = codec
            .decode::<proto::RegisterStreamResponse>("logdog.RegisterStreamResponse", b"\xff\xff")
            .unwrap_err();
        assert!(e.is_retryable(), "{e}");
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_round_trip_uses_the_proto3_mapping() {
        let codec = Codec::new(Encoding::Json).unwrap();
        let req = proto::RegisterStreamRequest {
            project: "p".into(),
            secret: vec![0xfb; 3],
            proto_version: "1".into(),
            desc: vec![],
            terminal_index: -1,
        };
        let body = codec.encode("logdog.RegisterStreamRequest", &req).unwrap();
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(text.contains(r#""protoVersion":"1""#), "{text}");
        assert!(text.contains(r#""terminalIndex":"-1""#), "{text}");
        assert!(text.contains(r#""secret":"+/v7""#), "{text}");
        let mut prefixed = b")]}'\n".to_vec();
        prefixed.extend_from_slice(&body);
        prefixed.extend_from_slice(b"\n");
        let back: proto::RegisterStreamRequest = codec
            .decode("logdog.RegisterStreamRequest", &prefixed)
            .unwrap();
        assert_eq!(back, req);
        codec
            .decode::<()>("google.protobuf.Empty", b")]}'\n{}\n")
            .unwrap();
        let e = codec
            .decode::<proto::RegisterStreamResponse>("logdog.RegisterStreamResponse", b"{")
            .unwrap_err();
        assert!(e.is_retryable(), "{e}");
    }
}
