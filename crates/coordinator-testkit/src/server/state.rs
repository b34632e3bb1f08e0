//! The fake server's stored state and the semantics of its RPCs (§6 of the
//! spec), independent of the transport: every function here is synchronous and
//! returns a [`coordinator_api::Error`] that the service turns into a status or a
//! batch entry error.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use coordinator_api::{
    Error, LogStreamState, MessageIndex, PROTOCOL_VERSION, PrefixSecret, ProjectName, StreamId,
    StreamName, StreamPath,
};
use coordinator_grpc::proto::logdog::{
    InternalLogStreamState, LoadStreamRequest, LoadStreamResponse, RegisterStreamRequest,
    RegisterStreamResponse, TerminateStreamRequest,
};
use coordinator_grpc::proto::logpb::{LogStreamDescriptor, StreamType};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::CallCounts;
use super::metrics::StreamMetrics;

/// A stream as the fake server stores it (for assertions in tests).
///
/// `Debug` redacts the secret (a [`PrefixSecret`] shows only its length).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredStream {
    /// The stream's project.
    pub project: ProjectName,
    /// The stream's full path, from the descriptor of its first registration.
    pub path: StreamPath,
    /// The stream's ID: lowercase hex SHA-256 of `path`.
    pub id: StreamId,
    /// The protocol version it was registered with (always `"1"`).
    pub proto_version: String,
    /// The secret of the stream's prefix at registration.
    pub secret: PrefixSecret,
    /// The terminal index, once the stream is terminated.
    pub terminal_index: Option<MessageIndex>,
    /// Whether the stream is archived (set only by tests, see
    /// [`FakeServicesServer::set_archived`](super::FakeServicesServer::set_archived)).
    pub archived: bool,
    /// Whether the stream is purged (set only by tests, see
    /// [`FakeServicesServer::set_purged`](super::FakeServicesServer::set_purged)).
    pub purged: bool,
    /// The serialized descriptor of its first registration.
    pub descriptor: Vec<u8>,
    /// How many successful registrations it has answered, the first included.
    pub registrations: u64,
    /// How many successful terminations it has answered, idempotent repeats
    /// included.
    pub terminations: u64,
    /// When it was first registered (wall clock).
    pub registered_at: SystemTime,
    created: Instant,
}

impl StoredStream {
    /// The stream's state as a [`LogStreamState`] (what a client should map the
    /// server's answer to).
    pub fn state(&self) -> LogStreamState {
        LogStreamState {
            project: self.project.clone(),
            path: self.path.clone(),
            id: self.id.clone(),
            proto_version: self.proto_version.clone().into(),
            secret: self.secret.clone(),
            terminal_index: self.terminal_index,
            archived: self.archived,
            purged: self.purged,
        }
    }

    fn wire_state(&self) -> InternalLogStreamState {
        InternalLogStreamState {
            proto_version: self.proto_version.clone(),
            secret: self.secret.as_bytes().to_vec(),
            terminal_index: MessageIndex::optional_to_wire(self.terminal_index),
            archived: self.archived,
            purged: self.purged,
        }
    }
}

struct RegisteredPrefix {
    secret: PrefixSecret,
    expires_at: Option<Instant>,
}

/// Prefixes and streams of one fake server.
#[derive(Default)]
pub(crate) struct Registry {
    prefixes: HashMap<(ProjectName, StreamName), RegisteredPrefix>,
    streams: HashMap<(ProjectName, StreamId), StoredStream>,
    metrics: StreamMetrics,
}

impl Registry {
    pub(crate) fn clear(&mut self) {
        self.prefixes.clear();
        self.streams.clear();
        self.metrics.stored.set(0.0);
    }

    /// The state as data (secrets left out), sorted by project and prefix or
    /// path. `now` and `wall` are the same moment on the tokio and the wall
    /// clock, to date prefix expiries.
    pub(crate) fn dump(&self, calls: CallCounts, now: Instant, wall: SystemTime) -> StateDump {
        let mut prefixes: Vec<PrefixDump> = self
            .prefixes
            .iter()
            .map(|((project, prefix), registered)| PrefixDump {
                project: project.as_str().to_owned(),
                prefix: prefix.as_str().to_owned(),
                expires_at: registered.expires_at.map(|at| {
                    if at >= now {
                        wall + (at - now)
                    } else {
                        wall.checked_sub(now - at).unwrap_or(SystemTime::UNIX_EPOCH)
                    }
                }),
                expired: registered.expires_at.is_some_and(|at| now >= at),
            })
            .collect();
        prefixes.sort_by(|a, b| (&a.project, &a.prefix).cmp(&(&b.project, &b.prefix)));
        let streams = self
            .streams()
            .iter()
            .map(|s| {
                let (prefix, name) = s.path.split();
                let desc = LogStreamDescriptor::decode(s.descriptor.as_slice()).ok();
                StreamDump {
                    project: s.project.as_str().to_owned(),
                    path: s.path.as_str().to_owned(),
                    prefix: prefix.to_owned(),
                    name: name.to_owned(),
                    id: s.id.as_str().to_owned(),
                    proto_version: s.proto_version.clone(),
                    terminal_index: s.terminal_index.map(MessageIndex::get),
                    archived: s.archived,
                    purged: s.purged,
                    registered_at: s.registered_at,
                    registrations: s.registrations,
                    terminations: s.terminations,
                    content_type: desc.as_ref().map(|d| d.content_type.clone()),
                    stream_type: desc.and_then(|d| {
                        StreamType::try_from(d.stream_type)
                            .ok()
                            .map(|t| t.as_str_name().to_owned())
                    }),
                }
            })
            .collect();
        StateDump {
            taken_at: wall,
            prefixes,
            streams,
            calls,
        }
    }

    /// Registers (or re-registers, replacing secret and expiry) a prefix.
    pub(crate) fn register_prefix(
        &mut self,
        project: &ProjectName,
        prefix: &StreamName,
        secret: &PrefixSecret,
        expires_in: Option<Duration>,
        now: Instant,
    ) {
        // An expiry too far out to represent never comes.
        let expires_at = expires_in.and_then(|d| now.checked_add(d));
        self.prefixes.insert(
            (project.clone(), prefix.clone()),
            RegisteredPrefix {
                secret: secret.clone(),
                expires_at,
            },
        );
    }

    pub(crate) fn stream(&self, project: &ProjectName, path: &StreamPath) -> Option<&StoredStream> {
        self.streams
            .get(&(project.clone(), StreamId::for_path(path)))
    }

    pub(crate) fn stream_mut(
        &mut self,
        project: &ProjectName,
        path: &StreamPath,
    ) -> Option<&mut StoredStream> {
        self.streams
            .get_mut(&(project.clone(), StreamId::for_path(path)))
    }

    /// Every stored stream, sorted by project and path.
    pub(crate) fn streams(&self) -> Vec<StoredStream> {
        let mut all: Vec<StoredStream> = self.streams.values().cloned().collect();
        all.sort_by(|a, b| (&a.project, &a.path).cmp(&(&b.project, &b.path)));
        all
    }

    /// RegisterStream. Checks, in order: project, protocol version, descriptor
    /// (decodable, then valid: see [`validate_descriptor`]), prefix registered,
    /// prefix not expired, secret (36 bytes, matching the prefix's). Then answers the stored
    /// state of the stream, creating it (terminated if `terminal_index >= 0`) if
    /// it does not exist.
    pub(crate) fn register(
        &mut self,
        req: &RegisterStreamRequest,
        now: Instant,
    ) -> Result<RegisterStreamResponse, Error> {
        let project = parse_project(&req.project)?;
        if req.proto_version != PROTOCOL_VERSION {
            return Err(Error::invalid_field(
                "proto_version",
                format_args!(
                    "unsupported protocol version {:?}; this server supports {PROTOCOL_VERSION:?}",
                    truncated(&req.proto_version)
                ),
            ));
        }
        let desc = LogStreamDescriptor::decode(req.desc.as_slice()).map_err(|e| {
            Error::invalid_field(
                "desc",
                format_args!("cannot decode LogStreamDescriptor: {e}"),
            )
        })?;
        let (prefix, name) = validate_descriptor(&desc)?;

        let key = (project, prefix);
        let Some(registered) = self.prefixes.get(&key) else {
            return Err(Error::failed_precondition(format!(
                "prefix {:?} is not registered in project {:?}",
                key.1.as_str(),
                key.0.as_str()
            )));
        };
        if registered.expires_at.is_some_and(|at| now >= at) {
            return Err(Error::failed_precondition(format!(
                "prefix {:?} of project {:?} has expired",
                key.1.as_str(),
                key.0.as_str()
            )));
        }
        let secret =
            PrefixSecret::from_bytes(&req.secret).map_err(|e| Error::invalid_field("secret", e))?;
        if !registered.secret.ct_eq_bytes(secret.as_bytes()) {
            return Err(Error::invalid_field(
                "secret",
                "does not match the prefix's secret",
            ));
        }

        let (project, prefix) = key;
        let path = StreamPath::new(&prefix, &name);
        let id = StreamId::for_path(&path);
        let metrics = &self.metrics;
        let stream = self
            .streams
            .entry((project.clone(), id.clone()))
            .or_insert_with(|| {
                metrics.registered.increment(1);
                let terminal_index = MessageIndex::optional_from_wire(req.terminal_index);
                if terminal_index.is_some() {
                    metrics.terminated.increment(1);
                }
                StoredStream {
                    project,
                    path,
                    id: id.clone(),
                    proto_version: req.proto_version.clone(),
                    secret,
                    terminal_index,
                    archived: false,
                    purged: false,
                    descriptor: req.desc.clone(),
                    registrations: 0,
                    terminations: 0,
                    registered_at: SystemTime::now(),
                    created: now,
                }
            });
        stream.registrations += 1;
        let response = RegisterStreamResponse {
            id: id.as_str().to_owned(),
            state: Some(stream.wire_state()),
            error: None,
        };
        self.metrics.stored.set(self.streams.len() as f64);
        Ok(response)
    }

    /// TerminateStream. Checks, in order: project, terminal index (negative:
    /// `InvalidArgument`), ID (not 64 hex characters: `InvalidArgument`), stream
    /// exists (`NotFound`), secret (`InvalidArgument`), then records the index:
    /// the same index again is a success, a different one `FailedPrecondition`.
    pub(crate) fn terminate(&mut self, req: &TerminateStreamRequest) -> Result<(), Error> {
        let project = parse_project(&req.project)?;
        let index = MessageIndex::from_wire(req.terminal_index)
            .map_err(|e| Error::invalid_field("terminal_index", e))?;
        let id = parse_sha256_id(&req.id)?;
        let Some(stream) = self.streams.get_mut(&(project, id)) else {
            return Err(not_found(&req.project, &req.id));
        };
        if !stream.secret.ct_eq_bytes(&req.secret) {
            return Err(Error::invalid_field(
                "secret",
                "does not match the stream's secret",
            ));
        }
        match stream.terminal_index {
            None => {
                stream.terminal_index = Some(index);
                self.metrics.terminated.increment(1);
            }
            Some(existing) if existing == index => {}
            Some(existing) => {
                return Err(Error::failed_precondition(format!(
                    "stream {} is already terminated at index {existing}; cannot terminate it at {index}",
                    stream.id
                )));
            }
        }
        stream.terminations += 1;
        Ok(())
    }

    /// LoadStream: the stored state (and the descriptor if asked for). Checks
    /// project and ID as [`Registry::terminate`] does; unknown ID: `NotFound`.
    pub(crate) fn load(
        &self,
        req: &LoadStreamRequest,
        now: Instant,
    ) -> Result<LoadStreamResponse, Error> {
        let project = parse_project(&req.project)?;
        let id = parse_sha256_id(&req.id)?;
        let Some(stream) = self.streams.get(&(project, id)) else {
            return Err(not_found(&req.project, &req.id));
        };
        let age = now.saturating_duration_since(stream.created);
        Ok(LoadStreamResponse {
            state: Some(stream.wire_state()),
            desc: if req.desc {
                stream.descriptor.clone()
            } else {
                Vec::new()
            },
            age: Some(prost_types::Duration {
                seconds: i64::try_from(age.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(age.subsec_nanos()).unwrap_or(0),
            }),
            archival_key: Vec::new(),
        })
    }
}

/// The fake server's state as data, from
/// [`FakeServicesServer::dump_state`](super::FakeServicesServer::dump_state)
/// (and what `fake-coordinator --dump-on-exit` writes as JSON).
///
/// **No secret is in it**: neither prefix nor stream secrets (nor tokens) are
/// dumped, so a dump can be kept and shared. Times are RFC 3339 in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StateDump {
    /// When the dump was taken.
    #[serde(with = "humantime_serde")]
    pub taken_at: SystemTime,
    /// The registered prefixes, sorted by project and prefix.
    pub prefixes: Vec<PrefixDump>,
    /// The stored streams, sorted by project and path.
    pub streams: Vec<StreamDump>,
    /// The calls received so far.
    pub calls: CallCounts,
}

/// A registered prefix in a [`StateDump`] (its secret left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PrefixDump {
    /// The project.
    pub project: String,
    /// The prefix.
    pub prefix: String,
    /// When it expires or expired (`None`: never).
    #[serde(with = "humantime_serde")]
    pub expires_at: Option<SystemTime>,
    /// Whether it had expired when the dump was taken.
    pub expired: bool,
}

/// A stored stream in a [`StateDump`] (its secret left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StreamDump {
    /// The project.
    pub project: String,
    /// The full path, `prefix/+/name`.
    pub path: String,
    /// The prefix part of the path.
    pub prefix: String,
    /// The name part of the path.
    pub name: String,
    /// The stream ID (lowercase hex SHA-256 of the path).
    pub id: String,
    /// The protocol version it was registered with.
    pub proto_version: String,
    /// The terminal index, once terminated.
    pub terminal_index: Option<u64>,
    /// Whether it is archived.
    pub archived: bool,
    /// Whether it is purged.
    pub purged: bool,
    /// When it was first registered.
    #[serde(with = "humantime_serde")]
    pub registered_at: SystemTime,
    /// Successful registrations answered, the first included.
    pub registrations: u64,
    /// Successful terminations answered, idempotent repeats included.
    pub terminations: u64,
    /// The descriptor's content type.
    pub content_type: Option<String>,
    /// The descriptor's stream type (`TEXT`, `BINARY`, `DATAGRAM`).
    pub stream_type: Option<String>,
}

/// The most bytes a descriptor tag key may have.
const MAX_TAG_KEY_BYTES: usize = 64;
/// The most bytes a descriptor tag value may have.
const MAX_TAG_VALUE_BYTES: usize = 4096;

/// The real Coordinator's descriptor validation, in its order: prefix and name
/// are valid stream names, the stream type is TEXT, BINARY or DATAGRAM, the
/// content type is not empty, the timestamp is set, and every tag key is a valid
/// stream name of at most 64 bytes with a value of at most 4096 bytes. Returns
/// the prefix and name.
fn validate_descriptor(desc: &LogStreamDescriptor) -> Result<(StreamName, StreamName), Error> {
    let prefix: StreamName = desc
        .prefix
        .parse()
        .map_err(|e| Error::invalid_field("desc.prefix", e))?;
    let name: StreamName = desc
        .name
        .parse()
        .map_err(|e| Error::invalid_field("desc.name", e))?;
    if StreamType::try_from(desc.stream_type).is_err() {
        return Err(Error::invalid_field(
            "desc.stream_type",
            format_args!(
                "unknown stream type {}; want TEXT, BINARY or DATAGRAM",
                desc.stream_type
            ),
        ));
    }
    if desc.content_type.is_empty() {
        return Err(Error::invalid_field(
            "desc.content_type",
            "must not be empty",
        ));
    }
    if desc.timestamp.is_none() {
        return Err(Error::invalid_field("desc.timestamp", "must be set"));
    }
    // Sorted, so that the first invalid tag reported does not depend on the
    // map's iteration order.
    let mut tags: Vec<(&String, &String)> = desc.tags.iter().collect();
    tags.sort_unstable();
    for (key, value) in tags {
        if key.len() > MAX_TAG_KEY_BYTES {
            return Err(Error::invalid_field(
                "desc.tags",
                format_args!(
                    "tag key {:?} is {} bytes long; at most {MAX_TAG_KEY_BYTES} allowed",
                    truncated(key),
                    key.len()
                ),
            ));
        }
        if let Err(e) = key.parse::<StreamName>() {
            return Err(Error::invalid_field(
                "desc.tags",
                format_args!(
                    "tag key {:?} is not a valid stream name: {e}",
                    truncated(key)
                ),
            ));
        }
        if value.len() > MAX_TAG_VALUE_BYTES {
            return Err(Error::invalid_field(
                "desc.tags",
                format_args!(
                    "the value of tag {key:?} is {} bytes long; at most {MAX_TAG_VALUE_BYTES} allowed",
                    value.len()
                ),
            ));
        }
    }
    Ok((prefix, name))
}

fn parse_project(project: &str) -> Result<ProjectName, Error> {
    project
        .parse()
        .map_err(|e| Error::invalid_field("project", e))
}

/// A LogDog stream ID: 64 hex characters, either case; normalized to lowercase.
fn parse_sha256_id(id: &str) -> Result<StreamId, Error> {
    if id.len() != 64 {
        return Err(Error::invalid_field(
            "id",
            format_args!("must be 64 hex characters; found {} bytes", id.len()),
        ));
    }
    if let Some(index) = id.bytes().position(|b| !b.is_ascii_hexdigit()) {
        return Err(Error::invalid_field(
            "id",
            format_args!("must be 64 hex characters; byte {index} is not a hex digit"),
        ));
    }
    id.to_ascii_lowercase()
        .parse()
        .map_err(|e| Error::invalid_field("id", e))
}

fn not_found(project: &str, id: &str) -> Error {
    Error::not_found(format!("no stream with ID {id} in project {project:?}"))
}

/// At most 64 characters of client-supplied text, for messages.
fn truncated(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coordinator_api::Code;

    fn desc(prefix: &str, name: &str) -> Vec<u8> {
        LogStreamDescriptor {
            prefix: prefix.into(),
            name: name.into(),
            content_type: "text/plain".into(),
            timestamp: Some(prost_types::Timestamp::default()),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn id_parsing_is_case_insensitive_and_names_the_problem() {
        let upper = "F53FE51CC97B9FBF00E69A388BFD079168D1E15C3FE708E44F049DC9688F52AD";
        assert_eq!(
            parse_sha256_id(upper).unwrap().as_str(),
            upper.to_lowercase()
        );
        let e = parse_sha256_id("abc").unwrap_err();
        assert_eq!((e.code(), e.field()), (Code::InvalidArgument, Some("id")));
        assert!(e.message().contains("found 3 bytes"), "{e}");
        let bad = format!("{}g", &upper[..63]);
        assert!(
            parse_sha256_id(&bad)
                .unwrap_err()
                .message()
                .contains("byte 63")
        );
    }

    #[test]
    fn register_then_terminate_through_the_registry() {
        let now = Instant::now();
        let mut reg = Registry::default();
        let project: ProjectName = "p".parse().unwrap();
        let secret = PrefixSecret::from([3; 36]);
        reg.register_prefix(&project, &"a".parse().unwrap(), &secret, None, now);
        let resp = reg
            .register(
                &RegisterStreamRequest {
                    project: "p".into(),
                    secret: vec![3; 36],
                    proto_version: "1".into(),
                    desc: desc("a", "b"),
                    terminal_index: -1,
                },
                now,
            )
            .unwrap();
        assert_eq!(
            resp.id,
            StreamId::for_path(&"a/+/b".parse().unwrap()).as_str()
        );
        reg.terminate(&TerminateStreamRequest {
            project: "p".into(),
            id: resp.id.clone(),
            secret: vec![3; 36],
            terminal_index: 4,
        })
        .unwrap();
        let stored = reg.stream(&project, &"a/+/b".parse().unwrap()).unwrap();
        assert_eq!(stored.terminal_index, Some(MessageIndex::from(4)));
        assert_eq!((stored.registrations, stored.terminations), (1, 1));
    }

    #[test]
    fn truncation_is_char_safe() {
        let long = "é".repeat(100);
        assert_eq!(truncated(&long).chars().count(), 64);
        assert_eq!(truncated("1"), "1");
    }
}
