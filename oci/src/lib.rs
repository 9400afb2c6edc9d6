//! OCI basics every Berth crate agrees on, defined once: repository names and tags
//! (the distribution spec's grammars), digests, manifest references, typed manifests
//! (on oci-spec), media types, size formatting, and the request
//! grammar of the distribution API (`/v2/…` paths to typed actions).
//!
//! Small and free of I/O on purpose: the HTTP edge, storage, accounts and the fuzz
//! target all parse with exactly this code.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod media_types;
pub mod names;
pub mod reference;
pub mod request;
pub mod size;

pub use digest::{Algorithm, Digest};
pub use error::OciError;
pub use names::RepoName;
pub use reference::Reference;
pub use request::{Action, Need, Resource, UploadId, UploadStart};
