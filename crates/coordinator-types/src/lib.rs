//! Validated LogDog domain types.
//!
//! Every type here is a newtype whose constructors validate untrusted text: an
//! invalid [`StreamName`], [`StreamPath`], [`ProjectName`], [`PrefixSecret`],
//! [`MessageIndex`] or [`StreamId`] cannot exist. Validation failures are an
//! [`Error`] that names the rule that failed and where (byte index, segment
//! offset, path part).
//!
//! Clones are cheap: text types share one allocation through a one-pointer
//! handle, a [`StreamId`] in LogDog's hex form is 32 inline bytes, and a
//! [`PrefixSecret`] is 36 inline bytes.
//!
//! The rules each type enforces, with examples, are in the behaviour contract,
//! `docs/behaviour.md` §2, in the repository; stream IDs are defined in
//! `docs/wire.md` ("Stream IDs").
//!
//! ```
//! use coordinator_types::{StreamName, StreamPath};
//!
//! let prefix: StreamName = "builds/1234".parse()?;
//! let name: StreamName = "steps/compile/stdout".parse()?;
//! let path: StreamPath = prefix.join(&name);
//! assert_eq!(path.as_str(), "builds/1234/+/steps/compile/stdout");
//! assert_eq!(path.split(), ("builds/1234", "steps/compile/stdout"));
//!
//! let err = "foo^bar".parse::<StreamName>().unwrap_err();
//! assert_eq!(err.to_string(), "stream name has illegal character '^' at byte 3");
//! # Ok::<(), coordinator_types::Error>(())
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod error;
mod id;
mod index;
mod name;
pub mod path;
mod project;
mod secret;
#[cfg(feature = "serde")]
mod serde_impls;

pub use error::{Error, Found, PathPart};
pub use id::{IdText, StreamId};
pub use index::MessageIndex;
pub use name::{Namespaces, StreamName};
pub use path::StreamPath;
pub use project::ProjectName;
pub use secret::PrefixSecret;
