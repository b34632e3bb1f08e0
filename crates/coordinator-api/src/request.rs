use std::borrow::Cow;

use coordinator_types::{MessageIndex, PrefixSecret, ProjectName, StreamId, StreamPath};

use crate::Error;

/// The current LogDog stream protocol version string.
pub const PROTOCOL_VERSION: &str = "1";

/// A request to register a stream (see [`Coordinator::register_stream`]).
///
/// Built from validated types, so it cannot hold an invalid project, path or
/// secret; [`RegisterRequest::parse`] builds one from raw input and names the
/// field at fault. `Debug` redacts the secret.
///
/// [`Coordinator::register_stream`]: crate::Coordinator::register_stream
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    /// The stream's LUCI project.
    pub project: ProjectName,
    /// The stream's full path; the cache's key together with `project`.
    pub path: StreamPath,
    /// The prefix secret the stream is registered with.
    pub secret: PrefixSecret,
    /// The stream protocol version ([`PROTOCOL_VERSION`]).
    pub proto_version: Cow<'static, str>,
    /// Set when the stream ends inside its first bundle: it is registered
    /// already terminated.
    pub terminal_index: Option<MessageIndex>,
}

impl RegisterRequest {
    /// A request at the current protocol version, with no terminal index.
    pub fn new(project: ProjectName, path: StreamPath, secret: PrefixSecret) -> Self {
        RegisterRequest {
            project,
            path,
            secret,
            proto_version: Cow::Borrowed(PROTOCOL_VERSION),
            terminal_index: None,
        }
    }

    /// The same request with a terminal index.
    pub fn with_terminal_index(mut self, index: MessageIndex) -> Self {
        self.terminal_index = Some(index);
        self
    }

    /// Builds a request from raw input. Every failure is a permanent
    /// `InvalidArgument` [`Error`] naming the field (`project`, `path`, `secret`,
    /// `terminal_index`).
    pub fn parse(
        project: &str,
        path: &str,
        secret: &[u8],
        terminal_index: Option<i64>,
    ) -> Result<Self, Error> {
        let project = parse_project(project)?;
        let path = parse_path(path)?;
        let secret = parse_secret(secret)?;
        let terminal_index = terminal_index.map(parse_index).transpose()?;
        Ok(RegisterRequest {
            terminal_index,
            ..RegisterRequest::new(project, path, secret)
        })
    }
}

/// The Coordinator's view of a registered stream (the answer to
/// [`Coordinator::register_stream`]).
///
/// Calls return it behind an `Arc`, so a cached answer is shared, not copied.
/// `Debug` redacts the secret.
///
/// [`Coordinator::register_stream`]: crate::Coordinator::register_stream
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStreamState {
    /// The request's project.
    pub project: ProjectName,
    /// The request's path.
    pub path: StreamPath,
    /// The stream's Coordinator ID.
    pub id: StreamId,
    /// The stream's protocol version, as the Coordinator stored it.
    pub proto_version: Cow<'static, str>,
    /// The secret the Coordinator holds for the stream's prefix. A collector drops
    /// bundles whose secret does not match (compare with `==`: constant-time).
    pub secret: PrefixSecret,
    /// The stream's terminal index, if it has ended.
    pub terminal_index: Option<MessageIndex>,
    /// True once the stream has been archived.
    pub archived: bool,
    /// True if the stream has been purged.
    pub purged: bool,
}

impl LogStreamState {
    /// The state a Coordinator would answer for a fresh registration of
    /// `request` under `id`: the request's fields, not archived, not purged.
    pub fn from_request(request: &RegisterRequest, id: StreamId) -> Self {
        LogStreamState {
            project: request.project.clone(),
            path: request.path.clone(),
            id,
            proto_version: request.proto_version.clone(),
            secret: request.secret.clone(),
            terminal_index: request.terminal_index,
            archived: false,
            purged: false,
        }
    }
}

/// A request to record a stream's terminal index (see
/// [`Coordinator::terminate_stream`]).
///
/// The terminal index is always present (a [`MessageIndex`] is non-negative).
/// `Debug` redacts the secret.
///
/// [`Coordinator::terminate_stream`]: crate::Coordinator::terminate_stream
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminateRequest {
    /// The stream's project.
    pub project: ProjectName,
    /// The stream's path; used for cache lookup only, not sent.
    pub path: StreamPath,
    /// The stream's Coordinator ID.
    pub id: StreamId,
    /// The prefix secret.
    pub secret: PrefixSecret,
    /// The terminal index to record.
    pub terminal_index: MessageIndex,
}

impl TerminateRequest {
    /// The request that terminates the stream `state` describes at `index`.
    pub fn for_state(state: &LogStreamState, index: MessageIndex) -> Self {
        TerminateRequest {
            project: state.project.clone(),
            path: state.path.clone(),
            id: state.id.clone(),
            secret: state.secret.clone(),
            terminal_index: index,
        }
    }

    /// Builds a request from raw input. Every failure is a permanent
    /// `InvalidArgument` [`Error`] naming the field (`project`, `path`, `id`,
    /// `secret`, `terminal_index`).
    pub fn parse(
        project: &str,
        path: &str,
        id: &str,
        secret: &[u8],
        terminal_index: i64,
    ) -> Result<Self, Error> {
        Ok(TerminateRequest {
            project: parse_project(project)?,
            path: parse_path(path)?,
            id: id.parse().map_err(|e| Error::invalid_field("id", e))?,
            secret: parse_secret(secret)?,
            terminal_index: parse_index(terminal_index)?,
        })
    }
}

fn parse_project(project: &str) -> Result<ProjectName, Error> {
    project
        .parse()
        .map_err(|e| Error::invalid_field("project", e))
}

fn parse_path(path: &str) -> Result<StreamPath, Error> {
    path.parse().map_err(|e| Error::invalid_field("path", e))
}

fn parse_secret(secret: &[u8]) -> Result<PrefixSecret, Error> {
    PrefixSecret::from_bytes(secret).map_err(|e| Error::invalid_field("secret", e))
}

fn parse_index(index: i64) -> Result<MessageIndex, Error> {
    MessageIndex::from_wire(index).map_err(|e| Error::invalid_field("terminal_index", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;

    const SECRET: [u8; 36] = [0x5a; 36];

    #[test]
    #[allow(clippy::type_complexity)]
    fn parse_register_names_each_field() {
        let ok = RegisterRequest::parse("proj", "a/+/b", &SECRET, Some(3)).unwrap();
        assert_eq!(ok.terminal_index, Some(MessageIndex::from(3)));
        assert_eq!(ok.proto_version, PROTOCOL_VERSION);
        let cases: [(&str, &str, &[u8], Option<i64>, &str); 5] = [
            ("", "a/+/b", &SECRET, None, "project"),
            ("Proj", "a/+/b", &SECRET, None, "project"),
            ("proj", "a/+", &SECRET, None, "path"),
            ("proj", "a/+/b", &SECRET[..35], None, "secret"),
            ("proj", "a/+/b", &SECRET, Some(-2), "terminal_index"),
        ];
        for (project, path, secret, index, field) in cases {
            let e = RegisterRequest::parse(project, path, secret, index).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            assert!(!e.is_transient());
            assert_eq!(e.field(), Some(field), "{e}");
            assert!(e.message().starts_with(field), "{e}");
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn parse_terminate_names_each_field() {
        assert!(TerminateRequest::parse("p", "a/+/b", "abc", &SECRET, 0).is_ok());
        let cases: [(&str, &str, &str, &[u8], i64, &str); 5] = [
            ("1p", "a/+/b", "abc", &SECRET, 0, "project"),
            ("p", "a/b", "abc", &SECRET, 0, "path"),
            ("p", "a/+/b", "", &SECRET, 0, "id"),
            ("p", "a/+/b", "abc", &[], 0, "secret"),
            ("p", "a/+/b", "abc", &SECRET, -1, "terminal_index"),
        ];
        for (project, path, id, secret, index, field) in cases {
            let e = TerminateRequest::parse(project, path, id, secret, index).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            assert_eq!(e.field(), Some(field), "{e}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug_and_errors() {
        let req = RegisterRequest::parse("p", "a/+/b", &SECRET, None).unwrap();
        let dbg = format!("{req:?}");
        assert!(
            !dbg.contains("90") && !dbg.contains("5a") && !dbg.contains('Z'),
            "{dbg}"
        );
        let state = LogStreamState::from_request(&req, "id".parse().unwrap());
        let dbg = format!("{state:?}");
        assert!(!dbg.contains("90") && !dbg.contains("5a"), "{dbg}");
        let e = RegisterRequest::parse("p", "a/+/b", &[0x5a; 35], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "INVALID_ARGUMENT: secret: prefix secret is 35 bytes long; it must be exactly 36 bytes"
        );
    }

    #[test]
    fn for_state_copies_identity() {
        let req = RegisterRequest::parse("p", "a/+/b", &SECRET, None).unwrap();
        let state = LogStreamState::from_request(&req, "id".parse().unwrap());
        let t = TerminateRequest::for_state(&state, MessageIndex::from(9));
        assert_eq!(t.path, req.path);
        assert_eq!(t.id.as_str(), "id");
        assert_eq!(t.terminal_index.get(), 9);
    }
}
