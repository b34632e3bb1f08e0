//! [`DescriptorBuilder`]: the `logpb.LogStreamDescriptor` a `RegisterStream`
//! call carries (`RegisterStreamRequest.desc`, serialized), built so that the
//! Coordinator accepts it.
//!
//! The Coordinator derives the stream's path from the descriptor and checks it
//! before anything else: prefix and name are valid stream names, the stream
//! type is TEXT, BINARY or DATAGRAM, the content type is not empty, the
//! timestamp is set, and every tag key is a valid stream name of at most 64
//! bytes with a value of at most 4096 bytes. A builder made from a
//! [`StreamPath`] (or a prefix and a name) meets the first four by
//! construction: the path is already validated, the stream type is an enum,
//! the content type defaults to [`DEFAULT_CONTENT_TYPE`] and the timestamp to
//! the time of [`build`](DescriptorBuilder::build). Tag keys are
//! [`StreamName`]s; their lengths and the content type you set are yours to
//! keep within bounds.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use coordinator_services::descriptor::DescriptorBuilder;
//! use coordinator_services::proto::logpb::{LogStreamDescriptor, StreamType};
//! use coordinator_services::prost::Message;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let builder = DescriptorBuilder::for_path(&"builds/1/+/stdout".parse()?)
//!     .stream_type(StreamType::Binary)
//!     .content_type("application/octet-stream")
//!     .timestamp(created)
//!     .tag("bot".parse()?, "linux-1");
//! let bytes = builder.to_bytes(); // what `RegisterStreamRequest.desc` carries
//!
//! let desc = LogStreamDescriptor::decode(bytes.as_slice())?;
//! assert_eq!((desc.prefix.as_str(), desc.name.as_str()), ("builds/1", "stdout"));
//! assert_eq!(desc.stream_type(), StreamType::Binary);
//! assert_eq!(desc.timestamp.map(|t| t.seconds), Some(1_700_000_000));
//! assert_eq!(desc, builder.build());
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::SystemTime;

use coordinator_api::{StreamName, StreamPath};
use prost::Message;

use crate::proto::logpb::{LogStreamDescriptor, StreamType};

/// The content type a [`DescriptorBuilder`] starts with: `text/plain`.
pub const DEFAULT_CONTENT_TYPE: &str = "text/plain";

/// Builds a `logpb.LogStreamDescriptor` that passes the Coordinator's
/// descriptor validation (see the [module docs](self)).
///
/// Defaults: a TEXT stream of content type [`DEFAULT_CONTENT_TYPE`], no tags,
/// no binary file extension, and the timestamp taken when the descriptor is
/// built (set one with [`timestamp`](Self::timestamp) for the same bytes every
/// time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorBuilder {
    path: StreamPath,
    stream_type: StreamType,
    content_type: String,
    timestamp: Option<SystemTime>,
    tags: BTreeMap<String, String>,
    binary_file_ext: String,
}

impl DescriptorBuilder {
    /// A descriptor of the stream `prefix/+/name`.
    pub fn new(prefix: &StreamName, name: &StreamName) -> Self {
        Self::for_path(&StreamPath::new(prefix, name))
    }

    /// A descriptor of the stream at `path` (its prefix and name).
    pub fn for_path(path: &StreamPath) -> Self {
        DescriptorBuilder {
            path: path.clone(),
            stream_type: StreamType::Text,
            content_type: DEFAULT_CONTENT_TYPE.to_owned(),
            timestamp: None,
            tags: BTreeMap::new(),
            binary_file_ext: String::new(),
        }
    }

    /// The stream's path (`prefix/+/name`).
    pub fn path(&self) -> &StreamPath {
        &self.path
    }

    /// The kind of stream (default TEXT).
    pub fn stream_type(mut self, stream_type: StreamType) -> Self {
        self.stream_type = stream_type;
        self
    }

    /// The content type of the stream's data (default `text/plain`). The
    /// Coordinator refuses an empty one.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }

    /// When the stream was created (default: the time of each
    /// [`build`](Self::build)). Times before the Unix epoch are encoded as
    /// negative seconds, as `google.protobuf.Timestamp` does.
    pub fn timestamp(mut self, timestamp: SystemTime) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Adds (or replaces) a tag. The Coordinator accepts keys of at most 64
    /// bytes and values of at most 4096 bytes.
    pub fn tag(mut self, key: StreamName, value: impl Into<String>) -> Self {
        self.tags.insert(key.as_str().to_owned(), value.into());
        self
    }

    /// The file extension of a binary stream's data (default none).
    pub fn binary_file_ext(mut self, ext: impl Into<String>) -> Self {
        self.binary_file_ext = ext.into();
        self
    }

    /// The descriptor message.
    pub fn build(&self) -> LogStreamDescriptor {
        let (prefix, name) = self.path.split();
        let timestamp = self.timestamp.unwrap_or_else(SystemTime::now);
        LogStreamDescriptor {
            prefix: prefix.to_owned(),
            name: name.to_owned(),
            stream_type: self.stream_type as i32,
            content_type: self.content_type.clone(),
            timestamp: Some(prost_types::Timestamp::from(timestamp)),
            tags: self
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            binary_file_ext: self.binary_file_ext.clone(),
        }
    }

    /// The descriptor serialized, as `RegisterStreamRequest.desc` (and the
    /// `desc` argument of `Coordinator::register_stream`) expects. A map field
    /// is encoded in an unspecified order, so with more than one tag the bytes
    /// may differ between calls; the decoded message does not.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.build().encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn path() -> StreamPath {
        "builds/1/+/stdout".parse().unwrap()
    }

    #[test]
    fn defaults_are_a_valid_text_stream_stamped_at_build() {
        let before = SystemTime::now() - Duration::from_secs(1);
        let desc = DescriptorBuilder::for_path(&path()).build();
        assert_eq!(desc.prefix, "builds/1");
        assert_eq!(desc.name, "stdout");
        assert_eq!(desc.stream_type(), StreamType::Text);
        assert_eq!(desc.content_type, DEFAULT_CONTENT_TYPE);
        assert!(desc.tags.is_empty() && desc.binary_file_ext.is_empty());
        let stamped = SystemTime::try_from(desc.timestamp.unwrap()).unwrap();
        assert!(stamped >= before, "{stamped:?}");
    }

    #[test]
    fn every_field_round_trips_through_prost() {
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 250_000_000);
        let builder = DescriptorBuilder::new(&"a/b".parse().unwrap(), &"c".parse().unwrap())
            .stream_type(StreamType::Datagram)
            .content_type("application/x-datagram")
            .timestamp(at)
            .tag("k1".parse().unwrap(), "v1")
            .tag("k2".parse().unwrap(), "v2")
            .tag("k1".parse().unwrap(), "v1'")
            .binary_file_ext("bin");
        assert_eq!(builder.path().as_str(), "a/b/+/c");
        let built = builder.build();
        let decoded = LogStreamDescriptor::decode(builder.to_bytes().as_slice()).unwrap();
        assert_eq!(decoded, built);
        assert_eq!(decoded.stream_type(), StreamType::Datagram);
        assert_eq!(decoded.content_type, "application/x-datagram");
        assert_eq!(
            decoded.timestamp,
            Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 250_000_000
            })
        );
        assert_eq!(decoded.tags.len(), 2);
        assert_eq!(decoded.tags["k1"], "v1'");
        assert_eq!(decoded.binary_file_ext, "bin");
    }

    #[test]
    fn a_fixed_timestamp_gives_the_same_bytes_every_time() {
        let builder = DescriptorBuilder::for_path(&path()).timestamp(SystemTime::UNIX_EPOCH);
        assert_eq!(builder.to_bytes(), builder.to_bytes());
        assert_eq!(
            builder.build().timestamp,
            Some(prost_types::Timestamp::default())
        );
    }
}
