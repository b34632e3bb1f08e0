//! The scriptable in-memory `FakeCoordinator`.
