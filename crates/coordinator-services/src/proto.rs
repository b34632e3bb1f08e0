//! The `logdog` protobuf messages, generated from `proto/` by
//! `cargo xtask codegen` (prost) and checked in.

/// Package `logdog`: the Coordinator's services API.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod logdog {
    include!("proto/logdog.rs");
}

/// Package `logpb`: the log stream descriptor.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod logpb {
    include!("proto/logpb.rs");
}

/// The encoded `FileDescriptorSet` of `proto/` (without source info), for
/// reflection-based encodings such as the proto3 JSON mapping.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("proto/descriptor_set.bin");
