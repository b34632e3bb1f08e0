//! `MockCoordinator`: a `mockall` mock of the `Coordinator` trait.
