//! `berth`: docker's image commands without a daemon, on a local OCI image layout.
//!
//! The binary (`src/main.rs`) parses the command line ([`args`]) and hands it to
//! [`run`]. The library also gives fuzz targets and tests the parsers that take
//! outside input: [`builder::dockerfile::parse`] (Dockerfile text) and
//! [`archive::load_from`] (an image archive, `docker save` or OCI layout tar, from
//! any reader, into a [`store::Store`]).
//!
//! Modules: [`args`] (command definitions), `commands` (what each does: pull, push,
//! build, the local views), `registry` (the distribution API client), [`store`] (the
//! local OCI layout), [`manifest`] (typed manifests and indexes), `image` (an image's
//! parts and views, `import`), [`archive`] (`save` / `load`), [`builder`] (the
//! Dockerfile builder), `inroot` (file operations confined to an image root),
//! `reference` and `credentials`.

pub mod archive;
pub mod args;
pub mod builder;
mod commands;
mod credentials;
mod human;
mod image;
mod inroot;
mod listing;
pub mod manifest;
mod private;
mod reference;
mod registry;
pub mod rootless;
pub mod store;

pub use commands::run;
