use std::fmt;
use std::sync::Arc;

/// A gRPC-style status code (the 17 canonical codes), defined here so that this
/// crate needs no transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum Code {
    /// Not an error.
    Ok = 0,
    /// The operation was cancelled.
    Cancelled = 1,
    /// Unknown error.
    Unknown = 2,
    /// The client specified an invalid argument.
    InvalidArgument = 3,
    /// The deadline expired before the operation could complete.
    DeadlineExceeded = 4,
    /// Some requested entity was not found.
    NotFound = 5,
    /// The entity already exists.
    AlreadyExists = 6,
    /// The caller may not do this.
    PermissionDenied = 7,
    /// Some resource has been exhausted.
    ResourceExhausted = 8,
    /// The system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// The operation was aborted.
    Aborted = 10,
    /// The operation was attempted past the valid range.
    OutOfRange = 11,
    /// The operation is not implemented.
    Unimplemented = 12,
    /// Internal error.
    Internal = 13,
    /// The service is currently unavailable.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// The request lacks valid authentication credentials.
    Unauthenticated = 16,
}

impl Code {
    /// All codes, in numeric order.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code for a numeric value; values outside 0..=16 are `Unknown`.
    pub fn from_i32(value: i32) -> Code {
        usize::try_from(value)
            .ok()
            .and_then(|i| Code::ALL.get(i).copied())
            .unwrap_or(Code::Unknown)
    }

    /// The code's numeric value.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// True for the codes worth retrying: `Internal`, `Unknown`, `Unavailable`,
    /// `DeadlineExceeded`. Every other code is permanent (`docs/behaviour.md` §3).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Code::Internal | Code::Unknown | Code::Unavailable | Code::DeadlineExceeded
        )
    }

    /// The code's canonical name, e.g. `INVALID_ARGUMENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed Coordinator call: a [`Code`], a message, whether it is transient
/// (worth retrying), and for invalid input the field at fault.
///
/// Cloning is one reference-count increment, so one failure can be handed to every
/// coalesced waiter. Messages must never contain secrets; constructors in this
/// workspace only ever put lengths of secrets into them.
#[derive(Clone)]
pub struct Error(Arc<ErrorInner>);

struct ErrorInner {
    code: Code,
    transient: bool,
    /// Transient, but the retry layers must not retry it (see
    /// [`Error::with_retry`]).
    no_retry: bool,
    field: Option<&'static str>,
    message: Box<str>,
}

impl Error {
    /// An error with `code` and `message`; transient iff the code is
    /// ([`Code::is_transient`]).
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self::build(code, code.is_transient(), None, message.into())
    }

    fn build(code: Code, transient: bool, field: Option<&'static str>, message: String) -> Self {
        Error(Arc::new(ErrorInner {
            code,
            transient,
            no_retry: false,
            field,
            message: message.into_boxed_str(),
        }))
    }

    /// The same error, marked transient or not explicitly (for example from a batch
    /// entry's own transient flag).
    pub fn with_transient(self, transient: bool) -> Self {
        if self.0.transient == transient {
            return self;
        }
        Error(Arc::new(ErrorInner {
            code: self.0.code,
            transient,
            no_retry: self.0.no_retry,
            field: self.0.field,
            message: self.0.message.clone(),
        }))
    }

    /// The same error, with retries allowed or not.
    ///
    /// An error made with `with_retry(false)` keeps its transience (a cache
    /// still does not keep a transient error as a stream's answer) but retry
    /// layers return it at once: for a failure that asking again the same way
    /// cannot fix, such as a response over the client's size limit.
    pub fn with_retry(self, retry: bool) -> Self {
        if self.0.no_retry != retry {
            return self;
        }
        Error(Arc::new(ErrorInner {
            code: self.0.code,
            transient: self.0.transient,
            no_retry: !retry,
            field: self.0.field,
            message: self.0.message.clone(),
        }))
    }

    /// True if a retry layer may retry the call: the error is transient and was
    /// not marked [`with_retry(false)`](Self::with_retry).
    pub fn is_retryable(&self) -> bool {
        self.0.transient && !self.0.no_retry
    }

    /// A permanent `InvalidArgument` error about `field`: the message is
    /// `"{field}: {problem}"`.
    pub fn invalid_field(field: &'static str, problem: impl fmt::Display) -> Self {
        Self::build(
            Code::InvalidArgument,
            false,
            Some(field),
            format!("{field}: {problem}"),
        )
    }

    /// A permanent `InvalidArgument` error.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// A transient `Unavailable` error.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    /// A transient `Internal` error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    /// A transient `DeadlineExceeded` error.
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(Code::DeadlineExceeded, message)
    }

    /// A permanent `NotFound` error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    /// A permanent `FailedPrecondition` error.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, message)
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.0.code
    }

    /// The message (without the code).
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// True if the call may succeed if retried.
    pub fn is_transient(&self) -> bool {
        self.0.transient
    }

    /// For an invalid-input error, the field at fault (`"project"`, `"path"`,
    /// `"secret"`, `"id"`, `"terminal_index"`, ...).
    pub fn field(&self) -> Option<&'static str> {
        self.0.field
    }
}

impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.code == other.0.code
                && self.0.transient == other.0.transient
                && self.0.no_retry == other.0.no_retry
                && self.0.field == other.0.field
                && self.0.message == other.0.message)
    }
}

impl Eq for Error {}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("code", &self.0.code)
            .field("transient", &self.0.transient);
        if let Some(field) = self.0.field {
            d.field("field", &field);
        }
        d.field("message", &&*self.0.message).finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.code)?;
        if self.0.transient {
            f.write_str(" (transient)")?;
        }
        write!(f, ": {}", self.0.message)
    }
}

impl std::error::Error for Error {}

/// A domain type rejected its input: a permanent `InvalidArgument` error.
///
/// The field is named where the failed rule says which one it is: `project`
/// (project name rules), `path` (the `/+/` separator or a path part), `secret`
/// (length or hex), `id` (stream ID rules), `terminal_index` (a negative or too
/// large index, the only index in this interface). A bare stream-name error
/// names no field, since a name can be a prefix, a name or part of a path; the
/// message still says what failed and where. A failure of the operating system's
/// random source is not bad input: it becomes a transient `Internal` error.
///
/// This lets `?` turn a parse failure into this crate's error:
///
/// ```
/// use coordinator_api::{Code, Error, ProjectName};
///
/// fn project(raw: &str) -> Result<ProjectName, Error> {
///     Ok(raw.parse::<ProjectName>()?)
/// }
///
/// let err = project("Chromium").unwrap_err();
/// assert_eq!((err.code(), err.field()), (Code::InvalidArgument, Some("project")));
/// assert!(!err.is_transient());
/// ```
impl From<coordinator_types::Error> for Error {
    fn from(error: coordinator_types::Error) -> Self {
        use coordinator_types::Error as E;
        let field = match &error {
            E::EmptyProject | E::ProjectStart { .. } | E::ProjectCharacter { .. } => {
                Some("project")
            }
            E::MissingPathSeparator | E::InvalidPathPart { .. } => Some("path"),
            E::SecretLength { .. } | E::SecretHexLength { .. } | E::SecretHexCharacter { .. } => {
                Some("secret")
            }
            E::EmptyStreamId | E::StreamIdCharacter { .. } => Some("id"),
            E::NegativeIndex { .. } | E::IndexTooLarge { .. } => Some("terminal_index"),
            E::RandomSource(_) => return Error::internal(error.to_string()),
            _ => None,
        };
        match field {
            Some(field) => Error::invalid_field(field, error),
            None => Error::invalid_argument(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes() {
        let transient: Vec<Code> = Code::ALL.into_iter().filter(|c| c.is_transient()).collect();
        assert_eq!(
            transient,
            [
                Code::Unknown,
                Code::DeadlineExceeded,
                Code::Internal,
                Code::Unavailable
            ]
        );
        for code in Code::ALL {
            assert_eq!(Error::new(code, "x").is_transient(), code.is_transient());
        }
    }

    #[test]
    fn numeric_round_trip() {
        for (i, code) in Code::ALL.into_iter().enumerate() {
            assert_eq!(code.as_i32(), i as i32);
            assert_eq!(Code::from_i32(i as i32), code);
        }
        assert_eq!(Code::from_i32(17), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
    }

    #[test]
    fn no_retry_keeps_transience_but_is_not_retryable() {
        let e = Error::unavailable("too big");
        assert!(e.is_retryable());
        let once = e.clone().with_retry(false);
        assert!(once.is_transient() && !once.is_retryable());
        assert_ne!(once, e);
        assert_eq!(once.clone().with_retry(true), e);
        assert!(!Error::not_found("x").is_retryable());
        // Changing the transient flag keeps the no-retry mark.
        assert!(!once.with_transient(true).is_retryable());
    }

    #[test]
    fn explicit_transient_flag() {
        let e = Error::new(Code::FailedPrecondition, "busy");
        assert!(!e.is_transient());
        let t = e.clone().with_transient(true);
        assert!(t.is_transient());
        assert_eq!(t.code(), Code::FailedPrecondition);
        assert_eq!(t.message(), "busy");
        assert_ne!(e, t);
        assert_eq!(t.to_string(), "FAILED_PRECONDITION (transient): busy");
    }

    #[test]
    fn invalid_field_names_the_field() {
        let e = Error::invalid_field("secret", "is 3 bytes long");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(!e.is_transient());
        assert_eq!(e.field(), Some("secret"));
        assert_eq!(e.to_string(), "INVALID_ARGUMENT: secret: is 3 bytes long");
    }

    #[test]
    fn domain_errors_convert_with_their_field() {
        use coordinator_types::{MessageIndex, PrefixSecret, ProjectName, StreamId, StreamPath};

        type Parse = fn() -> Result<(), coordinator_types::Error>;

        fn field_of(parse: Parse) -> Option<&'static str> {
            // Through `?`, as a caller would write it.
            let convert = || -> Result<(), Error> { Ok(parse()?) };
            let e = convert().unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e}");
            assert!(!e.is_transient(), "{e}");
            e.field()
        }
        let cases: [(Parse, Option<&str>); 9] = [
            (|| "".parse::<ProjectName>().map(drop), Some("project")),
            (|| "1eet".parse::<ProjectName>().map(drop), Some("project")),
            (|| "a/b".parse::<StreamPath>().map(drop), Some("path")),
            (|| "a/+/_b".parse::<StreamPath>().map(drop), Some("path")),
            (
                || PrefixSecret::from_bytes(&[1; 35]).map(drop),
                Some("secret"),
            ),
            (|| "zz".parse::<PrefixSecret>().map(drop), Some("secret")),
            (|| "".parse::<StreamId>().map(drop), Some("id")),
            (
                || MessageIndex::from_wire(-1).map(drop),
                Some("terminal_index"),
            ),
            (
                || "a//b".parse::<coordinator_types::StreamName>().map(drop),
                None,
            ),
        ];
        for (parse, field) in cases {
            assert_eq!(field_of(parse), field);
        }
    }

    #[test]
    fn domain_error_message_keeps_the_rule_and_place() {
        let e = Error::from(coordinator_types::Error::ProjectCharacter {
            index: 3,
            found: coordinator_types::Found::Char('/'),
        });
        assert_eq!(
            e.to_string(),
            "INVALID_ARGUMENT: project: project name has invalid character '/' at byte 3"
        );
        let e = Error::from(coordinator_types::Error::RandomSource("no entropy".into()));
        assert_eq!(e.code(), Code::Internal);
        assert!(e.is_transient() && e.field().is_none());
    }

    #[test]
    fn clone_is_shared() {
        let e = Error::unavailable("down");
        let c = e.clone();
        assert!(Arc::ptr_eq(&e.0, &c.0));
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}
