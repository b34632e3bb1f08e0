//! The key and entry types the library-based adapters share.
//!
//! Both moka and quick_cache look keys up through `equivalent::Equivalent`, so a
//! hit needs no owned key: [`KeyRef`] (two `&str`) finds a [`StreamKey`] (two
//! `Arc`s). Calls that may insert (moka's `try_get_with_by_ref`, quick_cache's
//! guards) also need `ToOwned<Owned = StreamKey>`, which only an unsized borrowed
//! form can offer: `dyn KeyView`, implemented by the requests. All hash the same
//! bytes in the same order as our cache does (`project`, `0xff`, `path`).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use coordinator_api::{
    Error, LogStreamState, MessageIndex, ProjectName, RegisterRequest, StreamPath, TerminateRequest,
};
use quick_cache::Equivalent;

/// Feeds `(project, path)` to `hasher`; every key form hashes through this.
#[inline]
fn hash_parts<H: Hasher>(hasher: &mut H, project: &str, path: &str) {
    hasher.write(project.as_bytes());
    hasher.write_u8(0xff);
    hasher.write(path.as_bytes());
}

/// An owned key: `(project, path)`, sharing the request's `Arc`s.
pub struct StreamKey {
    project: ProjectName,
    path: StreamPath,
}

impl Hash for StreamKey {
    fn hash<H: Hasher>(&self, hasher: &mut H) {
        hash_parts(hasher, self.project.as_str(), self.path.as_str());
    }
}

impl PartialEq for StreamKey {
    fn eq(&self, other: &Self) -> bool {
        self.path.as_str() == other.path.as_str() && self.project.as_str() == other.project.as_str()
    }
}

impl Eq for StreamKey {}

/// A borrowed key for plain lookups: two `&str`, no reference count touched.
#[derive(Clone, Copy)]
pub struct KeyRef<'a> {
    project: &'a str,
    path: &'a str,
}

impl<'a> KeyRef<'a> {
    pub fn new(project: &'a ProjectName, path: &'a StreamPath) -> Self {
        KeyRef {
            project: project.as_str(),
            path: path.as_str(),
        }
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, hasher: &mut H) {
        hash_parts(hasher, self.project, self.path);
    }
}

impl Equivalent<StreamKey> for KeyRef<'_> {
    fn equivalent(&self, key: &StreamKey) -> bool {
        self.path == key.path.as_str() && self.project == key.project.as_str()
    }
}

/// Anything that names a stream; `dyn KeyView` is the borrowed form of
/// [`StreamKey`] that can make an owned key (for calls that may insert).
pub trait KeyView: Send + Sync {
    fn project(&self) -> &ProjectName;
    fn path(&self) -> &StreamPath;
}

impl KeyView for StreamKey {
    fn project(&self) -> &ProjectName {
        &self.project
    }
    fn path(&self) -> &StreamPath {
        &self.path
    }
}

impl KeyView for RegisterRequest {
    fn project(&self) -> &ProjectName {
        &self.project
    }
    fn path(&self) -> &StreamPath {
        &self.path
    }
}

impl KeyView for TerminateRequest {
    fn project(&self) -> &ProjectName {
        &self.project
    }
    fn path(&self) -> &StreamPath {
        &self.path
    }
}

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, hasher: &mut H) {
        hash_parts(hasher, self.project().as_str(), self.path().as_str());
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.path().as_str() == other.path().as_str()
            && self.project().as_str() == other.project().as_str()
    }
}

impl Eq for dyn KeyView + '_ {}

impl<'a> Borrow<dyn KeyView + 'a> for StreamKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl ToOwned for dyn KeyView + '_ {
    type Owned = StreamKey;

    fn to_owned(&self) -> StreamKey {
        StreamKey {
            project: self.project().clone(),
            path: self.path().clone(),
        }
    }
}

/// What an adapter's entry holds: the kept register answer (a state or a
/// permanent error) and the stream's remote terminal index once known.
pub struct Slot {
    register: Result<Arc<LogStreamState>, Error>,
    /// `index + 1`, or `0` while unknown; set once (first known wins).
    terminal: AtomicU64,
}

impl Slot {
    /// The slot that keeps an inner register's outcome: a state or a permanent
    /// error (the caller hands a transient error back instead of keeping it).
    pub fn kept(outcome: Result<Arc<LogStreamState>, Error>) -> Slot {
        let known = outcome.as_ref().ok().and_then(|s| s.terminal_index);
        let slot = Slot {
            register: outcome,
            terminal: AtomicU64::new(0),
        };
        if let Some(index) = known {
            slot.remember_index(index);
        }
        slot
    }

    /// The kept answer, with the known terminal index filled in if the state has
    /// none (a copy, made on every such call).
    pub fn answer(&self) -> Result<Arc<LogStreamState>, Error> {
        match &self.register {
            Ok(state) => match (state.terminal_index, self.known_index()) {
                (None, Some(index)) => Ok(Arc::new(LogStreamState {
                    terminal_index: Some(index),
                    ..LogStreamState::clone(state)
                })),
                _ => Ok(Arc::clone(state)),
            },
            Err(e) => Err(e.clone()),
        }
    }

    pub fn known_index(&self) -> Option<MessageIndex> {
        match self.terminal.load(Ordering::Acquire) {
            0 => None,
            raw => MessageIndex::try_from(raw - 1).ok(),
        }
    }

    /// Remembers `index` unless one is known already.
    pub fn remember_index(&self, index: MessageIndex) {
        let _ =
            self.terminal
                .compare_exchange(0, index.get() + 1, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether a terminate for `index` can succeed without an inner call (the
    /// remote index is known); warns if it differs from the requested one.
    pub fn terminate_known(&self, request: &TerminateRequest) -> bool {
        let Some(known) = self.known_index() else {
            return false;
        };
        if known != request.terminal_index {
            tracing::warn!(
                project = %request.project,
                path = %request.path,
                %known,
                requested = %request.terminal_index,
                "terminate: a different terminal index is already recorded"
            );
        }
        true
    }
}
